"""The semantic quantizer: residual VQ with EMA codebooks, k-means initialised (upstream's
`ResidualVectorQuantizer`, one codebook of 1024 in GPT-SoVITS).

Layout per codebook (buffers, no parameters): `inited` [1], `cluster_size` [K], `embed` [K, D],
`embed_avg` [K, D]. Upstream nests them as `vq.layers.{i}._codebook.*`; here they sit at
`layers.{i}.*` (the key map in `tritone.models.sovits` renames).

Training mode: the first batch initialises the codebook by k-means, every batch updates it by
exponential moving averages (Laplace-smoothed counts), rarely used codes are re-seeded from the
batch, the output is straight-through and a commitment loss is returned. Eval mode and
`encode`/`decode` are pure lookups and refuse an uninitialised codebook (upstream would silently run
k-means on whatever it is given first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kmeans(
    samples: Tensor, num_clusters: int, num_iters: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on samples [N, D]; returns (means [K, D], final cluster counts [K])."""
    n = samples.size(0)
    dev = samples.device if generator is None else generator.device
    if n >= num_clusters:
        pick = torch.randperm(n, generator=generator, device=dev)[:num_clusters]
    else:
        pick = torch.randint(0, n, (num_clusters,), generator=generator, device=dev)
    means = samples[pick.to(samples.device)].clone()
    counts = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        assign = torch.cdist(samples, means).argmin(dim=1)  # [N]
        counts = torch.bincount(assign, minlength=num_clusters)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        new = sums / counts.clamp(min=1).unsqueeze(1).to(samples.dtype)
        means = torch.where((counts == 0).unsqueeze(1), means, new)  # empty clusters keep their seed
    return means, counts


class EMACodebook(nn.Module):
    """One Euclidean codebook of `codebook_size` vectors of width `dim`, trained by EMA."""

    inited: Tensor
    cluster_size: Tensor
    embed: Tensor
    embed_avg: Tensor

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_iters: int = 50,
        kmeans_max_samples: int = 10_000,
        threshold_ema_dead_code: int = 2,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.kmeans_max_samples = kmeans_max_samples
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.register_buffer("inited", torch.zeros(1))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", torch.zeros(codebook_size, dim))
        self.register_buffer("embed_avg", torch.zeros(codebook_size, dim))

    @property
    def is_initialised(self) -> bool:
        return bool(self.inited.item())

    def nearest(self, x: Tensor) -> Tensor:
        """x [N, D] -> index [N] of the closest code (squared Euclidean distance)."""
        e = self.embed.t()  # [D, K]
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ e + e.pow(2).sum(0, keepdim=True)
        return dist.argmin(dim=1)

    def lookup(self, idx: Tensor) -> Tensor:
        """idx [...] -> vectors [..., D]."""
        return F.embedding(idx, self.embed)

    @torch.no_grad()
    def init_(self, x: Tensor) -> None:
        """k-means initialisation from a batch of vectors x [N, D]."""
        if x.size(0) > self.kmeans_max_samples:
            x = x[torch.randperm(x.size(0), device=x.device)[: self.kmeans_max_samples]]
        means, counts = kmeans(x.float(), self.codebook_size, self.kmeans_iters)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)
        self.cluster_size.copy_(counts.to(self.cluster_size.dtype))
        self.inited.fill_(1.0)

    @torch.no_grad()
    def update_(self, x: Tensor, idx: Tensor) -> None:
        """EMA step from batch x [N, D] assigned to idx [N]; then re-seed dead codes."""
        onehot = F.one_hot(idx, self.codebook_size).to(x.dtype)  # [N, K]
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        if self.threshold_ema_dead_code > 0:
            dead = self.cluster_size < self.threshold_ema_dead_code
            n_dead = int(dead.sum())
            if n_dead:
                # Re-seed after the EMA step (upstream re-seeds before it, which the EMA then
                # overwrites); counts restart at the threshold so the seed survives the next step.
                pick = torch.randint(0, x.size(0), (n_dead,), device=x.device)
                seeds = x[pick]
                self.embed[dead] = seeds
                self.embed_avg[dead] = seeds * self.threshold_ema_dead_code
                self.cluster_size[dead] = float(self.threshold_ema_dead_code)


class ResidualVectorQuantizer(nn.Module):
    """`n_q` residual codebooks over [B, D, T] features (GPT-SoVITS uses n_q = 1)."""

    def __init__(
        self,
        dim: int,
        n_q: int = 1,
        bins: int = 1024,
        decay: float = 0.99,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EMACodebook(
                dim,
                bins,
                decay=decay,
                kmeans_iters=kmeans_iters,
                threshold_ema_dead_code=threshold_ema_dead_code,
            )
            for _ in range(n_q)
        )

    @property
    def codebooks(self) -> list[EMACodebook]:
        return [layer for layer in self.layers if isinstance(layer, EMACodebook)]

    def _check_ready(self) -> None:
        for i, cb in enumerate(self.codebooks):
            if not cb.is_initialised:
                raise RuntimeError(
                    f"quantizer codebook {i} is not initialised: load trained weights "
                    "or run a training-mode forward first"
                )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, D, T] -> (quantized [B, D, T], codes [n_q, B, T], commitment loss scalar).

        Training: k-means init on the first call, EMA update, straight-through output, loss =
        mean over codebooks of mse(code, input). Eval: plain lookup, loss 0.
        """
        B, D, T = x.shape
        residual = x.transpose(1, 2).reshape(B * T, D)  # [N, D]
        quantized = torch.zeros_like(residual)
        codes, losses = [], []
        if not self.training:
            self._check_ready()
        for cb in self.codebooks:
            if self.training and not cb.is_initialised:
                cb.init_(residual.detach())
            idx = cb.nearest(residual.detach())  # [N]
            q = cb.lookup(idx)  # [N, D], from the codebook before this step's update
            if self.training:
                cb.update_(residual.detach(), idx)
                losses.append(F.mse_loss(q.detach(), residual))
                q = residual + (q - residual).detach()  # straight-through
            residual = residual - q
            quantized = quantized + q
            codes.append(idx.view(B, T))
        loss = torch.stack(losses).mean() if losses else x.new_zeros(())
        return quantized.view(B, T, D).transpose(1, 2), torch.stack(codes), loss

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x [B, D, T] -> codes [n_q, B, T] (nearest codes, no updates)."""
        self._check_ready()
        B, D, T = x.shape
        residual = x.transpose(1, 2).reshape(B * T, D)
        codes = []
        for cb in self.codebooks:
            idx = cb.nearest(residual)
            residual = residual - cb.lookup(idx)
            codes.append(idx.view(B, T))
        return torch.stack(codes)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [n_q', B, T] (n_q' <= n_q) -> quantized [B, D, T] (sum of the codebooks' vectors)."""
        cbs = self.codebooks
        out = cbs[0].lookup(codes[0])
        for cb, c in zip(cbs[1:], codes[1:]):
            out = out + cb.lookup(c)
        return out.transpose(1, 2)
