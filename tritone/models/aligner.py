"""Token aligner: which phone each content frame says, read from the semantic tokens.

SoVITS's MRTE normally lets each content frame find its phones by what the frame sounds like,
and a frame whose tokens are wrong then finds the wrong phones (QUALITY.md §4). The `aligned`
lookup gives each frame its phone instead. That phone comes from this small model: a CTC phone
recogniser over the tokens (at SoVITS's 50 Hz content rate), force-aligned to the phones the
sentence is known to have (`forced_align`). It reads tokens, not audio, so the same alignment can be made in
training (the clip's own tokens) and at synthesis (the GPT's tokens), and every phone of the
sentence gets at least one frame, in order, whatever the recogniser would have guessed.

    codes [B, T25] -> embedding -> repeat x stride -> conv blocks -> logits [B, T50, n_symbols + 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AlignerConfig:
    n_codes: int = 1024  # semantic token vocabulary
    n_symbols: int = 732  # phone vocabulary; the CTC blank is one more class
    stride: int = 2  # content frames per token (SoVITS's semantic_stride)
    d_model: int = 192
    n_layers: int = 5
    kernel_size: int = 5
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.stride < 1 or self.n_layers < 1 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"need stride >= 1, n_layers >= 1 and an odd kernel_size, got {self.stride}, "
                f"{self.n_layers}, {self.kernel_size}"
            )

    @property
    def blank(self) -> int:
        return self.n_symbols


class ConvBlock(nn.Module):
    """Pre-LN residual conv: x + dropout(gelu(conv(norm(x)))) on [B, T, d]; dilated to see further."""

    def __init__(self, d: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, T, d], mask [B, T, 1] (1 = valid) -> [B, T, d]"""
        h = self.conv((self.norm(x) * mask).transpose(1, 2)).transpose(1, 2)
        return (x + self.drop(F.gelu(h))) * mask


class TokenAligner(nn.Module):
    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_codes, config.d_model)
        self.blocks = nn.ModuleList(
            ConvBlock(config.d_model, config.kernel_size, 2 ** (i % 3), config.dropout)
            for i in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_symbols + 1)

    def forward(self, codes: Tensor, code_lens: Tensor) -> Tensor:
        """codes [B, T25] long, code_lens [B] -> log-probabilities [B, T25 * stride, n_symbols + 1]"""
        s = self.config.stride
        x = self.embed(codes).repeat_interleave(s, dim=1)  # [B, T50, d]
        frames = torch.arange(x.size(1), device=codes.device)
        mask = (frames.unsqueeze(0) < (code_lens * s).unsqueeze(1)).unsqueeze(2).to(x.dtype)
        x = x * mask
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x)).log_softmax(dim=-1)

    @torch.no_grad()
    def align(
        self, codes: Tensor, phones: Tensor, frames: int | None = None, complete: bool = True
    ) -> Tensor:
        """One sentence: codes [T25], phones [N] -> each content frame's phone position [frames]
        (long, in 0..N-1; `frames` defaults to T25 * stride: longer repeats the last frame's phone,
        shorter cuts). `complete` False: the codes are the start of the sentence (streaming)."""
        was_training = self.training
        self.eval()
        log_probs = self(codes.view(1, -1), torch.tensor([codes.numel()], device=codes.device))[0]
        self.train(was_training)
        lp = log_probs.float().cpu().numpy()
        index = torch.from_numpy(forced_align(lp, phones.tolist(), self.config.blank, complete))
        return fit_length(index, frames if frames is not None else index.numel())

    def checkpoint(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TokenAligner:
        model = cls(AlignerConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()


def fit_length(index: Tensor, frames: int) -> Tensor:
    """[T] -> [frames]: cut, or extended with the last entry (SoVITS pads its content the same way)."""
    if index.numel() >= frames:
        return index[:frames]
    return torch.cat([index, index[-1:].expand(frames - index.numel())])


def forced_align(
    log_probs: np.ndarray, labels: Sequence[int], blank: int, complete: bool = True
) -> np.ndarray:
    """Viterbi through `labels` in order, each at least one frame -> each frame's label position [T].

    log_probs [T, C], a CTC recogniser's. Its blank is left out and the other classes renormalised
    per frame: a CTC model spikes on a phone at one frame anywhere inside it (often its end) and
    calls the rest blank, so the blanks say nothing about where one phone ends and the next
    begins, while the phones' own posteriors still do. When there are fewer frames than labels,
    the labels are spread evenly over the frames instead. With `complete` False the frames are a
    prefix of the sentence (a stream so far): the path may end at any label.
    """
    T, L = log_probs.shape[0], len(labels)
    if L == 0:
        raise ValueError("cannot align a sentence without phones")
    if complete and T < L:
        return np.minimum((np.arange(T) * 2 + 1) * L // (2 * T), L - 1).astype(np.int64)
    phones = np.delete(log_probs, blank, axis=1)
    phones = phones - np.logaddexp.reduce(phones, axis=1, keepdims=True)
    ids = np.asarray(labels, dtype=np.int64)
    columns = ids - (ids > blank)  # class ids without the blank
    emit = phones[:, columns]  # [T, L]
    score = np.full(L, -np.inf)
    score[0] = emit[0, 0]
    moved = np.zeros((T, L), dtype=bool)  # whether label l at frame t began there
    for t in range(1, T):
        from_before = np.concatenate(([-np.inf], score[:-1]))
        moved[t] = from_before > score
        score = np.maximum(score, from_before) + emit[t]
    path = np.empty(T, dtype=np.int64)
    state = L - 1 if complete else int(score.argmax())
    for t in range(T - 1, -1, -1):
        path[t] = state
        state -= int(moved[t, state])
    return path
