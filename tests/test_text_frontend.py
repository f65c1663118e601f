"""TextFrontend API: PhoneSequence contents, padding, segments, and every bad input."""

from __future__ import annotations

import random
import time

import pytest

from tritone.text import LANGUAGES, PhoneSequence, TextError, TextFrontend, phones_to_ids


@pytest.fixture(scope="module")
def fe() -> TextFrontend:
    return TextFrontend()


def _check(seq: PhoneSequence, version: str = "v2") -> None:
    assert seq.ids == phones_to_ids(seq.phones, version)
    assert sum(seq.word2ph) == len(seq.phones)
    assert all(n > 0 for n in seq.word2ph)
    assert seq.bert.shape == (1024, len(seq.phones))


def test_languages() -> None:
    assert LANGUAGES == ("zh", "en", "auto")


def test_process_fields(fe: TextFrontend) -> None:
    seq = fe.process("你好，世界！", "zh")
    assert seq.phones == ["n", "i2", "h", "ao3", ",", "sh", "ir4", "j", "ie4", "!"]
    assert seq.word2ph == [2, 2, 1, 2, 2, 1]
    assert seq.norm_text == "你好,世界!"
    assert seq.lang == "zh"
    _check(seq)


def test_auto_without_chinese_is_english(fe: TextFrontend) -> None:
    seq = fe.process("I have 2 cats.", "auto")
    assert seq.lang == "en"
    assert seq.norm_text == "I have two cats."
    _check(seq)


def test_zh_digits_only_read_in_chinese(fe: TextFrontend) -> None:
    seq = fe.process("123", "zh")
    assert seq.norm_text == "一百二十三"
    assert seq.phones[:4] == ["y", "i4", "b", "ai3"]


def test_v1_ids(fe: TextFrontend) -> None:
    v1 = TextFrontend(version="v1")
    seq = v1.process("你好，world!", "auto")
    _check(seq, "v1")
    assert seq.phones == fe.process("你好，world!", "auto").phones


def test_short_text_is_padded_with_a_full_stop(fe: TextFrontend) -> None:
    seq = fe.process("你好", "zh")
    assert seq.phones == [".", "n", "i2", "h", "ao3"]
    assert seq.word2ph == [1, 2, 2]
    assert seq.norm_text == ".你好"
    assert fe.process("hi", "en").phones == [".", "HH", "AY1"]
    # six phones or more: untouched
    assert fe.process("你好吗", "zh").phones[0] == "n"


def test_segments(fe: TextFrontend) -> None:
    segs = fe.segments("今天天气很好，我们去公园吧。你觉得呢？好", "zh", split="cut5")
    assert [s.norm_text for s in segs] == ["今天天气很好,", "我们去公园吧.", "你觉得呢?好."]
    for seg in segs:
        _check(seg)


def test_segments_end_with_punctuation_and_merge_short_pieces(fe: TextFrontend) -> None:
    segs = fe.segments("Hi. This is a longer sentence. Goodbye now", "en", split="cut4")
    assert [s.norm_text for s in segs] == ["Hi. This is a longer sentence.", "Goodbye now."]
    segs = fe.segments("This is a longer sentence. Bye", "en", split="cut4")
    assert [s.norm_text for s in segs] == ["This is a longer sentence. Bye."]


def test_segments_cut0(fe: TextFrontend) -> None:
    text = "第一句。第二句！第三句"
    assert [s.norm_text for s in fe.segments(text, "zh", split="cut0")] == ["第一句.第二句!第三句."]


def test_segments_skip_pieces_with_nothing_to_speak(fe: TextFrontend) -> None:
    # 兙 is a Han character without a reading: normalisation drops it.
    segs = fe.segments("兙兙兙兙兙。今天天气很好。", "zh", split="cut3")
    assert [s.norm_text for s in segs] == ["今天天气很好."]
    with pytest.raises(TextError, match="nothing to speak"):
        fe.segments("兙兙兙兙兙。兙兙兙兙兙。", "zh", split="cut3")


def test_emoji_and_symbols_inside_text_are_dropped(fe: TextFrontend) -> None:
    assert fe.process("你好😀世界★", "zh").norm_text == "你好世界"


@pytest.mark.parametrize(
    ("text", "lang", "message"),
    [
        ("", "zh", "empty"),
        ("   \n\t", "en", "empty"),
        ("。。。！！！", "zh", "nothing to speak"),
        ("...!?", "auto", "nothing to speak"),
        ("😀😀", "auto", "nothing to speak.*😀"),
        ("Привет, мир", "en", "Cyrillic.*'П'"),
        ("こんにちは", "auto", "Hiragana"),
        ("カタカナ", "zh", "Katakana"),
        ("مرحبا", "zh", "Arabic"),
        ("안녕하세요", "auto", "Hangul"),
        ("你好", "en", "Chinese characters.*'zh' or 'auto'"),
        ("hello", "fr", "unsupported language 'fr'"),
        ("hello", "EN", "unsupported language"),
    ],
)
def test_bad_input(fe: TextFrontend, text: str, lang: str, message: str) -> None:
    with pytest.raises(TextError, match=message):
        fe.process(text, lang)
    with pytest.raises(TextError, match=message):
        fe.segments(text, lang)


def test_non_string_input(fe: TextFrontend) -> None:
    with pytest.raises(TextError, match="string"):
        fe.process(None, "en")  # type: ignore[arg-type]
    with pytest.raises(TextError, match="string"):
        fe.process(b"hello", "en")  # type: ignore[arg-type]


def test_over_long_text_is_rejected_fast(fe: TextFrontend) -> None:
    text = "你好" * 50_000
    start = time.perf_counter()
    with pytest.raises(TextError, match=r"100000 characters.*limit is 2000"):
        fe.process(text, "zh")
    with pytest.raises(TextError, match="limit"):
        fe.segments(text, "zh")
    assert time.perf_counter() - start < 0.5  # refused up front, not processed (that takes seconds)
    assert len(TextFrontend(max_chars=10).process("0123456789", "en").phones) > 0


def test_unknown_version_and_split() -> None:
    with pytest.raises(TextError, match="v9"):
        TextFrontend(version="v9")
    with pytest.raises(TextError, match="cut9"):
        TextFrontend().segments("你好", "zh", split="cut9")


def test_only_text_errors_escape(fe: TextFrontend) -> None:
    # Odd but valid input never raises anything else.
    odd = [
        "ℌ𝔢𝔩𝔩𝔬",
        "a\u0301",
        "½ cup",
        "x²",
        "１２３",
        "〇",
        "兙",
        "C++ & C#",
        "--5",
        "3..4",
        "$",
        "%%",
        "嗯呣",
    ]
    for text in odd:
        for lang in ("zh", "en", "auto"):
            try:
                seq = fe.process(text, lang)
            except TextError:
                continue
            _check(seq)


def test_a_full_paragraph_is_fast(fe: TextFrontend) -> None:
    fe.warmup()
    text = "我们在2024年3月5日去了北京，看到了很多有意思的东西。On March 5th we saw 12 things! " * 20
    start = time.perf_counter()
    segs = fe.segments(text[:2000], "auto")
    assert len(segs) > 20
    assert time.perf_counter() - start < 2.0


def test_random_input_raises_only_text_error(fe: TextFrontend) -> None:
    rng = random.Random(0)
    pool = list("你好银行一不儿了的 abcXYZ'-0123456789.,!?…:;$%℃°/+=&#@()[]“”《》~—\n\t😀½²٣é")
    for _ in range(300):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
        for lang in LANGUAGES:
            try:
                seq = fe.process(text, lang)
            except TextError:
                continue
            _check(seq)
            assert len(seq.word2ph) >= 1
