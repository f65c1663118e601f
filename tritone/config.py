"""Project-wide settings: where data lives and the environment knobs every stage reads.

Model sizes live with the models (`GPTConfig`, `SoVITSConfig`, ... in `tritone.models`);
this module only knows about places on disk and process-wide defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The project data directory (`$TRITONE_HOME`, default `<repo>/data`), created on first use."""
    path = Path(os.environ.get("TRITONE_HOME", REPO_ROOT / "data")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


# Sample rates of the model stack (upstream GPT-SoVITS v2).
SAMPLE_RATE = 32_000  # SoVITS / vocoder output
SSL_SAMPLE_RATE = 16_000  # SSL (HuBERT) input
SEMANTIC_HZ = 25  # one semantic token per 40 ms
