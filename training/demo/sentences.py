"""The demo corpus's own sentences (written for tritone) and the seeded train/eval sentence split."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

SENTENCE_FILES: dict[str, str] = {"en": "sentences_en.txt", "zh": "sentences_zh.txt"}
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Sentence:
    sentence_id: str  # en001, zh042, ...
    lang: str
    category: (
        str  # short, statement, long, question, exclaim, numbers_words, numbers_digits, names, punct, ...
    )
    text: str


def load_sentences(lang: str) -> list[Sentence]:
    """All sentences of one language, in file order (`id<TAB>category<TAB>text`, `#` comments)."""
    if lang not in SENTENCE_FILES:
        raise ValueError(f"no demo sentences for language {lang!r}")
    path = _HERE / SENTENCE_FILES[lang]
    sentences: list[Sentence] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(f"{path}:{lineno}: expected 'id<TAB>category<TAB>text'")
        sentences.append(Sentence(parts[0].strip(), lang, parts[1].strip(), parts[2].strip()))
    return sentences


def split_sentences(
    sentences: list[Sentence],
    *,
    seed: int,
    eval_fraction: float = 0.1,
    limit: int | None = None,
) -> tuple[list[Sentence], list[Sentence]]:
    """Seeded (train, eval) sentence sets; eval sentences are never spoken in any training split.

    The full set is shuffled once with `seed`; the first `eval_fraction` becomes the eval pool.
    `limit` keeps that many sentences in total (at least one eval sentence when limit >= 2),
    taken from the front of each pool, so small builds are prefixes of the full build's choice.
    """
    if not sentences:
        return [], []
    lang = sentences[0].lang
    order = sorted(sentences, key=lambda s: s.sentence_id)
    random.Random(f"tritone-demo:{seed}:{lang}").shuffle(order)
    n_eval_pool = max(1, round(len(order) * eval_fraction))
    eval_pool, train_pool = order[:n_eval_pool], order[n_eval_pool:]
    if limit is not None and limit < len(order):
        n_eval = 0 if limit < 2 else min(len(eval_pool), max(1, round(limit * eval_fraction)))
        eval_pool, train_pool = eval_pool[:n_eval], train_pool[: limit - n_eval]

    def by_id(items: list[Sentence]) -> list[Sentence]:
        return sorted(items, key=lambda s: s.sentence_id)

    return by_id(train_pool), by_id(eval_pool)
