"""Evaluation metrics: text normalisation and WER, real pocketsphinx and Resemblyzer on flite speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.demo.build import finish_clip
from training.demo.engines import synth_one
from training.demo.voices import voice_by_id
from training.metrics import (
    audio_wer,
    centroid,
    cer,
    cosine,
    normalize_text,
    number_to_words,
    ordinal_words,
    periodicity,
    real_time_factor,
    speaker_embedding,
    speaker_embeddings,
    speaker_similarity,
    timed,
    to_mono_16k,
    transcribe,
    utterance_similarity,
    wer,
    year_to_words,
)

SENTENCES = [
    "The lighthouse keeper wrote a letter to his brother each week.",
    "Our neighbours grow enormous pumpkins behind the old stone barn.",
    "A small dog chased the pigeons across the market square.",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[np.ndarray, int]]]:
    """Three sentences each from two male flite voices, as 32 kHz int16 (the demo corpus's format)."""
    root = tmp_path_factory.mktemp("metrics")
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    for voice_id in ("flite_awb", "flite_rms"):
        voice = voice_by_id(voice_id)
        out[voice_id] = []
        for i, text in enumerate(SENTENCES):
            raw = root / f"{voice_id}_{i}.wav"
            synth_one(voice, text, raw)
            audio, sr = sf.read(str(raw), dtype="float64")
            out[voice_id].append((finish_clip(audio, int(sr)), 32_000))
    return out


def test_number_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(214) == "two hundred fourteen"
    assert number_to_words(65_000) == "sixty five thousand"
    assert number_to_words(1_200_305) == "one million two hundred thousand three hundred five"
    assert year_to_words(1887) == "eighteen eighty seven"
    assert year_to_words(1905) == "nineteen oh five"
    assert year_to_words(2004) == "two thousand four"
    assert year_to_words(1900) == "nineteen hundred"
    assert (
        ordinal_words(3) == "third"
        and ordinal_words(22) == "twenty second"
        and ordinal_words(40) == "fortieth"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "The meeting starts at 9:30 in room 214.",
            "the meeting starts at nine thirty in room two hundred fourteen",
        ),
        ("Built in 1887, restored in 2004!", "built in eighteen eighty seven restored in two thousand four"),
        ("It costs $12, or $1 with a card.", "it costs twelve dollars or one dollar with a card"),
        ("Prices rose by 4% in 2.5 years.", "prices rose by four percent in two point five years"),
        ("On the 3rd of June at 7:05.", "on the third of june at seven oh five"),
        ("The stadium holds 65,000 people.", "the stadium holds sixty five thousand people"),
        (
            "\u201cRoom 12,\u201d Mr. Adeyemi said\u2026 I\u2019d go.",
            "room twelve mister adeyemi said i'd go",
        ),
        ("She said yes - eventually - forty-six times.", "she said yes eventually forty six times"),
    ],
)
def test_normalize_text_en(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_wer_and_cer_scoring() -> None:
    ref = "The ticket costs $12, or $8 with a student card."
    assert wer(ref, ref) == 0.0
    assert wer(ref, "the ticket costs twelve dollars or eight dollars with a student card") == 0.0
    assert wer("one two three four", "one two three five") == pytest.approx(0.25)
    assert wer("one two", "") == 1.0 and wer("", "") == 0.0 and wer("", "extra") == 1.0
    assert wer("Hello, World", "hello world", normalize=False) == 1.0
    assert cer("你好，世界。", "你好世界") == 0.0
    assert cer("你好世界", "你好世") == pytest.approx(0.25)


def test_transcribe_refuses_languages_without_a_recogniser() -> None:
    with pytest.raises(ValueError, match="no offline speech recogniser for 'zh'"):
        transcribe(np.zeros(16_000), 16_000, lang="zh")


def test_flite_clip_is_recognised_with_low_wer(clips: dict[str, list[tuple[np.ndarray, int]]]) -> None:
    audio, sr = clips["flite_rms"][0]
    result, seconds = timed(lambda: audio_wer(audio, sr, SENTENCES[0]))
    assert result.hypothesis, "recogniser returned nothing"
    assert result.wer < 0.6, result
    assert seconds < 30
    # Same audio at another sample rate and as float gives a similar transcript.
    resampled = to_mono_16k(audio, sr)
    assert wer(SENTENCES[0], transcribe(resampled, 16_000)) < 0.6


def test_same_voice_is_more_similar_than_another_voice(
    clips: dict[str, list[tuple[np.ndarray, int]]],
) -> None:
    awb, rms = clips["flite_awb"], clips["flite_rms"]
    e_awb, e_rms = speaker_embeddings(awb), speaker_embeddings(rms)
    assert e_awb.shape == (3, 256)
    assert np.allclose(np.linalg.norm(e_awb, axis=1), 1.0, atol=1e-4)
    same = cosine(e_awb[0], e_awb[1])
    other = cosine(e_awb[0], e_rms[0])
    assert same > other + 0.05, (same, other)
    awb_centroid = centroid(e_awb[:2])
    genuine = speaker_similarity(awb[2][0], awb[2][1], awb_centroid)
    impostor = cosine(e_rms[2], awb_centroid)
    assert genuine > impostor + 0.05, (genuine, impostor)
    assert genuine == pytest.approx(cosine(e_awb[2], awb_centroid), abs=1e-5)
    # The convenience forms: utterance to utterance, and enrolment given as clips.
    assert utterance_similarity(awb[0][0], awb[0][1], rms[1][0], rms[1][1]) == pytest.approx(
        cosine(e_awb[0], e_rms[1]), abs=1e-5
    )
    assert speaker_similarity(rms[0][0], rms[0][1], awb[:1]) == pytest.approx(
        cosine(e_rms[0], e_awb[0]), abs=1e-5
    )
    # Audio at another sample rate gives (nearly) the same embedding.
    at_16k = speaker_embedding(to_mono_16k(awb[2][0], 32_000), 16_000)
    assert cosine(at_16k, e_awb[2]) > 0.99


def test_real_time_factor() -> None:
    assert real_time_factor(0.5, 2.0) == 0.25
    with pytest.raises(ValueError):
        real_time_factor(1.0, 0.0)
    value, seconds = timed(lambda: 42)
    assert value == 42 and seconds >= 0.0


def test_audio_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="empty"):
        to_mono_16k(np.zeros(0), 16_000)
    stereo = np.stack([np.ones(32_000), -np.ones(32_000)], axis=1) * 0.5
    assert np.allclose(to_mono_16k(stereo, 32_000), 0.0)
    assert len(to_mono_16k(np.zeros(44_100, dtype=np.int16), 44_100)) == 16_000


def test_written_wav_round_trip(tmp_path: Path, clips: dict[str, list[tuple[np.ndarray, int]]]) -> None:
    audio, sr = clips["flite_awb"][0]
    sf.write(str(tmp_path / "a.wav"), audio, sr, subtype="PCM_16")
    back, back_sr = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    assert back_sr == sr and np.array_equal(back, audio)


def test_periodicity_tells_voiced_speech_from_noise(clips: dict[str, list[tuple[np.ndarray, int]]]) -> None:
    sr = 32_000
    t = np.arange(sr) / sr
    tone = sum(np.sin(2 * np.pi * 160 * k * t) / k for k in range(1, 20))  # period: 200 samples
    noise = np.random.default_rng(0).standard_normal(sr)
    assert periodicity(tone, sr) > 0.9
    assert periodicity(noise, sr) < 0.2
    assert periodicity(np.zeros(sr), sr) == 0.0 and periodicity(np.zeros(10), sr) == 0.0
    speech = [periodicity(a.astype(np.float64) / 32768.0, s) for a, s in clips["flite_awb"]]
    # real speech sits between: voiced frames are periodic, fricatives and onsets are not
    assert all(0.5 < p < 0.95 for p in speech), speech
    # the same measure on the speech with its harmonics destroyed (the noise at its envelope)
    audio, s = clips["flite_awb"][0]
    x = audio.astype(np.float64) / 32768.0
    spectrum = np.fft.rfft(x)
    phases = np.exp(2j * np.pi * np.random.default_rng(1).random(spectrum.shape))
    scrambled = np.fft.irfft(np.abs(spectrum) * phases, n=x.size)
    assert periodicity(scrambled, s) < speech[0] - 0.2
