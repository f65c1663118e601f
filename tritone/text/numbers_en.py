"""English number words: cardinals, ordinals, years, decimals."""

from __future__ import annotations

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
# Past this, a number is read digit by digit (serial numbers, not quantities).
MAX_CARDINAL = 10**15 - 1
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def _below_hundred(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("-" + _ONES[ones] if ones else "")


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        parts.append(_ONES[hundreds] + " hundred")
    if rest:
        parts.append(_below_hundred(rest))
    return " ".join(parts)


def digits(text: str) -> str:
    """Digit by digit: "042" → "zero four two"."""
    return " ".join(_ONES[int(d)] for d in text if d.isdigit())


def cardinal(n: int) -> str:
    """123 → "one hundred twenty-three"; negatives say "minus"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n > MAX_CARDINAL:
        return digits(str(n))
    if n < 1000:
        return _below_thousand(n) if n else "zero"
    parts = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            parts.append(_below_thousand(count) + " " + name)
    if n:
        parts.append(_below_thousand(n))
    return " ".join(parts)


def ordinal(n: int) -> str:
    """21 → "twenty-first"."""
    words = cardinal(n)
    head, sep, last = words.rpartition(" ") if "-" not in words.split(" ")[-1] else words.rpartition("-")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year(n: int) -> str:
    """1999 → "nineteen ninety-nine", 2005 → "two thousand five", 2024 → "twenty twenty-four"."""
    if not 1000 <= n <= 9999 or 2000 <= n <= 2009:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return _below_hundred(high) + " hundred"
    return _below_hundred(high) + " " + ("oh " + _ONES[low] if low < 10 else _below_hundred(low))


def decimal(text: str) -> str:
    """ "3.14" → "three point one four"; the integer part is a cardinal."""
    integer, _, fraction = text.partition(".")
    head = cardinal(int(integer)) if integer else "zero"
    return head + (" point " + digits(fraction) if fraction else "")
