"""End to end: the real gateway (HTTP + gRPC on loopback) over the real `tts` model on a real
Triton server and a real MLflow server (`gateway.testing.stack.GatewayStack`).

The model serves a tiny random base (`BaseModel.random(BaseModelConfig.tiny())`, the session's
`tiny_base`) with real voices: random LoRA adapters over every target the serving runtime holds,
with a real voice prompt, registered and promoted through `AdapterRegistry`. Nothing is stood in:
model-side failures, version changes and cancellations are observed on the real model (its
`control: stats` reply and its `tritone_tts_*` metrics). One stack for the module; texts are
short and `max_new_tokens` small so that the suite stays quick on two CPU cores.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import soundfile as sf

from gateway.proto.gen import tts_pb2, tts_pb2_grpc
from gateway.testing.stack import GatewayStack
from gateway.triton_client import TritonEndpoint, TritonRequest
from gateway.watermark import detect
from tritone.serving.client import tts_inputs

FEED_INTERVAL = 1.0
TEXT = "Hello from tritone, this is a test of the gateway."
SHORT = "Hello there."
REF_TEXT = "A reference sentence."
LONG = "This sentence keeps the stream busy for a while. " * 8
FAST: dict[str, Any] = {"max_new_tokens": 40}  # tokens per text segment (25 a second)
TENANTS: dict[str, tuple[str, dict[str, object]]] = {
    "acme": ("acme", {"zero_shot": True}),
    "beta": ("beta", {}),
    "gamma": ("gamma", {"disclosure": True}),
    "tight": ("tight", {"max_concurrent": 1, "rate_per_s": 0.2, "burst": 2}),
}
VOICES = [("acme", "alice", 1), ("beta", "bob", 2), ("public", "demo", 3), ("acme", "doomed", 4)]
SEAM_SNR_DB = 25.0  # streamed vs offline audio, docs/SERVING.md


class Stack(GatewayStack):
    def http(self, key: str | None = "acme") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.gw.http, headers=headers, timeout=120)

    def stub(self) -> tts_pb2_grpc.TextToSpeechStub:
        return tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(self.gw.grpc))

    def md(self, key: str = "acme", rid: str | None = None) -> list[tuple[str, str]]:
        out = [("authorization", f"Bearer {self.keys[key]}")]
        if rid:
            out.append(("x-request-id", rid))
        return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_base: Any, reference_voice: Any) -> Iterator[Stack]:
    with Stack.running(
        tmp_path_factory.mktemp("gateway-e2e"),
        base=tiny_base.model,
        base_dir=tiny_base.path,
        prompt=reference_voice,
        tenants=TENANTS,
        voices=VOICES,
        feed_interval_s=FEED_INTERVAL,
        health_interval_s=0.5,
        shutdown_grace_s=5.0,
    ) as s:
        assert isinstance(s, Stack)
        yield s


def _pcm(wav: bytes) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(wav), dtype="int16")
    return np.asarray(audio)


def _error(resp: httpx.Response) -> tuple[str, str]:
    body = resp.json()["error"]
    return body["code"], body["message"]


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    ref, oth = reference.astype(np.float64), other.astype(np.float64)
    return float(10 * np.log10(np.mean(ref**2) / max(np.mean((oth - ref) ** 2), 1e-20)))


def _healthy(stack: Stack) -> None:
    r = stack.http().post("/v1/tts", json={"text": "Still fine.", "voice": "demo", "params": FAST})
    assert r.status_code == 200, r.text


def _wait_for(predicate: Any, timeout: float, what: str = "condition") -> Any:
    t0 = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.1)


def _idle(stack: Stack, timeout: float = 30.0, **more_than: int) -> dict[str, Any]:
    """Wait until the model has nothing in flight (and counters passed `more_than`); its stats."""

    def check() -> dict[str, Any] | None:
        s = stack.triton_stats()
        done = s["jobs"] == 0 and s["active_rows"] == 0 and all(s[k] > v for k, v in more_than.items())
        return s if done else None

    return dict(_wait_for(check, timeout, f"the model to be idle ({more_than})"))


def _metric(text: str, name: str) -> float:
    found = re.search(rf'^{name}\{{model="tts",version="1"\}} (\S+)$', text, re.M)
    assert found, f"{name} not on Triton's metrics port"
    return float(found.group(1))


# -- the same audio over both APIs -----------------------------------------------------------------


def test_http_and_grpc_give_the_same_audio(stack: Stack) -> None:
    rid = "0123456789ab"
    params = {"seed": 1234, "temperature": 0.7, "top_k": 10, **FAST}
    r = stack.http().post(
        "/v1/tts", json={"text": TEXT, "voice": "alice", "params": params}, headers={"X-Request-Id": rid}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["x-voice"] == "acme.alice" and r.headers["x-seed"] == "1234"
    grpc_params = tts_pb2.SamplingParams(seed=1234, temperature=0.7, top_k=10, **FAST)
    reply = stack.stub().Synthesize(
        tts_pb2.SynthesizeRequest(text=TEXT, voice="alice", params=grpc_params),
        metadata=stack.md(rid=rid),
        timeout=120,
    )
    assert reply.request_id == rid and reply.seed == 1234 and reply.voice == "acme.alice"
    assert reply.format == tts_pb2.AUDIO_FORMAT_WAV and reply.sample_rate == 32000
    http_pcm, grpc_pcm = _pcm(r.content), _pcm(reply.audio)
    assert http_pcm.size > 0.5 * reply.sample_rate
    np.testing.assert_array_equal(http_pcm, grpc_pcm)  # same request, seed and id: the same samples

    # the same over the streaming APIs: both streams are the same PCM...
    rs = stack.http().post(
        "/v1/tts",
        json={"text": TEXT, "voice": "alice", "params": params, "stream": True},
        headers={"X-Request-Id": rid},
    )
    assert rs.status_code == 200 and rs.headers["content-type"].startswith("audio/L16")
    chunks = list(
        stack.stub().SynthesizeStream(
            tts_pb2.SynthesizeRequest(text=TEXT, voice="alice", params=grpc_params),
            metadata=stack.md(rid=rid),
            timeout=120,
        )
    )
    assert chunks[0].info.sample_rate == reply.sample_rate and chunks[0].info.seed == 1234
    assert chunks[0].info.request_id == rid and chunks[0].info.voice_version == int(
        r.headers["x-voice-version"]
    )
    assert len(chunks) > 2  # the model streamed several chunks
    grpc_stream = np.frombuffer(b"".join(c.audio for c in chunks), "<i2")
    np.testing.assert_array_equal(np.frombuffer(rs.content, "<i2"), grpc_stream)
    # ...and, concatenated, the unary audio up to the crossfaded seams (docs/SERVING.md)
    assert grpc_stream.size == grpc_pcm.size
    assert _snr_db(grpc_pcm, grpc_stream) > SEAM_SNR_DB


def test_client_generated_from_the_proto_alone(stack: Stack, tmp_path: Path) -> None:
    from grpc_tools import protoc

    proto_root = Path(__file__).resolve().parent.parent / "gateway" / "proto"
    include = Path(protoc.__file__).resolve().parent / "_proto"
    assert (
        protoc.main(
            [
                "protoc",
                f"-I{proto_root}",
                f"-I{include}",
                f"--python_out={tmp_path}",
                f"--grpc_python_out={tmp_path}",
                "tritone/v1/tts.proto",
            ]
        )
        == 0
    )
    script = tmp_path / "client.py"
    script.write_text(
        """
import sys, grpc
from tritone.v1 import tts_pb2, tts_pb2_grpc
target, key = sys.argv[1], sys.argv[2]
stub = tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(target))
md = [("authorization", "Bearer " + key)]
params = tts_pb2.SamplingParams(max_new_tokens=40)
voices = stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md, timeout=30)
r = stub.Synthesize(tts_pb2.SynthesizeRequest(text="Plain client.", voice="demo", params=params), metadata=md, timeout=120)
assert r.audio[:4] == b"RIFF", r.audio[:16]
n = 0
request = tts_pb2.SynthesizeRequest(text="Plain client, streaming.", voice="demo", params=params)
for i, m in enumerate(stub.SynthesizeStream(request, metadata=md, timeout=120)):
    if i == 0:
        assert m.info.sample_rate > 0
    n += len(m.audio)
print(len(voices.voices), len(r.audio), n)
"""
    )
    out = subprocess.run(  # from the generated folder, so only its modules are importable as tritone.v1
        [sys.executable, str(script), stack.gw.grpc, stack.keys["acme"]],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    n_voices, n_wav, n_pcm = map(int, out.stdout.split())
    assert n_voices >= 2 and n_wav > 1000 and n_pcm > 1000


# -- tenancy ----------------------------------------------------------------------------------------


def test_tenants_see_and_use_only_their_own_and_public_voices(stack: Stack) -> None:
    names = {v["name"] for v in stack.http("acme").get("/v1/voices").json()["voices"]}
    assert "acme.alice" in names and "public.demo" in names and "beta.bob" not in names
    r = stack.http("acme").get("/v1/voices", params={"tenant": "beta"})
    assert r.status_code == 403 and _error(r)[0] == "PERMISSION_DENIED"
    r = stack.http("acme").post("/v1/tts", json={"text": SHORT, "voice": "beta.bob"})
    assert r.status_code == 403 and "another tenant" in _error(r)[1]
    r = stack.http("beta").post("/v1/tts", json={"text": SHORT, "voice": "alice"})  # beta has no "alice"
    assert r.status_code == 404
    r = stack.http("beta").post("/v1/tts", json={"text": SHORT, "voice": "bob", "params": FAST})
    assert r.status_code == 200 and r.headers["x-voice"] == "beta.bob"
    r = stack.http("beta").post("/v1/tts", json={"text": SHORT, "voice": "demo", "params": FAST})
    assert r.status_code == 200 and r.headers["x-voice"] == "public.demo"
    stub = stack.stub()
    with pytest.raises(grpc.RpcError) as err:
        stub.ListVoices(tts_pb2.ListVoicesRequest(tenant="beta"), metadata=stack.md("acme"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        stub.Synthesize(
            tts_pb2.SynthesizeRequest(text=SHORT, voice="beta.bob"), metadata=stack.md("acme"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # no key, bad key
    r = stack.http(None).post("/v1/tts", json={"text": SHORT, "voice": "demo"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert stack.http(None).get("/v1/voices").status_code == 401
    r = httpx.post(
        stack.gw.http + "/v1/tts",
        json={"text": SHORT, "voice": "demo"},
        headers={"Authorization": "Bearer tt_nope_x"},
    )
    assert r.status_code == 401 and _error(r) == ("UNAUTHENTICATED", "invalid API key")
    with pytest.raises(grpc.RpcError) as err:
        stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- bad input ----------------------------------------------------------------------------------------


def _wav(seconds: float, sr: int = 32000, amp: float = 0.3, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    audio = amp * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), sr, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    return buf.getvalue()


def _ref(audio: bytes, consent: str = "consent-0001", text: str = REF_TEXT) -> dict[str, str]:
    return {
        "audio_base64": base64.b64encode(audio).decode(),
        "text": text,
        "lang": "en",
        "consent_id": consent,
    }


BAD_INPUTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty text", {"text": "   ", "voice": "demo"}, 400, "text is empty"),
    ("oversize text", {"text": "word " * 300, "voice": "demo"}, 400, "the limit is 1000"),
    ("unsupported script", {"text": "Привет мир", "voice": "demo"}, 400, "cannot be spoken"),
    ("emoji only", {"text": "🎉🎉", "voice": "demo"}, 400, "nothing to speak"),
    ("unsupported language", {"text": TEXT, "lang": "fr", "voice": "demo"}, 400, "unsupported language"),
    ("unknown voice", {"text": TEXT, "voice": "nobody"}, 404, "no voice"),
    ("unknown version", {"text": TEXT, "voice": "alice/99"}, 404, "no version 99"),
    ("unknown alias", {"text": TEXT, "voice": "alice@nightly"}, 404, "no 'nightly' version"),
    ("path traversal", {"text": TEXT, "voice": "../../etc/passwd"}, 400, "invalid voice reference"),
    ("path traversal 2", {"text": TEXT, "voice": "acme/../../x"}, 400, "invalid"),
    ("no voice", {"text": TEXT}, 400, "voice is required"),
    ("top_k zero", {"text": TEXT, "voice": "demo", "params": {"top_k": 0}}, 400, "top_k must be"),
    ("top_p too big", {"text": TEXT, "voice": "demo", "params": {"top_p": 1.5}}, 400, "top_p must be"),
    (
        "temperature negative",
        {"text": TEXT, "voice": "demo", "params": {"temperature": -1}},
        400,
        "temperature must be",
    ),
    ("speed", {"text": TEXT, "voice": "demo", "params": {"speed": 10}}, 400, "speed must be"),
    ("seed", {"text": TEXT, "voice": "demo", "params": {"seed": -1}}, 400, "seed must be"),
    ("split", {"text": TEXT, "voice": "demo", "params": {"split": "cut9"}}, 400, "split must be one of"),
    ("param type", {"text": TEXT, "voice": "demo", "params": {"top_k": "many"}}, 422, "top_k"),
    ("unknown param", {"text": TEXT, "voice": "demo", "params": {"beam": 3}}, 422, "beam"),
    ("stream wav", {"text": TEXT, "voice": "demo", "stream": True, "format": "wav"}, 400, "raw PCM"),
    ("ref corrupt", {"text": TEXT, "reference": _ref(b"RIFF\x00\x00garbage" * 50)}, 400, "cannot decode"),
    (
        "ref wrong format",
        {"text": TEXT, "reference": _ref(b"hello, I am a text file, not audio" * 30)},
        400,
        "cannot decode",
    ),
    ("ref not base64", {"text": TEXT, "reference": {**_ref(b""), "audio_base64": "***"}}, 400, "base64"),
    ("ref empty", {"text": TEXT, "reference": _ref(b"")}, 400, "reference audio is empty"),
    ("ref silent", {"text": TEXT, "reference": _ref(_wav(5, amp=0.0))}, 400, "silent"),
    ("ref too short", {"text": TEXT, "reference": _ref(_wav(1.0))}, 400, "3-10 s long"),
    ("ref too long", {"text": TEXT, "reference": _ref(_wav(20.0))}, 400, "3-10 s long"),
    ("ref low rate", {"text": TEXT, "reference": _ref(_wav(5.0, sr=8000))}, 400, "at least 16000 Hz"),
    ("ref no consent", {"text": TEXT, "reference": _ref(_wav(5.0), consent="")}, 400, "consent record id"),
    (
        "ref bad consent",
        {"text": TEXT, "reference": _ref(_wav(5.0), consent="../x")},
        400,
        "invalid consent record id",
    ),
    ("ref and voice", {"text": TEXT, "voice": "demo", "reference": _ref(_wav(5.0))}, 400, "not both"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_http(stack: Stack, case: str, body: dict[str, Any], status: int, message: str) -> None:
    r = stack.http("acme").post("/v1/tts", json=body)
    assert r.status_code == status, (case, r.text)
    _code, text = _error(r)
    assert message in text, (case, text)
    assert r.json()["error"]["request_id"] or status == 422


def test_bad_input_transport_level(stack: Stack) -> None:
    c = stack.http("acme")
    r = c.post("/v1/tts", content=b'{"text": "unterminated', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and _error(r) == ("INVALID_ARGUMENT", "request body is not valid JSON")
    r = c.post("/v1/tts", content=b"x" * (9 * 1024 * 1024), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and _error(r)[0] == "RESOURCE_EXHAUSTED"
    big = json.dumps(
        {"text": TEXT, "reference": {"audio_base64": "A" * (9 * 1024 * 1024), "text": "x", "consent_id": "c"}}
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        data = big.encode()
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    r = c.post("/v1/tts", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = c.post(
        "/v1/tts", json={"text": TEXT, "voice": "demo"}, headers={"X-Request-Id": "bad id with spaces"}
    )
    assert r.status_code == 400
    r = c.post("/v1/tts", json={"text": TEXT, "voice": "demo"}, headers={"X-Request-Timeout": "soon"})
    assert r.status_code == 400
    _healthy(stack)


def test_bad_input_grpc(stack: Stack) -> None:
    stub = stack.stub()
    cases: list[tuple[tts_pb2.SynthesizeRequest, grpc.StatusCode, str]] = [
        (tts_pb2.SynthesizeRequest(text="", voice="demo"), grpc.StatusCode.INVALID_ARGUMENT, "text is empty"),
        (
            tts_pb2.SynthesizeRequest(text="a" * 1001, voice="demo"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "limit is 1000",
        ),
        (
            tts_pb2.SynthesizeRequest(text="Привет", voice="demo"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "cannot be spoken",
        ),
        (tts_pb2.SynthesizeRequest(text=TEXT, voice="nobody"), grpc.StatusCode.NOT_FOUND, "no voice"),
        (
            tts_pb2.SynthesizeRequest(text=TEXT, voice="../../etc/passwd"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid voice reference",
        ),
        (
            tts_pb2.SynthesizeRequest(text=TEXT, voice="demo", params=tts_pb2.SamplingParams(top_p=0.0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "top_p",
        ),
        (
            tts_pb2.SynthesizeRequest(text=TEXT, voice="demo", params=tts_pb2.SamplingParams(seed=2**63)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "seed",
        ),
        (
            tts_pb2.SynthesizeRequest(
                text=TEXT, reference=tts_pb2.ReferenceAudio(audio=b"garbage" * 100, text="x", consent_id="c1")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "cannot decode",
        ),
        (
            tts_pb2.SynthesizeRequest(
                text=TEXT, reference=tts_pb2.ReferenceAudio(audio=_wav(1.0), text="x", consent_id="c1")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "3-10 s",
        ),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Synthesize(request, metadata=stack.md(), timeout=60)
        assert err.value.code() == code, (request, err.value.details())
        assert message in (err.value.details() or ""), (message, err.value.details())
        assert dict(err.value.trailing_metadata() or ()).get("x-request-id")
    with pytest.raises(grpc.RpcError) as err:  # a WAV cannot be streamed
        list(
            stub.SynthesizeStream(
                tts_pb2.SynthesizeRequest(text=TEXT, voice="demo", format=tts_pb2.AUDIO_FORMAT_WAV),
                metadata=stack.md(),
                timeout=30,
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # malformed protobuf bytes
    channel = grpc.insecure_channel(stack.gw.grpc)
    raw = channel.unary_unary(
        "/tritone.v1.TextToSpeech/Synthesize", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff\x0f garbage", metadata=stack.md(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in (err.value.details() or "")
    # oversize message
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\x0a" + b"\x80\x80\x80\x05" + b"x" * (10 * 1024 * 1024), metadata=stack.md(), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _healthy(stack)


# -- model-side failures -------------------------------------------------------------------------------


def test_a_corrupted_adapter_fails_that_request_only(stack: Stack) -> None:
    """The model refuses a voice whose stored adapter fails verification (`adapter refused`):
    INTERNAL for that request, with its request id; requests beside it are served and the
    replica stays in service."""
    broken = stack.add_version("acme", "broken", seed=5)
    tensors = stack.artifact_dir(broken) / "adapter.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-8:] = bytes(8)  # the tail of the LoRA tensors: the file's sha256 no longer matches
    tensors.write_bytes(bytes(data))
    before = stack.triton_stats()
    results: dict[str, Any] = {}

    def good() -> None:
        results["good"] = stack.http().post(
            "/v1/tts", json={"text": TEXT, "voice": "alice", "params": {"seed": 3, **FAST}}
        )

    beside = threading.Thread(target=good)
    beside.start()
    with pytest.raises(grpc.RpcError) as err:
        stack.stub().Synthesize(
            tts_pb2.SynthesizeRequest(text=SHORT, voice="broken", params=tts_pb2.SamplingParams(**FAST)),
            metadata=stack.md(rid="broken000001"),
            timeout=120,
        )
    assert err.value.code() == grpc.StatusCode.INTERNAL, err.value.details()
    assert "adapter was refused" in (err.value.details() or "")
    assert dict(err.value.trailing_metadata() or ()).get("x-request-id") == "broken000001"
    r = stack.http().post("/v1/tts", json={"text": SHORT, "voice": "broken", "params": FAST})
    assert r.status_code == 500 and _error(r)[0] == "INTERNAL" and r.json()["error"]["request_id"]
    beside.join(120)
    assert results["good"].status_code == 200, results["good"].text
    after = _idle(stack)
    assert after["bank_load_failures"] > before["bank_load_failures"]
    assert stack.http(None).get("/readyz").status_code == 200  # the replica was not taken out
    _healthy(stack)


# -- zero-shot, disclosure, watermark, limits ------------------------------------------------------------


def test_zero_shot_needs_permission_and_consent(stack: Stack) -> None:
    from tritone.audio import decode_audio

    wav = _wav(5.0)
    body = {"text": SHORT, "reference": _ref(wav), "params": {"seed": 9, **FAST}}
    r = stack.http("beta").post("/v1/tts", json=body)
    assert r.status_code == 403 and "zero-shot cloning is not enabled" in _error(r)[1]
    r = stack.http("acme").post("/v1/tts", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-voice"] == "" and r.headers["x-voice-version"] == "0"
    # the model cloned the reference the gateway decoded: the same audio as asking Triton directly
    # (up to the watermark and 16-bit rounding)
    ref, sr = decode_audio(wav)
    direct = stack.tts().one(
        tts_inputs(
            SHORT,
            voice="",
            params={"seed": 9, "stream": False, **FAST},
            ref_audio=ref,
            ref_sample_rate=sr,
            ref_text=REF_TEXT,
        )
    )
    assert direct.error is None, direct.error
    got = _pcm(r.content).astype(np.float32) / 32767
    assert got.size == direct.audio.size
    assert _snr_db(direct.audio, got) > 25.0


def test_every_output_is_watermarked_and_the_cli_recovers_it(stack: Stack, tmp_path: Path) -> None:
    body = {"text": TEXT * 2, "voice": "alice", "params": {"seed": 21, **FAST}}
    r = stack.http("acme").post("/v1/tts", json=body)
    assert r.status_code == 200
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert audio.size > 1.5 * sr  # a copy of the payload needs ~0.8 s of non-silent audio
    found = detect(audio, sr)
    assert found.found and found.payload is not None
    assert found.payload.request_id_hex == r.headers["x-request-id"]
    path = tmp_path / "out.wav"
    path.write_bytes(r.content)
    cli = [
        sys.executable,
        "-c",
        "import sys; from gateway.cli import add_commands; import argparse; p=argparse.ArgumentParser(); s=p.add_subparsers(); add_commands(s); a=p.parse_args(sys.argv[1:]); sys.exit(a.func(a))",
    ]
    out = subprocess.run(
        [*cli, "watermark", "detect", str(path), "--json", "--mlflow-uri", stack.uri, "--api-keys-file", str(stack.keys.path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        info["request_id"] == r.headers["x-request-id"]
        and info["tenant"] == ["acme"]
        and info["voice"] == ["acme.alice"]
    )
    # streamed output carries it too
    rs = stack.http("acme").post("/v1/tts", json={**body, "stream": True})
    pcm = np.frombuffer(rs.content, "<i2").astype(np.float32) / 32767
    d = detect(pcm, int(rs.headers["x-sample-rate"]))
    assert d.found and d.payload is not None and d.payload.request_id_hex == rs.headers["x-request-id"]


def test_disclosure_is_prepended_for_tenants_that_require_it(stack: Stack) -> None:
    from gateway.disclosure import disclosure_audio

    body = {"text": SHORT, "voice": "demo", "params": {"seed": 5, **FAST}}
    plain = _pcm(stack.http("acme").post("/v1/tts", json=body).content)
    r = stack.http("gamma").post("/v1/tts", json=body)
    assert r.status_code == 200
    told = _pcm(r.content)
    extra = disclosure_audio(int(r.headers["x-sample-rate"])).size
    assert told.size == plain.size + extra
    assert np.abs(told[: extra // 2].astype(np.float32)).max() > 1000  # the notice is audible
    assert _snr_db(plain, told[extra:]) > 25.0  # then the same synthesis (its own watermark)


def test_rate_limits_and_concurrency_caps(stack: Stack) -> None:
    c = stack.http("tight")
    started, results = threading.Event(), {}

    def busy() -> None:  # a stream in flight: the tenant's one concurrent request
        with c.stream(
            "POST", "/v1/tts", json={"text": LONG, "voice": "demo", "stream": True, "params": FAST}
        ) as r:
            results["status"] = r.status_code
            started.set()
            results["bytes"] = sum(len(b) for b in r.iter_bytes())

    t = threading.Thread(target=busy)
    t.start()
    assert started.wait(120), "the stream did not start"
    r = c.post("/v1/tts", json={"text": SHORT, "voice": "demo", "params": FAST})
    t.join(120)
    assert results["status"] == 200 and results["bytes"] > 0
    assert r.status_code == 429 and "in flight" in _error(r)[1] and int(r.headers["retry-after"]) >= 1
    # the refused request took no token; the bucket (2, refilled at 0.2/s) runs dry on the next ones
    statuses = []
    for _ in range(4):
        statuses.append(c.post("/v1/tts", json={"text": SHORT, "voice": "demo", "params": FAST}))
        if statuses[-1].status_code != 200:
            break
    r = statuses[-1]
    assert r.status_code == 429 and "rate limit" in _error(r)[1], [s.status_code for s in statuses]
    with pytest.raises(grpc.RpcError) as err:
        stack.stub().Synthesize(
            tts_pb2.SynthesizeRequest(text=SHORT, voice="demo"), metadata=stack.md("tight"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata() or ()).get("retry-after")


# -- cancellation -------------------------------------------------------------------------------------------


def test_client_disconnect_cancels_the_triton_request(stack: Stack) -> None:
    server = stack.gw.server
    assert server is not None
    before = _idle(stack)
    metrics_before = _metric(stack.triton_metrics(), "tritone_tts_cancelled_total")
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        body = json.dumps({"text": LONG, "voice": "demo", "stream": True, "params": FAST}).encode()
        head = (
            f"POST /v1/tts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.keys['acme']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Request-Id: cancelme0001\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        sock.settimeout(120)
        got = b""
        while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 1000:  # headers + audio
            data = sock.recv(65536)
            assert data, got[:200]
            got += data
        assert got.startswith(b"HTTP/1.1 200 OK")
        assert stack.triton_stats()["jobs"] == 1  # the model is still at it
    _wait_for(lambda: server.gateway.inflight == 0, 10, "the gateway to let go")
    # the model saw the cancellation: the request left its batch and freed its rows
    after = _idle(stack, cancelled=before["cancelled"])
    assert after["completed"] == before["completed"]
    _wait_for(
        lambda: _metric(stack.triton_metrics(), "tritone_tts_cancelled_total") > metrics_before,
        10,
        "tritone_tts_cancelled_total to count it",
    )
    assert _metric(stack.triton_metrics(), "tritone_tts_active_rows") == 0
    _healthy(stack)


def test_completed_requests_are_not_cancelled(stack: Stack) -> None:
    """The gateway's Triton client cancels only requests that have not had their final response
    (cancelling a completed one can leave Triton 2.51 holding the model at shutdown): the RPC
    of a completed or refused request ends OK, one closed mid-stream is cancelled."""

    async def run() -> list[grpc.StatusCode]:
        endpoint = TritonEndpoint(stack.triton.grpc_url)
        calls: list[Any] = []
        open_call = endpoint.stub.ModelStreamInfer

        def capture(*args: Any, **kwargs: Any) -> Any:
            calls.append(open_call(*args, **kwargs))
            return calls[-1]

        endpoint.stub.ModelStreamInfer = capture

        def request(rid: str, stream: bool, version: int | None = None) -> TritonRequest:
            return TritonRequest(
                rid, SHORT if not stream else LONG, "en", "public.demo", version or demo_version,
                {"seed": 1, "stream": stream, **FAST},
            )  # fmt: skip

        try:
            for rid, stream in (("whole", False), ("streamed", True)):
                chunks = [chunk async for chunk in endpoint.stream(request(rid, stream), 120)]
                assert chunks[-1].final and sum(c.audio.size for c in chunks) > 0
            with pytest.raises(Exception, match="unknown voice"):  # refused: one final error response
                [chunk async for chunk in endpoint.stream(request("refused", False, 999), 120)]
            events = endpoint.stream(request("left", True), 120)
            first = await events.__anext__()
            assert not first.final
            await events.aclose()  # the caller went away mid-stream
            return [await asyncio.wait_for(call.code(), 30) for call in calls]
        finally:
            await endpoint.close()

    demo_version = stack.registry.show("public.demo").summary.aliases["production"]
    before = _idle(stack)
    codes = asyncio.run(run())
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.CANCELLED]
    after = _idle(stack, cancelled=before["cancelled"])
    assert after["cancelled"] == before["cancelled"] + 1


def test_grpc_deadline_is_honoured(stack: Stack) -> None:
    before = _idle(stack)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(
            stack.stub().SynthesizeStream(
                tts_pb2.SynthesizeRequest(text=LONG, voice="demo", params=tts_pb2.SamplingParams(**FAST)),
                metadata=stack.md(),
                timeout=0.5,
            )
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    after = _idle(stack)  # the deadline reached Triton: the request does not run on
    assert after["completed"] == before["completed"]
    _healthy(stack)


def test_health_readiness_metrics_reflection_and_openapi(stack: Stack) -> None:
    c = stack.http(None)
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["triton"] is True
    metrics = c.get("/metrics").text
    for name in (
        "tritone_gateway_requests_total",
        "tritone_gateway_request_duration_seconds_bucket",
        "tritone_gateway_time_to_first_audio_seconds_bucket",
        "tritone_gateway_audio_seconds_total",
        'tritone_gateway_voice_resolutions_total{result="hit"}',
        'tritone_gateway_voice_resolutions_total{result="miss"}',
    ):
        assert name in metrics, name
    assert 'route="/v1/tts",status="200"' in metrics and 'status="400"' in metrics
    spec = c.get("/openapi.json").json()
    assert "/v1/tts" in spec["paths"] and "/v1/voices" in spec["paths"]
    assert spec["components"]["schemas"]["TTSRequestModel"]["examples"][0]["voice"] == "demo"
    page = c.get("/")
    assert (page.status_code == 200 and "<audio" in page.text) or "AudioContext" in page.text
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(stack.gw.grpc)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tritone.v1.TextToSpeech"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    )
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"tritone.v1.TextToSpeech", "grpc.health.v1.Health"} <= services


# -- registry changes -------------------------------------------------------------------------------------


POLL_EVERY_S = 0.2  # 5 requests/s: under the tenant's rate limit, so polling never starves the stack


def _poll(stack: Stack, c: httpx.Client, body: dict[str, Any], done: Any, timeout: float) -> float:
    """Send `body` until `done(response)`; seconds from the start until that request was sent.

    Paced below the tenant's rate limit: a tight loop would drain the module's shared token
    bucket (429s for the tests after it) and spin on instant 429s, starving the gateway's
    change-feed thread it is waiting for."""
    t0 = time.monotonic()
    seen: list[str] = []  # what the gateway answered, for the failure message
    while time.monotonic() - t0 < timeout:
        sent = time.monotonic() - t0
        r = c.post("/v1/tts", json=body)
        assert r.status_code != 429, f"polling hit the rate limit: {r.text}"
        if done(r):
            return sent
        detail = "" if r.status_code == 200 else r.text[:120]
        seen.append(f"{sent:.1f}s {r.status_code} version={r.headers.get('x-voice-version')} {detail}")
        time.sleep(max(0.0, POLL_EVERY_S - (time.monotonic() - t0 - sent)))
    assert stack.gateway is not None and stack.gateway.server is not None
    feed = stack.gateway.server.gateway.resolver.stats
    raise AssertionError(
        f"not done within {timeout} s; answers: {seen[:3]} ... {seen[-3:]}; gateway feed: {feed.polls} polls, "
        f"{feed.poll_errors} errors (last: {feed.last_error or 'none'})"
    )


def _version_is(version: int) -> Any:
    return lambda r: r.status_code == 200 and r.headers["x-voice-version"] == str(version)


def test_promotion_and_revocation_take_effect_within_the_interval(stack: Stack) -> None:
    c = stack.http("acme")
    body = {"text": SHORT, "voice": "alice", "params": {"seed": 11, **FAST}}
    same_id = {"X-Request-Id": "promo0000001"}  # the same watermark payload: comparable audio
    first = c.post("/v1/tts", json=body, headers=same_id)
    assert first.status_code == 200
    v_old, old = int(first.headers["x-voice-version"]), _pcm(first.content)
    v_new = stack.add_version("acme", "alice", seed=2).version
    assert v_new != v_old
    poll = {**body, "params": {"seed": 11, "max_new_tokens": 8}}
    assert _poll(stack, c, poll, _version_is(v_new), 3 * FEED_INTERVAL + 10) <= 2 * FEED_INTERVAL + 2.5
    # the new version really is another voice: same text, seed and id, other audio (the same
    # version gives the same samples, below)
    new = _pcm(c.post("/v1/tts", json=body, headers=same_id).content)
    assert new.size != old.size or _snr_db(old, new) < 20.0
    # pinning a version still works, with that version's audio
    pinned = c.post("/v1/tts", json={**body, "voice": f"alice/{v_old}"}, headers=same_id)
    assert pinned.headers["x-voice-version"] == str(v_old)
    np.testing.assert_allclose(_pcm(pinned.content), old, atol=2)
    # rollback
    stack.registry.rollback("acme.alice")
    # no bound claimed here (the two above and below are the interval's): a busy machine gets time
    _poll(stack, c, poll, _version_is(v_old), 3 * FEED_INTERVAL + 60)
    np.testing.assert_allclose(_pcm(c.post("/v1/tts", json=body, headers=same_id).content), old, atol=2)
    # revocation: the gateway refuses it within the interval, and the model evicts it by itself
    doomed = {"text": SHORT, "voice": "doomed", "params": FAST}
    assert c.post("/v1/tts", json=doomed).status_code == 200
    before = stack.triton_stats()
    stack.registry.revoke("acme.doomed")
    took = _poll(stack, c, doomed, lambda r: r.status_code == 404, 3 * FEED_INTERVAL + 10)
    assert took <= 2 * FEED_INTERVAL + 2.5
    r = c.post("/v1/tts", json={"text": SHORT, "voice": "doomed/1"})
    assert r.status_code == 404 and "revoked" in _error(r)[1]
    assert "acme.doomed" not in {v["name"] for v in c.get("/v1/voices").json()["voices"]}
    _wait_for(
        lambda: stack.triton_stats()["bank_revocations"] > before["bank_revocations"], 30, "the model's feed"
    )
    reply = stack.tts().one(tts_inputs(SHORT, voice="acme.doomed", version=1, params=FAST))
    assert reply.error is not None and "revoked" in reply.error


# -- failures (last: they stop servers) ----------------------------------------------------------------------


def test_triton_killed_mid_run_then_back_without_a_gateway_restart(stack: Stack) -> None:
    c = stack.http("acme")
    _healthy(stack)
    # a stream in flight when Triton dies fails UNAVAILABLE (its audio had started: no retry)
    stream = stack.stub().SynthesizeStream(
        tts_pb2.SynthesizeRequest(text=LONG, voice="demo", params=tts_pb2.SamplingParams(**FAST)),
        metadata=stack.md(),
        timeout=120,
    )
    assert next(stream).info.sample_rate == 32000
    stack.kill_triton()
    try:
        with pytest.raises(grpc.RpcError) as err:
            list(stream)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        r = c.post("/v1/tts", json={"text": SHORT, "voice": "demo", "params": FAST})
        assert r.status_code == 503, r.text
        assert _error(r)[0] == "UNAVAILABLE" and int(r.headers["retry-after"]) >= 1
        with pytest.raises(grpc.RpcError) as err:
            stack.stub().Synthesize(
                tts_pb2.SynthesizeRequest(text=SHORT, voice="demo"), metadata=stack.md(), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(err.value.trailing_metadata() or ()).get("retry-after")
        _wait_for(lambda: c.get("/readyz").status_code == 503, 5, "readyz to report it")
    finally:  # the tests after this one need Triton, whatever failed above
        if stack.triton.process is None:
            stack.triton.start()  # same ports; returns once the model is ready
    _wait_for(
        lambda: c.post("/v1/tts", json={"text": SHORT, "voice": "demo", "params": FAST}).status_code == 200,
        15,
        "the gateway to use Triton again",
    )
    assert c.get("/readyz").status_code == 200


def test_registry_down_cached_voices_keep_working(stack: Stack) -> None:
    c = stack.http("acme")
    body = {"text": SHORT, "voice": "alice", "params": FAST}
    assert c.post("/v1/tts", json=body).status_code == 200  # cached by the gateway, resident in the model
    assert stack.mlflow is not None
    stack.mlflow.stop()
    try:
        time.sleep(2 * FEED_INTERVAL)
        r = c.post("/v1/tts", json=body)
        assert r.status_code == 200, r.text
        r = c.post("/v1/tts", json={"text": SHORT, "voice": "never-seen"})
        assert r.status_code in (404, 503)
        assert c.get("/readyz").status_code == 200  # the cache is warm
    finally:
        stack.mlflow.start()


def test_graceful_shutdown_drains_streams(stack: Stack) -> None:
    """A second gateway: a stream in flight when it is told to stop still completes."""
    body = {"text": "Drain me please. " * 6, "voice": "demo", "params": {"seed": 8, **FAST}}
    whole = _pcm(stack.http().post("/v1/tts", json=body).content)
    gw = stack.start_gateway(shutdown_grace_s=20.0)
    try:
        got: dict[str, Any] = {}

        def stream() -> None:
            with httpx.stream("POST", gw.http + "/v1/tts", json={**body, "stream": True},
                              headers={"Authorization": f"Bearer {stack.keys['acme']}"}, timeout=120) as r:  # fmt: skip
                got["status"] = r.status_code
                got["bytes"] = sum(len(b) for b in r.iter_bytes())

        t = threading.Thread(target=stream)
        t.start()
        _wait_for(lambda: gw.server is not None and gw.server.gateway.inflight > 0, 30, "the stream")
        stopper = threading.Thread(target=gw.stop)
        stopper.start()
        t.join(60)
        stopper.join(60)
        assert got.get("status") == 200 and got["bytes"] == 2 * whole.size  # all of it
    finally:
        if gw.thread.is_alive():
            gw.stop()


def test_triton_stops_promptly_after_the_traffic(stack: Stack) -> None:
    """Every request the gateway sent either completed or was cancelled before completing, so
    nothing holds the model: SIGTERM stops Triton well within its exit timeout (30 s here)."""
    _idle(stack)
    t0 = time.monotonic()
    stack.triton.stop()
    assert time.monotonic() - t0 < 15.0
