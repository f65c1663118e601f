"""Normalisation: numbers, dates, times, money, units and punctuation, in Chinese and English."""

from __future__ import annotations

import pytest

from tritone.text.chars import canonical
from tritone.text.normalize_en import normalize_en
from tritone.text.normalize_zh import normalize_zh
from tritone.text.numbers_en import cardinal, ordinal, year


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我有2个苹果和12本书。", "我有两个苹果和十二本书."),
        ("第2名", "第二名"),
        ("约1,000,000人", "约一百万人"),
        ("圆周率是3.14", "圆周率是三点一四"),
        ("温度是-3.5度", "温度是负三点五度"),
        ("今天是2024年3月5日", "今天是二零二四年三月五日"),
        ("会议在2024-03-05开始", "会议在二零二四年三月五日开始"),
        ("1990年出生", "一九九零年出生"),
        ("现在是12:05:30", "现在是十二点零五分三十秒"),
        ("现在是8:00", "现在是八点"),
        ("增长了50%", "增长了百分之五十"),
        ("从10%-20%不等", "从百分之十到百分之二十不等"),
        ("价格是$100.5，或者￥35", "价格是一百点五美元,或者三十五元"),
        ("气温-5℃到10°C", "气温零下五摄氏度到十摄氏度"),
        ("跑了3.5km，用时1h", "跑了三点五公里,用时一小时"),
        ("3-5天", "三到五天"),
        ("1/2的人", "二分之一的人"),
        ("1+1=2", "一加一等于二"),
        ("电话13812345678", "电话幺三八幺二三四五六七八"),
        ("这是007号", "这是零零七号"),
    ],
)
def test_zh_numbers(text: str, expected: str) -> None:
    assert normalize_zh(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("你好，世界！", "你好,世界!"),
        ("真的？！", "真的?"),  # a run of marks keeps its first
        ("等等……好吧～", "等等…好吧…"),
        ("《三体》是“好”书：推荐、必读；", "三体是好书,推荐,必读,"),
        ("啊——是吗", "啊-是吗"),
        ("你好 世界", "你好世界"),  # spaces are not pauses in Chinese
        ("你好😀", "你好"),
    ],
)
def test_zh_punctuation(text: str, expected: str) -> None:
    assert normalize_zh(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I have 3 apples.", "I have three apples."),
        ("It is 1,234,567.", "It is one million two hundred thirty-four thousand five hundred sixty-seven."),
        ("Pi is 3.14 and .5 too.", "Pi is three point one four and point five too."),
        ("It fell -5 points.", "It fell minus five points."),
        (
            "She came 1st, he was 22nd and 103rd.",
            "She came first, he was twenty-second and one hundred third.",
        ),
        ("Growth was 12.5% in 1999!", "Growth was twelve point five percent in nineteen ninety-nine!"),
        ("It costs $3.50.", "It costs three dollars and fifty cents."),
        ("Only $1, or £2.05.", "Only one dollar, or two pounds and five pence."),
        ("A $1.5 million deal", "A one point five million dollars deal"),
        ("Meet at 10:30 am on 2024-03-05.", "Meet at ten thirty A M on March fifth, twenty twenty-four."),
        ("On March 5th, 2024 we met at 3pm.", "On March fifth, twenty twenty-four we met at three P M."),
        ("It was 10:00, then 10:05.", "It was ten o'clock, then ten oh five."),
        ("He ran 5km at -3°C.", "He ran five kilometers at minus three degrees Celsius."),
        ("It weighs 1 kg.", "It weighs one kilogram."),
        ("About 3/4 of us, 1/2 of them.", "About three quarters of us, one half of them."),
        ("Pages 10-20.", "Pages ten to twenty."),
        ("In 2005 and 2010.", "In two thousand five and twenty ten."),
        ("Agent 007", "Agent zero zero seven"),
    ],
)
def test_en_numbers(text: str, expected: str) -> None:
    assert normalize_en(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mr. Smith vs. Dr. Jones, e.g. here.", "mister Smith versus doctor Jones, for example here."),
        ("Wait... what?!", "Wait… what?"),
        ("Café naïve résumé", "Cafe naive resume"),
        ('"Quoted" (text); more: yes', "Quoted text, more, yes"),
        ("rock & roll", "rock and roll"),
        ("Ｈｅｌｌｏ，ｗｏｒｌｄ！", "Hello,world!"),
        ("It’s fine", "It's fine"),
    ],
)
def test_en_text(text: str, expected: str) -> None:
    assert normalize_en(text) == expected


def test_en_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(115) == "one hundred fifteen"
    assert cardinal(2_000_001) == "two million one"
    assert ordinal(21) == "twenty-first"
    assert ordinal(12) == "twelfth"
    assert ordinal(40) == "fortieth"
    assert year(1999) == "nineteen ninety-nine"
    assert year(1905) == "nineteen oh five"
    assert year(1900) == "nineteen hundred"
    assert year(2024) == "twenty twenty-four"


def test_canonical_forms() -> None:
    assert canonical("ＡＢＣ１２３！？　") == "ABC123!? "
    assert canonical("ℌ𝔢𝔩𝔩𝔬 ﬁne x² ½") == "Hello fine x2 1/2"
    assert normalize_en("½ cup, 50m² and x²") == "one half cup, fifty square meters and x two"
    assert normalize_zh("面积5㎡，体积3m³，今天３８℃") == "面积五平方米,体积三立方米,今天三十八摄氏度"
