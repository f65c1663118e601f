"""Phone symbol sets, in the exact order GPT-SoVITS checkpoints were trained with.

A phone id is an index into a checkpoint's phone embedding table, so the order below is
data that must not change: v1 has 322 symbols, v2 has 732 (v1's list, then two Japanese
pitch marks, Korean jamo and Cantonese jyutping parts). The lists are built from small
tables rather than spelled out one by one, and tests pin the result against upstream.
"""

from __future__ import annotations

from functools import cache

from tritone.text.errors import TextError

PAD = "_"
# Punctuation that survives normalisation; each is a phone of its own.
PUNCTUATION: tuple[str, ...] = ("!", "?", "…", ",", ".", "-")
# Pause and unknown markers.
SPECIAL: tuple[str, ...] = ("SP", "SP2", "SP3", "UNK")

# Mandarin initials; AA/EE/OO are the glottal onsets of zero-initial syllables (a, e, o).
ZH_INITIALS: tuple[str, ...] = (
    "AA", "EE", "OO", "b", "c", "ch", "d", "f", "g", "h", "j", "k", "l",
    "m", "n", "p", "q", "r", "s", "sh", "t", "w", "x", "y", "z", "zh",
)  # fmt: skip
# Mandarin finals without tone; each is used with tones 1-5 (5 = neutral).
# "i0" is the apical vowel after z/c/s, "ir" after zh/ch/sh/r, "E"/"En" the finals of ye/yan.
ZH_FINALS: tuple[str, ...] = (
    "E", "En", "a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "er",
    "i", "i0", "ia", "ian", "iang", "iao", "ie", "in", "ing", "iong", "ir", "iu",
    "o", "ong", "ou", "u", "ua", "uai", "uan", "uang", "ui", "un", "uo",
    "v", "van", "ve", "vn",
)  # fmt: skip
ZH_TONES = "12345"

JA_PHONES: tuple[str, ...] = (
    "I", "N", "U", "a", "b", "by", "ch", "cl", "d", "dy", "e", "f", "g", "gy",
    "h", "hy", "i", "j", "k", "ky", "m", "my", "n", "ny", "o", "p", "py", "r",
    "ry", "s", "sh", "t", "ts", "u", "v", "w", "y", "z",
)  # fmt: skip

# ARPAbet: vowels carry a stress digit (0 none, 1 primary, 2 secondary).
ARPA_VOWELS: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
)  # fmt: skip
ARPA_CONSONANTS: tuple[str, ...] = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG",
    "P", "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
# Two vowels also appear without a stress digit in the trained set.
ARPA_BARE_VOWELS: tuple[str, ...] = ("ER", "IH")

# v2 additions, appended after the sorted v1 list.
JA_PITCH_MARKS: tuple[str, ...] = ("[", "]")
KO_PHONES = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"
# Cantonese parts are prefixed with "Y" so they never collide with Mandarin phones.
YUE_UNTONED: tuple[str, ...] = (
    "b", "c", "d", "f", "g", "gw", "h", "j", "k", "kw", "l", "m", "n", "ng", "p", "s", "t", "w", "z",
    "a", "aa", "ai", "ak", "au", "e", "o", "oi", "ok", "on", "ou", "uk",
)  # fmt: skip
# These carry one of the six Cantonese tones.
YUE_TONED: tuple[str, ...] = (
    "a", "aa", "aai", "aak", "aam", "aan", "aang", "aap", "aat", "aau", "ai", "ak", "am", "an",
    "ang", "ap", "at", "au", "e", "ei", "ek", "eng", "eoi", "eon", "eot", "g", "i", "ik", "im",
    "in", "ing", "ip", "it", "iu", "k", "m", "n", "o", "oe", "oek", "oeng", "oi", "ok", "on",
    "ong", "ot", "ou", "p", "t", "u", "ui", "uk", "un", "ung", "ut", "yu", "yun", "yut",
)  # fmt: skip
YUE_TONES = "123456"

VERSIONS: tuple[str, ...] = ("v1", "v2")


def _arpa() -> list[str]:
    vowels = [v + stress for v in ARPA_VOWELS for stress in "012"]
    return vowels + list(ARPA_BARE_VOWELS) + list(ARPA_CONSONANTS)


def _v1() -> list[str]:
    zh_finals = [f + t for t in ZH_TONES for f in ZH_FINALS]
    pool = [PAD, *ZH_INITIALS, *zh_finals, *JA_PHONES, *PUNCTUATION, *SPECIAL, *_arpa()]
    # Upstream ids are positions in the sorted set (plain code-point order).
    return sorted(set(pool))


def _v2() -> list[str]:
    yue = ["Y" + p for p in YUE_UNTONED] + ["Y" + p + t for p in YUE_TONED for t in YUE_TONES]
    return _v1() + list(JA_PITCH_MARKS) + sorted(KO_PHONES) + sorted(yue)


@cache
def _table(version: str) -> tuple[tuple[str, ...], dict[str, int]]:
    if version == "v1":
        syms = _v1()
    elif version == "v2":
        syms = _v2()
    else:
        raise TextError(f"unknown symbol set version {version!r}; expected one of {', '.join(VERSIONS)}")
    return tuple(syms), {s: i for i, s in enumerate(syms)}


def symbols(version: str = "v2") -> list[str]:
    """All phone symbols of `version` ("v1": 322, "v2": 732); a symbol's index is its id."""
    return list(_table(version)[0])


def phones_to_ids(phones: list[str], version: str = "v2") -> list[int]:
    """Map phone symbols to embedding ids; an unknown phone raises `TextError` naming it."""
    index = _table(version)[1]
    unknown = sorted({p for p in phones if p not in index})
    if unknown:
        shown = ", ".join(repr(p) for p in unknown[:10])
        raise TextError(f"phone(s) not in the {version} symbol set: {shown}")
    return [index[p] for p in phones]
