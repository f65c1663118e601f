"""SoVITS (s2) flow-side blocks: the WaveNet-style `WN` stack, the mean-only residual coupling
flow, and the posterior encoder.

Names follow upstream (`in_layers`, `res_skip_layers`, `cond_layer`, `flows.{2i}.pre/enc/post`) so
upstream state dicts map by identity (weight norm keys aside, see `tritone.models.sovits`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tritone.models.s2_modules import length_mask, weight_norm


class WN(nn.Module):
    """Non-causal WaveNet stack: gated dilated convs with residual and skip paths, optional global
    conditioning g [B, gin, 1] (one 1x1 conv produces every layer's bias). Weight-normalised convs.
    """

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        assert kernel_size % 2 == 1
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.cond_layer: nn.Conv1d | None = None
        if gin_channels:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1))
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            pad = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                weight_norm(
                    nn.Conv1d(
                        hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation, padding=pad
                    )
                )
            )
            # the last layer has no residual output, only the skip half
            out = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, out, 1)))

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None) -> Tensor:
        """x [B, H, T] (masked), x_mask [B, 1, T], g [B, gin, 1] -> skip sum [B, H, T]."""
        H = self.hidden_channels
        skip = torch.zeros_like(x)
        cond = self.cond_layer(g) if g is not None and self.cond_layer is not None else None  # [B, 2HL, 1]
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x)  # [B, 2H, T]
            if cond is not None:
                a = a + cond[:, 2 * H * i : 2 * H * (i + 1)]
            acts = self.drop(torch.tanh(a[:, :H]) * torch.sigmoid(a[:, H:]))
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = (x + rs[:, :H]) * x_mask
                skip = skip + rs[:, H:]
            else:
                skip = skip + rs
        return skip * x_mask


class Flip(nn.Module):
    """Reverse the channel order (its own inverse); lets couplings alternate halves."""

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        return torch.flip(x, [1])


class ResidualCouplingLayer(nn.Module):
    """Mean-only (additive) affine coupling: x1 += WN(x0), so the flow is volume-preserving
    (log-determinant 0), as upstream configures it. x [B, C, T] with C even."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        assert channels % 2 == 0
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)
        with torch.no_grad():  # starts as the identity map
            self.post.weight.zero_()
            self.post.bias.zero_()  # type: ignore[union-attr]

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None, reverse: bool = False) -> Tensor:
        x0, x1 = x[:, : self.half_channels], x[:, self.half_channels :]
        h = self.enc(self.pre(x0) * x_mask, x_mask, g)
        shift = self.post(h) * x_mask  # [B, C/2, T]
        x1 = (x1 - shift) * x_mask if reverse else shift + x1 * x_mask
        return torch.cat([x0, x1], 1)


class ResidualCouplingBlock(nn.Module):
    """`n_flows` couplings, each followed by a channel flip: z <-> z_p, conditioned on ge."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        n_flows: int = 4,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                ResidualCouplingLayer(
                    channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels
                )
            )
            self.flows.append(Flip())

    def forward(self, x: Tensor, x_mask: Tensor, g: Tensor | None = None, reverse: bool = False) -> Tensor:
        """Forward maps posterior z -> z_p (training); reverse maps prior z_p -> z (inference)."""
        flows = reversed(self.flows) if reverse else iter(self.flows)
        for flow in flows:
            x = flow(x, x_mask, g=g, reverse=reverse)
        return x


class PosteriorEncoder(nn.Module):
    """Training-only q(z | linear spectrogram): 1x1 conv, WN stack, 1x1 conv to (m, logs), sample.

    Inference and export never run it; upstream's released weights drop it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.proj = nn.Conv1d(hidden_channels, 2 * out_channels, 1)

    def forward(
        self,
        x: Tensor,
        x_lengths: Tensor,
        g: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """spec [B, F, T], lengths [B], g [B, gin, 1] -> z, m, logs [B, out, T], mask [B, 1, T]."""
        x_mask = length_mask(x_lengths, x.size(2), x.dtype)
        h = self.enc(self.pre(x) * x_mask, x_mask, g)
        stats = self.proj(h) * x_mask
        m, logs = stats[:, : self.out_channels], stats[:, self.out_channels :]
        eps = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
        z = (m + eps * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask
