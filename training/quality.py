"""Per-clip data-quality report: clipping, silence, noise and duration, with an exclude decision.

Every measure is computed from the waveform alone with numpy, on 25 ms frames every 10 ms:

* clipping ratio: fraction of samples at or above `clip_level` of full scale;
* speech frames: frames whose RMS is within `dynamic_range_db` of the loudest frame and above
  `noise_floor_dbfs`; leading/trailing silence and the silence ratio follow from them;
* silent clip: the loudest frame is below `silent_level_dbfs`;
* signal-to-noise estimate: the 95th-percentile frame power is taken as speech + noise and the
  10th-percentile as noise, SNR = 10·log10((P95 - P10) / P10). This needs some pauses in the clip
  (normal for read speech); a clip with no pause at all reads as noisier than it is.

A clip is excluded for: unreadable, silent, too_short, too_long, clipping, low_snr, mostly_silence.
Long leading/trailing silence and a sample rate under 32 kHz are warnings only (trim / upsample).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from training.data import Dataset, Utterance, write_list

MODEL_SAMPLE_RATE = 32_000


@dataclass(frozen=True)
class QualityThresholds:
    """Limits for the exclude decision; defaults suit voice-cloning fine-tuning data."""

    min_duration_s: float = 1.0
    max_duration_s: float = 15.0
    clip_level: float = 0.99  # |sample| at or above this fraction of full scale counts as clipped
    max_clipping_ratio: float = 0.001  # exclude when more than 0.1 % of samples are clipped
    silent_level_dbfs: float = -50.0  # loudest 25 ms frame below this: the clip is silent
    dynamic_range_db: float = 40.0  # frames this far below the loudest frame count as silence
    noise_floor_dbfs: float = -60.0  # frames below this always count as silence
    max_silence_ratio: float = 0.6  # exclude when more than 60 % of the clip is silence
    max_leading_silence_s: float = 1.0  # warning only
    max_trailing_silence_s: float = 1.0  # warning only
    min_snr_db: float = 15.0


@dataclass
class ClipQuality:
    """Measures and decision for one clip."""

    utt_id: str
    path: str
    speaker: str = ""
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    peak_dbfs: float = -math.inf
    speech_rms_dbfs: float = -math.inf
    clipping_ratio: float = 0.0
    leading_silence_s: float = 0.0
    trailing_silence_s: float = 0.0
    silence_ratio: float = 1.0
    snr_db: float | None = None
    exclude: bool = False
    reasons: list[str] = field(default_factory=list)  # why excluded (codes)
    warnings: list[str] = field(default_factory=list)  # worth a look, not excluded (codes)

    def describe(self) -> str:
        """One line: id, decision and the measures behind it."""
        snr = "n/a" if self.snr_db is None else f"{self.snr_db:.1f} dB"
        verdict = "EXCLUDE " + ",".join(self.reasons) if self.exclude else "ok"
        extra = f" (warn: {','.join(self.warnings)})" if self.warnings else ""
        return (
            f"{self.utt_id}: {verdict}{extra} | {self.duration_s:.2f} s, peak {self.peak_dbfs:.1f} dBFS, "
            f"clipped {100 * self.clipping_ratio:.2f} %, silence {100 * self.silence_ratio:.0f} % "
            f"(lead {self.leading_silence_s:.2f} s, trail {self.trailing_silence_s:.2f} s), SNR {snr}"
        )


def _to_db(power: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-20))


def analyse_clip(
    audio: np.ndarray,
    sample_rate: int,
    thresholds: QualityThresholds | None = None,
    *,
    utt_id: str = "",
    path: str = "",
    speaker: str = "",
) -> ClipQuality:
    """Measure one clip (float in [-1, 1] or integer PCM; mono `(n,)` or `(n, channels)`)."""
    th = thresholds or QualityThresholds()
    x = np.asarray(audio)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max + 1)
    else:
        x = x.astype(np.float64)
    channels = 1 if x.ndim == 1 else int(x.shape[1])
    q = ClipQuality(
        utt_id=utt_id, path=path, speaker=speaker, sample_rate=int(sample_rate), channels=channels
    )
    n = int(x.shape[0])
    q.duration_s = n / float(sample_rate) if sample_rate > 0 else 0.0
    if n == 0:
        q.exclude, q.reasons = True, ["silent", "too_short"]
        return q

    # Clipping is judged on the channels as recorded, the rest on the mono mix.
    peak = float(np.max(np.abs(x)))
    q.peak_dbfs = float(20.0 * np.log10(max(peak, 1e-10)))
    q.clipping_ratio = float(np.mean(np.abs(x) >= th.clip_level))
    mono = x if x.ndim == 1 else x.mean(axis=1)

    frame = max(1, round(0.025 * sample_rate))
    hop = max(1, round(0.010 * sample_rate))
    power = _frame_power(mono, frame, hop)
    frame_db = _to_db(power)
    loudest = float(frame_db.max())

    reasons: list[str] = []
    warnings: list[str] = []
    if q.duration_s < th.min_duration_s:
        reasons.append("too_short")
    if q.duration_s > th.max_duration_s:
        reasons.append("too_long")
    if q.clipping_ratio > th.max_clipping_ratio:
        reasons.append("clipping")

    if loudest < th.silent_level_dbfs:
        reasons.append("silent")
        q.silence_ratio = 1.0
        q.leading_silence_s = q.trailing_silence_s = q.duration_s
    else:
        speech = frame_db > max(loudest - th.dynamic_range_db, th.noise_floor_dbfs)
        idx = np.flatnonzero(speech)
        q.silence_ratio = float(1.0 - speech.mean())
        q.leading_silence_s = float(idx[0] * hop / sample_rate)
        q.trailing_silence_s = float(max(0.0, q.duration_s - (idx[-1] * hop + frame) / sample_rate))
        q.speech_rms_dbfs = float(_to_db(power[speech].mean()))
        p_signal = float(np.percentile(power, 95))
        p_noise = float(np.percentile(power, 10))
        if p_noise <= 1e-12:  # digital silence between words: effectively noise-free
            q.snr_db = 100.0
        else:
            q.snr_db = float(min(100.0, 10.0 * math.log10(max(p_signal - p_noise, 1e-20) / p_noise)))
        if q.snr_db < th.min_snr_db:
            reasons.append("low_snr")
        if q.silence_ratio > th.max_silence_ratio:
            reasons.append("mostly_silence")
        if q.leading_silence_s > th.max_leading_silence_s:
            warnings.append("long_leading_silence")
        if q.trailing_silence_s > th.max_trailing_silence_s:
            warnings.append("long_trailing_silence")
    if sample_rate < MODEL_SAMPLE_RATE:
        warnings.append("low_sample_rate")
    q.reasons, q.warnings, q.exclude = reasons, warnings, bool(reasons)
    return q


def _frame_power(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """Mean-square power of each frame (one frame for clips shorter than a frame)."""
    if x.shape[0] < frame:
        return np.array([float(np.mean(x**2))])
    windows = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    return np.mean(windows**2, axis=1)


def analyse_file(
    path: str | Path,
    thresholds: QualityThresholds | None = None,
    *,
    utt_id: str | None = None,
    speaker: str = "",
) -> ClipQuality:
    """Read an audio file and measure it; an unreadable file is excluded as 'unreadable'."""
    p = Path(path)
    uid = utt_id if utt_id is not None else p.stem
    try:
        audio, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError):
        return ClipQuality(utt_id=uid, path=str(p), speaker=speaker, exclude=True, reasons=["unreadable"])
    mono_or_multi = audio[:, 0] if audio.shape[1] == 1 else audio
    return analyse_clip(mono_or_multi, int(sr), thresholds, utt_id=uid, path=str(p), speaker=speaker)


@dataclass
class QualityReport:
    """Quality of every clip of a corpus, in corpus order."""

    clips: list[ClipQuality]
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)

    def excluded(self) -> list[ClipQuality]:
        return [c for c in self.clips if c.exclude]

    def kept(self) -> list[ClipQuality]:
        return [c for c in self.clips if not c.exclude]

    def summary(self) -> dict[str, object]:
        reasons = Counter(r for c in self.clips for r in c.reasons)
        warnings = Counter(w for c in self.clips for w in c.warnings)
        return {
            "clips": len(self.clips),
            "excluded": len(self.excluded()),
            "hours_total": round(sum(c.duration_s for c in self.clips) / 3600.0, 4),
            "hours_kept": round(sum(c.duration_s for c in self.kept()) / 3600.0, 4),
            "reasons": dict(sorted(reasons.items())),
            "warnings": dict(sorted(warnings.items())),
        }

    def to_json(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "summary": self.summary(),
            "thresholds": asdict(self.thresholds),
            "clips": [_json_safe(asdict(c)) for c in self.clips],
        }
        out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out

    def to_csv(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        names = [f.name for f in fields(ClipQuality)]
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            for c in self.clips:
                row = asdict(c)
                row["reasons"] = ";".join(c.reasons)
                row["warnings"] = ";".join(c.warnings)
                writer.writerow(row)
        return out


def _json_safe(row: dict[str, object]) -> dict[str, object]:
    """Replace non-finite floats (peak of a silent clip: -inf) by None: JSON has no infinities."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def quality_report(
    utterances: Iterable[Utterance] | Dataset,
    thresholds: QualityThresholds | None = None,
    *,
    workers: int = 2,
    progress: bool = True,
) -> QualityReport:
    """Measure every clip of a corpus (files are read and analysed in `workers` threads)."""
    utts = utterances.utterances if isinstance(utterances, Dataset) else list(utterances)
    th = thresholds or QualityThresholds()

    def one(u: Utterance) -> ClipQuality:
        return analyse_file(u.wav_path, th, utt_id=u.utt_id, speaker=u.speaker)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        clips = list(
            tqdm(pool.map(one, utts), total=len(utts), desc="quality", unit="clip", disable=not progress)
        )
    return QualityReport(clips, th)


def write_filtered_list(report: QualityReport, utterances: Iterable[Utterance], path: str | Path) -> Path:
    """Write a `.list` of the utterances the report keeps."""
    keep = {c.utt_id for c in report.kept()}
    return write_list([u for u in utterances if u.utt_id in keep], path)
