"""Next-token sampling for the GPT (s1), batched with per-row parameters and generators.

The rules follow upstream GPT-SoVITS (`AR/models/utils.py logits_to_probs` and the decode loop
in `AR/models/t2s_model.py`), applied in this order to each row's logits:

1. EOS is masked out while the row has produced fewer than `min_new_tokens` tokens
   (upstream drops the EOS column for its first 11 steps);
2. repetition penalty over every token the row has seen, reference prompt included
   (a logit `l` becomes `l * p` when negative, `l / p` otherwise; each distinct token once);
3. top-p (nucleus) filtering, skipped when `top_p == 1`;
4. temperature;
5. top-k filtering (ties with the k-th logit are kept);
6. softmax, then the "exponential race": `argmax(probs / q)` with `q ~ Exp(1)` drawn from the
   row's own generator. While EOS is masked the race runs over the non-EOS entries only, as
   upstream's does over its shortened logits, so one seed gives upstream's token stream.

A row stops when the repetition-penalised argmax is EOS or the drawn token is EOS; the token of
that step is not emitted. Every row owns a `torch.Generator` seeded from its `seed`, so a row's
tokens never depend on which other rows share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Upstream's decode loop runs at most 1500 steps (60 s of 25 Hz tokens per segment).
UPSTREAM_MAX_STEPS = 1500
# Upstream removes EOS from the logits for the first 11 steps (about 0.4 s of audio).
UPSTREAM_MIN_STEPS_BEFORE_EOS = 11
# Upstream's API defaults.
DEFAULT_TOP_K = 15
DEFAULT_REPETITION_PENALTY = 1.35

_MAX_SEED = 2**64 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingParams:
    """How one row samples. Defaults are upstream's API defaults.

    `seed=None` draws a fresh non-deterministic seed when the row starts.
    `max_new_tokens` caps the emitted tokens (upstream: 1500 steps); `min_new_tokens` is the
    number of leading steps during which EOS cannot be chosen (upstream: 11).
    """

    top_k: int = DEFAULT_TOP_K
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = None
    max_new_tokens: int = UPSTREAM_MAX_STEPS
    min_new_tokens: int = UPSTREAM_MIN_STEPS_BEFORE_EOS

    def __post_init__(self) -> None:
        if not _is_int(self.top_k) or self.top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not _is_number(self.temperature) or not self.temperature > 0.0 or self.temperature == float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if (
            not _is_number(self.repetition_penalty)
            or not self.repetition_penalty > 0.0
            or self.repetition_penalty == float("inf")
        ):
            raise ValueError(
                f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}"
            )
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= _MAX_SEED):
            raise ValueError(f"seed must be None or an integer in [0, 2**64 - 1], got {self.seed!r}")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.max_new_tokens > UPSTREAM_MAX_STEPS:
            raise ValueError(
                f"max_new_tokens must be <= {UPSTREAM_MAX_STEPS} (upstream's step cap), got {self.max_new_tokens!r}"
            )
        if not _is_int(self.min_new_tokens) or self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be an integer >= 0, got {self.min_new_tokens!r}")

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator for this row, seeded from `seed` (or non-deterministically when None)."""
        gen = torch.Generator(device=device)
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: Tensor) -> Tensor:
    """Penalise every seen token once: negative logits times p, others divided by p.

    logits [B, V] float, seen [B, V] bool, penalty [B] -> [B, V]
    """
    p = penalty.to(logits.dtype).unsqueeze(1)  # [B, 1]
    penalised = torch.where(logits < 0, logits * p, logits / p)
    return torch.where(seen, penalised, logits)


def filter_top_p(logits: Tensor, top_p: Tensor) -> Tensor:
    """Keep the smallest prefix of the sorted distribution whose mass reaches `top_p` (per row).

    Rows with top_p >= 1 are left untouched. logits [B, V], top_p [B] -> [B, V]
    """
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    cum = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)  # [B, V]
    drop_sorted = cum > top_p.to(cum.dtype).unsqueeze(1)
    drop_sorted[:, 0] = False  # the most likely token always survives
    drop_sorted &= (top_p < 1.0).unsqueeze(1)
    drop = torch.zeros_like(drop_sorted).scatter(1, sorted_idx, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_top_k(logits: Tensor, top_k: Tensor) -> Tensor:
    """Mask every logit below the row's k-th largest. logits [B, V], top_k [B] (>= 1) -> [B, V]"""
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values  # [B, V]
    k = top_k.clamp(max=logits.shape[-1]).to(torch.long) - 1  # [B]
    pivot = sorted_logits.gather(1, k.unsqueeze(1))  # [B, 1]
    return logits.masked_fill(logits < pivot, float("-inf"))


def _param_tensors(params: Sequence[SamplingParams], device: torch.device) -> tuple[Tensor, ...]:
    top_k = torch.tensor([p.top_k for p in params], dtype=torch.long, device=device)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
    temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
    penalty = torch.tensor([p.repetition_penalty for p in params], dtype=torch.float32, device=device)
    return top_k, top_p, temperature, penalty


def logits_to_probs(
    logits: Tensor, seen: Tensor, params: Sequence[SamplingParams], eos_blocked: Tensor, eos: int
) -> tuple[Tensor, Tensor]:
    """Upstream's filtering chain, one parameter set per row.

    logits [B, V], seen [B, V] bool, eos_blocked [B] bool
    -> (probs [B, V], penalised logits [B, V]: after EOS masking and repetition penalty, the
    values upstream's stop test takes the argmax of)
    """
    if logits.shape[0] != len(params):
        raise ValueError(f"got {logits.shape[0]} rows of logits but {len(params)} SamplingParams")
    top_k, top_p, temperature, penalty = _param_tensors(params, logits.device)
    x = logits.float()
    is_eos = torch.arange(x.shape[-1], device=x.device) == eos  # [V]
    x = x.masked_fill(eos_blocked.unsqueeze(1) & is_eos.unsqueeze(0), float("-inf"))
    penalised = apply_repetition_penalty(x, seen, penalty)
    x = filter_top_p(penalised, top_p)
    x = x / temperature.clamp(min=1e-5).unsqueeze(1)
    x = filter_top_k(x, top_k)
    return torch.softmax(x, dim=-1), penalised


def exponential_race(probs: Tensor, generators: Sequence[torch.Generator], eos_blocked: Tensor) -> Tensor:
    """Draw one token per row as argmax(probs / q), q ~ Exp(1) from the row's generator.

    A row whose EOS (the last entry) is blocked races over the first V-1 entries only.
    probs [B, V], eos_blocked [B] bool -> tokens [B] long
    """
    vocab = probs.shape[-1]
    out = []
    for row, gen in enumerate(generators):
        n = vocab - 1 if bool(eos_blocked[row]) else vocab
        q = torch.empty(n, dtype=probs.dtype, device=probs.device).exponential_(1.0, generator=gen)
        out.append(torch.argmax(probs[row, :n] / q))
    return torch.stack(out).to(torch.long)


def sample_next(
    logits: Tensor,
    seen: Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
    eos_blocked: Tensor,
    eos: int,
) -> tuple[Tensor, Tensor]:
    """Sample one token per row and decide whether the row stops.

    logits [B, V], seen [B, V] bool (tokens seen so far, prompt included), eos_blocked [B] bool.
    `eos` must be the last vocabulary entry (as upstream asserts).
    -> (tokens [B] long, stop [B] bool: penalised argmax == EOS or token == EOS)
    """
    if eos != logits.shape[-1] - 1:
        raise ValueError(f"EOS must be the last vocabulary entry ({logits.shape[-1] - 1}), got {eos}")
    if len(generators) != len(params):
        raise ValueError(f"got {len(params)} SamplingParams but {len(generators)} generators")
    probs, penalised = logits_to_probs(logits, seen, params, eos_blocked, eos)
    tokens = exponential_race(probs, generators, eos_blocked)
    stop = (penalised.argmax(dim=-1) == eos) | (tokens == eos)
    return tokens, stop
