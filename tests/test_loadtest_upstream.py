"""The upstream-style baseline path (`loadtest.upstream_style`): it gives exactly the audio of
`tritone.pipeline.Pipeline` over the base with the voice's adapter merged (same seed), across
speaker swaps, offline and streamed, in-process and over its one-request-at-a-time HTTP server."""

from __future__ import annotations

import io
import threading
import time
import wave
from typing import Any

import httpx
import numpy as np
import pytest

from loadtest.upstream_style import GlobalTTS, UpstreamStyleServer, dir_bytes, pcm16, prepare_voice
from loadtest.voices import ReferenceClip, VoiceSpec, write_voice
from tests.conftest import SR, TinyBase, reference_clip
from tritone.pipeline import Pipeline, SynthesisParams

TEXT = "Hello there. The next train leaves at seven fifteen."
PARAMS: dict[str, Any] = {"seed": 11, "max_new_tokens": 40}
# The copy's weights are merged from the saved files, the reference's in memory: float32 sums in
# another order differ in the last bits (seen: 3e-7), far below any difference between voices.
ATOL = 1e-5


@pytest.fixture(scope="module")
def voices(tiny_base: TinyBase, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two voices: adapter directories, their upstream-style copies, and reference pipelines."""
    from adapters.apply import apply_adapter
    from adapters.format import BasePin, read_adapter

    root = tmp_path_factory.mktemp("upstream-style")
    pin = BasePin("tritone-base", 1, tiny_base.model.weights_sha256)
    out: dict[str, Any] = {"root": root / "voices", "base": tiny_base.path}
    for i, pitch in enumerate((150.0, 210.0)):
        clip = ReferenceClip(reference_clip(4.0, pitch), SR, "This is the reference clip.")
        prompt = Pipeline(tiny_base.model).build_voice_prompt(clip.audio, SR, clip.text, "en")
        spec = VoiceSpec("lt0", f"voice{i}", 100 + i, i)
        adapter_dir = write_voice(root / "adapters" / spec.ref, spec, tiny_base.model, pin, prompt)
        prepare_voice(tiny_base.path, adapter_dir, out["root"] / spec.ref, clip)
        merged = tiny_base.fresh()
        adapter = read_adapter(adapter_dir)
        apply_adapter(merged, adapter)
        out[spec.ref] = (Pipeline(merged), adapter.prompt)
    return out


def _expected(voices: dict[str, Any], voice: str, stream: bool = False) -> np.ndarray:
    pipeline, prompt = voices[voice]
    params = SynthesisParams(**PARAMS)
    if stream:
        return np.concatenate(list(pipeline.synthesize_stream(TEXT, "en", prompt, params)))
    return pipeline.synthesize(TEXT, "en", prompt, params)


def _same_pcm(got: bytes, want: bytes) -> None:
    """16-bit PCM equal up to one step of rounding (ATOL above, after scaling)."""
    a, b = np.frombuffer(got, np.int16).astype(np.int32), np.frombuffer(want, np.int16).astype(np.int32)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1


def test_voice_copies_are_full_models(voices: dict[str, Any], tiny_base: TinyBase) -> None:
    copy = voices["root"] / "lt0.voice0"
    assert (copy / "model" / "manifest.json").is_file() and (copy / "reference.wav").is_file()
    assert dir_bytes(copy / "model") >= 0.9 * dir_bytes(tiny_base.path)


def test_matches_the_merged_pipeline_across_swaps(voices: dict[str, Any]) -> None:
    tts = GlobalTTS(voices["base"], voices["root"])
    expected = {v: _expected(voices, v) for v in ("lt0.voice0", "lt0.voice1")}
    a, b = expected["lt0.voice0"], expected["lt0.voice1"]
    assert a.shape != b.shape or np.abs(a - b).max() > 100 * ATOL  # the voices differ
    for voice in ("lt0.voice0", "lt0.voice1", "lt0.voice0"):
        np.testing.assert_allclose(
            tts.synthesize(TEXT, "en", voice, PARAMS), expected[voice], rtol=0, atol=ATOL
        )
    assert tts.swaps == 3 and tts.requests == 3
    streamed = np.concatenate(list(tts.synthesize_stream(TEXT, "en", "lt0.voice1", PARAMS)))
    np.testing.assert_allclose(streamed, _expected(voices, "lt0.voice1", stream=True), rtol=0, atol=ATOL)
    tts.synthesize(TEXT, "en", "lt0.voice1", PARAMS)
    assert tts.swaps == 4  # same voice again: no swap
    with pytest.raises(KeyError):
        tts.use("lt0.nobody")


def test_http_server_serves_one_request_at_a_time(voices: dict[str, Any]) -> None:
    server = UpstreamStyleServer(voices["base"], voices["root"]).start()
    pipeline = server.state.tts.pipeline
    inside, peak = [0], [0]
    synthesize = pipeline.synthesize

    def tracked(*args: Any, **kwargs: Any) -> np.ndarray:
        inside[0] += 1
        peak[0] = max(peak[0], inside[0])
        time.sleep(0.2)  # give an overlapping request the chance to show
        try:
            return synthesize(*args, **kwargs)
        finally:
            inside[0] -= 1

    pipeline.synthesize = tracked  # type: ignore[method-assign]
    try:
        body = {"text": TEXT, "voice": "lt0.voice1", "params": PARAMS}
        replies: list[httpx.Response] = []

        def call() -> None:
            replies.append(httpx.post(f"{server.url}/tts", json=body, timeout=120))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert peak[0] == 1 and len(replies) == 3
        expected = pcm16(_expected(voices, "lt0.voice1"))
        for wav in replies:
            assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
            with wave.open(io.BytesIO(wav.content)) as w:
                assert w.getframerate() == SR and w.getsampwidth() == 2
                _same_pcm(w.readframes(w.getnframes()), expected)
        stream = httpx.post(f"{server.url}/tts", json={**body, "stream": True}, timeout=120)
        assert stream.status_code == 200 and stream.headers["x-sample-rate"] == str(SR)
        _same_pcm(stream.content, pcm16(_expected(voices, "lt0.voice1", stream=True)))
        stats = httpx.get(f"{server.url}/stats", timeout=10).json()
        assert stats["requests"] == 4 and stats["swaps"] == 1
        bad = httpx.post(f"{server.url}/tts", json={**body, "voice": "lt0.nobody"}, timeout=60)
        assert bad.status_code == 404
        assert httpx.post(f"{server.url}/tts", content=b"{", timeout=60).status_code == 400
    finally:
        server.stop()
