"""Character classes and punctuation folding shared by the zh and en paths."""

from __future__ import annotations

import re
import unicodedata

from tritone.text.symbols import PUNCTUATION

PUNCT_PHONES = frozenset(PUNCTUATION)

# Written punctuation → the few punctuation phones the models know. Pauses of a clause
# become ",", sentence ends keep their kind, dashes become "-", trailing-off becomes "…".
_PUNCT_MAP: dict[str, str] = {
    "，": ",", "、": ",", "；": ",", "：": ",", "·": ",", ";": ",", ":": ",", "/": ",",
    "。": ".", "．": ".", "\n": ".",
    "！": "!", "？": "?",
    "～": "…", "~": "…", "⋯": "…",
    "—": "-", "–": "-", "―": "-",
}  # fmt: skip
_ELLIPSIS = re.compile(r"\.{3,}|。{2,}")
_REPEATED_PUNCT = re.compile(r"([!?…,.\-])[!?…,.\-]+")


def canonical(text: str) -> str:
    """Unicode compatibility forms → plain ones: full-width ASCII, ligatures (ﬁ), styled
    letters (𝔢), superscripts (²), vulgar fractions (½ → 1/2), ℃ → °C, and decimal digits
    of any script (٣) → ASCII digits."""
    text = unicodedata.normalize("NFKC", text).replace("\u2044", "/")
    return "".join(_ascii_digit(ch) for ch in text)


def _ascii_digit(ch: str) -> str:
    if ch.isascii() or not ch.isdecimal():
        return ch
    return str(unicodedata.decimal(ch))


def strip_accents(text: str) -> str:
    """é → e: decompose and drop combining marks (Latin text only reaches the en path)."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn"))


def map_punctuation(text: str) -> str:
    """Map written punctuation onto the punctuation phones (other marks are left alone)."""
    text = _ELLIPSIS.sub("…", text)
    return "".join(_PUNCT_MAP.get(ch, ch) for ch in text)


def collapse_punctuation(text: str) -> str:
    """Keep only the first of a run of punctuation phones ("?!" → "?"), as training data has."""
    return _REPEATED_PUNCT.sub(r"\1", text)


def is_han(ch: str) -> bool:
    """CJK ideographs (unified, extension A, compatibility) and the ideographic zero 〇."""
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x3134F
        or ch == "〇"
    )


def is_latin_letter(ch: str) -> bool:
    """ASCII letters and accented Latin letters (é, ñ, ß)."""
    if "a" <= ch.lower() <= "z":
        return True
    return unicodedata.category(ch).startswith("L") and "LATIN" in unicodedata.name(ch, "")
