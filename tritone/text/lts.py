"""Letter-to-sound rules for English words missing from CMUdict.

A small, deterministic rule set: at each position the first rule whose letters and
left/right contexts match produces its phones, then the cursor moves past those letters.
Vowels come out unstressed and `_assign_stress` marks one primary stress by a few
English tendencies (prefixes are unstressed, suffixes such as -tion pull stress to the
syllable before them, otherwise the first syllable leads). It will not match a
dictionary, but it turns any word (brand names, made-up words) into plausible ARPAbet.

Context syntax: lowercase letters are literal, "C" is one consonant letter, "V" one vowel
letter, "#" the word edge; anything else is regular-expression syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from tritone.text.symbols import ARPA_VOWELS

_CONSONANT = "[bcdfghjklmnpqrstvwxz]"
_VOWEL = "[aeiouy]"
_VOWEL_PHONES = frozenset(ARPA_VOWELS)


@dataclass(frozen=True)
class _Rule:
    letters: str
    left: re.Pattern[str] | None
    right: re.Pattern[str] | None
    phones: tuple[str, ...]


def _expand(context: str, edge: str) -> str:
    return context.replace("C", _CONSONANT).replace("V", _VOWEL).replace("#", edge)


def _rule(left: str, letters: str, right: str, phones: str) -> _Rule:
    return _Rule(
        letters=letters,
        left=re.compile(f"(?:{_expand(left, '^')})$") if left else None,
        right=re.compile(_expand(right, "$")) if right else None,
        phones=tuple(phones.split()),
    )


# (left context, letters, right context, phones); per letter, the first match wins.
# "Ce#" style contexts detect a silent final e that lengthens the vowel before it.
_MAGIC_E = "C(?:e|es|ed)#"
_RULE_TABLE: list[tuple[str, str, str, str]] = [
    # --- vowels -------------------------------------------------------------------
    ("", "augh", "", "AO"), ("", "au", "", "AO"), ("", "aw", "", "AO"),
    ("", "ai", "", "EY"), ("", "ay", "", "EY"), ("", "are", "#", "EH R"),
    ("", "ar", "", "AA R"), ("", "all", "", "AO L"), ("", "alk", "", "AO K"),
    ("", "a", _MAGIC_E, "EY"), ("", "a", "#", "AH"), ("#C*", "a", "CV", "EY"),
    ("", "a", "", "AE"),
    ("", "eau", "", "OW"), ("", "ee", "", "IY"), ("", "ea", "", "IY"), ("", "ei", "", "EY"),
    ("V.*C", "ey", "#", "IY"), ("", "ey", "", "EY"), ("", "ew", "", "UW"), ("", "eu", "", "UW"),
    ("", "er", "", "ER"), ("V.*C", "e", "#", ""), ("V.*(?:s|z|x|ch|sh|c|g)", "es", "#", "IH Z"),
    ("V.*C", "es", "#", "Z"), ("V.*[td]", "ed", "#", "IH D"), ("V.*[pkfsx]|V.*[cs]h", "ed", "#", "T"),
    ("V.*C", "ed", "#", "D"), ("", "e", _MAGIC_E, "IY"), ("#C*", "e", "#", "IY"), ("", "e", "", "EH"),
    ("", "igh", "", "AY"), ("#C*", "ie", "#", "AY"), ("", "ie", "", "IY"), ("", "ir", "", "ER"),
    ("", "i", _MAGIC_E, "AY"), ("", "i", "nd#|ld#", "AY"), ("", "i", "[aou]", "IY"),
    ("#C*", "i", "CV", "AY"), ("", "i", "", "IH"),
    ("", "ough", "t", "AO"), ("", "ough", "", "OW"), ("", "oo", "k", "UH"), ("", "oo", "", "UW"),
    ("", "ou", "", "AW"), ("", "ow", "#", "OW"), ("", "ow", "", "AW"), ("", "oa", "", "OW"),
    ("", "oi", "", "OY"), ("", "oy", "", "OY"), ("", "or", "", "AO R"), ("", "o", _MAGIC_E, "OW"),
    ("", "o", "#|ld|st#", "OW"), ("#C*", "o", "CV", "OW"), ("", "o", "", "AA"),
    ("", "ur", "", "ER"), ("", "ue", "#", "UW"), ("", "ui", "", "UW"),
    ("[rlj]", "u", _MAGIC_E, "UW"), ("", "u", _MAGIC_E, "Y UW"), ("", "u", "", "AH"),
    ("#", "y", "V", "Y"), ("#C+", "y", "#", "AY"), ("", "y", "#", "IY"), ("", "y", "", "IH"),
    # --- consonants -----------------------------------------------------------------
    ("", "bb", "", "B"), ("m", "b", "#", ""), ("", "b", "", "B"),
    ("#", "chr", "", "K R"), ("", "ch", "", "CH"), ("", "ck", "", "K"), ("", "cc", "[eiy]", "K S"),
    ("", "c", "[eiy]", "S"), ("", "cc", "", "K"), ("", "c", "", "K"),
    ("", "dd", "", "D"), ("", "dg", "", "JH"), ("", "d", "", "D"),
    ("", "ff", "", "F"), ("", "f", "", "F"),
    ("#", "gh", "", "G"), ("", "gh", "", ""), ("#", "gn", "", "N"), ("", "gn", "#", "N"),
    ("", "gg", "", "G"), ("", "g", "[eiy]", "JH"), ("", "g", "", "G"),
    ("", "h", "V", "HH"), ("", "h", "", ""),
    ("", "j", "", "JH"),
    ("#", "kn", "", "N"), ("", "k", "", "K"),
    ("", "ll", "", "L"), ("C", "le", "#", "AH L"), ("", "l", "", "L"),
    ("", "mm", "", "M"), ("", "m", "", "M"),
    ("", "ng", "#|C", "NG"), ("", "n", "k", "NG"), ("", "nn", "", "N"), ("", "n", "", "N"),
    ("", "ph", "", "F"), ("", "pp", "", "P"), ("#", "ps", "", "S"), ("", "p", "", "P"),
    ("", "qu", "", "K W"), ("", "q", "", "K"),
    ("", "rr", "", "R"), ("", "rh", "", "R"), ("", "r", "", "R"),
    ("", "sh", "", "SH"), ("", "ss", "", "S"), ("V", "sion", "", "ZH AH N"), ("", "sion", "", "SH AH N"),
    ("V", "s", "V", "Z"), ("[bdgvmnlr]", "s", "#", "Z"), ("", "s", "", "S"),
    ("", "tch", "", "CH"), ("#", "th", "", "TH"), ("", "th", "", "TH"), ("", "tion", "", "SH AH N"),
    ("", "ti", "a|ou", "SH"), ("", "tt", "", "T"), ("", "t", "", "T"),
    ("", "v", "", "V"),
    ("#", "wh", "", "W"), ("#", "wr", "", "R"), ("", "w", "", "W"),
    ("#", "x", "", "Z"), ("", "x", "", "K S"),
    ("", "zz", "", "Z"), ("", "z", "", "Z"),
]  # fmt: skip


@cache
def _rules() -> dict[str, list[_Rule]]:
    by_letter: dict[str, list[_Rule]] = {}
    for left, letters, right, phones in _RULE_TABLE:
        by_letter.setdefault(letters[0], []).append(_rule(left, letters, right, phones))
    return by_letter


def _match(rule: _Rule, word: str, i: int) -> bool:
    if not word.startswith(rule.letters, i):
        return False
    if rule.left is not None and not rule.left.search(word[:i]):
        return False
    return rule.right is None or bool(rule.right.match(word[i + len(rule.letters) :]))


_UNSTRESSED_PREFIXES = ("a", "be", "de", "re", "con", "com", "ex", "pre", "per", "en", "em")
_STRESS_PULLING_SUFFIXES = ("tion", "sion", "ic", "ical", "ity", "ian", "ial", "ious", "eous")


def _assign_stress(word: str, phones: list[str]) -> list[str]:
    vowel_idx = [i for i, p in enumerate(phones) if p in _VOWEL_PHONES]
    if not vowel_idx:
        return phones
    primary = 0
    if len(vowel_idx) >= 2:
        suffix = next((s for s in _STRESS_PULLING_SUFFIXES if word.endswith(s)), None)
        if suffix is not None:
            # The syllable right before the suffix: count the suffix's own vowels back.
            suffix_vowels = max(1, len(re.findall(_VOWEL + "+", suffix)))
            primary = max(0, len(vowel_idx) - suffix_vowels - 1)
        elif word.startswith(_UNSTRESSED_PREFIXES) and len(word) > 4:
            primary = 1
    out = list(phones)
    for n, i in enumerate(vowel_idx):
        out[i] = phones[i] + ("1" if n == primary else "0")
    return out


def letter_to_sound(word: str) -> list[str]:
    """ARPAbet with stress for a lowercase ASCII word, by rule; [] for an empty word."""
    word = re.sub("[^a-z]", "", word.lower())
    rules = _rules()
    phones: list[str] = []
    i = 0
    while i < len(word):
        rule = next((r for r in rules.get(word[i], []) if _match(r, word, i)), None)
        if rule is None:  # every letter has a catch-all rule; this is a guard
            i += 1
            continue
        phones.extend(rule.phones)
        i += len(rule.letters)
    return _assign_stress(word, phones)
