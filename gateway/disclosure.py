"""The audible AI disclosure a tenant can require on every output.

A short spoken notice, "This voice is AI-generated.", is put before the synthesised speech
(followed by 0.25 s of silence). It is a bundled, pre-rendered clip (`static/disclosure_en.flac`,
rendered once with Debian's flite, voice slt) rather than synthesised per request: it costs
nothing, never fails, is identical on every replica, and is in a voice that is plainly not the
cloned one. It is resampled to the output rate and watermarked with the rest of the audio.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from tritone.audio import load_audio

CLIP = Path(__file__).resolve().parent / "static" / "disclosure_en.flac"
GAP_S = 0.25
TEXT = "This voice is AI-generated."


@lru_cache(maxsize=8)
def disclosure_audio(sample_rate: int) -> np.ndarray:
    """The notice plus the gap, mono float32 at ``sample_rate``."""
    audio, _ = load_audio(CLIP, target_sr=sample_rate)
    gap = np.zeros(round(GAP_S * sample_rate), np.float32)
    out = np.concatenate([audio.astype(np.float32), gap])
    out.setflags(write=False)
    return out
