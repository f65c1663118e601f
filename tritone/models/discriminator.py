"""GAN discriminators for s2 training (upstream `MultiPeriodDiscriminator`, HiFi-GAN style).

One scale discriminator on the raw waveform plus one period discriminator per period
(2, 3, 5, 7, 11 for v1/v2), each returning its logits and per-layer feature maps for the
feature-matching loss. Convs are weight-normalised (or spectrally normalised on request).
Module names follow upstream, so `discriminator_state_dict_from_upstream` only rewrites the
weight-norm keys of an upstream `s2D` state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from tritone.models.s2_modules import (
    check_state_dict,
    normalise_weight_norm_keys,
    weight_norm,
    weight_norm_prefixes,
)

LRELU_SLOPE = 0.1
PERIODS_V2 = (2, 3, 5, 7, 11)

Features = list[Tensor]


def _norm(use_spectral_norm: bool) -> Callable[[nn.Module], nn.Module]:
    if use_spectral_norm:
        return lambda m: parametrizations.spectral_norm(m)
    return weight_norm


class DiscriminatorP(nn.Module):
    """Folds the waveform [B, 1, T] into [B, 1, T/p, p] and runs 2-D convs along time."""

    def __init__(
        self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False
    ) -> None:
        super().__init__()
        self.period = period
        norm = _norm(use_spectral_norm)
        pad = (kernel_size - 1) // 2
        chans = [1, 32, 128, 512, 1024, 1024]
        self.convs = nn.ModuleList(
            norm(
                nn.Conv2d(
                    chans[i], chans[i + 1], (kernel_size, 1), (stride if i < 4 else 1, 1), padding=(pad, 0)
                )
            )
            for i in range(5)
        )
        self.conv_post = norm(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, Features]:
        fmap: Features = []
        B, C, T = x.shape
        if T % self.period:  # reflect-pad to a whole number of periods
            n_pad = self.period - T % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            T += n_pad
        h = x.view(B, C, T // self.period, self.period)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LRELU_SLOPE)
            fmap.append(h)
        h = self.conv_post(h)
        fmap.append(h)
        return h.flatten(1), fmap


class DiscriminatorS(nn.Module):
    """Strided grouped 1-D convs over the raw waveform [B, 1, T]."""

    def __init__(self, use_spectral_norm: bool = False) -> None:
        super().__init__()
        norm = _norm(use_spectral_norm)
        # (in, out, kernel, stride, groups, padding)
        spec = [
            (1, 16, 15, 1, 1, 7),
            (16, 64, 41, 4, 4, 20),
            (64, 256, 41, 4, 16, 20),
            (256, 1024, 41, 4, 64, 20),
            (1024, 1024, 41, 4, 256, 20),
            (1024, 1024, 5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(i, o, k, s, groups=g, padding=p)) for i, o, k, s, g, p in spec
        )
        self.conv_post = norm(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, Features]:
        fmap: Features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """`discriminators[0]` is the scale discriminator, then one DiscriminatorP per period."""

    def __init__(self, periods: tuple[int, ...] = PERIODS_V2, use_spectral_norm: bool = False) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [
                DiscriminatorS(use_spectral_norm),
                *(DiscriminatorP(p, use_spectral_norm=use_spectral_norm) for p in periods),
            ]
        )

    def forward(
        self, y: Tensor, y_hat: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[Features], list[Features]]:
        """Real y and generated y_hat [B, 1, T] -> (real logits, fake logits, real fmaps, fake fmaps)."""
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            r, fr = d(y)
            g, fg = d(y_hat)
            y_d_rs.append(r)
            y_d_gs.append(g)
            fmap_rs.append(fr)
            fmap_gs.append(fg)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


def discriminator_state_dict_from_upstream(
    sd: Mapping[str, Tensor], model: MultiPeriodDiscriminator
) -> dict[str, Tensor]:
    """Upstream `MultiPeriodDiscriminator` state dict -> ours (weight_g/weight_v -> parametrization
    keys; identity otherwise). Strict: raises KeyError on unknown, missing or mis-shaped keys."""
    out = normalise_weight_norm_keys(sd, weight_norm_prefixes(model), "discriminator weights")
    check_state_dict(out, model, "discriminator weights")
    return out
