"""Where a request's voice prompt comes from: a registered adapter, or zero-shot reference audio.

- `RegistryVoices.load(key)` (the bank's loader, on a worker thread): resolve the voice version
  in the MLflow registry (a local content-addressed copy, downloaded once and hash-verified) and
  read the adapter, verifying every file hash and the base pin against the served base.
- `prepare_reference` (request thread) and `reference_prompt` (scheduler thread, the only one
  that calls the runtime) together do what `tritone.pipeline.Pipeline.build_voice_prompt` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from adapters.format import read_adapter
from tritone.audio import resample, spectrogram
from tritone.config import SAMPLE_RATE, SSL_SAMPLE_RATE
from tritone.pipeline import REF_PAD_SECONDS
from tritone.serving.bank import LoadedVoice
from tritone.serving.request import PreparedReference, VoiceKey, ZeroShotReference
from tritone.text import TextFrontend
from tritone.voice import VoicePrompt

if TYPE_CHECKING:
    from adapters.feed import VoiceChange
    from adapters.names import VoiceId

log = logging.getLogger(__name__)


class ResolvedAdapter(Protocol):
    """What a resolution names: the immutable version and its verified local directory."""

    @property
    def voice(self) -> VoiceId: ...
    @property
    def version(self) -> int: ...
    @property
    def path(self) -> Path: ...
    @property
    def content_sha256(self) -> str: ...


class VoiceSource(Protocol):
    """Where voices are resolved: the MLflow `AdapterRegistry`, or a `VoiceDirectory` folder."""

    def resolve(self, ref: str) -> ResolvedAdapter: ...
    def forget(self, voice: VoiceId) -> int: ...
    def invalidate(self, voice: VoiceId | None = None) -> None: ...


class RegistryVoices:
    """Adapters from the registry (or a voices folder), verified against the served base."""

    def __init__(self, registry: VoiceSource, base_sha256: str) -> None:
        self.registry = registry
        self.base_sha256 = base_sha256

    def load(self, key: VoiceKey) -> LoadedVoice:
        resolved = self.registry.resolve(str(key))
        adapter = read_adapter(
            resolved.path, expect_base=self.base_sha256, expect_content_sha256=resolved.content_sha256
        )
        return LoadedVoice(VoiceKey(resolved.voice, resolved.version), adapter)

    def on_changes(self, evict: Callable[[VoiceChange], None]) -> Callable[[list[VoiceChange]], None]:
        """A change-feed callback: revoked/removed voices are forgotten locally and `evict`ed;
        changed voices are re-resolved on next use (aliases may have moved)."""

        def handle(changes: list[VoiceChange]) -> None:
            for change in changes:
                if change.kind in ("revoked", "removed"):
                    self.registry.forget(change.voice)
                    evict(change)
                elif change.kind == "changed":
                    self.registry.invalidate(change.voice)

        return handle


def prepare_reference(ref: ZeroShotReference, frontend: TextFrontend) -> PreparedReference:
    """The CPU-side half of `Pipeline.build_voice_prompt`: phones, 16 kHz audio, spectrogram."""
    phones = frontend.process(ref.text, ref.lang)
    wav16 = resample(ref.audio, ref.sample_rate, SSL_SAMPLE_RATE)
    wav16 = np.concatenate([wav16, np.zeros(int(REF_PAD_SECONDS * SSL_SAMPLE_RATE), np.float32)])
    wav32 = torch.from_numpy(resample(ref.audio, ref.sample_rate, SAMPLE_RATE))
    peak = float(np.abs(ref.audio).max())
    if peak > 1.0:  # as the pipeline: tame clipping-range input before the spectrogram
        wav32 = wav32 / min(2.0, peak)
    spec = spectrogram(wav32)[0].numpy()  # [bins, frames]
    return PreparedReference(
        text=phones.norm_text,
        lang=ref.lang,
        phone_ids=torch.tensor(phones.ids, dtype=torch.long),
        bert=torch.from_numpy(phones.bert),
        wav16k=wav16.astype(np.float32, copy=False),
        refer_spec=spec.astype(np.float32, copy=False),
    )


def reference_prompt(ref: PreparedReference, codes: np.ndarray) -> VoicePrompt:
    """The voice prompt of a zero-shot reference once its semantic codes are known."""
    return VoicePrompt(
        text=ref.text,
        lang=ref.lang,
        phone_ids=ref.phone_ids,
        bert=ref.bert,
        semantic=torch.from_numpy(np.asarray(codes, dtype=np.int64)),
        refer_spec=torch.from_numpy(ref.refer_spec),
    )
