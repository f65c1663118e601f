"""SSL (self-supervised speech) encoders: 16 kHz waveform -> 50 Hz content features.

SoVITS quantizes these features into semantic tokens (`SoVITS.extract_latent`). Two encoders sit
behind one interface, `SSLEncoder`:

- `HubertSSL`: an HF `HubertModel` loaded from a local directory (upstream uses
  chinese-hubert-base): `last_hidden_state`, 768-d at 50 Hz. Like upstream inference and
  preprocessing, the raw waveform goes straight into the model (no feature-extractor
  normalisation). Frozen by default.
- `TinySSL`: a small built-in conv encoder for corpora without SSL weights, meant to be trained
  jointly with the quantizer. Its front end uses HuBERT's strides, so it yields the same number of
  frames for the same audio and, at dim 768, is a drop-in replacement.

Both take zero-padded batches [B, T]; frames past a row's own length are garbage to be ignored
(`num_frames(len)` gives how many are valid).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

# HuBERT / wav2vec2 conv feature extractor: 320 samples per frame at 16 kHz
HUBERT_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
HUBERT_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def conv_frames(num_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Output length of a stack of unpadded strided convs."""
    n = num_samples
    for k, s in zip(kernels, strides):
        n = max(0, (n - k) // s + 1)
    return n


class SSLEncoder(nn.Module, ABC):
    """wav16k [B, T] float in [-1, 1] -> feats [B, dim, T50]."""

    sample_rate: int = 16_000
    frame_rate: int = 50
    dim: int

    @abstractmethod
    def forward(self, wav16k: Tensor) -> Tensor: ...

    @abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Feature frames produced for `num_samples` samples of audio."""


class HubertSSL(SSLEncoder):
    """HF `HubertModel` features (`last_hidden_state`, transposed to [B, dim, T50])."""

    def __init__(self, model: nn.Module, trainable: bool = False) -> None:
        super().__init__()
        self.model = model
        config = getattr(model, "config", None)
        self.dim = int(getattr(config, "hidden_size", 768))
        self._kernels = tuple(getattr(config, "conv_kernel", HUBERT_CONV_KERNELS))
        self._strides = tuple(getattr(config, "conv_stride", HUBERT_CONV_STRIDES))
        if not trainable:
            self.model.requires_grad_(False)
            self.model.eval()
        self.trainable = trainable

    @classmethod
    def from_dir(cls, path: str | Path, trainable: bool = False) -> HubertSSL:
        """Load from a local directory (config.json + weights); never downloads."""
        from transformers import HubertModel

        p = Path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: no HuBERT config.json (expected an HF model directory)")
        return cls(HubertModel.from_pretrained(str(p), local_files_only=True), trainable=trainable)

    def train(self, mode: bool = True) -> HubertSSL:
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # a frozen encoder never runs dropout
        return self

    def forward(self, wav16k: Tensor) -> Tensor:
        out = self.model(wav16k).last_hidden_state  # [B, T50, dim]
        return out.transpose(1, 2)

    def num_frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self._kernels, self._strides)


class TinySSL(SSLEncoder):
    """Small trainable conv encoder with HuBERT's frame grid.

    wav [B, T] -> 7 strided convs (HuBERT kernels/strides, GroupNorm after the first, GELU)
    -> `n_blocks` residual convs (k=3) at 50 Hz -> LayerNorm -> 1x1 conv to `dim`.

    Block i is dilated by 2 ** (i % dilation_cycle): a cycle of 1 (no dilation) sees 25 ms + 40 ms
    a block; a cycle of 4 widens each group of four blocks to 600 ms of context, nearer what
    HuBERT's transformer sees (on the demo it did not lower the phone error rate: QUALITY.md §4).
    """

    def __init__(
        self, dim: int = 768, channels: int = 128, n_blocks: int = 2, dilation_cycle: int = 1
    ) -> None:
        super().__init__()
        if dilation_cycle < 1:
            raise ValueError(f"dilation_cycle must be >= 1, got {dilation_cycle}")
        self.dim = dim
        convs = []
        for i, (k, s) in enumerate(zip(HUBERT_CONV_KERNELS, HUBERT_CONV_STRIDES)):
            convs.append(nn.Conv1d(1 if i == 0 else channels, channels, k, s, bias=False))
        self.convs = nn.ModuleList(convs)
        self.norm0 = nn.GroupNorm(channels, channels)
        dilations = [2 ** (i % dilation_cycle) for i in range(n_blocks)]
        self.blocks = nn.ModuleList(
            nn.Conv1d(channels, channels, 3, padding=d, dilation=d) for d in dilations
        )
        self.norm = nn.LayerNorm(channels)
        self.proj = nn.Conv1d(channels, dim, 1)

    def forward(self, wav16k: Tensor) -> Tensor:
        x = wav16k.unsqueeze(1)  # [B, 1, T]
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == 0:
                x = self.norm0(x)
            x = F.gelu(x)  # [B, C, T50] after the last one
        for block in self.blocks:
            x = x + F.gelu(block(x))
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.proj(x)  # [B, dim, T50]

    def num_frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, HUBERT_CONV_KERNELS, HUBERT_CONV_STRIDES)


def load_ssl(path: str | Path | None, dim: int = 768) -> SSLEncoder:
    """HuBERT from `path` when given, else a fresh `TinySSL(dim)`."""
    return HubertSSL.from_dir(path) if path is not None else TinySSL(dim)
