"""Text frontend: normalisation, sentence splitting and G2P to GPT-SoVITS phone symbols.

from tritone.text import TextFrontend
seq = TextFrontend().process("你好, world!", "auto")
seq.phones, seq.ids, seq.word2ph, seq.bert.shape  # bert: [1024, len(phones)]
"""

from tritone.text.errors import TextError
from tritone.text.frontend import LANGUAGES, PhoneSequence, TextFrontend
from tritone.text.split import METHODS as SPLIT_METHODS
from tritone.text.split import split_text
from tritone.text.symbols import phones_to_ids, symbols

__all__ = [
    "LANGUAGES",
    "SPLIT_METHODS",
    "PhoneSequence",
    "TextError",
    "TextFrontend",
    "phones_to_ids",
    "split_text",
    "symbols",
]
