"""Per-clip quality report on synthetic signals: each defect is flagged, a clean clip passes."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import cli as data_cli
from training.data import read_list
from training.quality import QualityThresholds, analyse_clip, analyse_file, quality_report

SR = 32_000


def speech_like(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Harmonic 'syllables' (0.4 s, Hann envelope) separated by short pauses, 0.2 s silence at both ends."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * sr))
    syllable, gap, edge = int(0.4 * sr), int(0.15 * sr), int(0.2 * sr)
    t = np.arange(syllable) / sr
    pos = edge
    while pos + syllable <= len(x) - edge:
        f0 = rng.uniform(100, 180)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 11))
        x[pos : pos + syllable] = tone * np.hanning(syllable)
        pos += syllable + gap
    assert pos > edge, "clip too short for one syllable"
    x *= 0.5 / np.max(np.abs(x))
    return x + 1e-5 * rng.standard_normal(len(x))  # a faint recording noise floor (-100 dBFS)


def test_clean_clip_passes() -> None:
    q = analyse_clip(speech_like(), SR)
    assert not q.exclude, q.describe()
    assert q.reasons == [] and q.warnings == []
    assert q.duration_s == pytest.approx(3.0)
    assert q.clipping_ratio == 0.0
    assert q.snr_db is not None and q.snr_db > 40
    assert 0.15 <= q.leading_silence_s <= 0.3
    assert 0.15 <= q.trailing_silence_s <= 0.6
    assert q.silence_ratio < 0.5


def test_clipped_clip_is_excluded() -> None:
    clipped = np.clip(4.0 * speech_like(), -1.0, 1.0)
    q = analyse_clip(clipped, SR)
    assert q.exclude and q.reasons == ["clipping"]
    assert q.clipping_ratio > 0.05


def test_integer_pcm_clipping_is_detected() -> None:
    pcm = (np.clip(4.0 * speech_like(), -1.0, 1.0) * 32767).astype(np.int16)
    assert analyse_clip(pcm, SR).reasons == ["clipping"]


def test_silent_clips_are_excluded() -> None:
    assert analyse_clip(np.zeros(3 * SR), SR).reasons == ["silent"]
    hiss = 1e-4 * np.random.default_rng(1).standard_normal(3 * SR)  # about -80 dBFS
    q = analyse_clip(hiss, SR)
    assert q.exclude and "silent" in q.reasons
    assert q.silence_ratio == 1.0
    assert analyse_clip(np.zeros(0), SR).exclude


def test_too_short_and_too_long_clips_are_excluded() -> None:
    short = analyse_clip(speech_like(0.8), SR)
    assert short.reasons == ["too_short"]
    long = analyse_clip(speech_like(16.0), SR)
    assert long.reasons == ["too_long"]
    relaxed = QualityThresholds(min_duration_s=0.5, max_duration_s=20.0)
    assert not analyse_clip(speech_like(0.8), SR, relaxed).exclude
    assert not analyse_clip(speech_like(16.0), SR, relaxed).exclude


def test_noisy_clip_is_excluded_with_a_plausible_snr() -> None:
    clean = speech_like()
    voiced = np.abs(clean) > 1e-3
    signal_power = float(np.mean(clean[voiced] ** 2))
    noise = np.random.default_rng(2).standard_normal(len(clean)) * np.sqrt(signal_power / 10 ** (5 / 10))
    q = analyse_clip(clean + noise, SR)
    assert q.exclude and "low_snr" in q.reasons
    assert q.snr_db is not None and 0.0 < q.snr_db < 12.0
    moderate = clean + noise * 10 ** (-25 / 20)  # 30 dB SNR: kept
    assert not analyse_clip(moderate, SR).exclude


def test_long_edge_silence_is_a_warning_and_mostly_silence_is_excluded() -> None:
    padded = np.concatenate([np.zeros(int(1.5 * SR)), speech_like(2.0), np.zeros(int(1.2 * SR))])
    q = analyse_clip(padded, SR)
    assert q.warnings == ["long_leading_silence", "long_trailing_silence"]
    assert q.leading_silence_s == pytest.approx(1.7, abs=0.05)
    assert q.reasons == ["mostly_silence"]  # 2.9 s of 4.7 s plus pauses is silence
    stereo = np.stack([speech_like(), speech_like()], axis=1)
    assert analyse_clip(stereo, SR).channels == 2
    assert "low_sample_rate" in analyse_clip(speech_like(sr=16_000), 16_000).warnings


def _corpus(tmp_path: Path) -> Path:
    clips = {
        "clean": speech_like(),
        "clipped": np.clip(4.0 * speech_like(), -1.0, 1.0),
        "silent": np.zeros(3 * SR),
        "short": speech_like(0.85),
    }
    lines = []
    for name, audio in clips.items():
        sf.write(str(tmp_path / f"{name}.wav"), audio, SR, subtype="PCM_16")
        lines.append(f"{name}.wav|spk|en|Clip {name}.\n")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    lst = tmp_path / "c.list"
    lst.write_text("".join(lines), encoding="utf-8")
    return lst


def test_report_over_a_corpus_and_its_outputs(tmp_path: Path) -> None:
    lst = _corpus(tmp_path)
    report = quality_report(read_list(lst), progress=False)
    decisions = {c.utt_id: c.reasons for c in report.clips}
    assert decisions == {"clean": [], "clipped": ["clipping"], "silent": ["silent"], "short": ["too_short"]}
    summary = report.summary()
    assert summary["clips"] == 4 and summary["excluded"] == 3
    assert summary["reasons"] == {"clipping": 1, "silent": 1, "too_short": 1}
    data = json.loads(report.to_json(tmp_path / "q.json").read_text(encoding="utf-8"))
    assert data["clips"][2]["reasons"] == ["silent"] and data["clips"][2]["snr_db"] is None
    assert data["thresholds"]["min_duration_s"] == 1.0
    with report.to_csv(tmp_path / "q.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["exclude"] for r in rows] == ["False", "True", "True", "True"]
    assert rows[1]["reasons"] == "clipping"
    assert analyse_file(tmp_path / "broken.wav").reasons == ["unreadable"]


def test_cli_report_writes_json_csv_and_filtered_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lst = _corpus(tmp_path)
    parser = argparse.ArgumentParser(prog="tritone")
    data_cli.add_commands(parser.add_subparsers(dest="command"))
    argv = ["data", "report", str(lst), "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]
    argv += ["--filtered-list", str(tmp_path / "kept.list"), "--min-duration", "0.5"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "clipped: EXCLUDE clipping" in out and "silent: EXCLUDE silent" in out
    assert (tmp_path / "kept.list").read_text(
        encoding="utf-8"
    ) == "clean.wav|spk|en|Clip clean.\nshort.wav|spk|en|Clip short.\n"
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["summary"]["excluded"] == 2
    assert (tmp_path / "r.csv").is_file()
