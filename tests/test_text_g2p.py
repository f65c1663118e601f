"""G2P: Chinese and English phones checked by hand, word2ph alignment, unknown words."""

from __future__ import annotations

import pytest

from tritone.text import TextFrontend, symbols
from tritone.text.g2p_en import g2p_en, spell, word_phones
from tritone.text.g2p_zh import g2p_zh
from tritone.text.lts import letter_to_sound

V2 = set(symbols("v2"))


@pytest.fixture(scope="module")
def fe() -> TextFrontend:
    return TextFrontend()


def phones(fe: TextFrontend, text: str, lang: str) -> str:
    return " ".join(fe.process(text, lang).phones)


# -- Chinese ----------------------------------------------------------------------------

ZH_CASES = [
    # polyphones resolved by word
    ("我去银行。", "w o3 q v4 y in2 h ang2 ."),
    ("他在路上行走。", "t a1 z ai4 l u4 sh ang5 x ing2 z ou3 ."),
    ("这很重要。", "zh e4 h en3 zh ong4 y ao4 ."),
    ("请重新开始。", "q ing3 ch ong2 x in1 k ai1 sh ir3 ."),
    # sandhi: 3-3, 一, 不, neutral classifier 个
    ("你好，一个不是！", "n i2 h ao3 , y i2 g e5 b u2 sh ir4 !"),
    ("我们一起去吧。", "w o3 m en5 y i4 q i3 q v4 b a5 ."),
    ("不要看一看。", "b u2 y ao4 k an4 y i5 k an4 ."),
    ("我有2个苹果。", "w o2 y ou3 l iang3 g e5 p ing2 g uo3 ."),
    # numbers, money, percentages, times
    ("增长了50%。", "z eng1 zh ang3 l e5 b ai3 f en1 zh ir1 w u3 sh ir2 ."),
    ("价格是$100。", "j ia4 g e2 sh ir4 y i4 b ai3 m ei3 y van2 ."),
    ("现在是12:05。", "x ian4 z ai4 sh ir4 sh ir2 EE er4 d ian3 l ing2 w u3 f en1 ."),
    # erhua: 儿 takes the tone before it; 女儿 is not erhua
    ("小孩儿在哪儿玩儿？", "x iao3 h ai2 EE er2 z ai4 n a3 EE er3 w an2 EE er2 ?"),
    ("他的女儿很可爱。", "t a1 d e5 n v3 EE er2 h en2 k e3 AA ai4 ."),
]


@pytest.mark.parametrize(("text", "expected"), ZH_CASES)
def test_zh_phones(fe: TextFrontend, text: str, expected: str) -> None:
    assert phones(fe, text, "zh") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("你好", "n i2 h ao3"),  # 3-3
        ("老鼠", "l ao2 sh u3"),
        ("展览馆", "zh an2 l an2 g uan3"),  # 2+1 split: both of the head rise
        ("纸老虎", "zh ir3 l ao2 h u3"),  # 1+2 split: only the middle rises
        ("一天", "y i4 t ian1"),
        ("一段", "y i2 d uan4"),
        ("第一", "d i4 y i1"),
        ("十一", "sh ir2 y i1"),
        ("一百", "y i4 b ai3"),
        ("看不懂", "k an4 b u5 d ong3"),
        ("东西", "d ong1 x i5"),
        ("桌子", "zh uo1 z i05"),
        ("走了", "z ou3 l e5"),
    ],
)
def test_zh_sandhi(text: str, expected: str) -> None:
    assert " ".join(g2p_zh(text).phones) == expected


def test_zh_word2ph_aligns_per_character(fe: TextFrontend) -> None:
    seq = fe.process("今天是2024年3月5日，气温-5℃，我们去银行吧！", "zh")
    assert seq.norm_text == "今天是二零二四年三月五日,气温零下五摄氏度,我们去银行吧!"
    assert len(seq.word2ph) == len(seq.norm_text)
    assert sum(seq.word2ph) == len(seq.phones)
    pos = 0
    for ch, n in zip(seq.norm_text, seq.word2ph):
        chunk = seq.phones[pos : pos + n]
        if ch in ",.!?…-":
            assert chunk == [ch]
        else:  # a syllable: initial, then final with a tone digit
            assert n == 2 and chunk[1][-1] in "12345", (ch, chunk)
        pos += n


# -- English ----------------------------------------------------------------------------

EN_CASES = [
    ("Hello, world!", "HH AH0 L OW1 , W ER1 L D !"),
    ("She finished 1st, on May 3rd.", "SH IY1 F IH1 N IH0 SH T F ER1 S T , AA1 N M EY1 TH ER1 D ."),
    (
        "The NASA GPU costs 12.5% more.",
        "DH AH0 N AE1 S AH0 JH IY1 P IY1 Y UW1 K AA1 S T S T W EH1 L V P OY1 N T F AY1 V P ER0 S EH1 N T M AO1 R .",
    ),
    ("I paid $3.", "AY1 P EY1 D TH R IY1 D AA1 L ER0 Z ."),
    # unknown words: split into dictionary parts, else letter-to-sound rules
    ("Tritone is a voice model.", "T R AY1 T OW2 N IH1 Z AH0 V OY1 S M AA1 D AH0 L ."),
    ("Zorblax!", "Z AO1 R B L AE0 K S !"),
]


@pytest.mark.parametrize(("text", "expected"), EN_CASES)
def test_en_phones(fe: TextFrontend, text: str, expected: str) -> None:
    assert phones(fe, text, "en") == expected


def test_en_word2ph_per_word() -> None:
    out = g2p_en("Hello, big world!")
    assert out.word2ph == [4, 1, 3, 4, 1]
    assert sum(out.word2ph) == len(out.phones)


def test_acronyms_are_spelled() -> None:
    assert list(word_phones("GPU")) == spell("gpu") == ["JH", "IY1", "P", "IY1", "Y", "UW1"]
    assert list(word_phones("OK")) == ["OW1", "K", "EY1"]
    # a long all-caps word the dictionary knows is read as a word
    assert list(word_phones("NASA")) == ["N", "AE1", "S", "AH0"]


def test_en_word_forms() -> None:
    assert list(word_phones("John's")) == ["JH", "AA1", "N", "Z"]
    assert list(word_phones("cat's")) == ["K", "AE1", "T", "S"]
    assert list(word_phones("GAN-based")) == [*spell("gan"), "B", "EY1", "S", "T"]
    # camelCase parts: Open + AI (spelled)
    assert list(word_phones("OpenAI")) == ["OW1", "P", "AH0", "N", "EY1", "AY1"]


def test_letter_to_sound_is_plausible_and_in_symbol_set() -> None:
    assert letter_to_sound("blorp") == ["B", "L", "AO1", "R", "P"]
    assert letter_to_sound("cake") == ["K", "EY1", "K"]
    assert letter_to_sound("night") == ["N", "AY1", "T"]
    assert letter_to_sound("snazzle") == ["S", "N", "AE1", "Z", "AH0", "L"]
    for word in ["zorblax", "quixotic", "kubernetes", "grafana", "nginx", "xyzzy", "brrr", "aeiou", "q"]:
        out = letter_to_sound(word)
        assert out and set(out) <= V2, word
        assert sum(p[-1] == "1" for p in out) <= 1, word  # one primary stress at most


def test_en_phones_all_in_symbol_set(fe: TextFrontend) -> None:
    seq = fe.process("Kubernetes, Grafana and PyTorch's CUDA-graphs run on 8 H100s at 3:45pm!", "en")
    assert set(seq.phones) <= V2
    assert sum(seq.word2ph) == len(seq.phones)


# -- mixed ------------------------------------------------------------------------------


def test_mixed_runs(fe: TextFrontend) -> None:
    seq = fe.process("我爱Python编程。", "auto")
    assert " ".join(seq.phones) == "w o3 AA ai4 P AY1 TH AA0 N b ian1 ch eng2 ."
    assert seq.word2ph == [2, 2, 5, 2, 2, 1]
    assert seq.lang == "mixed"
    assert seq.norm_text == "我爱 Python 编程."


def test_zh_tolerates_english_and_reads_digits_in_chinese(fe: TextFrontend) -> None:
    # 十五跑: 3rd-tone sandhi also spans the number and the verb (wu2 pao3)
    seq = fe.process("我用iPhone 15跑tritone。", "zh")
    assert " ".join(seq.phones) == "w o3 y ong4 AY1 F OW2 N sh ir2 w u2 p ao3 T R AY1 T OW2 N ."
    assert seq.word2ph == [2, 2, 4, 2, 2, 2, 6, 1]


def test_mixed_punctuation_joins_the_run_before(fe: TextFrontend) -> None:
    seq = fe.process("OK，我们走吧。", "auto")
    assert " ".join(seq.phones) == "OW1 K EY1 , w o3 m en5 z ou3 b a5 ."
    assert seq.word2ph == [3, 1, 2, 2, 2, 2, 1]
