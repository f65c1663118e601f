"""The gateway over the real `tts` model: the shared session fixtures' Triton server (tiny base,
sqlite registry) behind a real gateway on loopback."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import soundfile as sf

from gateway.config import GatewaySettings
from gateway.proto.gen import tts_pb2, tts_pb2_grpc
from gateway.testing.harness import ThreadedGateway
from gateway.testing.stack import make_keys
from gateway.watermark import detect

TEXT = "Hello from the real model, through the gateway."


@pytest.fixture(scope="module")
def real(
    triton_server: Any, voice_registry: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("gateway-real")
    voice = voice_registry.add_voice("gwvoice", seed=11)
    keys = make_keys(root / "api-keys", {"test": ("test", {}), "other": ("other", {})})
    settings = GatewaySettings.from_env(
        triton_urls=[f"127.0.0.1:{triton_server.grpc_port}"],
        mlflow_uri=voice_registry.uri,
        api_keys_file=keys.path,
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        feed_interval_s=1.0,
        log_level="warning",
    )
    gw = ThreadedGateway(settings).start()
    try:
        deadline = time.monotonic() + 60
        while not gw.server.gateway.readiness()[0]:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield {"gw": gw, "keys": keys, "voice": voice, "registry": voice_registry}
    finally:
        gw.stop()


def test_real_model_same_audio_over_http_and_grpc_and_watermarked(real: dict[str, Any]) -> None:
    gw, keys = real["gw"], real["keys"]
    rid = "a1b2c3d4e5f6"
    r = httpx.post(
        gw.http + "/v1/tts",
        json={"text": TEXT, "voice": "gwvoice", "params": {"seed": 77, "max_new_tokens": 150}},
        headers={"Authorization": f"Bearer {keys['test']}", "X-Request-Id": rid},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-voice"] == "test.gwvoice" and r.headers["x-voice-version"] == str(
        real["voice"].version
    )
    stub = tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(gw.grpc))
    md = [("authorization", f"Bearer {keys['test']}"), ("x-request-id", rid)]
    reply = stub.Synthesize(
        tts_pb2.SynthesizeRequest(
            text=TEXT, voice="gwvoice", params=tts_pb2.SamplingParams(seed=77, max_new_tokens=150)
        ),
        metadata=md,
        timeout=300,
    )
    http_audio, sr = sf.read(io.BytesIO(r.content), dtype="int16")
    grpc_audio, _ = sf.read(io.BytesIO(reply.audio), dtype="int16")
    np.testing.assert_array_equal(http_audio, grpc_audio)
    found = detect(http_audio.astype(np.float32) / 32767, sr)
    if http_audio.size / sr >= 1.0:  # the payload needs ~0.8 s of non-silent audio
        assert found.found and found.payload is not None and found.payload.request_id_hex == rid
    chunks = list(
        stub.SynthesizeStream(
            tts_pb2.SynthesizeRequest(
                text=TEXT, voice="gwvoice", params=tts_pb2.SamplingParams(seed=77, max_new_tokens=150)
            ),
            metadata=md,
            timeout=300,
        )
    )
    assert chunks[0].info.voice == "test.gwvoice" and chunks[0].info.seed == 77
    assert sum(len(c.audio) for c in chunks) > 0
    # another tenant may not use it
    with pytest.raises(grpc.RpcError) as err:
        stub.Synthesize(
            tts_pb2.SynthesizeRequest(text=TEXT, voice="test.gwvoice"),
            metadata=[("authorization", f"Bearer {keys['other']}")],
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
