"""Preprocessing: per-utterance cache keyed by content + config, reused on re-runs, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.data import Utterance
from training.preprocess import PrepConfig, encode, iter_batches, prepare
from tritone.models.base import BaseModel, BaseModelConfig


def _clip(path: Path, seconds: float, freq: float, sr: int = 16_000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    audio = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, audio.astype(np.float32), sr)
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> list[Utterance]:
    texts = ["The kettle is boiling.", "Bring the green umbrella.", "Nobody answered the phone."]
    out = []
    for i, text in enumerate(texts):
        wav = _clip(tmp_path / f"clip{i}.wav", 1.0 + 0.3 * i, 180.0 + 40 * i)
        out.append(Utterance(f"clip{i}", wav, "spk", "en", text))
    out.append(Utterance("zh0", _clip(tmp_path / "zh0.wav", 1.2, 220.0), "spk", "zh", "今天的风很大。"))
    return out


def test_prepare_writes_features_and_reuses_the_cache(corpus: list[Utterance], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    items, stats = prepare(corpus, cache_dir=cache, progress=False)
    assert (stats.done, stats.reused, stats.failed) == (4, 0, [])
    first = items[0].load()
    assert first["wav"].dtype == torch.int16 and first["spec"].shape[0] == 1025
    # 16 kHz source -> 32 kHz, one 50 Hz spectrogram frame per 640 samples
    assert first["spec"].shape[1] == items[0].frames == first["wav"].shape[0] // 640 == 50
    assert first["phones"].shape[0] == items[0].n_phones == int(first["word2ph"].sum())
    assert first["meta"]["phones"][-1] == "."
    peak = float(first["wav"].abs().max()) / 32767
    assert 0.5 < peak < 0.96  # upstream loudness normalisation: 0.95 * 0.5 + 0.5 * original peak

    again, stats2 = prepare(corpus, cache_dir=cache, progress=False)
    assert (stats2.done, stats2.reused) == (0, 4)
    assert [i.key for i in again] == [i.key for i in items]

    # an edited transcript is a new item; the others stay cached
    edited = [*corpus[:3], Utterance("zh0", corpus[3].wav_path, "spk", "zh", "我们明天早上见。")]
    third, stats3 = prepare(edited, cache_dir=cache, progress=False)
    assert (stats3.done, stats3.reused) == (1, 3)
    assert third[3].key != items[3].key

    # another configuration gets its own cache folder
    _, stats4 = prepare(corpus, PrepConfig(peak=0.9), cache_dir=cache, progress=False)
    assert stats4.done == 4
    assert len([p for p in cache.iterdir() if p.name.startswith("prep-")]) == 2


def test_a_half_written_item_is_redone(corpus: list[Utterance], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    items, _ = prepare(corpus, cache_dir=cache, progress=False)
    Path(items[1].path).with_suffix(".json").unlink()  # crashed before the sidecar was written
    _, stats = prepare(corpus, cache_dir=cache, progress=False)
    assert (stats.done, stats.reused) == (1, 3)
    meta = json.loads(Path(items[1].path).with_suffix(".json").read_text())
    assert meta["utt_id"] == "clip1"


def test_bad_clips_are_reported_not_fatal(corpus: list[Utterance], tmp_path: Path) -> None:
    short = _clip(tmp_path / "short.wav", 0.05, 200.0)
    items, stats = prepare(
        [*corpus, Utterance("short", short, "spk", "en", "Hi.")], cache_dir=tmp_path / "c", progress=False
    )
    assert len(items) == 4 and stats.failed[0][0] == "short"


def test_encode_caches_ssl_features_and_tokens(corpus: list[Utterance], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    items, _ = prepare(corpus, cache_dir=cache, progress=False)
    model = BaseModel.random(BaseModelConfig.tiny(), seed=0)
    paths, stats = encode(
        items, model.ssl, model.sovits.ssl_proj, model.sovits.quantizer, cache, progress=False
    )
    assert (stats.done, stats.reused) == (4, 0)
    enc = torch.load(paths[items[0].key], weights_only=True)
    assert enc["ssl"].shape[0] == model.config.sovits.ssl_dim
    assert enc["codes"].shape[0] == enc["ssl"].shape[1] // 2  # 25 Hz tokens from 50 Hz features
    assert int(enc["codes"].max()) < model.config.sovits.codebook_size
    _, stats2 = encode(items, model.ssl, model.sovits.ssl_proj, model.sovits.quantizer, cache, progress=False)
    assert (stats2.done, stats2.reused) == (0, 4)
    # other encoder weights -> other tokens, recomputed
    other = BaseModel.random(BaseModelConfig.tiny(), seed=1)
    _, stats3 = encode(items, other.ssl, other.sovits.ssl_proj, other.sovits.quantizer, cache, progress=False)
    assert stats3.done == 4


def test_length_bucketed_batches_cover_everything_once() -> None:
    lengths = [5, 50, 7, 48, 9, 30, 31, 6]
    batches = list(iter_batches(lengths, max_frames=100, max_batch=3, seed=0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and max(lengths[i] for i in b) * len(b) <= 100
    ranks = [list(iter_batches(lengths, 100, 3, seed=0, rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
