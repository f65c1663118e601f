"""Sentence splitting before synthesis, by the named methods GPT-SoVITS users know.

Each segment is synthesised on its own, so splitting bounds the length of one GPT
decode and lets audio stream segment by segment.

- ``cut0``: no splitting (the whole text is one segment).
- ``cut1``: every four clauses form one segment.
- ``cut2``: clauses are gathered until a segment passes ~50 characters; a short tail
  joins the segment before it.
- ``cut3``: split after the Chinese full stop "。".
- ``cut4``: split after the English full stop "." (not the point inside 3.14).
- ``cut5``: split after any punctuation mark (again keeping 3.14 whole).

Delimiters stay attached to the segment they end, runs of punctuation ("?!", "...")
count as one delimiter, and segments with nothing to speak (only punctuation or spaces)
are dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from tritone.text.errors import TextError

# Marks that end a clause (used by cut1 and cut2).
CLAUSE_ENDS = frozenset("，。？！,.?!~:：—…;；")
# Marks cut5 splits after.
ANY_PUNCT = frozenset(",.;?!、，。？！；：:…")
CUT2_TARGET_CHARS = 50
CUT1_CLAUSES = 4


def _is_decimal_point(text: str, i: int) -> bool:
    return text[i] == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def _split_after(text: str, delimiters: frozenset[str]) -> list[str]:
    """Cut after each maximal run of delimiter characters; a decimal point never cuts."""
    pieces: list[str] = []
    start = 0
    i = 0
    while i < len(text):
        if text[i] in delimiters and not _is_decimal_point(text, i):
            while i + 1 < len(text) and text[i + 1] in delimiters and not _is_decimal_point(text, i + 1):
                i += 1
            pieces.append(text[start : i + 1])
            start = i + 1
        i += 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def has_content(piece: str) -> bool:
    """Whether a piece has anything to speak (a letter, digit or ideograph)."""
    return any(ch.isalnum() for ch in piece)


def _clauses(text: str) -> list[str]:
    # Doubled Chinese ellipsis and dash read as a stop and a pause.
    text = text.replace("……", "。").replace("——", "，")
    return _split_after(text, CLAUSE_ENDS)


def cut0(text: str) -> list[str]:
    return [text]


def cut1(text: str) -> list[str]:
    clauses = _clauses(text)
    return ["".join(clauses[i : i + CUT1_CLAUSES]) for i in range(0, len(clauses), CUT1_CLAUSES)]


def cut2(text: str) -> list[str]:
    segments: list[str] = []
    current = ""
    for clause in _clauses(text):
        current += clause
        if len(current) > CUT2_TARGET_CHARS:
            segments.append(current)
            current = ""
    if current:
        if segments and len(current) < CUT2_TARGET_CHARS:
            segments[-1] += current  # a short tail sounds better with its neighbour
        else:
            segments.append(current)
    return segments


def cut3(text: str) -> list[str]:
    return _split_after(text, frozenset("。"))


def cut4(text: str) -> list[str]:
    return _split_after(text, frozenset("."))


def cut5(text: str) -> list[str]:
    return _split_after(text, ANY_PUNCT)


METHODS: dict[str, Callable[[str], list[str]]] = {
    "cut0": cut0,
    "cut1": cut1,
    "cut2": cut2,
    "cut3": cut3,
    "cut4": cut4,
    "cut5": cut5,
}


def split_text(text: str, method: str = "cut5") -> list[str]:
    """Split `text` into segments by `method` (see module docstring); strips and drops empties."""
    if method not in METHODS:
        raise TextError(f"unknown split method {method!r}; expected one of {', '.join(METHODS)}")
    text = text.strip("\n")
    pieces = (p.strip() for p in METHODS[method](text))
    return [p for p in pieces if has_content(p)]
