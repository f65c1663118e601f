"""A small Python client of the `tts` model over Triton's gRPC streaming API.

For tests, benchmarks and scripts (the gateway has its own async client). Every request goes on
its own bidirectional stream (`tts` is decoupled), so errors, which a stream reports without the
request id, are attributed to the right request:

    client = TTSClient("127.0.0.1:8001")
    reply = client.one(tts_inputs("Hello.", voice="acme.alice", version=3, params={"seed": 1}))
    replies = client.run({"a": inputs_a, "b": inputs_b})   # concurrently
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 32_000


@dataclass
class Reply:
    """Everything one request got back."""

    chunks: list[np.ndarray] = field(default_factory=list)
    sent: float = 0.0  # when the request was sent (time.monotonic)
    times: list[float] = field(default_factory=list)  # arrival time of each audio response
    seed: int | None = None
    sample_rate: int | None = None
    error: str | None = None
    info: dict[str, Any] | None = None
    final: bool = False

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    @property
    def first_audio_s(self) -> float | None:
        return self.times[0] - self.sent if self.times else None

    @property
    def total_s(self) -> float | None:
        return self.times[-1] - self.sent if self.times else None


def tts_inputs(
    text: str = "",
    lang: str = "en",
    voice: str = "",
    version: int | None = None,
    params: dict[str, Any] | str | None = None,
    ref_audio: np.ndarray | None = None,
    ref_sample_rate: int = SAMPLE_RATE,
    ref_text: str = "",
    ref_lang: str = "en",
    control: str | None = None,
) -> list[Any]:
    """The tts model's inputs for one request (`tritonclient.grpc.InferInput`s)."""
    import tritonclient.grpc as grpcclient

    def string(name: str, value: str) -> Any:
        item = grpcclient.InferInput(name, [1], "BYTES")
        item.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
        return item

    def array(name: str, value: np.ndarray, dtype: str) -> Any:
        item = grpcclient.InferInput(name, list(value.shape), dtype)
        item.set_data_from_numpy(value)
        return item

    inputs = [string("text", text), string("lang", lang), string("voice", voice)]
    if version is not None:
        inputs.append(array("voice_version", np.array([version], np.int64), "INT64"))
    if params is not None:
        inputs.append(string("params", params if isinstance(params, str) else json.dumps(params)))
    if ref_audio is not None:
        inputs.append(array("ref_audio", np.asarray(ref_audio, np.float32), "FP32"))
        inputs.append(array("ref_sample_rate", np.array([ref_sample_rate], np.int32), "INT32"))
        inputs.append(string("ref_text", ref_text))
        inputs.append(string("ref_lang", ref_lang))
    if control is not None:
        inputs.append(string("control", control))
    return inputs


class TTSClient:
    """A gRPC streaming client of the decoupled tts model."""

    def __init__(self, url: str, model: str = "tts") -> None:
        self.url = url
        self.model = model

    def run(self, requests: dict[str, list[Any]], timeout: float = 300.0) -> dict[str, Reply]:
        """Send every request (id -> inputs) at once; wait for every final response."""
        import tritonclient.grpc as grpcclient

        events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        replies = {rid: Reply() for rid in requests}
        clients = []
        done = False
        try:
            for rid, inputs in requests.items():
                client = grpcclient.InferenceServerClient(self.url)
                clients.append(client)
                client.start_stream(callback=lambda result, error, rid=rid: events.put((rid, result, error)))
                replies[rid].sent = time.monotonic()
                client.async_stream_infer(
                    self.model, inputs, request_id=rid, enable_empty_final_response=True
                )
            deadline = time.monotonic() + timeout
            while not all(r.final for r in replies.values()):
                rid, result, error = events.get(timeout=max(0.1, deadline - time.monotonic()))
                record(replies[rid], result, error)
            done = True
        finally:
            for client in clients:
                # Only cancel what is unfinished: cancelling a stream whose request already completed
                # can leave Triton 2.51 holding the model until its exit timeout at shutdown.
                client.stop_stream(cancel_requests=not done)
                client.close()
        return replies

    def one(self, inputs: list[Any], timeout: float = 300.0) -> Reply:
        return self.run({"r": inputs}, timeout)["r"]

    def control(self, action: str, voice: str = "") -> dict[str, Any]:
        """A control request (revoke | evict | stats); returns its JSON reply."""
        reply = self.one(tts_inputs(voice=voice, control=action))
        if reply.error is not None or reply.info is None:
            raise RuntimeError(f"control {action} failed: {reply.error}")
        return reply.info

    def stats(self) -> dict[str, Any]:
        return self.control("stats")


def record(reply: Reply, result: Any, error: Any) -> None:
    """Fold one stream callback into `reply`."""
    if error is not None:
        reply.error = error.message() if hasattr(error, "message") else str(error)
        reply.final = True
        return
    response = result.get_response()
    reply.final = bool(response.parameters["triton_final_response"].bool_param)
    audio = result.as_numpy("audio")
    if audio is not None:
        reply.chunks.append(np.asarray(audio, np.float32).reshape(-1))
        reply.times.append(time.monotonic())
        reply.seed = int(result.as_numpy("seed").reshape(-1)[0])
        reply.sample_rate = int(result.as_numpy("sample_rate").reshape(-1)[0])
    info = result.as_numpy("info")
    if info is not None:
        reply.info = json.loads(info.reshape(-1)[0])
