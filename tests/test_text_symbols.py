"""Phone symbol sets and the pinyin → initial/final table must match upstream exactly."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tritone.text import TextError, phones_to_ids, symbols
from tritone.text.pinyin import split_syllable, syllable_phones

# Ids read off upstream's v2 symbol list (GPT_SoVITS/text/symbols2.py).
UPSTREAM_V2_IDS = {
    "!": 0, ",": 1, "-": 2, ".": 3, "?": 4, "AA": 5, "AA0": 6, "AH0": 12, "EE": 33, "ER": 37,
    "IH": 53, "SP": 77, "UNK": 86, "_": 95, "a1": 97, "i01": 161, "ir5": 215, "n": 227,
    "zh": 320, "…": 321, "[": 322, "]": 323, "ㄱ": 324, "ㅔ": 346, "停": 351, "空": 352,
    "Ya": 353, "Yyut6": 730, "Yz": 731,
}  # fmt: skip


def test_sizes() -> None:
    assert len(symbols("v1")) == 322
    assert len(symbols("v2")) == 732
    assert len(set(symbols("v2"))) == 732


def test_v2_extends_v1() -> None:
    assert symbols("v2")[:322] == symbols("v1")


@pytest.mark.parametrize(("phone", "idx"), sorted(UPSTREAM_V2_IDS.items()))
def test_v2_ids_match_upstream(phone: str, idx: int) -> None:
    assert phones_to_ids([phone], "v2") == [idx]


@pytest.mark.oracle
def test_v1_matches_oracle() -> None:
    oracle = importlib.import_module("gpt_sovits.text.symbols")
    assert symbols("v1") == list(oracle.symbols)


def test_phones_to_ids_roundtrip() -> None:
    table = symbols("v2")
    phones = ["n", "i2", "h", "ao3", ",", "HH", "AH0", "L", "OW1", "."]
    assert [table[i] for i in phones_to_ids(phones)] == phones


def test_unknown_phone_is_named() -> None:
    with pytest.raises(TextError, match="'xx9'"):
        phones_to_ids(["n", "xx9"])


def test_unknown_version() -> None:
    with pytest.raises(TextError, match="v9"):
        symbols("v9")


@pytest.mark.oracle
def test_pinyin_table_matches_upstream_opencpop_strict() -> None:
    oracle = importlib.import_module("gpt_sovits.text")
    table = Path(str(oracle.__file__)).parent / "opencpop-strict.txt"
    lines = table.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 400
    for line in lines:
        syllable, phones = line.split("\t")
        assert split_syllable(syllable) == tuple(phones.split(" ")), syllable


@pytest.mark.parametrize(
    ("syllable", "phones"),
    [
        ("hao3", ["h", "ao3"]),
        ("zhi1", ["zh", "ir1"]),
        ("si4", ["s", "i04"]),
        ("yan2", ["y", "En2"]),
        ("ye5", ["y", "E5"]),
        ("ju3", ["j", "v3"]),
        ("lve4", ["l", "ve4"]),
        ("er2", ["EE", "er2"]),
        ("ou1", ["OO", "ou1"]),
        ("m2", ["m", "u2"]),  # interjection 呣: nearest ordinary syllable
    ],
)
def test_syllable_phones(syllable: str, phones: list[str]) -> None:
    assert syllable_phones(syllable) == phones


def test_invalid_syllable() -> None:
    assert syllable_phones("xyz3") is None
    assert syllable_phones("hao") is None


def test_every_pypinyin_reading_has_phones() -> None:
    # Any character the normaliser keeps must map: check every reading pypinyin knows.
    from pypinyin.contrib.tone_convert import to_tone3
    from pypinyin.phrases_dict import phrases_dict
    from pypinyin.pinyin_dict import pinyin_dict

    readings = {r for value in pinyin_dict.values() for r in value.split(",")}
    readings |= {r for value in phrases_dict.values() for syllables in value for r in syllables}
    unmapped = sorted(
        r for r in readings if syllable_phones(to_tone3(r, neutral_tone_with_five=True)) is None
    )
    assert unmapped == []
