"""Chinese text normalisation: numbers and symbols to Chinese words, punctuation to phones.

`expand_numbers_zh` rewrites digits and the symbols around them (dates, times, phone
numbers, currency, percentages, temperatures, units, ranges, fractions, negatives) as
Chinese words, leaving everything else as it is; cn2an spells the plain numbers. Rules run
most specific first so that e.g. a date is not read as a subtraction.
`normalize_zh` then keeps only Han characters and punctuation phones.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import cn2an
from pypinyin.pinyin_dict import pinyin_dict

from tritone.text.chars import PUNCT_PHONES, canonical, collapse_punctuation, is_han, map_punctuation

_DIGITS = "零一二三四五六七八九"
_NUM = r"\d+(?:\.\d+)?"
# cn2an spells at most 16 integer digits.
_MAX_CARDINAL_DIGITS = 16


def read_digits(digits: str, *, phone: bool = False) -> str:
    """Digit by digit ("2024" → 二零二四); phone numbers say 幺 for 1."""
    out = "".join(_DIGITS[int(d)] for d in digits if d.isdigit())
    return out.replace("一", "幺") if phone else out


def read_number(text: str) -> str:
    """A decimal number in words ("-3.5" → 负三点五); leading-zero codes digit by digit."""
    sign = ""
    if text.startswith("-"):
        sign, text = "负", text[1:]
    integer, _, fraction = text.partition(".")
    # Codes with a leading zero (007) and numbers too long for cn2an go digit by digit.
    if (len(integer) > 1 and integer.startswith("0")) or len(integer) > _MAX_CARDINAL_DIGITS:
        return sign + read_digits(integer) + ("点" + read_digits(fraction) if fraction else "")
    return sign + str(cn2an.an2cn(text))


def _cardinal(m: re.Match[str]) -> str:
    return read_number(m.group(0))


def _date(m: re.Match[str]) -> str:
    year, month, day = m.group(1), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{read_digits(year)}年{read_number(str(month))}月{read_number(str(day))}日"


def _year(m: re.Match[str]) -> str:
    return read_digits(m.group(1)) + "年"


def _time(m: re.Match[str]) -> str:
    hour, minute, second = int(m.group(1)), int(m.group(2)), m.group(3)
    if hour > 24 or minute > 59:
        return m.group(0)
    out = read_number(str(hour)) + "点"
    if minute or second:
        out += ("零" if 0 < minute < 10 else "") + read_number(str(minute)) + "分"
    if second and int(second):
        out += read_number(str(int(second))) + "秒"
    return out


def _phone(m: re.Match[str]) -> str:
    return ",".join(read_digits(part, phone=True) for part in re.split(r"[-\s]", m.group(0)) if part)


_CURRENCY = {"$": "美元", "¥": "元", "￥": "元", "€": "欧元", "£": "英镑", "₩": "韩元"}


def _currency(m: re.Match[str]) -> str:
    return read_number(m.group(2)) + (m.group(3) or "") + _CURRENCY[m.group(1)]


def _percent(m: re.Match[str]) -> str:
    value = m.group(1)
    if value.startswith("-"):
        return "负百分之" + read_number(value[1:])
    return "百分之" + read_number(value)


def _temperature(m: re.Match[str]) -> str:
    value, scale = m.group(1), m.group(2)
    below = value.startswith("-")
    amount = read_number(value.lstrip("-"))
    if scale in ("°F", "℉"):
        return ("零下" if below else "") + "华氏" + amount + "度"
    return ("零下" if below else "") + amount + "摄氏度"


_UNITS = {
    "km/h": "公里每小时", "m/s": "米每秒", "km": "公里", "kg": "公斤", "cm": "厘米", "mm": "毫米",
    "mg": "毫克", "ml": "毫升", "mL": "毫升", "ms": "毫秒", "min": "分钟", "km2": "平方公里",
    "m2": "平方米", "m3": "立方米", "m": "米", "g": "克", "L": "升", "l": "升", "t": "吨",
    "h": "小时", "s": "秒",
}  # fmt: skip
_UNIT_RE = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))


def _unit(m: re.Match[str]) -> str:
    return read_number(m.group(1)) + _UNITS[m.group(2)]


def _fraction(m: re.Match[str]) -> str:
    return read_number(m.group(2)) + "分之" + read_number(m.group(1))


_MATH = {"+": "加", "×": "乘", "÷": "除以", "=": "等于"}

# "2" before a classifier is 两 (两个人, 两天), not 二.
_CLASSIFIERS = "个只本条张位次件种台辆块斤天年岁层口头匹把双对支根间所座部名家周倍碗杯瓶元角毛"

_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # thousands separators
    (re.compile(r"(?<!\d)(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})[日号]?(?!\d)"), _date),
    (re.compile(r"(?<!\d)(\d{4})年"), _year),
    (re.compile(r"(?<!\d)(\d{1,2}):(\d{2})(?::(\d{2}))?(?!\d)"), _time),
    (re.compile(r"(?<!\d)(?:\+?86[-\s]?)?1[3-9]\d{9}(?!\d)"), _phone),
    (re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"), _phone),
    (re.compile(rf"([$¥￥€£₩])\s*({_NUM})(万|亿)?"), _currency),
    (re.compile(rf"(-?{_NUM})\s*(°C|℃|°F|℉)"), _temperature),
    (re.compile(rf"(?<!\d)(-?{_NUM})%\s*[-~～至]\s*(?=-?{_NUM}%)"), lambda m: _percent(m) + "到"),
    (re.compile(rf"(?<!\d)(-?{_NUM})%"), _percent),
    (re.compile(rf"(?<![\d.])({_NUM})\s*[-~～]\s*(?={_NUM})"), lambda m: read_number(m.group(1)) + "到"),
    (re.compile(rf"({_NUM})\s*({_UNIT_RE})(?![A-Za-z])"), _unit),
    (re.compile(r"(?<![\d/])(\d+)/(\d+)(?![\d/])"), _fraction),
    (re.compile(r"(\d)\s*([+×÷=])\s*(?=-?\d)"), lambda m: m.group(1) + _MATH[m.group(2)]),
    (re.compile(rf"(?<![\dA-Za-z.])-\s*({_NUM})"), lambda m: "负" + read_number(m.group(1))),
    (re.compile(rf"(?<![\d.第])2(?=[{_CLASSIFIERS}])"), "两"),
    (re.compile(_NUM), _cardinal),
]


def expand_numbers_zh(text: str) -> str:
    """Rewrite numbers and numeric symbols as Chinese words; other text is untouched."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def _readable(ch: str) -> bool:
    return ch in PUNCT_PHONES or (is_han(ch) and ord(ch) in pinyin_dict)


def normalize_zh(text: str) -> str:
    """Chinese text → Han characters with a known reading and punctuation phones only."""
    text = expand_numbers_zh(canonical(text)).replace("〇", "零")
    text = map_punctuation(text)
    text = "".join(ch for ch in text if _readable(ch))
    return collapse_punctuation(text)
