"""The watermark on real speech (rendered here with Debian's flite): detection rate after 16-bit
PCM and resampling to 16 kHz, false positives on clean speech, and its power below the speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gateway.watermark import Embedder, Payload, detect, embed
from tritone.audio import load_audio, resample, to_pcm16

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A watermark should survive ordinary handling of the audio file.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her.",
    "The rainbow is a division of white light into many beautiful colors.",
    "Numbers like forty two and nineteen eighty four are spoken too.",
    "Voice cloning must be traceable to the request that produced it.",
    "Streaming output arrives in small chunks and is marked as it goes.",
]
VOICES = ["slt", "awb", "rms", "kal16"]

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite (apt) not installed")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """40 utterances of real synthetic speech at 32 kHz (the gateway's output rate)."""
    root = tmp_path_factory.mktemp("flite")
    clips = []
    for i, text in enumerate(SENTENCES):
        for voice in VOICES:
            path = root / f"{i}-{voice}.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, timeout=60)
            audio, sr = load_audio(Path(path))
            clips.append(resample(audio, sr, 32_000))
    return clips


def _payload(rng: np.random.Generator) -> Payload:
    return Payload.create(
        f"tenant{rng.integers(100)}", f"t.voice{rng.integers(1000)}", f"{int(rng.integers(1 << 47)):012x}"
    )


def _pcm16(x: np.ndarray) -> np.ndarray:
    return to_pcm16(x).astype(np.float32) / 32767.0


def test_detection_rate_after_pcm16_and_resampling(speech: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    hits = trials = 0
    for clip in speech:
        for _ in range(3):
            payload = _payload(rng)
            marked = embed(clip, 32_000, payload)
            for audio, sr in [
                (_pcm16(marked), 32_000),
                (_pcm16(resample(_pcm16(marked), 32_000, 16_000)), 16_000),
                (_pcm16(resample(_pcm16(marked), 32_000, 24_000)), 24_000),
            ]:
                found = detect(audio, sr)
                trials += 1
                hits += int(found.found and found.payload == payload)
    assert trials == len(speech) * 9
    assert hits / trials >= 0.99, f"{hits}/{trials}"


def test_false_positives_on_clean_speech(speech: list[np.ndarray]) -> None:
    false = 0
    trials = 0
    for clip in speech:
        for audio, sr in [(clip, 32_000), (resample(clip, 32_000, 16_000), 16_000)]:
            trials += 1
            false += int(detect(_pcm16(audio), sr).found)
    # and noise, silence, tones
    rng = np.random.default_rng(1)
    for _i in range(20):
        trials += 1
        noise = (0.1 * rng.standard_normal(32_000 * 2)).astype(np.float32)
        false += int(detect(noise, 32_000).found)
    assert not detect(np.zeros(64_000, np.float32), 32_000).found
    assert false / trials <= 0.01, f"{false}/{trials}"


def test_watermark_power_is_at_least_30_db_below_the_speech(speech: list[np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    for clip in speech:
        marked = embed(clip, 32_000, _payload(rng))
        mark = marked - clip
        ratio = 10 * np.log10(np.sum(clip.astype(np.float64) ** 2) / np.sum(mark.astype(np.float64) ** 2))
        assert ratio >= 30.0, ratio


def test_streaming_embedding_equals_whole_signal(speech: list[np.ndarray]) -> None:
    payload = Payload.create("acme", "acme.alice", "0123456789ab")
    clip = speech[0]
    whole = embed(clip, 32_000, payload)
    emb = Embedder(payload, 32_000)
    pieces = []
    rng = np.random.default_rng(3)
    i = 0
    while i < clip.size:
        n = int(rng.integers(1, 9000))
        pieces.append(emb.process(clip[i : i + n]))
        i += n
    pieces.append(emb.flush())
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    found = detect(whole, 32_000)
    assert found.payload is not None and found.payload.request_id_hex == "0123456789ab"


def test_payload_round_trip_and_crc() -> None:
    p = Payload.create("acme", "acme.alice", "00ff00ff00ff")
    assert Payload.from_bits(p.bits()) == p
    bits = p.bits().copy()
    bits[5] ^= 1
    assert Payload.from_bits(bits) is None
    with pytest.raises(ValueError):
        embed(np.zeros(100, np.float32), 22_050, p)
