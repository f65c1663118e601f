"""A voice's reference prompt: what GPT and SoVITS need to speak in that voice.

Built once from 3–10 s of reference audio and its transcript (`Pipeline.build_voice_prompt`),
stored with every adapter as `voice_prompt.safetensors`, so a request needs only text and a
voice name. Fields:

    phone_ids  [Nx] long           phones of the reference transcript (GPT prefix)
    bert       [1024, Nx] float    BERT features of the transcript (zeros unless zh + BERT)
    semantic   [Ty] long           the reference audio's semantic tokens (GPT prompt, 25 Hz)
    refer_spec [bins, frames]      32 kHz linear spectrogram (SoVITS global embedding `ge`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "tritone.voice_prompt/1"


class VoicePromptError(ValueError):
    """A voice prompt file that is missing, malformed or of an unknown format."""


@dataclass
class VoicePrompt:
    text: str
    lang: str
    phone_ids: Tensor
    bert: Tensor
    semantic: Tensor
    refer_spec: Tensor

    def __post_init__(self) -> None:
        if self.phone_ids.dim() != 1 or self.semantic.dim() != 1:
            raise VoicePromptError("phone_ids and semantic must be 1-D")
        if self.bert.dim() != 2 or self.bert.shape[1] != self.phone_ids.shape[0]:
            raise VoicePromptError(
                f"bert must be [dim, {self.phone_ids.shape[0]}], got {tuple(self.bert.shape)}"
            )
        if self.refer_spec.dim() != 2:
            raise VoicePromptError("refer_spec must be [bins, frames]")

    def tensors(self) -> dict[str, Tensor]:
        return {
            "phone_ids": self.phone_ids.long().contiguous(),
            "bert": self.bert.float().contiguous(),
            "semantic": self.semantic.long().contiguous(),
            "refer_spec": self.refer_spec.float().contiguous(),
        }

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "text": self.text, "lang": self.lang}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(p), metadata=self.metadata())
        return p

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], metadata: dict[str, str]) -> VoicePrompt:
        if metadata.get("format") != FORMAT:
            raise VoicePromptError(f"unknown voice prompt format {metadata.get('format')!r} (want {FORMAT})")
        missing = {"phone_ids", "bert", "semantic", "refer_spec"} - tensors.keys()
        if missing:
            raise VoicePromptError(f"voice prompt lacks tensors: {sorted(missing)}")
        return cls(
            text=metadata.get("text", ""),
            lang=metadata.get("lang", ""),
            phone_ids=tensors["phone_ids"].long(),
            bert=tensors["bert"].float(),
            semantic=tensors["semantic"].long(),
            refer_spec=tensors["refer_spec"].float(),
        )

    @classmethod
    def load(cls, path: str | Path) -> VoicePrompt:
        p = Path(path)
        if not p.is_file():
            raise VoicePromptError(f"{p}: no voice prompt file")
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            tensors = load_file(str(p))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise VoicePromptError(f"{p}: cannot read voice prompt: {exc}") from exc
        return cls.from_tensors(tensors, metadata)

    def describe(self) -> str:
        seconds = self.semantic.shape[0] / 25
        return json.dumps(
            {"text": self.text, "lang": self.lang, "phones": int(self.phone_ids.shape[0]), "seconds": seconds}
        )


def to_device(prompt: VoicePrompt, device: torch.device | str) -> VoicePrompt:
    return VoicePrompt(
        prompt.text,
        prompt.lang,
        prompt.phone_ids.to(device),
        prompt.bert.to(device),
        prompt.semantic.to(device),
        prompt.refer_spec.to(device),
    )
