"""Build the bundled multi-speaker demo corpus, offline and deterministically.

Layout of the output folder:

    manifest.json         voices (engine, licence, person, split), splits, sentence sets, versions
    utterances.jsonl      one row per clip: id, voice, person, split, lang, text, duration, sha256
    train.list            seen speakers x training sentences           (base model training)
    eval.list             seen speakers x held-out sentences           (base model evaluation)
    heldout_train.list    held-out speakers x training sentences       (adapter training / enrolment)
    heldout_eval.list     held-out speakers x held-out sentences       (adapter evaluation)
    train_generated.list  seen speakers x generated sentences, one voice each (GPT text coverage)
    wavs/<voice>/<voice>_<sentence>.wav   32 kHz mono 16-bit

Each clip: engine audio → sox pitch shift (variants only) → leading/trailing silence set to
0.15 s → resampled to 32 kHz (polyphase) → peak normalised to -3 dBFS → 16-bit PCM. Nothing random
happens after the seeded sentence split, so a rebuild with the same package versions gives
the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf
from tqdm import tqdm

from training.data import resample
from training.demo.engines import (
    check_dependencies,
    package_versions,
    pitch_shift,
    synth_festival_batch,
    synth_one,
)
from training.demo.generated import generate_sentences
from training.demo.sentences import Sentence, load_sentences, split_sentences
from training.demo.voices import VoiceSpec, check_person_splits, select_voices

DEFAULT_SEED = 20240611
SAMPLE_RATE = 32_000
EVAL_FRACTION = 0.1
TARGET_PEAK = 10 ** (-3.0 / 20.0)  # -3 dBFS
TRIM_THRESHOLD_DB = -45.0  # relative to the loudest 10 ms frame
TRIM_MARGIN_S = 0.15
FESTIVAL_BATCH = 25
FORMAT_VERSION = 1  # bump whenever a change alters the output bytes, so old builds are not reused

SPLITS: dict[str, str] = {
    "train": "speakers the base model trains on, training sentences",
    "eval": "speakers the base model trains on, held-out sentences (never in any training split)",
    "heldout_train": "held-out speakers (never seen by the base model), training sentences: adapter training / enrolment",
    "heldout_eval": "held-out speakers, held-out sentences: adapter and zero-shot evaluation",
    "train_generated": (
        "speakers the base model trains on, generated sentences (one voice each): text coverage for the GPT"
    ),
}
# What `--generated` was measured with (the demo recipe's optional `text` stage; QUALITY.md §4).
# Off by default: the measured gain did not carry over to the voices, and the clips are 1.3 GB.
GENERATED_SENTENCES = 6000
_PYTHON_PACKAGES = ("numpy", "scipy", "soundfile", "pypinyin")

T = TypeVar("T")


@dataclass(frozen=True)
class DemoCorpus:
    """A built demo corpus on disk."""

    root: Path
    manifest: dict[str, Any]

    def list_path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        return self.root / f"{split}.list"

    def utterances(self) -> list[dict[str, Any]]:
        lines = (self.root / "utterances.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@dataclass(frozen=True)
class _Clip:
    voice: VoiceSpec
    sentence: Sentence
    split: str

    @property
    def utt_id(self) -> str:
        return f"{self.voice.voice_id}_{self.sentence.sentence_id}"

    @property
    def rel_path(self) -> str:
        return f"wavs/{self.voice.voice_id}/{self.utt_id}.wav"


def default_demo_dir() -> Path:
    from tritone.config import data_dir

    return data_dir() / "demo"


def build_demo_corpus(
    out_dir: str | Path | None = None,
    *,
    sentences: int | None = None,
    generated: int = 0,
    voices: list[str] | None = None,
    extra_voices: bool = False,
    seed: int = DEFAULT_SEED,
    eval_fraction: float = EVAL_FRACTION,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> DemoCorpus:
    """Build (or reuse, when already built with the same options) the demo corpus in `out_dir`.

    `sentences` limits the written sentences per language (fast tests); `generated` is the
    number of generated English sentences for `train_generated.list` (training/demo/generated.py;
    default none, so the list is empty); `voices` picks voice ids (see `training.demo.voices`);
    `extra_voices` allows the RHVoice voices from Debian non-free.
    """
    root = Path(out_dir) if out_dir is not None else default_demo_dir()
    chosen = select_voices(voices, extra_voices=extra_voices)
    check_person_splits(chosen)
    check_dependencies(chosen)
    if sentences is not None and sentences < 1:
        raise ValueError("--sentences must be at least 1")
    if generated < 0:
        raise ValueError("--generated must be at least 0")

    langs = sorted({v.lang for v in chosen})
    sentence_sets = {
        lang: split_sentences(load_sentences(lang), seed=seed, eval_fraction=eval_fraction, limit=sentences)
        for lang in langs
    }
    speakers_of_generated = [v for v in chosen if v.split == "train" and v.lang == "en"]
    generated_set = (
        generate_sentences(generated, seed=seed, exclude=load_sentences("en"))
        if speakers_of_generated
        else []
    )
    options = {
        "sentences": sentences,
        "generated": generated,
        "voices": [v.voice_id for v in chosen],
        "extra_voices": extra_voices,
        "seed": seed,
        "eval_fraction": eval_fraction,
    }
    software = {
        "debian": package_versions([p for v in chosen for p in v.packages]),
        "python": {name: _python_version(name) for name in _PYTHON_PACKAGES},
    }

    existing = _reusable(root, options, software)
    if existing is not None and not force:
        return existing
    _prepare_out_dir(root)

    clips = [
        _Clip(v, s, _split_of(v, is_eval))
        for v in chosen
        for is_eval, group in ((False, sentence_sets[v.lang][0]), (True, sentence_sets[v.lang][1]))
        for s in group
    ] + _generated_clips(generated_set, speakers_of_generated, seed)
    n_workers = workers or os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="raw-", dir=root) as tmp:
        raw_dir = Path(tmp)
        native_rates = _synthesise_raw(clips, raw_dir, n_workers, progress)
        rows = _parallel(
            lambda c: _finish(c, root, raw_dir),
            clips,
            n_workers,
            desc="demo: 32 kHz clips",
            progress=progress,
        )
    rows.sort(key=lambda r: r["id"])

    for split in SPLITS:
        lines = [f"{r['wav']}|{r['voice']}|{r['lang']}|{r['text']}\n" for r in rows if r["split"] == split]
        (root / f"{split}.list").write_text("".join(lines), encoding="utf-8")
    with (root / "utterances.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")

    manifest = _manifest(chosen, rows, sentence_sets, generated_set, options, software, native_rates)
    (root / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8"
    )
    return DemoCorpus(root, manifest)


# --- steps ------------------------------------------------------------------------------------


def _generated_clips(sentences: list[Sentence], voices: list[VoiceSpec], seed: int) -> list[_Clip]:
    """Each generated sentence spoken by one training voice: every voice once per round, seeded order."""
    if not voices:
        return []
    rng = random.Random(f"tritone-demo-generated-voices:{seed}")
    clips: list[_Clip] = []
    for start in range(0, len(sentences), len(voices)):
        order = sorted(voices, key=lambda v: v.voice_id)
        rng.shuffle(order)
        clips.extend(_Clip(v, s, "train_generated") for v, s in zip(order, sentences[start:], strict=False))
    return clips


def _split_of(voice: VoiceSpec, is_eval: bool) -> str:
    if voice.split == "train":
        return "eval" if is_eval else "train"
    return "heldout_eval" if is_eval else "heldout_train"


def _python_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _reusable(root: Path, options: dict[str, Any], software: dict[str, Any]) -> DemoCorpus | None:
    """The existing corpus in `root` when it was built with the same options and versions and is complete."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        corpus = DemoCorpus(root, manifest)
        rows = corpus.utterances()
    except (OSError, ValueError):
        return None
    if (
        manifest.get("format_version") != FORMAT_VERSION
        or manifest.get("options") != options
        or manifest.get("software") != software
    ):
        return None
    if len(rows) != manifest.get("utterances") or not all((root / r["wav"]).is_file() for r in rows):
        return None
    return corpus


def _prepare_out_dir(root: Path) -> None:
    """Create `root`, or clear a previous demo build in it; refuse to write into any other non-empty folder."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"output path exists and is not a folder: {root}")
    root.mkdir(parents=True, exist_ok=True)
    entries = [p for p in root.iterdir()]
    if not entries:
        return
    if not (root / "manifest.json").is_file() and not (root / "utterances.jsonl").is_file():
        raise ValueError(f"refusing to build the demo corpus into a non-empty folder that is not one: {root}")
    for p in entries:
        if p.name == "wavs" or p.name.startswith("raw-"):
            shutil.rmtree(p)
        elif p.name in ("manifest.json", "utterances.jsonl") or p.suffix == ".list":
            p.unlink()


def _parallel(
    fn: Callable[[T], Any], items: Iterable[T], workers: int, *, desc: str, progress: bool
) -> list[Any]:
    seq = list(items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(fn, seq), total=len(seq), desc=desc, unit="job", disable=not progress))


def _raw_path(raw_dir: Path, voice: VoiceSpec, sentence: Sentence) -> Path:
    engine_dir = f"{voice.engine}-{voice.engine_voice}".replace("+", "_").replace("/", "_")
    return raw_dir / "engine" / engine_dir / f"{sentence.sentence_id}.wav"


def _synthesise_raw(clips: list[_Clip], raw_dir: Path, workers: int, progress: bool) -> dict[str, int]:
    """Run each engine voice once per sentence it speaks (pitch variants reuse it); returns native rates."""
    bases: dict[tuple[str, str, str], VoiceSpec] = {}
    todo: dict[tuple[str, str, str], dict[Path, str]] = {}
    for c in clips:
        base = bases.setdefault(c.voice.base_key, c.voice)
        todo.setdefault(c.voice.base_key, {})[_raw_path(raw_dir, base, c.sentence)] = c.sentence.text
    jobs: list[Callable[[], None]] = []
    # Festival batches are the longest jobs: start them first so they do not trail at the end.
    for base in sorted(bases.values(), key=lambda b: b.engine != "festival"):
        items = [(text, path) for path, text in todo[base.base_key].items()]
        if base.engine == "festival":
            for i in range(0, len(items), FESTIVAL_BATCH):
                chunk = items[i : i + FESTIVAL_BATCH]
                jobs.append(functools.partial(synth_festival_batch, base, chunk, scratch=raw_dir))
        else:
            jobs.extend(functools.partial(synth_one, base, text, path) for text, path in items)
    _parallel(lambda job: job(), jobs, workers, desc="demo: synthesis", progress=progress)
    rates: dict[str, int] = {}
    for c in clips:
        if c.voice.voice_id not in rates:
            rates[c.voice.voice_id] = int(sf.info(str(_raw_path(raw_dir, c.voice, c.sentence))).samplerate)
    return rates


def trim_silence(x: np.ndarray, sample_rate: int, *, threshold_db: float = TRIM_THRESHOLD_DB,
                 margin_s: float = TRIM_MARGIN_S) -> np.ndarray:  # fmt: skip
    """Leading/trailing silence set to `margin_s` around the first and last loud 10 ms frame."""
    margin = round(margin_s * sample_rate)
    # Pad first, so engines that start speaking at once still get the full margin.
    x = np.concatenate([np.zeros(margin), x, np.zeros(margin)])
    hop = max(1, sample_rate // 100)
    n_frames = len(x) // hop
    if n_frames == 0:
        return x
    power = np.mean(x[: n_frames * hop].reshape(n_frames, hop) ** 2, axis=1)
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    loud = np.flatnonzero(db > db.max() + threshold_db)
    start = max(0, int(loud[0]) * hop - margin)
    end = min(len(x), (int(loud[-1]) + 1) * hop + margin)
    return x[start:end]


def finish_clip(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Engine audio (float, any rate) → trimmed, 32 kHz, peak -3 dBFS, int16."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    x = trim_silence(x, sample_rate)
    x = resample(x, sample_rate, SAMPLE_RATE)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0.0:
        raise ValueError("synthesised clip is silent")
    x = x * (TARGET_PEAK / peak)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _finish(clip: _Clip, root: Path, raw_dir: Path) -> dict[str, Any]:
    raw = _raw_path(raw_dir, clip.voice, clip.sentence)
    if clip.voice.pitch_cents:
        shifted = raw_dir / "pitch" / clip.voice.voice_id / f"{clip.sentence.sentence_id}.wav"
        pitch_shift(raw, shifted, clip.voice.pitch_cents)
        raw = shifted
    audio, sr = sf.read(str(raw), dtype="float64", always_2d=False)
    pcm = finish_clip(audio, int(sr))
    out = root / clip.rel_path
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return {
        "id": clip.utt_id,
        "wav": clip.rel_path,
        "voice": clip.voice.voice_id,
        "person": clip.voice.person,
        "split": clip.split,
        "lang": clip.sentence.lang,
        "sentence_id": clip.sentence.sentence_id,
        "category": clip.sentence.category,
        "text": clip.sentence.text,
        "duration_s": round(len(pcm) / SAMPLE_RATE, 4),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }


def _manifest(
    voices: list[VoiceSpec],
    rows: list[dict[str, Any]],
    sentence_sets: dict[str, tuple[list[Sentence], list[Sentence]]],
    generated: list[Sentence],
    options: dict[str, Any],
    software: dict[str, Any],
    native_rates: dict[str, int],
) -> dict[str, Any]:
    def seconds(items: Iterable[dict[str, Any]]) -> float:
        return round(sum(r["duration_s"] for r in items), 3)

    voice_entries = []
    for v in voices:
        mine = [r for r in rows if r["voice"] == v.voice_id]
        voice_entries.append(
            {
                "voice_id": v.voice_id,
                "speaker": v.voice_id,
                "person": v.person,
                "split": v.split,
                "lang": v.lang,
                "engine": v.engine,
                "engine_voice": v.engine_voice,
                "pitch_cents": v.pitch_cents,
                "gender": v.gender,
                "accent": v.accent,
                "native_sample_rate": native_rates[v.voice_id],
                "debian_packages": list(v.packages),
                "debian_archive": v.archive,
                "licence": v.licence,
                "copyright_file": v.copyright_file,
                "note": v.note,
                "utterances": len(mine),
                "seconds": seconds(mine),
            }
        )
    persons: dict[str, str] = {}
    for v in voices:
        persons[v.person] = v.split
    return {
        "name": "tritone-demo",
        "format_version": FORMAT_VERSION,
        "description": "Multi-speaker synthetic speech built offline from Debian speech synthesisers; sentences written for tritone.",
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "sample_format": "PCM_16",
        "processing": (
            f"engine audio -> sox pitch (variants) -> leading/trailing silence set to {TRIM_MARGIN_S} s"
            f" ({TRIM_THRESHOLD_DB:.0f} dB re loudest 10 ms) -> polyphase resampling to {SAMPLE_RATE} Hz"
            " -> peak -3 dBFS -> 16-bit PCM"
        ),
        "seed": options["seed"],
        "options": options,
        "utterances": len(rows),
        "seconds": seconds(rows),
        "splits": {
            name: {
                "list": f"{name}.list",
                "description": desc,
                "utterances": sum(1 for r in rows if r["split"] == name),
                "seconds": seconds(r for r in rows if r["split"] == name),
                "voices": sorted({r["voice"] for r in rows if r["split"] == name}),
            }
            for name, desc in SPLITS.items()
        },
        "persons": dict(sorted(persons.items())),
        "sentences": {
            lang: {"train": [s.sentence_id for s in tr], "eval": [s.sentence_id for s in ev]}
            for lang, (tr, ev) in sorted(sentence_sets.items())
        },
        "generated_sentences": {
            "lang": "en",
            "count": len(generated),
            "source": "training/demo/generated.py",
        },
        "voices": voice_entries,
        "software": software,
    }
