"""Evaluation metrics: speaker similarity, word error rate, real-time factor.

* Speaker similarity: cosine between Resemblyzer d-vectors (its bundled GE2E encoder, 256-d,
  unit length): an utterance against a speaker's enrolment centroid, or utterance to utterance.
* WER: pocketsphinx's bundled en-us model transcribes; jiwer scores against the reference after
  the same normalisation on both sides (lowercase, no punctuation, numbers and a few
  abbreviations spelled out). Only English can be recognised: no offline Mandarin recogniser
  is available here (pocketsphinx ships en-us only), so zh CER can be scored from a transcript
  you bring (`cer`) but `transcribe(..., lang="zh")` refuses.
* Periodicity: how voiced a clip sounds (the harmonics a whispering, noisy vocoder lacks).
* Real-time factor: processing seconds per second of audio produced.

Models load on first use and are cached for the process. All audio inputs are numpy arrays
at any sample rate (integer PCM or float in [-1, 1], mono or `(n, channels)`); they are
resampled to 16 kHz inside.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from training.data import resample

METRIC_SAMPLE_RATE = 16_000
# Utterance-to-centroid cosine above which two voices are taken as the same speaker: the
# equal-error threshold measured on 40 synthetic voices (docs/DATA.md). On that scale genuine
# held-out speech scores ~0.93, the same person in another engine ~0.86, the most similar other
# voice ~0.79 and an average other speaker ~0.60.
SAME_SPEAKER_THRESHOLD = 0.855

T = TypeVar("T")
Clip = tuple[np.ndarray, int]  # (audio, sample_rate)


# --- audio ----------------------------------------------------------------------------------


def to_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Any numpy audio → float32 mono at 16 kHz in [-1, 1]."""
    x = np.asarray(audio)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("audio is empty")
    return np.clip(resample(x, int(sample_rate), METRIC_SAMPLE_RATE), -1.0, 1.0).astype(np.float32)


def periodicity(audio: np.ndarray, sample_rate: int) -> float:
    """Mean peak of the normalised autocorrelation at pitch lags (2.5-12.5 ms, 80-400 Hz) over
    the clip's loud 40 ms frames (hop 20 ms; RMS at least half the clip's).

    About 1 for a steady voiced sound, under 0.2 for white noise; the clips of the demo corpus
    score 0.67-0.97 (mean 0.83), a vocoder that reproduces the envelope but not the harmonics
    about 0.4.
    """
    x = np.asarray(audio, dtype=np.float64).ravel()
    frame, hop = int(0.040 * sample_rate), int(0.020 * sample_rate)
    lo, hi = int(0.0025 * sample_rate), int(0.0125 * sample_rate)
    level = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    peaks = []
    for start in range(0, x.size - frame, hop):
        f = x[start : start + frame] - x[start : start + frame].mean()
        if level == 0.0 or np.sqrt(np.mean(f**2)) < 0.5 * level:
            continue
        ac = np.correlate(f, f, "full")[frame - 1 :]
        lags = np.arange(lo, hi)
        # per-lag mean products (a lag of L sums frame - L terms), relative to the power
        peaks.append(float(np.max(ac[lo:hi] / (frame - lags)) / (ac[0] / frame + 1e-12)))
    return float(np.mean(peaks)) if peaks else 0.0


# --- speaker similarity -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    try:
        with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "speaker similarity needs the Python packages resemblyzer and setuptools<81 "
            "(pip install resemblyzer 'setuptools<81')"
        ) from exc
    return VoiceEncoder("cpu", verbose=False)


_ENCODER_LOCK = threading.Lock()


def speaker_embedding(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The utterance's d-vector (256 floats, unit length)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import preprocess_wav

    wav = preprocess_wav(to_mono_16k(audio, sample_rate))  # loudness to -30 dBFS, long pauses cut (VAD)
    if wav.size == 0:
        raise ValueError("no speech found in the clip")
    encoder = _voice_encoder()
    with _ENCODER_LOCK:
        emb = encoder.embed_utterance(wav)
    return np.asarray(emb, dtype=np.float32)


def speaker_embeddings(clips: Iterable[Clip]) -> np.ndarray:
    """Stacked d-vectors of several clips, shape (n, 256)."""
    return np.stack([speaker_embedding(a, sr) for a, sr in clips])


def centroid(embeddings: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Mean of d-vectors, renormalised to unit length (a speaker's enrolment centroid)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError("need at least one embedding")
    c = e.mean(axis=0)
    return (c / np.linalg.norm(c)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def utterance_similarity(a: np.ndarray, sample_rate_a: int, b: np.ndarray, sample_rate_b: int) -> float:
    """Cosine between the d-vectors of two utterances."""
    return cosine(speaker_embedding(a, sample_rate_a), speaker_embedding(b, sample_rate_b))


def speaker_similarity(audio: np.ndarray, sample_rate: int, enrolment: np.ndarray | Sequence[Clip]) -> float:
    """Cosine of an utterance's d-vector to a speaker's enrolment centroid.

    `enrolment` is either a centroid / embedding array (from `centroid` or `speaker_embeddings`)
    or the enrolment clips themselves as `(audio, sample_rate)` pairs.
    """
    if isinstance(enrolment, np.ndarray):
        ref = enrolment if enrolment.ndim == 1 else centroid(enrolment)
    else:
        ref = centroid(speaker_embeddings(enrolment))
    return cosine(speaker_embedding(audio, sample_rate), ref)


# --- text normalisation for WER -----------------------------------------------------------------

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "vs": "versus", "etc": "et cetera"}
_CURRENCY = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros")}


def number_to_words(n: int) -> str:
    """Cardinal in words: 1204 → 'one thousand two hundred four' (no 'and', no hyphens)."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, rest = divmod(n, 10)
        return _TENS[tens] + ("" if rest == 0 else " " + _ONES[rest])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return number_to_words(high) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """A year as it is read: 1887 → 'eighteen eighty seven', 1905 → 'nineteen oh five', 2004 → 'two thousand four'."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    if low < 10:
        return number_to_words(high) + " oh " + _ONES[low]
    return number_to_words(high) + " " + number_to_words(low)


def ordinal_words(n: int) -> str:
    """21 → 'twenty first'."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits_to_words(raw: str) -> str:
    digits = raw.replace(",", "")
    if "." in digits:
        whole, frac = digits.split(".", 1)
        return f"{number_to_words(int(whole or '0'))} point {' '.join(_ONES[int(d)] for d in frac)}"
    n = int(digits)
    if "," not in raw and len(digits) == 4 and 1100 <= n <= 2099:
        return year_to_words(n)
    return number_to_words(n)


def normalize_text(text: str, lang: str = "en") -> str:
    """Text as compared for WER/CER: the same function runs on reference and hypothesis.

    en: lowercase; curly quotes straightened; Mr/Mrs/Dr/... expanded; currency, times (9:30),
    ordinals (3rd), decimals, percentages and integers spelled out (4-digit numbers 1100-2099
    without a comma are read as years); hyphens split words; other punctuation removed.
    zh/ja/yue: punctuation and spaces removed (score per character).
    """
    text = unicodedata.normalize("NFKC", text)
    if lang in ("zh", "ja", "yue"):
        return "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "Z", "S")))
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\b(mr|mrs|dr|vs|etc)\.", lambda m: _ABBREVIATIONS[m.group(1)] + " ", text)

    def currency(m: re.Match[str]) -> str:
        amount = m.group(2).replace(",", "")
        one, many = _CURRENCY[m.group(1)]
        if "." in amount:
            whole, cents = amount.split(".", 1)
            return f"{number_to_words(int(whole or '0'))} {many} {number_to_words(int(cents))} cents"
        n = int(amount)
        return f"{number_to_words(n)} {one if n == 1 else many}"

    text = re.sub(r"([$£€])\s?(\d[\d,]*(?:\.\d+)?)", currency, text)

    def clock(m: re.Match[str]) -> str:
        hour, minute = int(m.group(1)), int(m.group(2))
        if minute == 0:
            return f"{number_to_words(hour)} o'clock"
        if minute < 10:
            return f"{number_to_words(hour)} oh {_ONES[minute]}"
        return f"{number_to_words(hour)} {number_to_words(minute)}"

    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", clock, text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: ordinal_words(int(m.group(1))), text)
    text = re.sub(r"(\d[\d,]*(?:\.\d+)?)\s?%", lambda m: _digits_to_words(m.group(1)) + " percent", text)
    text = re.sub(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", lambda m: _digits_to_words(m.group(0)), text)
    text = text.replace("&", " and ").replace("%", " percent ")
    text = re.sub(r"[-\u2010-\u2015/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w for w in words if w)


# --- WER / CER ---------------------------------------------------------------------------------


def wer(reference: str, hypothesis: str, *, lang: str = "en", normalize: bool = True) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 = identical after normalisation).

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    import jiwer

    ref = normalize_text(reference, lang) if normalize else reference.strip()
    hyp = normalize_text(hypothesis, lang) if normalize else hypothesis.strip()
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


def cer(reference: str, hypothesis: str, *, lang: str = "zh", normalize: bool = True) -> float:
    """Character error rate (for zh: characters after removing punctuation and spaces)."""
    import jiwer

    ref = normalize_text(reference, lang) if normalize else reference
    hyp = normalize_text(hypothesis, lang) if normalize else hypothesis
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.cer(ref, hyp))


@functools.lru_cache(maxsize=1)
def _recognizer() -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "WER needs the Python packages pocketsphinx and jiwer (pip install pocketsphinx jiwer)"
        ) from exc
    return Decoder(samprate=METRIC_SAMPLE_RATE, loglevel="FATAL")


_RECOGNIZER_LOCK = threading.Lock()


def transcribe(audio: np.ndarray, sample_rate: int, lang: str = "en") -> str:
    """Recognise English speech with pocketsphinx's bundled en-us model (lowercase words)."""
    if lang != "en":
        raise ValueError(
            f"no offline speech recogniser for {lang!r}: pocketsphinx ships an en-us model only, "
            "so only English WER can be measured"
        )
    x = to_mono_16k(audio, sample_rate)
    pcm = np.round(x * 32767.0).astype("<i2").tobytes()
    decoder = _recognizer()
    with _RECOGNIZER_LOCK:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


@dataclass(frozen=True)
class WerResult:
    reference: str
    hypothesis: str
    wer: float


def audio_wer(audio: np.ndarray, sample_rate: int, reference: str, lang: str = "en") -> WerResult:
    """Transcribe a clip and score it against its text."""
    hyp = transcribe(audio, sample_rate, lang)
    return WerResult(reference, hyp, wer(reference, hyp, lang=lang))


# --- speed ---------------------------------------------------------------------------------------


def real_time_factor(processing_s: float, audio_s: float) -> float:
    """Seconds of processing per second of audio (below 1.0 is faster than real time)."""
    if audio_s <= 0:
        raise ValueError("audio duration must be positive")
    return processing_s / audio_s


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run `fn()` and return its result with the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
