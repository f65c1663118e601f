"""End to end: the real gateway (HTTP + gRPC on loopback) over a real Triton server and a real
MLflow server. Triton runs the stand-in `tts` model (`gateway.testing.contract_model`), which
takes the real model's config.pbtxt unchanged, unless TRITONE_GATEWAY_TEST_MODEL_REPO names a
built model repository with the real model."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import soundfile as sf

from adapters.registry import AdapterRegistry
from adapters.store import AdapterStore
from adapters.synthetic import demo_consent, make_adapter, make_standin, save_standin
from gateway.config import GatewaySettings
from gateway.proto.gen import tts_pb2, tts_pb2_grpc
from gateway.testing.contract_model import write_repository
from gateway.testing.harness import ThreadedGateway
from gateway.testing.stack import TTS_CONFIG, Keys, MlflowServer, make_keys
from gateway.testing.triton import TritonProcess
from gateway.watermark import detect

FEED_INTERVAL = 1.0
TEXT = "Hello from tritone, this is a test of the gateway."


@dataclass
class Stack:
    root: Path
    mlflow: MlflowServer
    registry: AdapterRegistry
    pin: Any
    keys: Keys
    triton: TritonProcess
    gateway: ThreadedGateway
    contract_log: Path

    def http(self, key: str | None = "acme") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.gateway.http, headers=headers, timeout=60)

    def stub(self) -> tts_pb2_grpc.TextToSpeechStub:
        return tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(self.gateway.grpc))

    def md(self, key: str = "acme", rid: str | None = None) -> list[tuple[str, str]]:
        out = [("authorization", f"Bearer {self.keys[key]}")]
        if rid:
            out.append(("x-request-id", rid))
        return out

    def add_version(self, tenant: str, voice: str, seed: int, promote: bool = True) -> int:
        d = make_adapter(
            self.root / f"ad-{tenant}-{voice}-{seed}",
            make_standin(0),
            self.pin,
            voice=voice,
            tenant=tenant,
            seed=seed,
        )
        info = self.registry.register(d, consent=demo_consent())
        if promote:
            self.registry.promote(f"{tenant}.{voice}", version=info.version)
        return info.version


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gateway-e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITONE_HOME", str(root / "home"))
        mlflow = MlflowServer(root / "mlflow").start()
        triton: TritonProcess | None = None
        gw: ThreadedGateway | None = None
        try:
            registry = AdapterRegistry(mlflow.uri, store=AdapterStore(root / "store"))
            pin = registry.register_base(save_standin(make_standin(0), root / "base"))
            keys = make_keys(
                root / "api-keys",
                {
                    "acme": ("acme", {"zero_shot": True}),
                    "beta": ("beta", {}),
                    "gamma": ("gamma", {"disclosure": True}),
                    "tight": ("tight", {"max_concurrent": 1, "rate_per_s": 0.2, "burst": 2}),
                },
            )
            log = root / "contract.jsonl"
            repo_env = os.environ.get("TRITONE_GATEWAY_TEST_MODEL_REPO")
            repo = Path(repo_env) if repo_env else write_repository(root / "repo", TTS_CONFIG)
            triton = TritonProcess(
                repo, log_file=root / "triton.log", env={"TRITONE_CONTRACT_LOG": str(log)}
            ).start()
            stack = Stack(root, mlflow, registry, pin, keys, triton, None, log)  # type: ignore[arg-type]
            for tenant, voice in [("acme", "alice"), ("beta", "bob"), ("public", "demo"), ("acme", "doomed")]:
                stack.add_version(tenant, voice, seed=1)
            settings = GatewaySettings.from_env(
                triton_urls=[triton.grpc_url],
                mlflow_uri=mlflow.uri,
                api_keys_file=keys.path,
                host="127.0.0.1",
                http_port=0,
                grpc_port=0,
                feed_interval_s=FEED_INTERVAL,
                health_interval_s=0.5,
                log_level="warning",
                shutdown_grace_s=5.0,
            )
            gw = ThreadedGateway(settings).start()
            stack.gateway = gw
            deadline = time.monotonic() + 30
            while not gw.server.gateway.readiness()[0]:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "gateway not ready"
                time.sleep(0.1)
            yield stack
        finally:
            if gw is not None:
                gw.stop()
            if triton is not None:
                triton.stop()
            mlflow.stop()


def _pcm(wav: bytes) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(wav), dtype="int16")
    return audio


def _error(resp: httpx.Response) -> tuple[str, str]:
    body = resp.json()["error"]
    return body["code"], body["message"]


def _healthy(stack: Stack) -> None:
    r = stack.http().post("/v1/tts", json={"text": "Still fine.", "voice": "demo"})
    assert r.status_code == 200, r.text


# -- the same audio over both APIs -----------------------------------------------------------------


def test_http_and_grpc_give_the_same_audio(stack: Stack) -> None:
    rid = "0123456789ab"
    params = {"seed": 1234, "temperature": 0.7, "top_k": 10}
    r = stack.http().post(
        "/v1/tts", json={"text": TEXT, "voice": "alice", "params": params}, headers={"X-Request-Id": rid}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["x-voice"] == "acme.alice" and r.headers["x-seed"] == "1234"
    reply = stack.stub().Synthesize(
        tts_pb2.SynthesizeRequest(
            text=TEXT, voice="alice", params=tts_pb2.SamplingParams(seed=1234, temperature=0.7, top_k=10)
        ),
        metadata=stack.md(rid=rid),
        timeout=60,
    )
    assert reply.request_id == rid and reply.seed == 1234 and reply.voice == "acme.alice"
    assert reply.format == tts_pb2.AUDIO_FORMAT_WAV
    http_pcm, grpc_pcm = _pcm(r.content), _pcm(reply.audio)
    assert http_pcm.size > 0.5 * reply.sample_rate
    np.testing.assert_array_equal(http_pcm, grpc_pcm)

    # the same over the streaming APIs: chunks concatenate to the same PCM
    rs = stack.http().post(
        "/v1/tts",
        json={"text": TEXT, "voice": "alice", "params": params, "stream": True},
        headers={"X-Request-Id": rid},
    )
    assert rs.status_code == 200 and rs.headers["content-type"].startswith("audio/L16")
    chunks = list(
        stack.stub().SynthesizeStream(
            tts_pb2.SynthesizeRequest(
                text=TEXT, voice="alice", params=tts_pb2.SamplingParams(seed=1234, temperature=0.7, top_k=10)
            ),
            metadata=stack.md(rid=rid),
            timeout=60,
        )
    )
    assert chunks[0].info.sample_rate == reply.sample_rate and chunks[0].info.seed == 1234
    assert len(chunks) > 2
    grpc_stream = np.frombuffer(b"".join(c.audio for c in chunks), "<i2")
    np.testing.assert_array_equal(np.frombuffer(rs.content, "<i2"), grpc_stream)
    if not os.environ.get(
        "TRITONE_GATEWAY_TEST_MODEL_REPO"
    ):  # the stand-in streams exactly its offline audio
        np.testing.assert_array_equal(grpc_stream, grpc_pcm)


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
voices = stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=md, timeout=30)
r = stub.Synthesize(tts_pb2.SynthesizeRequest(text="Plain client.", voice="demo"), metadata=md, timeout=60)
assert r.audio[:4] == b"RIFF", r.audio[:16]
n = 0
for i, m in enumerate(stub.SynthesizeStream(tts_pb2.SynthesizeRequest(text="Plain client, streaming.", voice="demo"), metadata=md, timeout=60)):
    if i == 0:
        assert m.info.sample_rate > 0
    n += len(m.audio)
print(len(voices.voices), len(r.audio), n)
"""
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-I", str(script), stack.gateway.grpc, stack.keys["acme"]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    # -I ignores PYTHONPATH: run without it but from the generated folder instead
    if out.returncode != 0 and "No module named 'tritone.v1'" in out.stderr:
        out = subprocess.run(
            [sys.executable, str(script), stack.gateway.grpc, stack.keys["acme"]],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
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
    r = stack.http("acme").post("/v1/tts", json={"text": TEXT, "voice": "beta.bob"})
    assert r.status_code == 403 and "another tenant" in _error(r)[1]
    r = stack.http("beta").post(
        "/v1/tts", json={"text": TEXT, "voice": "alice"}
    )  # beta has no "alice": not acme's
    assert r.status_code == 404
    assert stack.http("beta").post("/v1/tts", json={"text": TEXT, "voice": "bob"}).status_code == 200
    assert (
        stack.http("beta").post("/v1/tts", json={"text": TEXT, "voice": "demo"}).headers["x-voice"]
        == "public.demo"
    )
    stub = stack.stub()
    with pytest.raises(grpc.RpcError) as err:
        stub.ListVoices(tts_pb2.ListVoicesRequest(tenant="beta"), metadata=stack.md("acme"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        stub.Synthesize(
            tts_pb2.SynthesizeRequest(text=TEXT, voice="beta.bob"), metadata=stack.md("acme"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # no key, bad key
    r = stack.http(None).post("/v1/tts", json={"text": TEXT, "voice": "demo"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert stack.http(None).get("/v1/voices").status_code == 401
    r = httpx.post(
        stack.gateway.http + "/v1/tts",
        json={"text": TEXT, "voice": "demo"},
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


def _ref(audio: bytes, consent: str = "consent-0001", text: str = "A reference sentence.") -> dict[str, str]:
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
            stub.Synthesize(request, metadata=stack.md(), timeout=30)
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
    channel = grpc.insecure_channel(stack.gateway.grpc)
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
    # a model-side failure is INTERNAL with the request id, and the server stays healthy
    with pytest.raises(grpc.RpcError) as err:
        stub.Synthesize(
            tts_pb2.SynthesizeRequest(text="please __model_error__ now", voice="demo"),
            metadata=stack.md(),
            timeout=30,
        )
    if not os.environ.get("TRITONE_GATEWAY_TEST_MODEL_REPO"):
        assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    reply = stub.Synthesize(
        tts_pb2.SynthesizeRequest(text=TEXT, voice="demo"), metadata=stack.md(), timeout=30
    )
    assert reply.audio[:4] == b"RIFF"
    _healthy(stack)


# -- zero-shot, disclosure, watermark, limits ------------------------------------------------------------


def test_zero_shot_needs_permission_and_consent(stack: Stack) -> None:
    body = {"text": TEXT, "reference": _ref(_wav(5.0))}
    r = stack.http("beta").post("/v1/tts", json=body)
    assert r.status_code == 403 and "zero-shot cloning is not enabled" in _error(r)[1]
    r = stack.http("acme").post("/v1/tts", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-voice"] == "" and r.headers["x-voice-version"] == "0"
    entries = [json.loads(line) for line in stack.contract_log.read_text().splitlines()]
    mine = [e for e in entries if e["request_id"] == r.headers["x-request-id"]]
    if mine:  # the stand-in logs what Triton received
        assert (
            mine[0]["voice"] == ""
            and mine[0]["ref_sample_rate"] == 32000
            and mine[0]["ref_samples"] == 5 * 32000
        )


def test_every_output_is_watermarked_and_the_cli_recovers_it(stack: Stack, tmp_path: Path) -> None:
    r = stack.http("acme").post("/v1/tts", json={"text": TEXT * 2, "voice": "alice"})
    assert r.status_code == 200
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
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
        [*cli, "watermark", "detect", str(path), "--json", "--mlflow-uri", stack.mlflow.uri, "--api-keys-file", str(stack.keys.path)],
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
    rs = stack.http("acme").post("/v1/tts", json={"text": TEXT * 2, "voice": "alice", "stream": True})
    pcm = np.frombuffer(rs.content, "<i2").astype(np.float32) / 32767
    d = detect(pcm, int(rs.headers["x-sample-rate"]))
    assert d.found and d.payload is not None and d.payload.request_id_hex == rs.headers["x-request-id"]


def test_disclosure_is_prepended_for_tenants_that_require_it(stack: Stack) -> None:
    from gateway.disclosure import disclosure_audio

    body = {"text": TEXT, "voice": "demo", "params": {"seed": 5}}
    plain = _pcm(stack.http("acme").post("/v1/tts", json=body).content)
    r = stack.http("gamma").post("/v1/tts", json=body)
    assert r.status_code == 200
    told = _pcm(r.content)
    extra = disclosure_audio(int(r.headers["x-sample-rate"])).size
    assert told.size == plain.size + extra
    assert np.abs(told[: extra // 2].astype(np.float32)).max() > 1000  # the notice is audible


def test_rate_limits_and_concurrency_caps(stack: Stack) -> None:
    c = stack.http("tight")
    long_text = "This sentence is long enough to keep the stream busy for a while. " * 10
    results: dict[str, httpx.Response] = {}

    def slow() -> None:
        results["slow"] = c.post("/v1/tts", json={"text": long_text, "voice": "demo"})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    r = c.post("/v1/tts", json={"text": TEXT, "voice": "demo"})
    t.join()
    assert results["slow"].status_code == 200
    assert r.status_code == 429 and "in flight" in _error(r)[1] and int(r.headers["retry-after"]) >= 1
    # the refused request took no token; the bucket (2, refilled at 0.2/s) runs dry on the next ones
    statuses = [c.post("/v1/tts", json={"text": TEXT, "voice": "demo"}) for _ in range(2)]
    r = statuses[-1]
    assert r.status_code == 429 and "rate limit" in _error(r)[1], [s.status_code for s in statuses]
    with pytest.raises(grpc.RpcError) as err:
        stack.stub().Synthesize(
            tts_pb2.SynthesizeRequest(text=TEXT, voice="demo"), metadata=stack.md("tight"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata() or ()).get("retry-after")


def test_client_disconnect_cancels_the_triton_request(stack: Stack) -> None:
    if os.environ.get("TRITONE_GATEWAY_TEST_MODEL_REPO"):
        pytest.skip("observed through the stand-in model's log")
    long_text = "A very long text that streams for many seconds before it is done. " * 14
    server = stack.gateway.server
    assert server is not None
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        body = json.dumps({"text": long_text, "voice": "demo", "stream": True}).encode()
        head = (
            f"POST /v1/tts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.keys['acme']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Request-Id: cancelme0001\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        assert b"200 OK" in sock.recv(4096)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.gateway.inflight:
        time.sleep(0.05)
    assert server.gateway.inflight == 0
    # Triton saw the cancellation: the stand-in stopped sending (it logs one line per request start)
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

    channel = grpc.insecure_channel(stack.gateway.grpc)
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


def test_grpc_deadline_is_honoured(stack: Stack) -> None:
    long_text = "A very long text that takes a while. " * 25
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(
            stack.stub().SynthesizeStream(
                tts_pb2.SynthesizeRequest(text=long_text, voice="demo"), metadata=stack.md(), timeout=0.3
            )
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    _healthy(stack)


# -- registry changes -------------------------------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def test_promotion_and_revocation_take_effect_within_the_interval(stack: Stack) -> None:
    c = stack.http("acme")
    first = c.post("/v1/tts", json={"text": TEXT, "voice": "alice"})
    assert first.status_code == 200
    v_old = int(first.headers["x-voice-version"])
    v_new = stack.add_version("acme", "alice", seed=2)
    assert v_new != v_old
    took = _wait_for(
        lambda: (
            c.post("/v1/tts", json={"text": TEXT, "voice": "alice"}).headers.get("x-voice-version")
            == str(v_new)
        ),
        3 * FEED_INTERVAL + 3,
    )
    assert took <= 2 * FEED_INTERVAL + 2.5
    entries = (
        [json.loads(line) for line in stack.contract_log.read_text().splitlines()]
        if stack.contract_log.exists()
        else []
    )
    if entries:
        assert entries[-1]["voice"] == "acme.alice" and entries[-1]["voice_version"] == v_new
    # pinning a version still works; aliases resolve to it
    assert c.post("/v1/tts", json={"text": TEXT, "voice": f"alice/{v_old}"}).headers[
        "x-voice-version"
    ] == str(v_old)
    # rollback
    stack.registry.rollback("acme.alice")
    _wait_for(
        lambda: (
            c.post("/v1/tts", json={"text": TEXT, "voice": "alice"}).headers.get("x-voice-version")
            == str(v_old)
        ),
        3 * FEED_INTERVAL + 3,
    )
    # revocation
    assert c.post("/v1/tts", json={"text": TEXT, "voice": "doomed"}).status_code == 200
    stack.registry.revoke("acme.doomed")
    took = _wait_for(
        lambda: c.post("/v1/tts", json={"text": TEXT, "voice": "doomed"}).status_code == 404,
        3 * FEED_INTERVAL + 3,
    )
    assert took <= 2 * FEED_INTERVAL + 2.5
    r = c.post("/v1/tts", json={"text": TEXT, "voice": "doomed/1"})
    assert r.status_code == 404 and "revoked" in _error(r)[1]
    assert "acme.doomed" not in {v["name"] for v in c.get("/v1/voices").json()["voices"]}


# -- failures (last: they stop servers) ----------------------------------------------------------------------


def test_triton_down_then_back_without_a_gateway_restart(stack: Stack) -> None:
    c = stack.http("acme")
    assert c.post("/v1/tts", json={"text": TEXT, "voice": "demo"}).status_code == 200
    stack.triton.kill()
    r = c.post("/v1/tts", json={"text": TEXT, "voice": "demo"})
    assert r.status_code == 503, r.text
    assert _error(r)[0] == "UNAVAILABLE" and int(r.headers["retry-after"]) >= 1
    with pytest.raises(grpc.RpcError) as err:
        stack.stub().Synthesize(
            tts_pb2.SynthesizeRequest(text=TEXT, voice="demo"), metadata=stack.md(), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(err.value.trailing_metadata() or ()).get("retry-after")
    _wait_for(lambda: c.get("/readyz").status_code == 503, 5)
    stack.triton.start()  # same ports
    _wait_for(lambda: c.post("/v1/tts", json={"text": TEXT, "voice": "demo"}).status_code == 200, 15)
    assert c.get("/readyz").status_code == 200


def test_registry_down_cached_voices_keep_working(stack: Stack) -> None:
    c = stack.http("acme")
    assert c.post("/v1/tts", json={"text": TEXT, "voice": "alice"}).status_code == 200
    stack.mlflow.stop()
    time.sleep(2 * FEED_INTERVAL)
    r = c.post("/v1/tts", json={"text": TEXT, "voice": "alice"})
    assert r.status_code == 200, r.text
    r = c.post("/v1/tts", json={"text": TEXT, "voice": "never-seen"})
    assert r.status_code in (404, 503)
    assert c.get("/readyz").status_code == 200  # the cache is warm


def test_graceful_shutdown_drains_streams(stack: Stack) -> None:
    """A second gateway: a stream in flight when it is told to stop still completes."""
    settings = GatewaySettings.from_env(
        triton_urls=[stack.triton.grpc_url], mlflow_uri=stack.mlflow.uri, api_keys_file=stack.keys.path,
        host="127.0.0.1", http_port=0, grpc_port=0, log_level="warning", shutdown_grace_s=10.0,
    )  # fmt: skip
    gw = ThreadedGateway(settings)
    gw.start()
    try:
        stack.mlflow.start() if stack.mlflow.proc is None or stack.mlflow.proc.poll() is not None else None
        _wait_for(lambda: gw.server is not None and gw.server.gateway.readiness()[0], 30)
        got: dict[str, Any] = {}

        def stream() -> None:
            with httpx.stream("POST", gw.http + "/v1/tts", json={"text": "Drain me please. " * 20, "voice": "demo", "stream": True},
                              headers={"Authorization": f"Bearer {stack.keys['acme']}"}, timeout=30) as r:  # fmt: skip
                got["status"] = r.status_code
                got["bytes"] = sum(len(b) for b in r.iter_bytes())

        t = threading.Thread(target=stream)
        t.start()
        _wait_for(lambda: gw.server is not None and gw.server.gateway.inflight > 0, 10)
        stopper = threading.Thread(target=gw.stop)
        stopper.start()
        t.join(30)
        stopper.join(30)
        assert got.get("status") == 200 and got["bytes"] > 32000
    finally:
        if gw.thread.is_alive():
            gw.stop()
