"""The text frontend: text + language → phones, ids, word2ph and BERT features.

Languages:

- ``"en"``: English. Chinese characters are refused (use "zh" or "auto").
- ``"zh"``: Chinese; like upstream it tolerates embedded English words, which are read
  with the English G2P.
- ``"auto"``: mixed Chinese/English, split into runs by script.

For "zh" and "auto", text containing any Chinese character has its numbers read in
Chinese (iPhone 15 → iPhone 十五); text with no Chinese character at all is English
(numbers read in English), except that "zh" reads bare digits in Chinese.

Short input: the GPT needs a minimum of context, so like upstream a text that yields
fewer than `MIN_PHONES` phones is processed again with "." in front (one extra "."
phone, which also appears in `norm_text`).

Every bad input raises `TextError` with a message that says what to change: a
non-string, empty or blank text, text over `max_chars` (checked before any work, so a
100k-character string is refused at once), letters of scripts we cannot voice (named in
the message), text with nothing to speak (only punctuation, symbols or emoji), an
unknown language or split method.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tritone.text.chars import canonical, is_han, is_latin_letter
from tritone.text.errors import TextError
from tritone.text.g2p_en import g2p_en
from tritone.text.g2p_zh import g2p_zh
from tritone.text.normalize_en import normalize_en
from tritone.text.normalize_zh import expand_numbers_zh, normalize_zh
from tritone.text.split import has_content, split_text
from tritone.text.symbols import PUNCTUATION, VERSIONS, phones_to_ids

if TYPE_CHECKING:
    from tritone.models.bert import BertFeatures

LANGUAGES: tuple[str, ...] = ("zh", "en", "auto")
BERT_DIM = 1024
MIN_PHONES = 6
# Segments shorter than this (characters) are merged into a neighbour before synthesis.
MIN_SEGMENT_CHARS = 5
_SENTENCE_END = frozenset(",.!?…;:，。！？；：、~～")
_PUNCT = frozenset(PUNCTUATION)


@dataclass
class PhoneSequence:
    """One processed segment.

    phones: v1/v2 symbols; ids: their embedding ids; word2ph: phones per Chinese character
    or English word (1 per punctuation mark), summing to len(phones); norm_text: the
    normalised text the phones were made from; lang: "zh", "en" or "mixed";
    bert: float32 [1024, len(phones)], zeros except for Chinese runs when BERT is configured.
    """

    phones: list[str]
    ids: list[int]
    word2ph: list[int]
    norm_text: str
    lang: str
    bert: np.ndarray


@dataclass(frozen=True)
class _Run:
    lang: str  # "zh" or "en"
    text: str


@dataclass
class _RunResult:
    lang: str
    phones: list[str]
    word2ph: list[int]
    norm_text: str
    bert: np.ndarray


def _char_class(ch: str) -> str | None:
    """Classify a character: "zh", "en", "other" (another script's letter) or None (the rest)."""
    if is_han(ch):
        return "zh"
    if is_latin_letter(ch):
        return "en"
    category = unicodedata.category(ch)
    if category.startswith("L") or category == "Mc":
        return "other"
    return None


def _show(chars: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(ch) for ch in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


def _scripts(chars: list[str]) -> str:
    """Script names from Unicode names: "Cyrillic", "Hiragana", "Arabic"."""
    names = {unicodedata.name(ch, "unknown").split(" ")[0].title() for ch in chars}
    return ", ".join(sorted(names))


def split_runs(text: str) -> list[_Run]:
    """Split text into Chinese and English runs; digits, spaces and punctuation join the run they follow."""
    runs: list[_Run] = []
    current_lang: str | None = None
    current: list[str] = []
    for ch in text:
        cls = _char_class(ch)
        if cls in ("zh", "en") and cls != current_lang:
            if current_lang is not None:
                runs.append(_Run(current_lang, "".join(current)))
                current = []
            # Leading punctuation/digits stay in `current` and so join the first run.
            current_lang = cls
        current.append(ch)
    if current:
        runs.append(_Run(current_lang or "zh", "".join(current)))
    return runs


class TextFrontend:
    """Text → `PhoneSequence`: normalisation, G2P to the v1/v2 symbol set, optional zh BERT."""

    def __init__(
        self, version: str = "v2", bert_dir: str | Path | None = None, max_chars: int = 2000
    ) -> None:
        if version not in VERSIONS:
            raise TextError(f"unknown symbol set version {version!r}; expected one of {', '.join(VERSIONS)}")
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self.version = version
        self.max_chars = max_chars
        self.bert: BertFeatures | None = None
        if bert_dir is not None:
            from tritone.models.bert import BertFeatures

            self.bert = BertFeatures.from_dir(bert_dir)

    # -- validation --------------------------------------------------------------------

    def _validate(self, text: object, lang: object) -> str:
        if not isinstance(lang, str) or lang not in LANGUAGES:
            raise TextError(f"unsupported language {lang!r}; expected one of {', '.join(LANGUAGES)}")
        if not isinstance(text, str):
            raise TextError(f"text must be a string, got {type(text).__name__}")
        if len(text) > self.max_chars:
            raise TextError(
                f"text is {len(text)} characters long; the limit is {self.max_chars} "
                "(split it into several requests)"
            )
        if not text.strip():
            raise TextError("text is empty")
        text = canonical(text)
        classes = [_char_class(ch) for ch in text]
        unsupported = sorted({ch for ch, c in zip(text, classes) if c == "other"})
        if unsupported:
            raise TextError(
                f"text contains {_scripts(unsupported)} characters that cannot be spoken "
                f"({_show(unsupported)}); only Chinese and English are supported"
            )
        if lang == "en" and "zh" in classes:
            han = sorted({ch for ch, c in zip(text, classes) if c == "zh"})
            raise TextError(f"Chinese characters in English text ({_show(han)}); use lang 'zh' or 'auto'")
        if not any(c in ("zh", "en") for c in classes) and not any(ch.isdigit() for ch in text):
            symbols = sorted({ch for ch in text if not ch.isspace()})
            raise TextError(
                f"text has nothing to speak, only punctuation, symbols or emoji: {_show(symbols)}"
            )
        return text

    def validate(self, text: str, lang: str) -> str:
        """Check `text` and `lang` as `process` and `segments` do; return the canonical text.

        Raises `TextError` (unsupported language, too long, empty, unspeakable characters or
        nothing to speak) without running G2P, so callers can refuse bad input cheaply.
        """
        return self._validate(text, lang)

    # -- runs --------------------------------------------------------------------------

    def _runs(self, text: str, lang: str) -> list[_Run]:
        has_han = any(is_han(ch) for ch in text)
        if lang == "en" or (not has_han and (lang == "auto" or any(is_latin_letter(ch) for ch in text))):
            return [_Run("en", text)]
        if not has_han:
            return [_Run("zh", text)]  # "zh" with digits and punctuation only
        return split_runs(expand_numbers_zh(text))

    def _process_run(self, run: _Run) -> _RunResult | None:
        if run.lang == "zh":
            norm = normalize_zh(run.text)
            if not norm:
                return None
            zh = g2p_zh(norm)
            bert = self._bert_zh(norm, zh.word2ph, len(zh.phones))
            return _RunResult("zh", zh.phones, zh.word2ph, norm, bert)
        norm = normalize_en(run.text)
        en = g2p_en(norm)
        if not en.phones:
            return None
        return _RunResult("en", en.phones, en.word2ph, norm, np.zeros((BERT_DIM, len(en.phones)), np.float32))

    def _bert_zh(self, norm: str, word2ph: list[int], n_phones: int) -> np.ndarray:
        if self.bert is None or not norm:
            return np.zeros((BERT_DIM, n_phones), dtype=np.float32)
        return self.bert.features(norm, word2ph)

    def _build(self, text: str, lang: str) -> PhoneSequence:
        results = [r for r in (self._process_run(run) for run in self._runs(text, lang)) if r is not None]
        phones = [p for r in results for p in r.phones]
        if not any(p not in _PUNCT for p in phones):
            raise TextError(f"text has nothing to speak after normalisation: {text[:80]!r}")
        langs = {r.lang for r in results if any(p not in _PUNCT for p in r.phones)}
        return PhoneSequence(
            phones=phones,
            ids=phones_to_ids(phones, self.version),
            word2ph=[w for r in results for w in r.word2ph],
            norm_text=_join_norm([r.norm_text for r in results], [r.lang for r in results]),
            lang=langs.pop() if len(langs) == 1 else "mixed",
            bert=np.concatenate([r.bert for r in results], axis=1).astype(np.float32, copy=False),
        )

    # -- public ------------------------------------------------------------------------

    def warmup(self) -> None:
        """Load the lazy resources (jieba and CMUdict dictionaries, BERT) so the first request is fast."""
        self.process("你好，世界。Hello, world.", "auto")

    def process(self, text: str, lang: str) -> PhoneSequence:
        """One segment → phones; see the module docstring for languages, padding and errors."""
        text = self._validate(text, lang)
        seq = self._build(text, lang)
        if len(seq.phones) < MIN_PHONES:
            seq = self._build("." + text, lang)
        return seq

    def segments(self, text: str, lang: str, split: str = "cut5") -> list[PhoneSequence]:
        """Split `text` by `split` (cut0..cut5) and process each segment.

        As upstream prepares synthesis targets, segments under `MIN_SEGMENT_CHARS`
        characters join the one before, and a segment that does not end in punctuation
        gets a "." so each ends like a sentence. A segment left with nothing to speak
        after normalisation is skipped; if all are, `TextError` is raised.
        """
        text = self._validate(text, lang)
        out = []
        error: TextError | None = None
        for piece in _merge_short(split_text(text, split)):
            if piece[-1] not in _SENTENCE_END:
                piece += "."
            try:
                out.append(self.process(piece, lang))
            except TextError as exc:  # the whole text passed validation: only "nothing to speak" is left
                error = exc
        if not out:
            raise error or TextError("text has nothing to speak")
        return out


def _merge_short(pieces: list[str]) -> list[str]:
    merged: list[str] = []
    for piece in pieces:
        if merged and (len(piece) < MIN_SEGMENT_CHARS or len(merged[-1]) < MIN_SEGMENT_CHARS):
            # split_text stripped the space that separated English sentences
            sep = " " if merged[-1][-1].isascii() and piece[0].isascii() else ""
            merged[-1] += sep + piece
        else:
            merged.append(piece)
    return [p for p in merged if has_content(p)]


def _join_norm(parts: list[str], langs: list[str]) -> str:
    # English words keep a space from neighbouring Chinese so the text stays readable.
    out = ""
    for i, (part, lang) in enumerate(zip(parts, langs)):
        if i and (lang == "en" or langs[i - 1] == "en") and out and not out.endswith(" "):
            out += " "
        out += part
    return out
