"""Preprocessing: clips + transcripts -> per-utterance training features, cached and resumable.

Two stages, each writing one small file pair per utterance (`<key>.pt` + `<key>.json`, the JSON
written last so a half-written item is never taken for a finished one):

1. `prepare` (no model needed), under `<cache>/prep-<config hash>/`:
   audio resampled to 32 kHz and loudness-normalised as upstream (`normalize_peak`: 95 % peak,
   alpha 0.5), stored as int16; the s2 linear spectrogram (fp16, [1025, T] at 50 Hz); phones,
   phone ids and `word2ph` from the v2 text frontend; BERT features when a BERT directory is
   configured (zh only, as upstream; others are zeros and not stored).
2. `encode` (needs the SSL encoder, SoVITS `ssl_proj` and the quantizer codebook), under
   `<cache>/ssl-<hash of those weights + stage 1 config>/`: SSL features (fp16, [ssl_dim, T50])
   from the 16 kHz copy of the stage-1 audio, and the semantic tokens (25 Hz) they quantize to.

The item key is a hash of the audio file's bytes, the language and the transcript, so a moved
or renamed corpus reuses its cache and an edited transcript or re-recorded clip does not.
Running a stage again skips every item already done; `PrepStats` says how many were reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from training.data import Utterance, load_audio
from tritone.audio.features import SpectrogramConfig, spectrogram
from tritone.audio.io import normalize_peak, resample
from tritone.config import data_dir

PREP_FORMAT = 1
ENCODE_FORMAT = 1


@dataclass(frozen=True)
class PrepConfig:
    """Everything stage 1 depends on; its hash names the cache folder."""

    sample_rate: int = 32_000
    n_fft: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    peak: float = 0.95  # upstream 2-get-hubert-wav32k: maxx 0.95, alpha 0.5
    alpha: float = 0.5
    text_version: str = "v2"
    bert_dir: str | None = None

    @property
    def spec(self) -> SpectrogramConfig:
        return SpectrogramConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
        )

    def digest(self) -> str:
        blob = json.dumps({"format": PREP_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class PrepItem:
    """What the training loops need to know about one cached utterance without loading it."""

    key: str
    utt_id: str
    speaker: str
    lang: str
    text: str
    frames: int  # spectrogram frames (50 Hz) = samples // hop
    n_phones: int
    path: str  # the stage-1 `.pt` file

    def load(self) -> dict[str, Any]:
        return load_item(Path(self.path))


@dataclass
class PrepStats:
    done: int = 0  # computed in this run
    reused: int = 0  # found in the cache
    failed: list[tuple[str, str]] = field(default_factory=list)  # (utt_id, reason)


def default_cache_dir() -> Path:
    return data_dir() / "cache"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class HashIndex:
    """sha256 of audio files, remembered by (path, size, mtime) so re-runs do not re-read them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self.entries = {}

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2])
        sha = file_sha256(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, sha]
        self.dirty = True
        return sha

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
            self.dirty = False


def item_key(audio_sha256: str, lang: str, text: str) -> str:
    """The cache key of one utterance: its audio bytes, language and transcript."""
    return hashlib.sha256(f"{audio_sha256}\n{lang}\n{text}".encode()).hexdigest()[:32]


def load_item(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return data


def _save_atomic(obj: dict[str, Any], meta: dict[str, Any], pt_path: Path) -> None:
    pt_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pt_path.with_name(f".{pt_path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, pt_path)
    json_path = pt_path.with_suffix(".json")
    tmp_json = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
    tmp_json.write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True))
    os.replace(tmp_json, json_path)


def _item_paths(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.pt"


# ---------------------------------------------------------------------------------------------
# stage 1: audio, spectrogram, text


class Preparer:
    """Stage 1 for one `PrepConfig`; owns the text frontend (loaded once)."""

    def __init__(self, config: PrepConfig | None = None, cache_dir: str | Path | None = None) -> None:
        from tritone.text import TextFrontend

        self.config = config or PrepConfig()
        cache = Path(cache_dir or default_cache_dir())
        self.root = cache / f"prep-{self.config.digest()}"
        self.hashes = HashIndex(cache / "audio-sha256.json")
        self.frontend = TextFrontend(self.config.text_version, bert_dir=self.config.bert_dir)

    def prepare_one(self, utt: Utterance, key: str) -> dict[str, Any]:
        cfg = self.config
        audio, sr = load_audio(utt.wav_path)
        wav = resample(audio.astype(np.float32), sr, cfg.sample_rate)
        wav = normalize_peak(wav, cfg.peak, cfg.alpha)
        frames = len(wav) // cfg.hop_length
        if frames < 4:
            raise ValueError(f"clip too short ({len(wav) / cfg.sample_rate:.2f} s)")
        wav = wav[: frames * cfg.hop_length]
        spec = spectrogram(torch.from_numpy(wav), cfg.spec)[0]  # [bins, frames]
        seq = self.frontend.process(utt.text, utt.lang)
        out: dict[str, Any] = {
            "wav": torch.from_numpy(np.clip(np.round(wav * 32767.0), -32768, 32767).astype(np.int16)),
            "spec": spec.to(torch.float16),
            "phones": torch.tensor(seq.ids, dtype=torch.int16),
            "word2ph": torch.tensor(seq.word2ph, dtype=torch.int16),
        }
        if np.any(seq.bert):
            out["bert"] = torch.from_numpy(seq.bert).to(torch.float16)
        out["meta"] = {
            "utt_id": utt.utt_id,
            "speaker": utt.speaker,
            "lang": utt.lang,
            "text": utt.text,
            "norm_text": seq.norm_text,
            "phones": seq.phones,
        }
        return out

    def run(self, utterances: Sequence[Utterance], progress: bool = True) -> tuple[list[PrepItem], PrepStats]:
        """Prepare every utterance not yet cached; returns the items (in input order) and stats."""
        stats = PrepStats()
        items: list[PrepItem] = []
        bar = tqdm(utterances, desc="prepare", unit="utt", disable=not progress, mininterval=2.0)
        for utt in bar:
            key = item_key(self.hashes.sha256(utt.wav_path), utt.lang, utt.text)
            pt = _item_paths(self.root, key)
            meta_path = pt.with_suffix(".json")
            if meta_path.is_file() and pt.is_file():
                meta = json.loads(meta_path.read_text())
                stats.reused += 1
            else:
                try:
                    data = self.prepare_one(utt, key)
                except Exception as exc:  # one bad clip must not stop a corpus
                    stats.failed.append((utt.utt_id, f"{type(exc).__name__}: {exc}"))
                    continue
                meta = {
                    "key": key,
                    "utt_id": utt.utt_id,
                    "speaker": utt.speaker,
                    "lang": utt.lang,
                    "text": utt.text,
                    "frames": int(data["spec"].shape[1]),
                    "n_phones": int(data["phones"].shape[0]),
                }
                _save_atomic(data, meta, pt)
                stats.done += 1
            # speaker/utt id come from the list being processed (the same clip may be listed twice)
            items.append(
                PrepItem(
                    key=key,
                    utt_id=utt.utt_id,
                    speaker=utt.speaker,
                    lang=utt.lang,
                    text=utt.text,
                    frames=int(meta["frames"]),
                    n_phones=int(meta["n_phones"]),
                    path=str(pt),
                )
            )
        self.hashes.save()
        return items, stats


def prepare(
    utterances: Sequence[Utterance],
    config: PrepConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[list[PrepItem], PrepStats]:
    return Preparer(config, cache_dir).run(utterances, progress=progress)


# ---------------------------------------------------------------------------------------------
# stage 2: SSL features and semantic tokens


def wav16_from_item(data: dict[str, Any], sample_rate: int = 32_000) -> Tensor:
    """The stage-1 audio as float32 at 16 kHz (the SSL encoder's input)."""
    wav = data["wav"].float().numpy() / 32767.0
    return torch.from_numpy(resample(wav, sample_rate, 16_000))


def encoder_digest(ssl: torch.nn.Module, ssl_proj: torch.nn.Module, quantizer: torch.nn.Module) -> str:
    from tritone.checkpoints import weights_hash

    parts = [weights_hash(m.state_dict()) for m in (ssl, ssl_proj, quantizer)]
    return hashlib.sha256(json.dumps([ENCODE_FORMAT, *parts]).encode()).hexdigest()[:16]


@torch.no_grad()
def ssl_features(ssl: torch.nn.Module, wav16: Tensor) -> Tensor:
    """[T16] float -> SSL features [dim, T50] (one clip)."""
    return ssl(wav16.unsqueeze(0))[0]


@torch.no_grad()
def semantic_codes(ssl_proj: torch.nn.Module, quantizer: Any, feats: Tensor) -> Tensor:
    """SSL features [dim, T50] -> semantic tokens [T50 // stride] (long)."""
    x = ssl_proj(feats.unsqueeze(0))
    codes: Tensor = quantizer.encode(x)[0, 0]
    return codes


def encode(
    items: Sequence[PrepItem],
    ssl: torch.nn.Module,
    ssl_proj: torch.nn.Module,
    quantizer: Any,
    cache_dir: str | Path | None = None,
    prep_digest: str = "",
    sample_rate: int = 32_000,
    progress: bool = True,
) -> tuple[dict[str, Path], PrepStats]:
    """Stage 2: SSL features + semantic tokens for every item; returns key -> `.pt` path."""
    digest = hashlib.sha256(f"{encoder_digest(ssl, ssl_proj, quantizer)}|{prep_digest}".encode()).hexdigest()[
        :16
    ]
    root = Path(cache_dir or default_cache_dir()) / f"ssl-{digest}"
    was_training = [m.training for m in (ssl, ssl_proj, quantizer)]
    for m in (ssl, ssl_proj, quantizer):
        m.eval()
    stats = PrepStats()
    out: dict[str, Path] = {}
    try:
        for item in tqdm(items, desc="encode", unit="utt", disable=not progress, mininterval=2.0):
            pt = _item_paths(root, item.key)
            if pt.with_suffix(".json").is_file() and pt.is_file():
                stats.reused += 1
                out[item.key] = pt
                continue
            data = item.load()
            feats = ssl_features(ssl, wav16_from_item(data, sample_rate))
            codes = semantic_codes(ssl_proj, quantizer, feats)
            _save_atomic(
                {"ssl": feats.to(torch.float16), "codes": codes.to(torch.int16)},
                {"key": item.key, "ssl_frames": int(feats.shape[1]), "codes": int(codes.shape[0])},
                pt,
            )
            stats.done += 1
            out[item.key] = pt
    finally:
        for m, mode in zip((ssl, ssl_proj, quantizer), was_training):
            m.train(mode)
    return out, stats


def iter_batches(
    lengths: Sequence[int],
    max_frames: int,
    max_batch: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
) -> Iterator[list[int]]:
    """Length-bucketed batches of indices (at most `max_frames` padded frames and `max_batch` rows),
    shuffled per `seed`; with `world` > 1 each rank gets every world-th batch (equal counts)."""
    g = torch.Generator().manual_seed(seed)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in cur] + [lengths[i]])
        if cur and (longest * (len(cur) + 1) > max_frames or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    if len(lengths) < world:
        raise ValueError(f"{len(lengths)} utterances cannot feed {world} processes")
    while len(batches) < world:  # every rank needs a batch: split the biggest
        big = max(range(len(batches)), key=lambda i: len(batches[i]))
        b = batches.pop(big)
        batches += [b[: len(b) // 2], b[len(b) // 2 :]]
    perm = torch.randperm(len(batches), generator=g).tolist()
    batches = [batches[p] for p in perm]
    usable = len(batches) - len(batches) % world if world > 1 else len(batches)
    yield from batches[rank:usable:world]
