"""Acceptance of the `tts` model on the real Triton server (CPU, tiny models, real MLflow registry).

One server for the session (`triton_server` in conftest): a bank of 8 voice slots, the registry
change feed polled every second. Voices are random LoRA adapters over the tiny base, so two
voices sound different and any mix-up between batch rows shows in the audio.
"""

from __future__ import annotations

import itertools
import queue
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.names import VoiceId
from tests.conftest import (
    SR,
    TRITON_TEST_BANK_SLOTS,
    RegisteredVoice,
    Reply,
    TinyBase,
    TTSClient,
    VoiceRegistry,
    make_tiny_base,
    reference_clip,
    tts_inputs,
)
from tritone.pipeline import Pipeline, StreamConfig, SynthesisParams

TEXT = "Hello there. This is a batching test."
PARAMS: dict[str, Any] = {"seed": 21, "max_new_tokens": 40}
REF_TEXT = "This is the reference clip."


@dataclass
class Batch:
    voices: list[RegisteredVoice]
    requests: dict[str, list[Any]]
    alone: dict[str, Reply]
    together: dict[str, Reply]
    stats_before: dict[str, Any]
    stats_after: dict[str, Any]


@pytest.fixture(scope="module")
def batch(tts_client: TTSClient, voice_registry: VoiceRegistry) -> Batch:
    """8 voices and the base voice (zero-shot), each sent alone, then all 9 at once."""
    voices = [voice_registry.add_voice(f"b{i}", seed=200 + i) for i in range(8)]
    requests = {v.name: tts_inputs(TEXT, voice=v.name, version=v.version, params=PARAMS) for v in voices}
    requests["base"] = tts_inputs(
        TEXT, voice="", params=PARAMS, ref_audio=reference_clip(), ref_text=REF_TEXT
    )
    alone = {rid: tts_client.one(inputs) for rid, inputs in requests.items()}
    before = tts_client.stats()
    together = tts_client.run(requests)
    after = tts_client.stats()
    return Batch(voices, requests, alone, together, before, after)


def _ok(reply: Reply) -> np.ndarray:
    assert reply.error is None, reply.error
    assert reply.final and reply.sample_rate == SR
    return reply.audio


def test_no_timbre_bleeding(batch: Batch, voice_registry: VoiceRegistry, tiny_base: TinyBase) -> None:
    # all nine decoded in one batch: the scheduler saw their segments side by side
    assert batch.stats_after["max_rows_seen"] >= 9
    steps = batch.stats_after["steps"] - batch.stats_before["steps"]
    tokens = batch.stats_after["tokens"] - batch.stats_before["tokens"]
    assert steps * 4 < tokens, (steps, tokens)  # many rows per decode step
    for rid, reply in batch.together.items():
        alone = _ok(batch.alone[rid])
        got = _ok(reply)
        assert reply.seed == PARAMS["seed"] and got.shape == alone.shape, rid
        np.testing.assert_allclose(got, alone, atol=1e-5, err_msg=rid)  # same audio as when sent alone
    # each equals the reference pipeline with that voice's adapter merged into the base weights
    for voice in batch.voices:
        pipeline, prompt = voice_registry.merged_pipeline(voice)
        expected = pipeline.synthesize(TEXT, "en", prompt, SynthesisParams(**PARAMS))
        got = _ok(batch.together[voice.name])
        assert got.shape == expected.shape, voice.name
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=voice.name)
    base = Pipeline(tiny_base.model)
    prompt = base.build_voice_prompt(reference_clip(), SR, REF_TEXT, "en")
    np.testing.assert_allclose(
        _ok(batch.together["base"]), base.synthesize(TEXT, "en", prompt, SynthesisParams(**PARAMS)), atol=1e-4
    )
    # and the voices really differ from one another
    for a, b in itertools.combinations(batch.together, 2):
        x, y = _ok(batch.together[a]), _ok(batch.together[b])
        n = min(len(x), len(y))
        assert x.shape != y.shape or not np.allclose(x[:n], y[:n], atol=1e-3), (a, b)


def test_streaming_chunks_early_and_matches_offline(
    tts_client: TTSClient, batch: Batch, voice_registry: VoiceRegistry
) -> None:
    voice = batch.voices[0]
    text = "A longer sentence for streaming, which goes on for a while. And then a second one."
    offline_params: dict[str, Any] = {"seed": 5, "max_new_tokens": 60}
    stream_params = {**offline_params, "stream": True, "first_chunk_tokens": 6, "chunk_tokens": 8}
    replies = tts_client.run(
        {
            "stream": tts_inputs(text, voice=voice.name, version=voice.version, params=stream_params),
            "offline": tts_inputs(text, voice=voice.name, version=voice.version, params=offline_params),
        }
    )
    stream, offline = replies["stream"], _ok(replies["offline"])
    streamed = _ok(stream)
    assert len(stream.chunks) >= 4
    # the first chunk came well before the utterance was complete
    first, last = stream.times[0] - stream.sent, stream.times[-1] - stream.sent
    assert first < 0.6 * last, (first, last)
    # concatenated, the chunks are the offline audio up to the crossfaded seams
    assert streamed.shape == offline.shape
    snr = 10 * np.log10(np.mean(offline**2) / max(np.mean((streamed - offline) ** 2), 1e-20))
    assert snr > 25.0, f"streamed vs offline SNR {snr:.1f} dB"
    # and exactly the reference streaming algorithm (`Pipeline.synthesize_stream`)
    pipeline, prompt = voice_registry.merged_pipeline(voice)
    expected = np.concatenate(
        list(
            pipeline.synthesize_stream(
                text, "en", prompt, SynthesisParams(**offline_params), StreamConfig(6, 8)
            )
        )
    )
    np.testing.assert_allclose(streamed, expected, atol=1e-4)


LONG_TEXT = " ".join(f"Sentence number {i} goes on and on." for i in range(15))


def _wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def _open_stream(url: str, inputs: list[Any]) -> tuple[Any, queue.Queue[tuple[Any, Any]]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    events: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    client.async_stream_infer("tts", inputs, request_id="long", enable_empty_final_response=True)
    return client, events


def test_cancel_mid_stream_frees_the_row(tts_client: TTSClient, triton_server: Any, batch: Batch) -> None:
    voice = batch.voices[1]
    params = {"seed": 3, "stream": True, "first_chunk_tokens": 4, "max_new_tokens": 50}
    before = tts_client.stats()
    client, events = _open_stream(
        triton_server.grpc_url, tts_inputs(LONG_TEXT, voice=voice.name, version=voice.version, params=params)
    )
    result, error = events.get(timeout=120)
    assert error is None and result.as_numpy("audio").size > 0
    assert tts_client.stats()["active_rows"] >= 1  # still decoding the first of 15 segments
    client.stop_stream(cancel_requests=True)
    client.close()
    after = _wait_for(
        lambda: (s := tts_client.stats())["cancelled"] > before["cancelled"] and s["active_rows"] == 0 and s,
        30,
        "the cancelled request to leave the batch",
    )
    assert after["jobs"] == 0
    # the server goes on serving
    assert _ok(
        tts_client.one(tts_inputs("Still here.", voice=voice.name, version=voice.version, params=PARAMS))
    ).size


def test_more_voices_than_slots_rotate(
    tts_client: TTSClient, batch: Batch, voice_registry: VoiceRegistry
) -> None:
    extra = [voice_registry.add_voice(f"r{i}", seed=250 + i) for i in range(3)]
    voices = batch.voices + extra  # 11 voices through 8 slots, all at once: some wait for a slot
    assert len(voices) > TRITON_TEST_BANK_SLOTS
    before = tts_client.stats()
    replies = tts_client.run(
        {v.name: tts_inputs(TEXT, voice=v.name, version=v.version, params=PARAMS) for v in voices}
    )
    after = tts_client.stats()
    assert after["bank_evictions"] > before["bank_evictions"]
    assert after["bank_resident"] <= TRITON_TEST_BANK_SLOTS
    for voice in batch.voices:
        np.testing.assert_allclose(_ok(replies[voice.name]), _ok(batch.alone[voice.name]), atol=1e-5)
    for voice in extra:
        pipeline, prompt = voice_registry.merged_pipeline(voice)
        expected = pipeline.synthesize(TEXT, "en", prompt, SynthesisParams(**PARAMS))
        np.testing.assert_allclose(_ok(replies[voice.name]), expected, atol=1e-4)
    # an evicted voice comes back with the same audio
    again = tts_client.one(batch.requests[batch.voices[0].name])
    np.testing.assert_allclose(_ok(again), _ok(batch.alone[batch.voices[0].name]), atol=1e-5)


def _artifact_dir(voice: RegisteredVoice) -> Path:
    assert voice.source.startswith("file://"), voice.source
    return Path(voice.source[len("file://") :])


def test_corrupted_and_wrong_base_adapters_are_refused_alone(
    tts_client: TTSClient, batch: Batch, voice_registry: VoiceRegistry, serving_home: Path
) -> None:
    corrupt = voice_registry.add_voice("corrupt", seed=300)
    path = _artifact_dir(corrupt) / "adapter.safetensors"
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(8)  # flip the tail of the LoRA tensors: the sha256 no longer matches
    path.write_bytes(bytes(data))
    other = make_tiny_base(seed=1)
    other_pin = voice_registry.registry.register_base(other.save(serving_home / "base-other"))
    wrong_base = voice_registry.add_voice("otherbase", seed=301, pin=other_pin, model=other)
    good = batch.voices[2]
    replies = tts_client.run(
        {
            "corrupt": tts_inputs(TEXT, voice=corrupt.name, version=corrupt.version, params=PARAMS),
            "wrong_base": tts_inputs(TEXT, voice=wrong_base.name, version=wrong_base.version, params=PARAMS),
            "good": tts_inputs(TEXT, voice=good.name, version=good.version, params=PARAMS),
        }
    )
    assert replies["corrupt"].error is not None and "adapter refused" in replies["corrupt"].error
    assert "sha256" in replies["corrupt"].error
    assert replies["wrong_base"].error is not None and "pinned to base" in replies["wrong_base"].error
    np.testing.assert_allclose(_ok(replies["good"]), _ok(batch.alone[good.name]), atol=1e-5)


def test_revoked_voice_is_evicted_and_refused(
    tts_client: TTSClient, triton_server: Any, voice_registry: VoiceRegistry, batch: Batch
) -> None:
    # 1. through the registry: the model's change feed evicts it within seconds
    feed_voice = voice_registry.add_voice("revoke-feed", seed=310)
    inputs = tts_inputs(TEXT, voice=feed_voice.name, version=feed_voice.version, params=PARAMS)
    _ok(tts_client.one(inputs))
    before = tts_client.stats()
    voice_registry.registry.revoke(VoiceId.from_model_name(f"voice.{feed_voice.name}"))
    _wait_for(
        lambda: tts_client.stats()["bank_revocations"] > before["bank_revocations"], 30, "the change feed"
    )
    after = tts_client.stats()
    assert after["bank_resident"] < before["bank_resident"]
    reply = tts_client.one(inputs)
    assert reply.error is not None and "revoked" in reply.error

    # 2. by a control request, while a request of that voice is streaming: it is stopped too
    ctl_voice = voice_registry.add_voice("revoke-ctl", seed=311)
    params = {"seed": 3, "stream": True, "first_chunk_tokens": 4, "max_new_tokens": 50}
    client, events = _open_stream(
        triton_server.grpc_url,
        tts_inputs(LONG_TEXT, voice=ctl_voice.name, version=ctl_voice.version, params=params),
    )
    try:
        _, error = events.get(timeout=120)
        assert error is None
        info = tts_client.control("revoke", ctl_voice.name)
        assert info["revoked"] and info["requests_ended"] == 1
        while True:  # the rest of the stream: maybe a chunk or two, then the error
            _, error = events.get(timeout=30)
            if error is not None:
                break
        assert "revoked" in str(error)
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    reply = tts_client.one(tts_inputs(TEXT, voice=ctl_voice.name, version=ctl_voice.version, params=PARAMS))
    assert reply.error is not None and "revoked" in reply.error
    # other voices are untouched
    other = batch.voices[3]
    np.testing.assert_allclose(
        _ok(tts_client.one(batch.requests[other.name])), _ok(batch.alone[other.name]), atol=1e-5
    )


def test_bad_requests_get_clear_errors_and_others_are_served(
    tts_client: TTSClient, triton_server: Any, batch: Batch
) -> None:
    voice = batch.voices[4]
    v, ver = voice.name, voice.version
    cases: dict[str, tuple[list[Any], str]] = {
        "unknown_version": (tts_inputs(TEXT, voice=v, version=999, params=PARAMS), "unknown voice"),
        "unknown_voice": (tts_inputs(TEXT, voice="test.nobody", version=1, params=PARAMS), "unknown voice"),
        "empty_text": (tts_inputs("  ", voice=v, version=ver), "invalid request: text is empty"),
        "bad_json": (
            tts_inputs(TEXT, voice=v, version=ver, params="{oops"),
            "invalid request: params is not valid",
        ),
        "bad_param": (tts_inputs(TEXT, voice=v, version=ver, params={"top_k": 0}), "top_k must be"),
        "unknown_param": (
            tts_inputs(TEXT, voice=v, version=ver, params={"speeed": 1}),
            "unknown params speeed",
        ),
        "bad_lang": (tts_inputs(TEXT, lang="fr", voice=v, version=ver), "unsupported lang"),
        "bad_voice_name": (tts_inputs(TEXT, voice="Not A Name", version=1), "invalid request: bad voice"),
        "no_reference": (tts_inputs(TEXT, voice=""), "needs ref_audio"),
        "short_reference": (
            tts_inputs(TEXT, voice="", ref_audio=reference_clip(1.0), ref_text=REF_TEXT),
            "must be 3-10 s",
        ),
        "unspeakable": (tts_inputs("!!! ???", voice=v, version=ver), "nothing to speak"),
        "bad_control": (tts_inputs(voice=v, control="explode"), "unknown control"),
        "good": (tts_inputs(TEXT, voice=v, version=ver, params=PARAMS), ""),
    }
    replies = tts_client.run({rid: inputs for rid, (inputs, _) in cases.items()})
    for rid, (_, expected) in cases.items():
        if rid == "good":
            np.testing.assert_allclose(_ok(replies[rid]), _ok(batch.alone[v]), atol=1e-5)
        else:
            error = replies[rid].error
            assert error is not None and expected in error, (
                rid,
                replies[rid].error,
            )
    assert triton_server.ready()
    # the model's own counters and Triton's are on the metrics port
    metrics = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    assert 'tritone_tts_submitted_total{model="tts",version="1"}' in metrics
    assert "nv_inference_request_success" in metrics
