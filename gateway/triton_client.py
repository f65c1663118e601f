"""The gateway's client of one Triton replica: health and the decoupled `tts` model's stream.

`tts` is decoupled (one request, many responses), so every call, streaming or not, goes over
Triton's bidirectional `ModelStreamInfer` RPC: the gateway sends one request and reads
responses until the one flagged final (``triton_enable_empty_final_response``). Closing the
iterator before that cancels the RPC, which cancels the request inside Triton; a request that
got its final response is never cancelled (its RPC is left to end by itself). The model's
contract is `model_repository/tts/config.pbtxt`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferResult, service_pb2, service_pb2_grpc

from gateway.errors import Code, GatewayError

log = logging.getLogger(__name__)

_FINAL = "triton_final_response"


@dataclass
class TritonRequest:
    """One `tts` request, in the model's terms."""

    request_id: str
    text: str
    lang: str
    voice: str  # "tenant.name", or "" for zero-shot
    voice_version: int  # the immutable version the gateway resolved (0 for zero-shot)
    params: dict[str, Any] = field(default_factory=dict)  # includes "stream"
    ref_audio: np.ndarray | None = None
    ref_sample_rate: int = 0
    ref_text: str = ""
    ref_lang: str = ""

    def to_proto(self, model: str) -> service_pb2.ModelInferRequest:
        inputs = [_bytes("text", self.text), _bytes("lang", self.lang), _bytes("voice", self.voice)]
        if self.voice:
            inputs.append(_array("voice_version", np.array([self.voice_version], np.int64), "INT64"))
        inputs.append(_bytes("params", json.dumps(self.params, sort_keys=True)))
        if self.ref_audio is not None:
            inputs.append(_array("ref_audio", self.ref_audio.astype(np.float32, copy=False), "FP32"))
            inputs.append(_array("ref_sample_rate", np.array([self.ref_sample_rate], np.int32), "INT32"))
            inputs.append(_bytes("ref_text", self.ref_text))
            inputs.append(_bytes("ref_lang", self.ref_lang))
        request = service_pb2.ModelInferRequest(model_name=model, id=self.request_id)
        for item in inputs:
            request.inputs.extend([item._get_tensor()])
            request.raw_input_contents.extend([item._get_content()])
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        return request


def _bytes(name: str, value: str) -> InferInput:
    item = InferInput(name, [1], "BYTES")
    item.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return item


def _array(name: str, value: np.ndarray, dtype: str) -> InferInput:
    item = InferInput(name, list(value.shape), dtype)
    item.set_data_from_numpy(value)
    return item


@dataclass
class TritonChunk:
    """One response of the model: a chunk of audio (possibly empty on the final flag)."""

    audio: np.ndarray
    sample_rate: int
    seed: int
    final: bool


_MODEL_INPUT_HINTS = (
    "invalid",
    "must ",
    "unsupported",
    "too long",
    "too short",
    "empty",
    "silent",
    "cannot be spoken",
)
_NOT_FOUND_HINTS = ("not found", "no such voice", "unknown voice", "revoked")


def map_model_error(message: str) -> GatewayError:
    """An error the model returned (not a transport failure) → the caller's status.

    The model words its messages for this (tritone.serving.errors): bad input starts with
    "invalid request:", an unknown voice or version says "unknown voice", a revoked one
    "revoked", overload and shutdown "unavailable", a stored adapter it will not serve
    "adapter refused" (INTERNAL: nothing the caller can fix).
    """
    text = message.strip().splitlines()[-1][:300] if message.strip() else "synthesis failed"
    low = message.lower()
    if low.startswith("invalid request:"):
        return GatewayError(Code.INVALID_ARGUMENT, text)
    if "unknown model" in low or "is not ready" in low or "not loaded" in low or "unavailable" in low:
        return GatewayError(
            Code.UNAVAILABLE, "the inference server is not ready or overloaded; retry shortly"
        )
    if "cancelled" in low:
        return GatewayError(Code.CANCELLED, "the request was cancelled")
    if "adapter refused" in low:  # the stored adapter is bad or does not fit the base: not the caller's
        log.warning("the inference server refused a voice's adapter: %s", text)
        return GatewayError(Code.INTERNAL, "the voice's stored adapter was refused by the inference server")
    if any(h in low for h in _NOT_FOUND_HINTS):
        return GatewayError(Code.NOT_FOUND, text)
    if any(h in low for h in _MODEL_INPUT_HINTS):
        return GatewayError(Code.INVALID_ARGUMENT, text)
    return GatewayError(Code.INTERNAL, "synthesis failed inside the inference server")


def map_rpc_error(exc: grpc.aio.AioRpcError) -> GatewayError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GatewayError(
            Code.DEADLINE_EXCEEDED, "the request's deadline passed before the audio was complete"
        )
    if code == grpc.StatusCode.CANCELLED:
        return GatewayError(Code.CANCELLED, "the request was cancelled")
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
    ):
        return GatewayError(Code.UNAVAILABLE, "the inference server is unavailable; retry shortly")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return map_model_error(exc.details() or "invalid request")
    return GatewayError(Code.UNAVAILABLE, f"the inference server failed ({code.name}); retry shortly")


class TritonEndpoint:
    """A gRPC channel to one Triton address."""

    def __init__(self, address: str, model: str = "tts", max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.address = address
        self.model = model
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # reconnect quickly when a replica comes back
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def ready(self, timeout: float = 2.0) -> bool:
        try:
            server = await self.stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=timeout)
            if not server.ready:
                raise RuntimeError("server not ready")
            model = await self.stub.ModelReady(
                service_pb2.ModelReadyRequest(name=self.model), timeout=timeout
            )
            if not model.ready:
                raise RuntimeError(f"model {self.model!r} not ready")
            return True
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(f"{exc.code().name}: {exc.details()}") from None

    async def stream(
        self, request: TritonRequest, timeout: float | None
    ) -> AsyncGenerator[TritonChunk, None]:
        """Send one request; yield the model's responses until the final one.

        Raises GatewayError. Closing the generator early (the client left) cancels the RPC.
        """
        proto = request.to_proto(self.model)

        async def requests() -> AsyncIterator[service_pb2.ModelInferRequest]:
            yield proto

        call = self.stub.ModelStreamInfer(requests(), timeout=timeout)
        sample_rate, seed = 0, 0
        complete = False  # the request got its final response (audio or error): nothing to cancel
        try:
            async for response in call:
                if response.error_message:
                    complete = True  # the model answers a refused or failed request with one final error
                    raise map_model_error(response.error_message)
                infer = response.infer_response
                final = bool(infer.parameters[_FINAL].bool_param) if _FINAL in infer.parameters else False
                complete = final
                audio = np.zeros(0, np.float32)
                if infer.outputs:
                    result = InferResult(infer)
                    out = result.as_numpy("audio")
                    if out is not None:
                        audio = np.asarray(out, np.float32).reshape(-1)
                    sr = result.as_numpy("sample_rate")
                    if sr is not None and sr.size:
                        sample_rate = int(sr.reshape(-1)[0])
                    sd = result.as_numpy("seed")
                    if sd is not None and sd.size:
                        seed = int(sd.reshape(-1)[0])
                yield TritonChunk(audio, sample_rate, seed, final)
                if final:
                    return
            raise GatewayError(
                Code.UNAVAILABLE, "the inference server closed the stream early; retry shortly"
            )
        except grpc.aio.AioRpcError as exc:
            raise map_rpc_error(exc) from None
        finally:
            if not call.done():
                if complete:
                    await _finish(call)
                else:
                    call.cancel()  # the client left or failed mid-request: stop it inside Triton


async def _finish(call: Any, timeout: float = 5.0) -> None:
    """Let the RPC of a completed request end by itself, without cancelling it.

    With Triton 2.51, cancelling a stream whose request already completed intermittently leaves
    the model referenced in Triton's core, so a later shutdown waits out its whole exit timeout.
    The request stream is half-closed after its one request, so Triton ends the RPC (OK) right
    after the final response; wait for that rather than dropping the call (which would cancel
    it when collected). Only a call that still has not ended after ``timeout`` is cancelled.
    """
    try:
        await asyncio.wait_for(call.code(), timeout)
    except TimeoutError:
        log.warning("a completed Triton stream did not end within %.0f s; cancelling it", timeout)
        call.cancel()
    except asyncio.CancelledError:
        call.cancel()
        raise
    except Exception as exc:  # the request is complete; how its RPC ends does not matter
        log.debug("ending a completed Triton stream: %s", exc)
