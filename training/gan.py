"""Discriminators for s2 training.

The full-size (v2) recipe uses upstream's `MultiPeriodDiscriminator` (`tritone.models.discriminator`):
a scale discriminator plus period discriminators 2, 3, 5, 7, 11 with 32..1024 channels, about
47 M parameters and far more compute than the generator. `NarrowMPD` has the same structure and
interface with every width divided by `shrink` (8 for the demo preset), which is what a CPU can
afford; discriminators never ship, so this changes training only.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tritone.models.discriminator import PERIODS_V2, MultiPeriodDiscriminator
from tritone.models.s2_modules import weight_norm

LRELU_SLOPE = 0.1
Features = list[Tensor]


class NarrowPeriodDiscriminator(nn.Module):
    """Folds [B, 1, T] into [B, 1, T/p, p]; 2-D convs along time (upstream DiscriminatorP, narrowed)."""

    def __init__(self, period: int, shrink: int) -> None:
        super().__init__()
        self.period = period
        chans = [1, *(max(4, c // shrink) for c in (32, 128, 512, 1024, 1024))]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i in range(5)
        )
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, Features]:
        fmap: Features = []
        B, C, T = x.shape
        if T % self.period:
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


class NarrowScaleDiscriminator(nn.Module):
    """Strided grouped 1-D convs over the waveform (upstream DiscriminatorS, narrowed)."""

    def __init__(self, shrink: int) -> None:
        super().__init__()
        w = [max(4, c // shrink) for c in (16, 64, 256, 1024, 1024, 1024)]
        g = [max(1, c // shrink) for c in (1, 4, 16, 64, 256, 1)]
        # (in, out, kernel, stride, groups, padding)
        spec = [
            (1, w[0], 15, 1, 1, 7),
            (w[0], w[1], 41, 4, g[1], 20),
            (w[1], w[2], 41, 4, g[2], 20),
            (w[2], w[3], 41, 4, g[3], 20),
            (w[3], w[4], 41, 4, g[4], 20),
            (w[4], w[5], 5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(i, o, k, st, groups=g, padding=p)) for i, o, k, st, g, p in spec
        )
        self.conv_post = weight_norm(nn.Conv1d(w[5], 1, 3, 1, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, Features]:
        fmap: Features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class NarrowMPD(nn.Module):
    """Same interface as `MultiPeriodDiscriminator`: (real logits, fake logits, real fmaps, fake fmaps)."""

    def __init__(self, shrink: int = 8, periods: tuple[int, ...] = PERIODS_V2) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [NarrowScaleDiscriminator(shrink), *(NarrowPeriodDiscriminator(p, shrink) for p in periods)]
        )

    def forward(
        self, y: Tensor, y_hat: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[Features], list[Features]]:
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            r, fr = d(y)
            g, fg = d(y_hat)
            y_d_rs.append(r)
            y_d_gs.append(g)
            fmap_rs.append(fr)
            fmap_gs.append(fg)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs


def make_discriminator(shrink: int) -> nn.Module:
    """Upstream's MPD at shrink 1, else `NarrowMPD(shrink)`."""
    return MultiPeriodDiscriminator() if shrink <= 1 else NarrowMPD(shrink)
