"""The serving stack in-process (no Triton): request parsing, the streaming planner, the adapter
bank, and the scheduler against the reference `Pipeline` with a real runtime and registry."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adapters.errors import IntegrityError, VoiceRevoked
from adapters.names import VoiceId
from tests.conftest import SR, TinyBase, VoiceRegistry, reference_clip
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.models.vocoders import vocoder_receptive_field
from tritone.pipeline import Pipeline, SegmentStreamer, StreamConfig, SynthesisParams
from tritone.serving.bank import AdapterBank, LoadedVoice, Ticket
from tritone.serving.errors import ServeError
from tritone.serving.request import VoiceKey, parse_params, parse_request
from tritone.serving.streaming import ChunkPlanner

# ---------------------------------------------------------------------------------------------
# request parsing


def test_params_defaults_and_seed() -> None:
    params, stream, cfg = parse_params(None)
    assert params.seed is not None and not stream and cfg == StreamConfig()
    params, stream, cfg = parse_params(
        json.dumps({"seed": 7, "top_k": 5, "stream": True, "chunk_tokens": 10})
    )
    assert params.seed == 7 and params.top_k == 5 and stream and cfg.chunk_tokens == 10
    params, _, _ = parse_params('{"temperature": 1, "max_new_tokens": 30.0}')
    assert params.temperature == 1.0 and params.max_new_tokens == 30


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"topk": 3}', "unknown params topk"),
        ('{"top_k": 0}', "top_k must be an integer >= 1"),
        ('{"top_k": "5"}', "params.top_k must be an integer"),
        ('{"top_k": 2.5}', "params.top_k must be an integer"),
        ('{"temperature": 0}', "temperature must be a finite number > 0"),
        ('{"top_p": 1.5}', "top_p must be a number in"),
        ('{"speed": 9}', "speed must be in"),
        ('{"stream": "yes"}', "params.stream must be true or false"),
        ('{"seed": -1}', "seed must be in"),
        ('{"split": "cut9"}', "params.split must be one of"),
        ('{"max_new_tokens": 5000}', "max_new_tokens must be <= 1500"),
        ('{"chunk_tokens": 0}', "chunk sizes must be >= 1"),
        ('{"noise_scale": true}', "params.noise_scale must be a number"),
    ],
)
def test_bad_params(raw: str, match: str) -> None:
    with pytest.raises(ServeError, match=match) as info:
        parse_params(raw)
    assert info.value.code == "INVALID_ARG" and info.value.message.startswith("invalid request: ")


def test_parse_request_checks() -> None:
    ok = parse_request(request_id="r", text="Hello.", lang="en", voice="acme.alice", voice_version=3)
    assert ok.voice is not None and str(ok.voice) == "acme.alice/3" and ok.reference is None
    assert (
        str(parse_request(request_id="r", text="Hi.", lang="en", voice="alice").voice)
        == "default.alice@production"
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"text": "  "}, "text is empty"),
        ({"lang": "fr"}, "unsupported lang 'fr'"),
        ({"lang": ""}, "lang is required"),
        ({"voice": "Bad Name!"}, "bad voice"),
        ({"voice_version": 0}, "voice_version must be a positive integer"),
        ({"voice": ""}, "needs ref_audio"),
        (
            {"voice": "", "ref_audio": reference_clip(1.0), "ref_sample_rate": SR, "ref_text": "x"},
            "must be 3-10 s",
        ),
        (
            {"voice": "", "ref_audio": np.zeros(4 * SR, np.float32), "ref_sample_rate": SR, "ref_text": "x"},
            "silent",
        ),
        (
            {"voice": "", "ref_audio": reference_clip(), "ref_sample_rate": 100, "ref_text": "x"},
            "ref_sample_rate",
        ),
        ({"voice": "", "ref_audio": reference_clip(), "ref_sample_rate": SR}, "ref_text"),
        ({"voice": "a.b", "ref_audio": reference_clip(), "ref_sample_rate": SR}, "not both"),
    ]
    for override, match in cases:
        kwargs: dict[str, Any] = {
            "request_id": "r",
            "text": "Hello there.",
            "lang": "en",
            "voice": "acme.alice",
        }
        kwargs.update(override)
        with pytest.raises(ServeError, match=match):
            parse_request(**kwargs)


# ---------------------------------------------------------------------------------------------
# streaming planner == SegmentStreamer


@pytest.mark.parametrize(
    "cfg",
    [
        StreamConfig(),
        StreamConfig(first_chunk_tokens=5, chunk_tokens=7, lookahead_tokens=2, overlap_frames=3),
    ],
)
@pytest.mark.parametrize("speed", [1.0, 1.3])
@pytest.mark.parametrize("vocoder_kind", ["hifigan", "spectral"])
def test_planner_reproduces_segment_streamer(
    tiny_base: TinyBase, cfg: StreamConfig, speed: float, vocoder_kind: str
) -> None:
    """The scheduler's chunk plans (windows cut by the vocoder's receptive field) give the
    reference streamer's chunks, for each vocoder kind."""
    model = tiny_base.model
    if vocoder_kind == "spectral":
        model = BaseModel.random(BaseModelConfig.preset("tiny-spectral"), seed=0)
    pipeline = Pipeline(model)
    gen = torch.Generator().manual_seed(1)
    ge = torch.randn(1, model.config.sovits.gin_channels, 1, generator=gen)
    tokens = torch.randint(0, 64, (45,), generator=gen).tolist()
    phones = list(range(10, 30))
    params = SynthesisParams(seed=1, speed=speed)
    streamer = SegmentStreamer(pipeline, phones, ge, params, 5, cfg)
    expected = [c for c in (streamer.push(t) for t in tokens) if c is not None]
    expected.append(streamer.finish())

    vocoder = model.vocoder
    planner = ChunkPlanner(cfg, speed, vocoder.hop_length, vocoder_receptive_field(model.config.vocoder))

    def run(n: int, upto: int | None) -> np.ndarray | None:
        plan = planner.plan(n, upto)
        if plan is None:
            return None
        z = pipeline._latent(torch.tensor(tokens[:n]), phones, ge, params, 5)
        w = plan.window
        audio = vocoder(z[:, :, w.lo : w.hi], ge)[0, 0].detach().numpy()
        return planner.apply(plan, w.cut(audio, vocoder.hop_length))

    got = []
    for n in range(1, len(tokens) + 1):
        upto = planner.due(n)
        chunk = run(n, upto) if upto is not None else None
        if chunk is not None and chunk.size:
            got.append(chunk)
    final = run(len(tokens), None)
    assert final is not None
    got.append(final)
    assert [len(c) for c in got] == [len(c) for c in expected]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# adapter bank


class FakeRuntime:
    bank_size = 4  # 3 voice slots

    def __init__(self) -> None:
        self.slots: dict[int, str] = {}
        self.cleared: list[int] = []

    def load_adapter(self, slot: int, adapter: Any) -> None:
        if adapter.name == "refused":
            raise IntegrityError("refused by the runtime")
        self.slots[slot] = adapter.name

    def clear_slot(self, slot: int) -> None:
        self.slots.pop(slot, None)
        self.cleared.append(slot)

    def ref_embedding(self, refer_spec: np.ndarray, spec_lens: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return np.full((1, 2, 1), float(slots[0]), np.float32)


class FakeAdapter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.prompt = type("P", (), {"refer_spec": torch.zeros(4, 3)})()
        self.content_sha256 = name


def _key(name: str, version: int | None = 1) -> VoiceKey:
    return VoiceKey(VoiceId("t", name), version)


class FakeLoader:
    """Loads complete only when the test releases them (to observe waiting)."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.calls: list[str] = []

    def __call__(self, key: VoiceKey) -> LoadedVoice:
        self.calls.append(key.voice.name)
        gate = self.gates.setdefault(key.voice.name, threading.Event())
        assert gate.wait(10)
        if key.voice.name == "missing":
            raise VoiceRevoked("gone")
        return LoadedVoice(VoiceKey(key.voice, key.version or 1), FakeAdapter(key.voice.name))  # type: ignore[arg-type]

    def release(self, *names: str) -> None:
        for name in names:
            self.gates.setdefault(name, threading.Event()).set()


def _settle(bank: AdapterBank, *tickets: Ticket) -> None:
    deadline = time.monotonic() + 10
    while not all(t.done for t in tickets):
        bank.poll()
        assert time.monotonic() < deadline, "tickets never completed"
        time.sleep(0.01)


def test_bank_lru_pinning_and_waiting() -> None:
    runtime, loader = FakeRuntime(), FakeLoader()
    bank = AdapterBank(runtime, loader, workers=2)
    loader.release("a", "b", "c", "d", "e")
    a, b, c = bank.acquire(_key("a")), bank.acquire(_key("b")), bank.acquire(_key("c"))
    _settle(bank, a, b, c)
    assert sorted(runtime.slots.values()) == ["a", "b", "c"] and a.voice is not None
    assert a.voice.ge[0, 0] == a.voice.slot  # the embedding was computed with the voice's own slot
    # all three pinned: "d" loads but waits for a slot
    d = bank.acquire(_key("d"))
    deadline = time.monotonic() + 5
    while bank.waiting_for_slot == 0:
        bank.poll()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not d.done
    assert b.voice is not None and c.voice is not None
    bank.release(b.voice)  # b becomes the only unpinned voice: it is evicted, not a (LRU but pinned)
    _settle(bank, d)
    assert sorted(runtime.slots.values()) == ["a", "c", "d"] and bank.stats.evictions == 1
    # a hit is served at once and pins again; LRU order follows use
    bank.release(a.voice)
    bank.release(c.voice)
    again = bank.acquire(_key("a"))
    assert again.done and again.voice is a.voice and bank.stats.hits == 1
    e = bank.acquire(_key("e"))
    _settle(bank, e)
    assert sorted(runtime.slots.values()) == ["a", "d", "e"]  # c (least recently used) went
    bank.close()


def test_bank_failures_are_per_request_and_revocation_sticks() -> None:
    runtime, loader = FakeRuntime(), FakeLoader()
    bank = AdapterBank(runtime, loader)
    loader.release("missing", "refused", "ok")
    bad, refused, ok = bank.acquire(_key("missing")), bank.acquire(_key("refused")), bank.acquire(_key("ok"))
    _settle(bank, bad, refused, ok)
    assert isinstance(bad.error, VoiceRevoked) and isinstance(refused.error, IntegrityError)
    assert ok.voice is not None and list(runtime.slots.values()) == ["ok"]
    assert bank.stats.load_failures == 2 and len(bank._free) == 2  # the refused slot went back
    # an alias (version None) resolves to the concrete version already resident: no second slot
    alias = bank.acquire(_key("ok", None))
    _settle(bank, alias)
    assert alias.voice is ok.voice and ok.voice.pins == 2
    # revocation: the pinned voice is doomed, cleared on release, and refused from now on
    in_use = bank.evict(VoiceId("t", "ok"), revoked=True)
    assert in_use and in_use[0].doomed
    assert bank.acquire(_key("ok")).error is not None
    bank.release(ok.voice)
    assert runtime.slots  # still pinned by the alias request
    bank.release(ok.voice)
    assert not runtime.slots and bank.is_revoked(VoiceId("t", "ok"))
    bank.close()


def test_bank_load_does_not_block_poll() -> None:
    runtime, loader = FakeRuntime(), FakeLoader()
    bank = AdapterBank(runtime, loader)
    slow = bank.acquire(_key("slow"))
    t0 = time.monotonic()
    for _ in range(20):
        bank.poll()  # returns at once while the load is in flight
    assert time.monotonic() - t0 < 1.0 and not slow.done
    loader.release("slow")
    _settle(bank, slow)
    bank.close()


# ---------------------------------------------------------------------------------------------
# the scheduler, in-process, against the reference pipeline


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.error: ServeError | None = None
        self.done = threading.Event()
        self.cancel = False

    def send(self, audio: np.ndarray, final: bool) -> None:
        self.chunks.append(audio)
        if final:
            self.done.set()

    def fail(self, error: ServeError) -> None:
        self.error = error
        self.done.set()

    def cancelled(self) -> bool:
        return self.cancel

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


@pytest.fixture(scope="module")
def service(voice_registry: VoiceRegistry, tiny_base: TinyBase, serving_home: Path) -> Any:
    from tritone.serving.service import ServeSettings, TTSService

    settings = ServeSettings(
        bank_slots=2,
        feed_interval_s=0,
        mlflow_uri=voice_registry.uri,
        max_context=1024,
        adapter_store=str(serving_home / "store-in-process"),
    )
    svc = TTSService(settings, model=tiny_base.model)
    yield svc
    svc.close()


def _submit(service: Any, **kwargs: Any) -> ListSink:
    sink = ListSink()
    service.submit(parse_request(request_id=f"r{time.monotonic_ns()}", lang="en", **kwargs), sink)
    return sink


def test_inflight_joining_matches_pipeline(service: Any, voice_registry: VoiceRegistry) -> None:
    voices = [voice_registry.add_voice(f"s{i}", seed=100 + i) for i in range(3)]
    text = "Hello there. This is the in-flight batching test."
    params: dict[str, Any] = {"seed": 11, "max_new_tokens": 40}
    first = _submit(
        service, text=text, voice=voices[0].name, voice_version=voices[0].version, params=json.dumps(params)
    )
    time.sleep(0.3)  # the others join while the first is decoding
    rest = [
        _submit(service, text=text, voice=v.name, voice_version=v.version, params=json.dumps(params))
        for v in voices[1:]
    ]
    for sink in [first, *rest]:
        assert sink.done.wait(120) and sink.error is None, sink.error
    assert service.stats()["bank_evictions"] >= 1  # 3 voices through 2 slots
    for voice, sink in zip(voices, [first, *rest]):
        pipeline, prompt = voice_registry.merged_pipeline(voice)
        expected = pipeline.synthesize(text, "en", prompt, SynthesisParams(**params))
        assert sink.audio.shape == expected.shape
        np.testing.assert_allclose(sink.audio, expected, atol=1e-4)
    assert not np.array_equal(first.audio[: len(rest[0].audio)], rest[0].audio[: len(first.audio)])


def test_zero_shot_and_streaming_match_pipeline(service: Any, tiny_base: TinyBase) -> None:
    ref = reference_clip(4.0, pitch=210.0)
    text = "Streaming from a reference clip, chunk by chunk."
    params = {"seed": 4, "max_new_tokens": 50, "stream": True, "first_chunk_tokens": 6, "chunk_tokens": 8}
    sink = _submit(
        service,
        text=text,
        voice="",
        params=json.dumps(params),
        ref_audio=ref,
        ref_sample_rate=SR,
        ref_text="A reference.",
    )
    assert sink.done.wait(120) and sink.error is None, sink.error
    pipeline = Pipeline(tiny_base.model)
    prompt = pipeline.build_voice_prompt(ref, SR, "A reference.", "en")
    synth = SynthesisParams(seed=4, max_new_tokens=50)
    expected = np.concatenate(list(pipeline.synthesize_stream(text, "en", prompt, synth, StreamConfig(6, 8))))
    assert len(sink.chunks) >= 3
    np.testing.assert_allclose(sink.audio, expected, atol=1e-4)


def test_cancel_frees_rows_in_process(service: Any, voice_registry: VoiceRegistry) -> None:
    voice = voice_registry.add_voice("s0", seed=100)
    text = " ".join(f"Sentence number {i} goes on." for i in range(12))
    sink = _submit(
        service,
        text=text,
        voice=voice.name,
        voice_version=voice.version,
        params=json.dumps({"seed": 1, "stream": True, "first_chunk_tokens": 4, "max_new_tokens": 60}),
    )
    deadline = time.monotonic() + 60
    while not sink.chunks:
        assert sink.error is None, sink.error
        assert time.monotonic() < deadline
        time.sleep(0.01)
    before = service.stats()["cancelled"]
    sink.cancel = True
    assert sink.done.wait(30) and sink.error is not None and sink.error.code == "CANCELLED"
    stats = service.stats()
    assert stats["cancelled"] == before + 1 and stats["active_rows"] == 0 and stats["jobs"] == 0


def test_errors_end_only_their_request(service: Any, voice_registry: VoiceRegistry) -> None:
    voice = voice_registry.add_voice("s1", seed=101)
    good = _submit(
        service,
        text="Still fine.",
        voice=voice.name,
        voice_version=voice.version,
        params='{"max_new_tokens": 30}',
    )
    too_long = _submit(service, text="Too long a budget.", voice=voice.name, voice_version=voice.version)
    unknown = _submit(service, text="Who?", voice="test.nobody", voice_version=1)
    missing_version = _submit(service, text="Which?", voice=voice.name, voice_version=99)
    for sink in (good, unknown, missing_version, too_long):
        assert sink.done.wait(120)
    assert too_long.error is not None and "lower max_new_tokens" in too_long.error.message
    assert good.error is None and good.audio.size
    assert (
        unknown.error is not None
        and unknown.error.code == "NOT_FOUND"
        and "unknown voice" in unknown.error.message
    )
    assert missing_version.error is not None and "no version 99" in missing_version.error.message


def test_submit_refuses_when_queue_full(
    tiny_base: TinyBase, voice_registry: VoiceRegistry, serving_home: Path
) -> None:
    from tritone.serving.service import ServeSettings, TTSService

    settings = ServeSettings(
        max_queue=1,
        feed_interval_s=0,
        mlflow_uri=voice_registry.uri,
        max_context=512,
        adapter_store=str(serving_home / "store-in-process"),
    )
    svc = TTSService(
        settings,
        model=tiny_base.model,
    )
    try:
        ref = reference_clip()
        sinks = [
            _submit(
                svc,
                text="One two three.",
                voice="",
                ref_audio=ref,
                ref_sample_rate=SR,
                ref_text="Ref.",
                params='{"max_new_tokens": 20}',
            )
            for _ in range(3)
        ]
        for sink in sinks:
            assert sink.done.wait(120)
        refused = [s for s in sinks if s.error is not None]
        assert refused and all(s.error is not None and s.error.code == "UNAVAILABLE" for s in refused)
        assert any(s.error is None for s in sinks)
    finally:
        svc.close()


# ---------------------------------------------------------------------------------------------
# settings and runtime selection


def test_settings_precedence_and_errors() -> None:
    from tritone.serving.service import ServeSettings

    s = ServeSettings.from_sources({"bank_slots": "4", "max_rows": "8"}, env={"TRITONE_BANK_SLOTS": "6"})
    assert s.bank_slots == 6 and s.max_rows == 8 and s.target == "cpu" and s.feed_interval_s == 5.0
    with pytest.raises(ValueError, match=r"\$TRITONE_MAX_ROWS must be int"):
        ServeSettings.from_sources({}, env={"TRITONE_MAX_ROWS": "lots"})
    with pytest.raises(ValueError, match="target must be cpu or gpu"):
        ServeSettings.from_sources({"target": "tpu"}, env={})
    with pytest.raises(ValueError, match="runtime must be"):
        ServeSettings.from_sources({}, env={"TRITONE_RUNTIME": "tensorflow"})


def test_runtime_selection(tiny_base: TinyBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tritone.serving.runtime_onnx as runtime_onnx
    from tritone.serving.runtime_manifest import FORMAT, MANIFEST_FILE, config_to_dict
    from tritone.serving.runtime_torch import TorchRuntime
    from tritone.serving.service import ServeSettings, open_runtime

    opened: list[Path] = []

    class FakeOnnx:
        def __init__(self, directory: Path, intra_op_threads: int = 0) -> None:
            opened.append(Path(directory))

    monkeypatch.setattr(runtime_onnx, "OnnxRuntime", FakeOnnx)
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    base = str(tiny_base.path)
    # no build: PyTorch over the base bundle
    assert isinstance(open_runtime(ServeSettings(base_model=base, bank_slots=2), version_dir), TorchRuntime)
    with pytest.raises(FileNotFoundError, match="no build"):
        open_runtime(ServeSettings(runtime="onnx"), version_dir)
    with pytest.raises(FileNotFoundError, match="no base model"):
        open_runtime(ServeSettings(), version_dir)
    manifest = {
        "format": FORMAT,
        "base": {
            "weights_sha256": tiny_base.model.weights_sha256,
            "config": config_to_dict(tiny_base.model.config),
        },
    }
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    # a build of the same base: its graphs (cpu); a gpu target or runtime=torch: PyTorch
    assert isinstance(open_runtime(ServeSettings(), version_dir), FakeOnnx)
    assert isinstance(open_runtime(ServeSettings(base_model=base), version_dir), FakeOnnx)
    assert opened == [version_dir, version_dir]
    torch_rt = open_runtime(ServeSettings(base_model=base, runtime="torch", bank_slots=2), version_dir)
    assert isinstance(torch_rt, TorchRuntime)
    # a build of another base than the one named: the named base, with PyTorch
    manifest["base"]["weights_sha256"] = "0" * 64  # type: ignore[index]
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert isinstance(open_runtime(ServeSettings(base_model=base, bank_slots=2), version_dir), TorchRuntime)
    assert len(opened) == 2


def test_gpu_runtime_selection(tiny_base: TinyBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tritone.serving.runtime_cuda as runtime_cuda
    import tritone.serving.runtime_tensorrt as runtime_tensorrt
    from tritone.serving.runtime_manifest import FORMAT, MANIFEST_FILE, config_to_dict, save_torch_weights
    from tritone.serving.runtime_torch import TorchRuntime
    from tritone.serving.service import ServeSettings, open_runtime

    class FakeTensorRT:
        def __init__(self, directory: Path) -> None:
            self.directory = directory

    class FakeCuda:
        def __init__(self, model: Any, bank_size: int, max_rank: int) -> None:
            self.model, self.bank_size = model, bank_size

    monkeypatch.setattr(runtime_tensorrt, "TensorRTRuntime", FakeTensorRT)
    monkeypatch.setattr(runtime_cuda, "CudaGraphRuntime", FakeCuda)
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "target": "gpu",
        "base": {
            "weights_sha256": tiny_base.model.weights_sha256,
            "config": config_to_dict(tiny_base.model.config),
        },
        "torch_weights": {"file": "base.safetensors"},
        "engines": {"skipped": "no TensorRT here"},
    }
    save_torch_weights(tiny_base.model, version_dir / "base.safetensors")
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    gpu = ServeSettings(target="gpu", bank_slots=2)
    # no CUDA here: eager PyTorch on the CPU over the build's weights
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fallback = open_runtime(gpu, version_dir)
    assert isinstance(fallback, TorchRuntime) and fallback.base_sha256 == tiny_base.model.weights_sha256
    # CUDA, engines skipped by the build: CUDA graphs over the build's weights
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = open_runtime(gpu, version_dir)
    assert isinstance(cuda, FakeCuda) and cuda.bank_size == 3
    assert cuda.model.weights_sha256 == tiny_base.model.weights_sha256
    # engines built: TensorRT
    manifest["engines"] = {"gpt_decode": {"file": "gpt_decode.plan"}}
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    trt = open_runtime(gpu, version_dir)
    assert isinstance(trt, FakeTensorRT) and trt.directory == version_dir
    assert isinstance(
        open_runtime(ServeSettings(target="gpu", runtime="cuda", bank_slots=2), version_dir), FakeCuda
    )


def test_a_voices_folder_serves_without_the_registry(
    voice_registry: VoiceRegistry, tiny_base: TinyBase, tmp_path: Path
) -> None:
    """`voices_dir`: voices read from `<folder>/<tenant>.<name>/`, version 1 only, no MLflow calls."""
    import shutil

    from adapters.directory import VoiceDirectory
    from tritone.serving.service import ServeSettings, TTSService

    voice = voice_registry.add_voice("folder", seed=321)
    folder = tmp_path / "voices"
    shutil.copytree(voice.adapter_dir, folder / voice.name)
    (folder / "not-a-voice").mkdir()  # a folder name without a tenant is skipped by the listing
    settings = ServeSettings(bank_slots=2, feed_interval_s=5, voices_dir=str(folder), max_context=1024)
    svc = TTSService(settings, model=tiny_base.model)
    try:
        assert isinstance(svc.registry, VoiceDirectory) and svc.watcher is None
        assert [str(v) for v in svc.registry.voices()] == [voice.name]
        text, params = "Served from a folder.", dict[str, Any](seed=5, max_new_tokens=30)
        by_alias = _submit(svc, text=text, voice=voice.name, params=json.dumps(params))
        by_version = _submit(svc, text=text, voice=voice.name, voice_version=1, params=json.dumps(params))
        other_version = _submit(svc, text=text, voice=voice.name, voice_version=2)
        unknown = _submit(svc, text=text, voice="test.nobody")
        for sink in (by_alias, by_version, other_version, unknown):
            assert sink.done.wait(120)
        pipeline, prompt = voice_registry.merged_pipeline(voice)
        expected = pipeline.synthesize(text, "en", prompt, SynthesisParams(**params))
        for sink in (by_alias, by_version):
            assert sink.error is None, sink.error
            np.testing.assert_allclose(sink.audio, expected, atol=1e-4)
        assert other_version.error is not None and other_version.error.code == "NOT_FOUND"
        assert "version 1 only" in other_version.error.message
        assert unknown.error is not None and unknown.error.code == "NOT_FOUND"
        assert "not in the voices directory" in unknown.error.message
        with pytest.raises(ServeError, match="invalid"):  # never a path outside the folder
            _submit(svc, text=text, voice="../etc")
        svc.evict(voice.name, revoked=True)
        revoked = _submit(svc, text=text, voice=voice.name)
        assert revoked.done.wait(60) and revoked.error is not None and "revoked" in revoked.error.message
    finally:
        svc.close()
