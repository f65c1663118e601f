"""Written pinyin syllables to the opencpop-strict initial/final phones GPT-SoVITS uses.

The mapping follows a handful of spelling rules of pinyin itself (y/w are written onsets,
"u" after j/q/x/y is really "ü", "i" after z/c/s and zh/ch/sh/r is an apical vowel), so it
is computed rather than stored; tests check it against upstream's table entry by entry.
"""

from __future__ import annotations

from functools import cache

from tritone.text.symbols import ZH_FINALS, ZH_TONES

# Syllables with no consonant get a glottal-onset pseudo-initial, by their first vowel.
_ZERO_ONSETS = {"a": "AA", "e": "EE", "o": "OO"}
# After the written onset "y" the final is spelled differently from its phone.
_Y_FINALS = {
    "a": "a", "an": "En", "ang": "ang", "ao": "ao", "e": "E", "i": "i", "in": "in", "ing": "ing",
    "o": "o", "ong": "ong", "ou": "ou", "u": "v", "uan": "van", "ue": "ve", "un": "vn",
    "v": "v", "van": "van", "ve": "ve", "vn": "vn",
}  # fmt: skip
_W_FINALS = frozenset({"a", "ai", "an", "ang", "ei", "en", "eng", "o", "u"})
_TWO_LETTER_INITIALS = ("zh", "ch", "sh")
_ONE_LETTER_INITIALS = frozenset("bpmfdtnlgkhjqxrzcs")
# "u" written after j/q/x stands for "ü".
_PALATAL_U = {"u": "v", "uan": "van", "ue": "ve", "un": "vn"}
_RETROFLEX = frozenset({"zh", "ch", "sh", "r"})
_DENTAL = frozenset({"z", "c", "s"})
_FINAL_SET = frozenset(ZH_FINALS)

# Interjection syllables (syllabic nasals, ê) that have no opencpop phones: read as the
# nearest ordinary syllable.
_NEAREST_SYLLABLE = {"m": "mu", "n": "en", "ng": "en", "hm": "hen", "hng": "heng", "ê": "ei", "wong": "weng"}


@cache
def split_syllable(syllable: str) -> tuple[str, str] | None:
    """("hao" → ("h", "ao")); None when the spelling is not a pinyin syllable we can voice."""
    s = _NEAREST_SYLLABLE.get(syllable, syllable)
    if not s:
        return None
    if s[0] in _ZERO_ONSETS:
        initial, final = _ZERO_ONSETS[s[0]], s
    elif s[0] == "y":
        initial, final = "y", _Y_FINALS.get(s[1:], "")
    elif s[0] == "w":
        initial, final = "w", s[1:] if s[1:] in _W_FINALS else ""
    else:
        initial = s[:2] if s.startswith(_TWO_LETTER_INITIALS) else s[:1]
        if initial not in _ONE_LETTER_INITIALS and initial not in _TWO_LETTER_INITIALS:
            return None
        final = s[len(initial) :]
        if initial in "jqx":
            final = _PALATAL_U.get(final, final)
        if final == "i" and initial in _RETROFLEX:
            final = "ir"
        elif final == "i" and initial in _DENTAL:
            final = "i0"
    return (initial, final) if final in _FINAL_SET else None


def syllable_phones(syllable_tone3: str) -> list[str] | None:
    """ "hao3" → ["h", "ao3"]: initial, then final with its tone digit (5 = neutral)."""
    if len(syllable_tone3) < 2 or syllable_tone3[-1] not in ZH_TONES:
        return None
    parts = split_syllable(syllable_tone3[:-1])
    if parts is None:
        return None
    initial, final = parts
    return [initial, final + syllable_tone3[-1]]
