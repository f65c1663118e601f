"""Mandarin tone sandhi on jieba words.

Dictionary pinyin gives citation tones; speech changes some of them depending on the
neighbours. Rules applied, in order, per word (syllables are pypinyin TONE3 strings such
as "hao3", with 5 for the neutral tone):

1. 不: neutral between a verb and its complement (看不懂), 2nd tone before a 4th tone (不是).
2. 一: unchanged inside numbers (十一) and as an ordinal (第一), neutral between a repeated
 verb (看一看), 2nd tone before a 4th tone (一个), 4th tone before other tones (一天).
3. Neutral tone: reduplicated nouns/verbs/adjectives (妈妈, 看看), particles (吧, 的, 了),
 suffixes (们, 子), localisers (桌上), directional complements (上来), the classifier
 个, and words conventionally read with a neutral final syllable (东西, 衣服).
4. Third-tone sandhi: a 3rd tone before another 3rd tone becomes 2nd (你好 → ni2 hao3),
 applied within prosodic words of up to three syllables.

Before that, small jieba words are merged so the rules see the right unit (不 + verb,
一 + classifier, two short all-3rd-tone words, a trailing 儿).
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

from pypinyin import Style, lazy_pinyin

with warnings.catch_warnings():
    # jieba imports the deprecated pkg_resources at import time.
    warnings.simplefilter("ignore")
    import jieba

jieba.setLogLevel(logging.CRITICAL)

Word = tuple[str, str]  # (text, jieba part-of-speech tag)

# Punctuation that may follow 一 and block its sandhi ("一，" keeps the 1st tone).
_PUNCT_CHARS = frozenset("!?…,.-：，；。？！“”‘’':;")
_MODAL_PARTICLES = frozenset("吧呢哈啊呐噻嘛吖嗨哦哒额滴哩哟喽啰耶喔诶")
_STRUCTURAL_PARTICLES = frozenset("的地得")
_ASPECT_PARTICLES = frozenset("了着过")
_PLURAL_SUFFIXES = frozenset("们子")
_LOCALISERS = frozenset("上下里")
_DIRECTIONAL_VERBS = frozenset("上下进出回过起开")
# A 个 after these is a classifier and loses its tone (几个, 两个, 每个).
_GE_QUANTIFIERS = frozenset("几有两半多各整每做是")
_NUMERAL_CHARS = frozenset("零〇一二三四五六七八九十百千万亿两幺")
_MAGNITUDES = frozenset("百千万亿")


def word_set(words: str) -> frozenset[str]:
    """A set from whitespace-separated words."""
    return frozenset(words.split())


# Common words whose last syllable is conventionally neutral.
NEUTRAL_TONE_WORDS: frozenset[str] = word_set(
    """
    东西 先生 麻烦 衣服 朋友 事情 时候 地方 意思 知道 明白 清楚 喜欢 漂亮 舒服 便宜 收拾
    打听 告诉 耳朵 眼睛 眉毛 脑袋 头发 嘴巴 尾巴 结巴 哑巴 月亮 豆腐 萝卜 葡萄 玻璃 琵琶
    喇叭 蘑菇 狐狸 骆驼 馒头 石头 木头 骨头 舌头 枕头 指头 念头 苗头 跟头 行李 窗户 姑娘
    丫头 媳妇 女婿 丈夫 亲戚 师傅 大夫 队伍 风筝 巴掌 扫帚 棉花 芝麻 云彩 商量 糊涂 马虎
    凉快 暖和 热闹 厚道 客气 规矩 道理 力气 脾气 福气 运气 名字 生意 买卖 消息 学生 聪明
    体面 干净 利索 痛快 爽快 老实 结实 踏实 扎实 小气 委屈 折腾 琢磨 打扮 招呼
    吩咐 嘱咐 应付 交代 认识 拾掇 张罗 记得 晚上 早上 上头 下头 外头 里头 前头 后头 什么
    怎么 那么 这么 多么 咱们 别人 哥哥 弟弟 姐姐 妹妹 爸爸 妈妈 爷爷 奶奶 叔叔 伯伯 舅舅
    姥姥 宝宝 娃娃 星星 太太 王爷 少爷 老爷 亲家 公公 婆婆 状元 秀才 和尚 喇嘛 菩萨 相声
    故事 本事 护士 部分 合同 机灵 玫瑰 蛤蟆 蚂蚱 牲口 畜生 庄稼 粮食
    包袱 被卧 铺盖 笼子 算盘 灯笼 钥匙 篱笆 柴火 烟筒 胳膊 屁股 肚子 指甲
    下巴 脊梁 心思 主意 动静 样子 架势 打算 学问 交情 人家 东家 冤家 庄家 厉害 凑合
    将就 含糊 啰嗦 耽误 照应 称呼 支吾 哆嗦 咳嗽 动弹 吆喝 叨唠 嘀咕 琢磨 掂量 思量
    """
)
# Reduplications and -子/-们 words that keep their full tones.
NOT_NEUTRAL_WORDS: frozenset[str] = word_set(
    """
    男子 女子 分子 原子 量子 莲子 石子 瓜子 电子 人人 虎虎 幺幺 学子 卵子 算子 孔子 老子
    庄子 孟子 君子 天子 王子 太子 才子 游子 赤子 弟子 粒子 因子 质子 中子 光子 棋子
    数数 想想 熙熙 攘攘 死死 冉冉 恳恳 佼佼 吵吵 打打 考考 整整 莘莘 袅袅
    青青 家家户户 花花草草 哈哈 娃哈哈 落地 耕地 局地 以下 留得 干嘛
    """
)


@lru_cache(maxsize=65536)
def word_syllables(word: str) -> tuple[str, ...]:
    """Citation pinyin of a word, one TONE3 syllable per character (neutral tone as 5)."""
    return tuple(lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True))


def _with_tone(syllable: str, tone: str) -> str:
    return syllable[:-1] + tone


def _tone(syllable: str) -> str:
    return syllable[-1:]


def _all_third(syllables: list[str] | tuple[str, ...]) -> bool:
    return bool(syllables) and all(_tone(s) == "3" for s in syllables)


def _is_punct(word: str) -> bool:
    return all(ch in _PUNCT_CHARS for ch in word)


def split_two(word: str) -> tuple[str, str]:
    """Split a word of 3+ characters into two parts along a dictionary word boundary."""
    if len(word) == 3:
        # 纸/老虎 when the tail is a word and the head is not, else 蒙古/包.
        head, tail = word[:2], word[1:]
        if _in_dictionary(tail) and not _in_dictionary(head):
            return word[:1], word[1:]
    return word[:2], word[2:]


def _in_dictionary(word: str) -> bool:
    jieba.dt.check_initialized()
    return bool(jieba.dt.FREQ.get(word))


# -- merging jieba words -------------------------------------------------------------


def _merge_bu(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    pending = False
    for text, pos in words:
        if pending and not _is_punct(text):
            text = "不" + text
        elif pending:
            out.append(("不", "d"))
        pending = text == "不"
        if not pending:
            out.append((text, pos))
    if pending:
        out.append(("不", "d"))
    return out


def _merge_yi(words: list[Word]) -> list[Word]:
    # 听 / 一 / 听 → 听一听 (a repeated verb around 一).
    merged: list[Word] = []
    i = 0
    while i < len(words):
        text, pos = words[i]
        if text == "一" and merged and i + 1 < len(words):
            prev_text, prev_pos = merged[-1]
            next_text, next_pos = words[i + 1]
            if prev_text == next_text and prev_pos == "v" and next_pos == "v":
                merged[-1] = (prev_text + "一" + next_text, prev_pos)
                i += 2
                continue
        merged.append((text, pos))
        i += 1
    # A lone 一 joins the word after it (一 / 本书 → 一本书), so its sandhi sees the next tone.
    out: list[Word] = []
    for text, pos in merged:
        if out and out[-1][0] == "一" and not _is_punct(text):
            out[-1] = ("一" + text, out[-1][1])
        else:
            out.append((text, pos))
    return out


def _merge_reduplication(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    for text, pos in words:
        if out and text == out[-1][0] and not _is_punct(text):
            out[-1] = (out[-1][0] + text, out[-1][1])
        else:
            out.append((text, pos))
    return out


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def _merge_third_tones(words: list[Word], *, whole_words: bool) -> list[Word]:
    """Join short neighbours so 3rd-tone sandhi applies across them (老 / 鼠 → 老鼠).

    With whole_words both words must be all 3rd tone; otherwise the junction is enough
    (the last syllable of one and the first of the next).
    """
    out: list[Word] = []
    joined_last = False
    for text, pos in words:
        if out and not joined_last and not _is_punct(text) and not _is_punct(out[-1][0]):
            prev = word_syllables(out[-1][0])
            cur = word_syllables(text)
            if whole_words:
                meets = _all_third(prev) and _all_third(cur)
            else:
                meets = _tone(prev[-1]) == "3" and _tone(cur[0]) == "3"
            short = len(out[-1][0]) + len(text) <= 3
            if meets and short and not _is_reduplication(out[-1][0]):
                out[-1] = (out[-1][0] + text, out[-1][1])
                joined_last = True
                continue
        out.append((text, pos))
        joined_last = False
    return out


def _merge_er(words: list[Word]) -> list[Word]:
    out: list[Word] = []
    for text, pos in words:
        if text == "儿" and out and not _is_punct(out[-1][0]):
            out[-1] = (out[-1][0] + text, out[-1][1])
        else:
            out.append((text, pos))
    return out


def merge_words(words: list[Word]) -> list[Word]:
    """Regroup jieba words into the units the sandhi rules apply to."""
    words = _merge_bu(words)
    words = _merge_yi(words)
    words = _merge_reduplication(words)
    words = _merge_third_tones(words, whole_words=True)
    words = _merge_third_tones(words, whole_words=False)
    return _merge_er(words)


# -- per-word rules ---------------------------------------------------------------------


def _bu_sandhi(word: str, syl: list[str]) -> list[str]:
    if len(word) == 3 and word[1] == "不":
        syl[1] = _with_tone(syl[1], "5")
        return syl
    for i, ch in enumerate(word[:-1]):
        if ch == "不" and _tone(syl[i + 1]) == "4":
            syl[i] = _with_tone(syl[i], "2")
    return syl


def _yi_before(syl: list[str], i: int) -> None:
    # 一 rises before a 4th tone and falls before any other.
    syl[i] = _with_tone(syl[i], "2" if _tone(syl[i + 1]) == "4" else "4")


def _yi_sandhi(word: str, syl: list[str]) -> list[str]:
    if "一" not in word:
        return syl
    if all(ch in _NUMERAL_CHARS or ch.isnumeric() for ch in word):
        # Inside a number 一 keeps its tone (十一, 一零一) except as a leading count (一百, 一万).
        for i, ch in enumerate(word[:-1]):
            if ch == "一" and word[i + 1] in _MAGNITUDES and (i == 0 or word[i - 1] not in _NUMERAL_CHARS):
                _yi_before(syl, i)
        return syl
    if len(word) == 3 and word[1] == "一" and word[0] == word[2]:
        syl[1] = _with_tone(syl[1], "5")
        return syl
    if word.startswith("第一"):
        syl[1] = _with_tone(syl[1], "1")
        return syl
    for i, ch in enumerate(word[:-1]):
        if ch == "一" and word[i + 1] not in _PUNCT_CHARS:
            _yi_before(syl, i)
    return syl


def _neutral_sandhi(word: str, pos: str, syl: list[str]) -> list[str]:
    exempt = word in NOT_NEUTRAL_WORDS
    for j in range(1, len(word)):
        if word[j] == word[j - 1] and pos[:1] in ("n", "v", "a") and not exempt:
            syl[j] = _with_tone(syl[j], "5")
    ge = word.find("个")
    if word == "个" or (ge >= 1 and _counts(word[ge - 1])):
        syl[max(ge, 0)] = _with_tone(syl[max(ge, 0)], "5")
    elif _neutral_ending(word, pos, exempt):
        syl[-1] = _with_tone(syl[-1], "5")
    if len(word) >= 3:
        head, _ = split_two(word)
        if head in NEUTRAL_TONE_WORDS:
            syl[len(head) - 1] = _with_tone(syl[len(head) - 1], "5")
    return syl


def _neutral_ending(word: str, pos: str, exempt: bool) -> bool:
    """Whether the last syllable is a particle, suffix or conventional neutral ending."""
    last = word[-1]
    if last in _MODAL_PARTICLES or (last in _STRUCTURAL_PARTICLES and not exempt):
        return True  # 好吧, 我的
    if len(word) == 1:
        return last in _ASPECT_PARTICLES and pos in ("ul", "uz", "ug")  # 走了, 看着
    if last in _PLURAL_SUFFIXES and pos in ("r", "n") and not exempt:
        return True  # 我们, 桌子
    if last in _LOCALISERS and pos in ("s", "l", "f") and not exempt:
        return True  # 家里, 路上
    if last in "来去" and word[-2] in _DIRECTIONAL_VERBS:
        return True  # 上来, 进去
    return word in NEUTRAL_TONE_WORDS or word[-2:] in NEUTRAL_TONE_WORDS


def _counts(ch: str) -> bool:
    """Whether 个 after `ch` is a classifier (三个, 几个, 每个)."""
    return ch in _NUMERAL_CHARS or ch.isnumeric() or ch in _GE_QUANTIFIERS


def _third_sandhi(word: str, syl: list[str]) -> list[str]:
    if len(word) == 2:
        if _all_third(syl):
            syl[0] = _with_tone(syl[0], "2")
    elif len(word) == 3:
        head, _ = split_two(word)
        if _all_third(syl):
            if len(head) == 2:  # 蒙古/包: both syllables of the head rise
                syl[0] = _with_tone(syl[0], "2")
                syl[1] = _with_tone(syl[1], "2")
            else:  # 纸/老虎
                syl[1] = _with_tone(syl[1], "2")
        else:
            parts = [syl[: len(head)], syl[len(head) :]]
            for i, part in enumerate(parts):
                if len(part) == 2 and _all_third(part):  # 所有/人
                    part[0] = _with_tone(part[0], "2")
                elif i == 1 and _tone(part[0]) == "3" and _tone(parts[0][-1]) == "3":  # 好/喜欢
                    parts[0][-1] = _with_tone(parts[0][-1], "2")
            syl = parts[0] + parts[1]
    elif len(word) == 4:
        for start in (0, 2):
            if _all_third(syl[start : start + 2]):
                syl[start] = _with_tone(syl[start], "2")
    return syl


def apply_sandhi(word: str, pos: str, syllables: list[str]) -> list[str]:
    """Tone-modified syllables of one (merged) word; `syllables` has one entry per character."""
    syl = list(syllables)
    syl = _bu_sandhi(word, syl)
    syl = _yi_sandhi(word, syl)
    syl = _neutral_sandhi(word, pos, syl)
    return _third_sandhi(word, syl)
