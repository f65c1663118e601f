"""Mandarin G2P: normalised Chinese text → opencpop-strict phones with tones.

Input is the output of `normalize_zh`: Han characters and the punctuation phones only.
jieba segments the text (pypinyin's phrase dictionary resolves polyphones per word, e.g.
银行 hang2 vs 行走 xing2), tone sandhi adjusts tones, 儿 suffixes take the tone of the
syllable they attach to, and each syllable becomes two phones (initial, final+tone).
`word2ph` has one entry per input character: 2 for a syllable, 1 for punctuation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from tritone.text.pinyin import syllable_phones
from tritone.text.symbols import PUNCTUATION
from tritone.text.tone_sandhi import Word, apply_sandhi, merge_words, word_set, word_syllables

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # jieba imports the deprecated pkg_resources
    import jieba.posseg

_PUNCT = frozenset(PUNCTUATION)
# Words where 儿 is its own morpheme ("child", a name), so it is not an erhua suffix.
NOT_ERHUA: frozenset[str] = word_set(
    """
    女儿 儿女 男儿 婴儿 幼儿 孤儿 患儿 少儿 健儿 宠儿 胎儿 孙儿 侄儿 妻儿 犬儿 混血儿 婴幼儿
    流浪儿 弃儿 乞儿 病儿 新生儿 双胞胎儿 托儿 育儿 儿童 我儿 吾儿 孩儿 小儿 红孩儿
    """
)
# Part-of-speech tags (adjective, abbreviation, person name) where 儿 is not a suffix.
_NOT_ERHUA_POS = frozenset({"a", "j", "nr"})


@dataclass(frozen=True)
class ZhG2P:
    phones: list[str]
    word2ph: list[int]


def _segment(text: str) -> list[Word]:
    return [(pair.word, pair.flag) for pair in jieba.posseg.lcut(text)]


def _erhua(word: str, pos: str, syl: list[str]) -> list[str]:
    """A trailing 儿 suffix is read with the tone of the syllable before it (哪儿 → er3)."""
    if not word.endswith("儿") or len(word) < 2 or len(syl) != len(word):
        return syl
    if word in NOT_ERHUA or word[-2:] in NOT_ERHUA or pos in _NOT_ERHUA_POS:
        return syl
    if syl[-1] in ("er1", "er2", "er5"):
        syl[-1] = "er" + syl[-2][-1]
    return syl


def _word_phones(word: str, pos: str) -> tuple[list[str], list[int]]:
    if all(ch in _PUNCT for ch in word):
        return list(word), [1] * len(word)
    syl = list(word_syllables(word))
    if len(syl) != len(word):  # pypinyin grouped characters differently: go one by one
        syl = [word_syllables(ch)[0] for ch in word]
    syl = apply_sandhi(word, pos, syl)
    syl = _erhua(word, pos, syl)
    phones: list[str] = []
    word2ph: list[int] = []
    for ch, s in zip(word, syl):
        if ch in _PUNCT:
            phones.append(ch)
            word2ph.append(1)
            continue
        # Every reading pypinyin has maps (checked over its whole dictionary); should a
        # future reading not, a neutral schwa keeps the character aligned instead of failing.
        pair = syllable_phones(s) or ["EE", "e" + (s[-1] if s[-1:] in "12345" else "5")]
        phones.extend(pair)
        word2ph.append(len(pair))
    return phones, word2ph


def g2p_zh(norm_text: str) -> ZhG2P:
    """Phones and per-character phone counts of normalised Chinese text."""
    phones: list[str] = []
    word2ph: list[int] = []
    for word, pos in merge_words(_segment(norm_text)):
        p, w = _word_phones(word, pos)
        phones.extend(p)
        word2ph.extend(w)
    return ZhG2P(phones, word2ph)
