"""The `tts` entry model: a thin wrapper; everything lives in `tritone.serving` (docs/SERVING.md)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tritone  # noqa: F401  (installed in the environment the stub runs in)
except ImportError:  # running from a source checkout: model_repository/tts/1/model.py -> repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tritone.serving.triton import TritonTTSModel


class TritonPythonModel(TritonTTSModel):
    """Decoupled: validates each request and streams its audio from the scheduler thread."""
