"""The bundled demo corpus: several Debian speech synthesisers reading sentences written for tritone."""

from training.demo.build import (
    DEFAULT_SEED,
    SAMPLE_RATE,
    SPLITS,
    DemoCorpus,
    build_demo_corpus,
    default_demo_dir,
)
from training.demo.voices import ALL_VOICES, DEFAULT_VOICES, EXTRA_VOICES, VoiceSpec

__all__ = [
    "ALL_VOICES",
    "DEFAULT_SEED",
    "DEFAULT_VOICES",
    "EXTRA_VOICES",
    "SAMPLE_RATE",
    "SPLITS",
    "DemoCorpus",
    "VoiceSpec",
    "build_demo_corpus",
    "default_demo_dir",
]
