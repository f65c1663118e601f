"""Sentence splitting methods cut0..cut5."""

from __future__ import annotations

import pytest

from tritone.text import SPLIT_METHODS, TextError, split_text

ZH = "你好，我是小明。你好，我是小红。你好，我是小刚。你好，我是小张。"
EN = "Pi is 3.14. It is irrational! Really?! Yes... ok."


def test_methods_listed() -> None:
    assert list(SPLIT_METHODS) == ["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"]


def test_cut0_keeps_everything() -> None:
    assert split_text(ZH, "cut0") == [ZH]


def test_cut1_groups_four_clauses() -> None:
    assert split_text(ZH, "cut1") == ["你好，我是小明。你好，我是小红。", "你好，我是小刚。你好，我是小张。"]


def test_cut2_gathers_about_fifty_characters() -> None:
    text = "这是一个比较长的句子，用来测试切分。" * 6  # 18 characters a sentence
    out = split_text(text, "cut2")
    assert "".join(out) == text
    assert len(out) == 2
    assert all(len(seg) > 50 for seg in out)
    # a short text stays whole
    assert split_text(ZH, "cut2") == [ZH]


def test_cut2_merges_a_short_tail() -> None:
    text = "一" * 30 + "，" + "二" * 30 + "。" + "三" * 5 + "。"
    assert split_text(text, "cut2") == [text]


def test_cut3_chinese_full_stop() -> None:
    assert split_text(ZH, "cut3") == [
        "你好，我是小明。",
        "你好，我是小红。",
        "你好，我是小刚。",
        "你好，我是小张。",
    ]


def test_cut4_english_full_stop_keeps_decimals() -> None:
    assert split_text(EN, "cut4") == ["Pi is 3.14.", "It is irrational! Really?! Yes...", "ok."]


def test_cut5_any_punctuation_keeps_decimals() -> None:
    assert split_text(EN, "cut5") == ["Pi is 3.14.", "It is irrational!", "Really?!", "Yes...", "ok."]
    assert split_text("价格是3.5元，很便宜。", "cut5") == ["价格是3.5元，", "很便宜。"]


def test_punctuation_only_segments_are_dropped() -> None:
    assert split_text("你好。。。！！！", "cut5") == ["你好。。。！！！"]
    assert split_text("。。！", "cut5") == []
    assert split_text("", "cut0") == []


def test_unknown_method() -> None:
    with pytest.raises(TextError, match="cut9"):
        split_text("hi", "cut9")
