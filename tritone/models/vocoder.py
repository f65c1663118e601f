"""The s2 generator: HiFi-GAN-style upsampler from the SoVITS latent z (50 Hz) to 32 kHz audio.

Upstream calls it `SynthesizerTrn.dec` (`module/models.py Generator`); GPT-SoVITS v1/v2 have no
separate vocoder, this *is* the waveform decoder:

    z [B, 192, T] --conv_pre (k7)--> [B, 512, T] (+ cond(ge))
      --5 x (leaky ReLU, transposed conv x10 x8 x2 x2 x2, mean of 3 ResBlocks)--> [B, 16, 640 T]
      --leaky ReLU, conv_post (k7), tanh--> wav [B, 1, 640 T]

The upsampling convs and the ResBlock convs are weight-normalised for training;
`remove_weight_norm()` folds them for inference/export.

Receptive field: the generator is convolutional, so an output sample depends on a bounded window
of z frames. `receptive_field_frames(config)` (also `Vocoder.receptive_field`) returns
`(left, right)`: output samples of frame t depend only on frames t - left .. t + right (11, 11 for
the upstream sizes). Vocoding frames [s, e) from `z[s - left : e + right]` therefore reproduces
full vocoding exactly (up to float rounding) -- see `Vocoder.vocode_window`, which the streaming
path uses to cut z into chunks without seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritone.models.s2_modules import init_normal_, remove_weight_norm, weight_norm

LRELU_SLOPE = 0.1


@dataclass
class VocoderConfig:
    """Generator sizes; defaults are upstream s2.json (v1/v2)."""

    in_channels: int = 192  # SoVITS inter_channels
    upsample_initial_channel: int = 512
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)  # product = hop length 640 (50 Hz -> 32 kHz)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(default_factory=lambda: ((1, 3, 5),) * 3)
    gin_channels: int = 512
    sampling_rate: int = 32_000
    kind: str = "hifigan"  # which generator (`tritone.models.vocoders`); bundles without it are this one

    def __post_init__(self) -> None:
        if self.kind != "hifigan":
            raise ValueError(f"a VocoderConfig is the 'hifigan' kind, got {self.kind!r}")
        # JSON round-trips give lists; keep tuples so configs compare and hash predictably
        self.upsample_rates = tuple(self.upsample_rates)
        self.upsample_kernel_sizes = tuple(self.upsample_kernel_sizes)
        self.resblock_kernel_sizes = tuple(self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(d) for d in self.resblock_dilation_sizes)
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("one kernel size per upsample rate")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise ValueError(f"upsample kernel {k} and rate {u} must differ by an even number")

    @property
    def hop_length(self) -> int:
        """Output samples per z frame."""
        return math.prod(self.upsample_rates)

    @classmethod
    def v2(cls) -> VocoderConfig:
        return cls()

    @classmethod
    def tiny(cls) -> VocoderConfig:
        """Same structure and 640x upsampling, narrow channels: for tests."""
        return cls(in_channels=8, upsample_initial_channel=32, gin_channels=32)

    @classmethod
    def from_upstream(cls, hps: dict[str, Any]) -> VocoderConfig:
        """From an upstream s2 `config` dict (reads its `model` and `data` sections)."""
        model, data = hps.get("model", {}), hps.get("data", {})
        kw: dict[str, Any] = {}
        if "inter_channels" in model:
            kw["in_channels"] = model["inter_channels"]
        for name in (
            "upsample_initial_channel",
            "upsample_rates",
            "upsample_kernel_sizes",
            "resblock",
            "resblock_kernel_sizes",
            "resblock_dilation_sizes",
            "gin_channels",
        ):
            if name in model:
                kw[name] = model[name]
        if "sampling_rate" in data:
            kw["sampling_rate"] = data["sampling_rate"]
        return cls(**kw)


def _same_conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    conv = nn.Conv1d(
        channels, channels, kernel_size, 1, dilation=dilation, padding=(kernel_size - 1) * dilation // 2
    )
    init_normal_(conv)
    return weight_norm(conv)


class ResBlock1(nn.Module):
    """Per dilation d: x += conv_1(lrelu(conv_d(lrelu(x)))) (HiFi-GAN V1 block)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_same_conv(channels, kernel_size, 1) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """Per dilation d: x += conv_d(lrelu(x)) (HiFi-GAN V3 block)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


def _resblock_radius(kind: str, kernel_size: int, dilations: tuple[int, ...]) -> int:
    """Samples each side that one ResBlock reads."""
    per = [(kernel_size - 1) * d // 2 for d in dilations]
    if kind == "1":
        per += [(kernel_size - 1) // 2 for _ in dilations]
    return sum(per)


def receptive_field_frames(config: VocoderConfig) -> tuple[int, int]:
    """(left, right): the z frames before/after frame t that can change an output sample of frame t.

    Computed exactly by walking the layer stack backwards (conv_post, then per stage the widest
    ResBlock and the transposed conv's input range, then conv_pre), taking the worst case over
    the `hop_length` samples of the frame.
    """
    hop = config.hop_length
    ref = 1000  # any frame far from the edges; the stack is shift-invariant
    radii = [
        max(
            _resblock_radius(config.resblock, k, d)
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        for _ in config.upsample_rates
    ]
    left = right = 0
    for n in range(ref * hop, (ref + 1) * hop):
        lo, hi = n - 3, n + 3  # conv_post k=7
        for u, k, r in reversed(list(zip(config.upsample_rates, config.upsample_kernel_sizes, radii))):
            lo, hi = lo - r, hi + r
            pad = (k - u) // 2
            # transposed conv: out o = i * u - pad + j (0 <= j < k)
            lo, hi = -((-(lo + pad - k + 1)) // u), (hi + pad) // u
        lo, hi = lo - 3, hi + 3  # conv_pre k=7
        left, right = max(left, ref - lo), max(right, hi - ref)
    return left, right


class WindowedVocoding(nn.Module):
    """`vocode_window` for any generator with a bounded receptive field (in z frames)."""

    @property
    def hop_length(self) -> int:
        """Output samples per z frame."""
        raise NotImplementedError

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left, right): the z frames before/after a frame that can change its samples."""
        raise NotImplementedError

    def vocode_window(self, z: Tensor, ge: Tensor | None, start: int, end: int) -> Tensor:
        """Audio of frames [start, end) of z [B, C, T], computed from z[start - left : end + right]
        only (clipped to [0, T]): equals the same samples of `self(z, ge)`."""
        left, right = self.receptive_field
        T = z.size(2)
        a, b = max(0, start - left), min(T, end + right)
        wav = self(z[:, :, a:b], ge)
        off = (start - a) * self.hop_length
        return wav[:, :, off : off + (end - start) * self.hop_length]


class Vocoder(WindowedVocoding):
    """z [B, in_channels, T] + ge [B, gin, 1] -> waveform [B, 1, T * hop_length] in [-1, 1]."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        cfg = self.config = config
        ch = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.in_channels, ch, 7, 1, padding=3)
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            up = nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            init_normal_(up)
            self.ups.append(weight_norm(up))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(block(ch // 2 ** (i + 1), rk, rd))
        self.conv_post = nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), 1, 7, 1, padding=3, bias=False)
        self.cond: nn.Conv1d | None = nn.Conv1d(cfg.gin_channels, ch, 1) if cfg.gin_channels else None
        self._receptive_field = receptive_field_frames(cfg)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def receptive_field(self) -> tuple[int, int]:
        """(left, right) context in z frames; see `receptive_field_frames`."""
        return self._receptive_field

    def forward(self, z: Tensor, ge: Tensor | None = None) -> Tensor:
        x = self.conv_pre(z)  # [B, C0, T]
        if ge is not None and self.cond is not None:
            x = x + self.cond(ge)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # [B, C_i, T * prod(rates[:i+1])]
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum((b(x) for b in blocks), torch.zeros_like(x)) / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as upstream
        return torch.tanh(x)

    def remove_weight_norm(self) -> None:
        """Fold weight norm into plain conv weights (inference/export); outputs are unchanged."""
        remove_weight_norm(self)
