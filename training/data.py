"""Corpus ingest: GPT-SoVITS `.list` files and plain folders of audio + transcripts.

A corpus is a list of `Utterance`s. Reading never stops at the first problem: every
problem is collected as an `Issue` that names the file and line, so one run of
`tritone data validate` shows everything that needs fixing.

Accepted inputs (see docs/DATA.md):

* a `.list` file, one utterance per line: `wav_path|speaker|lang|text`. `lang` is one of
  zh, ja, en, ko, yue; the uppercase codes of GPT-SoVITS v1 (ZH, JP, JA, EN, KO, YUE) are
  mapped to lowercase. Relative wav paths are resolved against the list file's folder.
  Blank lines and lines starting with `#` are skipped.
* a folder of audio clips with transcripts, in one of three layouts:
  - `metadata.csv` (LJSpeech style): `clip_id|text` or `clip_id|text|normalized_text`,
    clips in `wavs/<clip_id>.wav` or `<clip_id>.wav`;
  - `transcripts.tsv`: `clip<TAB>text`, the clip given with or without its extension;
  - sidecar files: `name.wav` next to `name.txt` (or `name.lab`) holding the transcript.
  A folder holding no clips of its own but sub-folders that do is read as one speaker per
  sub-folder; otherwise the folder's name is the speaker (unless `speaker=` is given).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

LANGUAGES: tuple[str, ...] = ("zh", "ja", "en", "ko", "yue")
# Upper-case codes used by GPT-SoVITS v1 lists (and their obvious variants).
_V1_LANGUAGE_CODES: dict[str, str] = {
    "ZH": "zh",
    "JP": "ja",
    "JA": "ja",
    "EN": "en",
    "KO": "ko",
    "YUE": "yue",
}
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
TRANSCRIPT_EXTENSIONS: tuple[str, ...] = (".txt", ".lab")
METADATA_FILES: tuple[str, ...] = ("metadata.csv", "transcripts.tsv")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Utterance:
    """One clip of a corpus: where its audio is, who says what in which language."""

    utt_id: str  # the clip's file name without extension; unique in a corpus (upstream keys on it)
    wav_path: Path
    speaker: str
    lang: str
    text: str
    source: str = ""  # where it was read from, e.g. "train.list:12"

    def to_list_line(self, relative_to: Path | None = None) -> str:
        """The `.list` line for this utterance (wav path relative to `relative_to` when possible)."""
        path = self.wav_path
        if relative_to is not None:
            try:
                path = path.resolve().relative_to(relative_to.resolve())
            except ValueError:
                path = path.resolve()
        return f"{path.as_posix()}|{self.speaker}|{self.lang}|{self.text}"


@dataclass(frozen=True)
class Issue:
    """A problem found while reading a corpus, with where it is and what is wrong."""

    source: str  # file the problem is in
    line: int | None  # 1-based line number in `source`, when the problem is on a line
    code: str  # machine-readable kind: bad_format, missing_file, bad_audio, empty_text, ...
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.severity}: {self.message} [{self.code}]"


@dataclass
class Dataset:
    """Utterances that were read successfully, plus every issue found on the way."""

    utterances: list[Utterance] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def speakers(self) -> dict[str, int]:
        """Number of utterances per speaker, sorted by speaker name."""
        counts: dict[str, int] = {}
        for utt in self.utterances:
            counts[utt.speaker] = counts.get(utt.speaker, 0) + 1
        return dict(sorted(counts.items()))

    def raise_if_errors(self) -> None:
        """Raise ValueError listing every error (for callers that need a clean corpus)."""
        if self.errors:
            lines = "\n".join(str(i) for i in self.errors)
            raise ValueError(f"{len(self.errors)} problem(s) in the corpus:\n{lines}")

    def to_json(self) -> dict[str, object]:
        return {
            "utterances": len(self.utterances),
            "speakers": self.speakers(),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "issues": [asdict(i) for i in self.issues],
        }


def normalize_language(code: str) -> str | None:
    """Map a `.list` language code to one of LANGUAGES, or None when it is not one.

    Lowercase codes must match exactly; uppercase v1 codes (ZH, JP, EN, ...) are mapped.
    """
    code = code.strip()
    if code in LANGUAGES:
        return code
    return _V1_LANGUAGE_CODES.get(code)


def detect_language(text: str) -> str:
    """Guess the language of a transcript from its script: kana → ja, hangul → ko, han → zh, else en.

    Cantonese (yue) cannot be told from Mandarin by script; pass `lang="yue"` explicitly.
    """
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    if re.search(r"[\uac00-\ud7af\u1100-\u11ff]", text):
        return "ko"
    if re.search(r"[\u4e00-\u9fff\u3400-\u4dbf]", text):
        return "zh"
    return "en"


def check_audio(path: Path) -> str | None:
    """None when `path` is a readable, non-empty audio file; otherwise why it is not."""
    if not path.is_file():
        return f"audio file not found: {path}"
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:  # libsndfile: not audio / corrupt header
        return f"unreadable audio {path}: {exc}"
    if info.frames <= 0:
        return f"audio file has no samples: {path}"
    if info.samplerate <= 0 or info.channels <= 0:
        return f"audio file has a bad header ({info.samplerate} Hz, {info.channels} channels): {path}"
    return None


def read_list(path: str | Path, *, check_files: bool = True) -> Dataset:
    """Read and validate a GPT-SoVITS `.list` file.

    Every bad line becomes an Issue naming its line number; good lines become Utterances.
    With `check_files`, each wav is opened (header only) to check that it is readable audio.
    """
    list_path = Path(path)
    dataset = Dataset()
    src = str(list_path)
    try:
        raw = list_path.read_bytes()
    except OSError as exc:
        dataset.issues.append(Issue(src, None, "unreadable_list", f"cannot read list file: {exc}"))
        return dataset
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        dataset.issues.append(Issue(src, None, "bad_encoding", f"list file is not UTF-8: {exc}"))
        return dataset

    base = list_path.resolve().parent
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("|", 3)
        if len(fields) < 4:
            dataset.issues.append(
                Issue(
                    src,
                    lineno,
                    "bad_format",
                    f"expected 4 fields 'wav_path|speaker|lang|text', got {len(fields)}",
                )
            )
            continue
        wav_field, speaker, lang_field, text = (f.strip() for f in fields)
        problems: list[Issue] = []
        if not wav_field:
            problems.append(Issue(src, lineno, "bad_format", "empty wav path"))
        if not speaker:
            problems.append(Issue(src, lineno, "empty_speaker", "empty speaker name"))
        lang = normalize_language(lang_field)
        if lang is None:
            problems.append(
                Issue(
                    src,
                    lineno,
                    "bad_language",
                    f"unknown language code {lang_field!r} (expected one of {', '.join(LANGUAGES)}"
                    f" or a v1 code {', '.join(sorted(_V1_LANGUAGE_CODES))})",
                )
            )
        if not text:
            problems.append(Issue(src, lineno, "empty_text", "empty transcript"))
        if problems:
            dataset.issues.extend(problems)
            continue
        assert lang is not None
        wav_path = Path(wav_field)
        if not wav_path.is_absolute():
            wav_path = base / wav_path
        dataset.utterances.append(
            Utterance(wav_path.stem, wav_path, speaker, lang, text, source=f"{src}:{lineno}")
        )

    _check_corpus(dataset, check_files=check_files)
    return dataset


def read_folder(
    path: str | Path,
    *,
    speaker: str | None = None,
    lang: str | None = None,
    check_files: bool = True,
) -> Dataset:
    """Read a folder of clips with transcripts (layouts in the module docstring).

    `speaker` overrides the speaker name taken from folder names; `lang` sets the language of
    every clip (otherwise it is detected per clip from the transcript's script).
    """
    root = Path(path)
    dataset = Dataset()
    if not root.is_dir():
        dataset.issues.append(Issue(str(root), None, "missing_file", f"not a folder: {root}"))
        return dataset
    forced_lang: str | None = None
    if lang is not None:
        forced_lang = normalize_language(lang)
        if forced_lang is None:
            dataset.issues.append(
                Issue(
                    str(root),
                    None,
                    "bad_language",
                    f"unknown language code {lang!r} (expected one of {', '.join(LANGUAGES)})",
                )
            )
            return dataset

    speaker_dirs: list[tuple[Path, str]]
    if _has_own_clips(root):
        speaker_dirs = [(root, speaker or root.resolve().name)]
    else:
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _has_own_clips(d))
        speaker_dirs = [(d, speaker or d.name) for d in subdirs]
        if not speaker_dirs:
            dataset.issues.append(
                Issue(
                    str(root),
                    None,
                    "no_clips",
                    "no audio clips with transcripts found (see docs/DATA.md for layouts)",
                )
            )
            return dataset

    for folder, spk in speaker_dirs:
        _read_speaker_folder(folder, spk, forced_lang, dataset)
    _check_corpus(dataset, check_files=check_files)
    return dataset


def load_dataset(
    path: str | Path,
    *,
    speaker: str | None = None,
    lang: str | None = None,
    check_files: bool = True,
) -> Dataset:
    """Read a `.list` file or a folder, whichever `path` is."""
    p = Path(path)
    if p.is_dir():
        return read_folder(p, speaker=speaker, lang=lang, check_files=check_files)
    return read_list(p, check_files=check_files)


def resample(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy `resample_poly`) along the first axis; a no-op at equal rates."""
    x = np.asarray(audio, dtype=np.float64)
    if sample_rate == target_rate:
        return x
    if sample_rate <= 0 or target_rate <= 0:
        raise ValueError(f"bad sample rates {sample_rate} -> {target_rate}")
    g = math.gcd(int(sample_rate), int(target_rate))
    return resample_poly(x, target_rate // g, sample_rate // g, axis=0)


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float64 in [-1, 1], resampled to `sample_rate` when given."""
    audio, sr = sf.read(str(path), dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    if sample_rate is not None and sample_rate != sr:
        return resample(mono, int(sr), sample_rate), sample_rate
    return mono, int(sr)


def write_list(utterances: Iterable[Utterance], path: str | Path, *, relative: bool = True) -> Path:
    """Write utterances as a `.list` file (wav paths relative to its folder when `relative`)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.resolve().parent if relative else None
    lines = [u.to_list_line(base) for u in utterances]
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out


def write_issues_json(dataset: Dataset, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dataset.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


# --- internals --------------------------------------------------------------------------------


def _check_corpus(dataset: Dataset, *, check_files: bool) -> None:
    """Drop utterances with duplicate ids or bad audio, recording an issue for each."""
    seen: dict[str, Utterance] = {}
    kept: list[Utterance] = []
    for utt in dataset.utterances:
        src, line = _split_source(utt.source)
        first = seen.get(utt.utt_id)
        if first is not None:
            dataset.issues.append(
                Issue(
                    src,
                    line,
                    "duplicate_id",
                    f"duplicate utterance id {utt.utt_id!r} (file name already used at {first.source})",
                )
            )
            continue
        seen[utt.utt_id] = utt
        if check_files:
            problem = check_audio(utt.wav_path)
            if problem is not None:
                code = "missing_file" if not utt.wav_path.is_file() else "bad_audio"
                dataset.issues.append(Issue(src, line, code, problem))
                continue
        kept.append(utt)
    dataset.utterances = kept


def _split_source(source: str) -> tuple[str, int | None]:
    head, sep, tail = source.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return source, None


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _has_own_clips(folder: Path) -> bool:
    """True when the folder has a metadata file or audio clips directly inside it."""
    return any((folder / name).is_file() for name in METADATA_FILES) or bool(_audio_files(folder))


def _find_clip(folder: Path, name: str) -> Path:
    """Resolve a clip named in a metadata file: as given, with an audio extension, or under wavs/."""
    candidates = [folder / name, folder / "wavs" / name]
    for base in (folder / name, folder / "wavs" / name):
        candidates.extend(base.with_name(base.name + ext) for ext in AUDIO_EXTENSIONS)
    for c in candidates:
        if c.is_file() and c.suffix.lower() in AUDIO_EXTENSIONS:
            return c
    # Not found: report the most likely intended path.
    return folder / "wavs" / (name if Path(name).suffix else name + ".wav")


def _read_speaker_folder(folder: Path, speaker: str, lang: str | None, dataset: Dataset) -> None:
    metadata = [folder / n for n in METADATA_FILES if (folder / n).is_file()]
    if metadata:
        for meta in metadata:
            _read_metadata(meta, speaker, lang, dataset)
        return
    for audio in _audio_files(folder):
        transcript = next(
            (audio.with_suffix(ext) for ext in TRANSCRIPT_EXTENSIONS if audio.with_suffix(ext).is_file()),
            None,
        )
        if transcript is None:
            dataset.issues.append(
                Issue(
                    str(audio),
                    None,
                    "missing_transcript",
                    f"no transcript for {audio.name} (expected {audio.stem}.txt)",
                )
            )
            continue
        try:
            text = transcript.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as exc:
            dataset.issues.append(
                Issue(str(transcript), None, "bad_encoding", f"cannot read transcript: {exc}")
            )
            continue
        text = " ".join(text.split())  # sidecar transcripts may wrap lines
        if not text:
            dataset.issues.append(Issue(str(transcript), None, "empty_text", "empty transcript"))
            continue
        dataset.utterances.append(
            Utterance(audio.stem, audio, speaker, lang or detect_language(text), text, source=str(transcript))
        )
    for transcript in sorted(p for ext in TRANSCRIPT_EXTENSIONS for p in folder.glob(f"*{ext}")):
        if not any(transcript.with_suffix(ext).is_file() for ext in AUDIO_EXTENSIONS):
            dataset.issues.append(
                Issue(
                    str(transcript),
                    None,
                    "missing_file",
                    f"transcript without audio: no {transcript.stem}.wav",
                )
            )


def _read_metadata(meta: Path, speaker: str, lang: str | None, dataset: Dataset) -> None:
    src = str(meta)
    delimiter = "\t" if meta.suffix == ".tsv" else "|"
    try:
        content = meta.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        dataset.issues.append(Issue(src, None, "bad_encoding", f"cannot read metadata: {exc}"))
        return
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(delimiter)
        if len(fields) < 2:
            sep = "TAB" if delimiter == "\t" else "'|'"
            dataset.issues.append(Issue(src, lineno, "bad_format", f"expected 'clip{sep}text', got 1 field"))
            continue
        name = fields[0].strip()
        # LJSpeech: the third column, when present, is the normalised transcript.
        text = (fields[2] if len(fields) >= 3 and fields[2].strip() else fields[1]).strip()
        if not name:
            dataset.issues.append(Issue(src, lineno, "bad_format", "empty clip name"))
            continue
        if not text:
            dataset.issues.append(Issue(src, lineno, "empty_text", f"empty transcript for {name}"))
            continue
        clip = _find_clip(meta.parent, name)
        dataset.utterances.append(
            Utterance(clip.stem, clip, speaker, lang or detect_language(text), text, source=f"{src}:{lineno}")
        )


def summarize_issues(issues: Sequence[Issue], limit: int | None = None) -> str:
    """Human-readable list of issues, errors first."""
    ordered = sorted(issues, key=lambda i: (i.severity != "error", i.source, i.line or 0))
    shown = ordered if limit is None else ordered[:limit]
    lines = [str(i) for i in shown]
    if limit is not None and len(ordered) > limit:
        lines.append(f"... and {len(ordered) - limit} more")
    return "\n".join(lines)
