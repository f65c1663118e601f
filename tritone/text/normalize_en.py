"""English text normalisation: numbers, dates, times, money, units and symbols to words.

The result contains only ASCII letters, apostrophes, in-word hyphens, spaces and the
punctuation phones (, . ! ? … -), which is what the English G2P expects. Rules run most
specific first (a date before a range, money before a decimal).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tritone.text import numbers_en as num
from tritone.text.chars import canonical, collapse_punctuation, map_punctuation, strip_accents

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_ABBREV = {m[:3].lower(): m for m in _MONTHS}
_NUM = r"\d+(?:\.\d+)?"
# A written amount: 1,234,567.89 or 1234.5 (a trailing comma is punctuation, not a separator).
_AMOUNT = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# "am"/"p.m."; the dot after "m" is eaten only mid-sentence, so a sentence end survives.
_MERIDIEM = r"([AaPp])\.?[Mm]\b(?:\.(?=\s+[a-z]))?"

_ABBREVIATIONS = [
    (r"\bMr\.", "mister"), (r"\bMrs\.", "missus"), (r"\bMs\.", "miz"), (r"\bDr\.", "doctor"),
    (r"\bProf\.", "professor"), (r"\bSt\.(?= [A-Z])", "saint"), (r"\bJr\.", "junior"),
    (r"\bSr\.", "senior"), (r"\bvs\.?(?= )", "versus"), (r"(?i)\be\.g\.", "for example"),
    (r"(?i)\bi\.e\.", "that is"), (r"(?i)\betc\.", "et cetera"), (r"\bNo\.(?= ?\d)", "number"),
]  # fmt: skip


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _number(text: str) -> str:
    """A written number (commas, decimals, sign) as words."""
    text = text.replace(",", "")
    sign = "minus " if text.startswith("-") else ""
    text = text.lstrip("-")
    integer = text.partition(".")[0]
    if len(integer) > 1 and integer.startswith("0") and "." not in text:
        return sign + num.digits(text)  # codes like 007
    return sign + num.decimal(text)


def _plain_number(m: re.Match[str]) -> str:
    text = m.group(0)
    bare = text.replace(",", "")
    # A bare four-digit integer in year range reads as a year ("in 1999").
    if "," not in text and bare.isdigit() and len(bare) == 4 and 1100 <= int(bare) <= 2099:
        return f" {num.year(int(bare))} "
    # Spaces keep words apart where digits touched letters (iPhone15, x2).
    return f" {_number(text)} "


_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
    "₹": ("rupee", "rupees", "paisa", "paise"),
}


def _money(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m.group(1)]
    amount, scale = m.group(2).replace(",", ""), m.group(3)
    if scale:  # $1.5 million → one point five million dollars
        return f"{_number(amount)} {scale.lower()} {many}"
    whole_text, _, cents_text = amount.partition(".")
    whole = int(whole_text or "0")
    cents = int(cents_text[:2].ljust(2, "0")) if cents_text and sub_one else 0
    parts = []
    if whole or not cents:
        parts.append(f"{num.cardinal(whole)} {one if whole == 1 else many}")
    if cents:
        parts.append(f"{num.cardinal(cents)} {sub_one if cents == 1 else sub_many}")
    return " and ".join(parts)


def _time(m: re.Match[str]) -> str:
    hour, minute, meridiem = int(m.group(1)), int(m.group(2)), m.group(3)
    if hour > 24 or minute > 59:
        return m.group(0)
    words = num.cardinal(hour)
    if minute == 0:
        words += "" if meridiem else " o'clock"
    elif minute < 10:
        words += " oh " + num.cardinal(minute)
    else:
        words += " " + num.cardinal(minute)
    if meridiem:
        words += " " + ("A M" if meridiem[0].lower() == "a" else "P M")
    return words


def _hour_meridiem(m: re.Match[str]) -> str:
    return num.cardinal(int(m.group(1))) + " " + ("A M" if m.group(2).lower() == "a" else "P M")


def _iso_date(m: re.Match[str]) -> str:
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{_MONTHS[month - 1]} {num.ordinal(day)}, {num.year(year)}"


def _month_day(m: re.Match[str]) -> str:
    month = _MONTH_ABBREV[m.group(1)[:3].lower()]
    day = int(m.group(2))
    if not 1 <= day <= 31:
        return m.group(0)
    out = f"{month} {num.ordinal(day)}"
    if m.group(3):
        out += f", {num.year(int(m.group(3)))}"
    return out


_UNITS: dict[str, tuple[str, str]] = {
    "km/h": ("kilometer per hour", "kilometers per hour"), "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "m": ("meter", "meters"), "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"), "g": ("gram", "grams"), "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"), "ft": ("foot", "feet"),
    "mi": ("mile", "miles"), "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"),
    "L": ("liter", "liters"),
    "m2": ("square meter", "square meters"),
    "m3": ("cubic meter", "cubic meters"),
    "km2": ("square kilometer", "square kilometers"), "ms": ("millisecond", "milliseconds"), "s": ("second", "seconds"),
    "sec": ("second", "seconds"), "min": ("minute", "minutes"), "h": ("hour", "hours"),
    "hr": ("hour", "hours"), "hrs": ("hour", "hours"), "KB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"), "TB": ("terabyte", "terabytes"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"), "°C": ("degree Celsius", "degrees Celsius"),
    "℃": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "℉": ("degree Fahrenheit", "degrees Fahrenheit"), "°": ("degree", "degrees"),
}  # fmt: skip
_UNIT_RE = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))


def _unit(m: re.Match[str]) -> str:
    value, unit = m.group(1), m.group(2)
    one, many = _UNITS[unit]
    return f"{_number(value)} {one if value.replace(',', '') == '1' else many}"


def _percent(m: re.Match[str]) -> str:
    return _number(m.group(1)) + " percent"


def _fraction(m: re.Match[str]) -> str:
    top, bottom = int(m.group(1)), int(m.group(2))
    if bottom == 0:
        return f"{num.cardinal(top)} over zero"
    if bottom == 1:
        return num.cardinal(top)
    if bottom == 2:
        name = "half" if top == 1 else "halves"
    elif bottom == 4:
        name = "quarter" if top == 1 else "quarters"
    else:
        name = num.ordinal(bottom) + ("" if top == 1 else "s")
    return f"{num.cardinal(top)} {name}"


def _ordinal(m: re.Match[str]) -> str:
    return num.ordinal(_int(m.group(1)))


_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "%": " percent ", "#": " number "}

_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    *((re.compile(p), r) for p, r in _ABBREVIATIONS),
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), _iso_date),
    (
        re.compile(
            r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)[a-z]*\.? (\d{1,2})(?:st|nd|rd|th)?\b"
            r"(?:,? (\d{4})\b)?"
        ),
        _month_day,
    ),
    (re.compile(rf"\b(\d{{1,2}}):(\d{{2}})(?:\s*{_MERIDIEM})?"), _time),
    (re.compile(rf"\b(\d{{1,2}})\s*{_MERIDIEM}"), _hour_meridiem),
    (
        re.compile(rf"([$€£¥₹])\s*({_AMOUNT})(?:\s*(thousand|million|billion|trillion)\b)?", re.I),
        _money,
    ),
    (re.compile(rf"(-?{_AMOUNT})\s*%"), _percent),
    (re.compile(rf"(?<![\w.])(-?{_AMOUNT})\s*({_UNIT_RE})(?![A-Za-z])"), _unit),
    (re.compile(r"\b((?:\d{1,3}(?:,\d{3})+|\d+))(?:st|nd|rd|th)\b", re.I), _ordinal),
    (re.compile(r"(?<![\d/])(\d+)/(\d+)(?![\d/])"), _fraction),
    (re.compile(rf"(?<=\d)\s*[-–]\s*(?={_NUM})"), " to "),
    (re.compile(rf"(?<![\w.])-(?={_NUM})"), "minus "),
    (re.compile(r"(?<!\d)\.(\d+)"), lambda m: "point " + num.digits(m.group(1))),
    (re.compile(rf"{_AMOUNT}(?!\d)"), _plain_number),
]

_KEEP = re.compile(r"[^A-Za-z' ,.!?…\-]")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.!?…])")


def expand_en(text: str) -> str:
    """Rewrite numbers, dates, money, units and abbreviations as English words."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    return text


def normalize_en(text: str) -> str:
    """English text → words and punctuation phones only (see module docstring)."""
    text = canonical(text).replace("’", "'").replace("‘", "'")
    text = expand_en(text)
    text = strip_accents(text)
    text = map_punctuation(text)
    text = _KEEP.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return collapse_punctuation(text).strip()
