"""The token probe: a CTC phone reader over semantic tokens that scores how much text they carry."""

from __future__ import annotations

import pytest
import torch

from training.recipes.token_probe import (
    ProbeExample,
    TokenPhoneProbe,
    best_of,
    phone_error_rate,
    phone_errors,
    train_probe,
)

N_PHONES, N_TOKENS = 12, 40


def _utterances(n: int, seed: int) -> list[ProbeExample]:
    """Speech-like tokens: each phone lasts 2-4 tokens, drawn from 3 tokens that belong to it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        phones = torch.randint(0, N_PHONES, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g)
        tokens = [
            int(p) * 3 + int(torch.randint(0, 3, (1,), generator=g))
            for p in phones
            for _ in range(int(torch.randint(2, 5, (1,), generator=g)))
        ]
        out.append(ProbeExample(torch.tensor(tokens), phones))
    return out


def _shuffled(examples: list[ProbeExample], seed: int) -> list[ProbeExample]:
    g = torch.Generator().manual_seed(seed)
    return [ProbeExample(e.tokens[torch.randperm(len(e.tokens), generator=g)], e.phones) for e in examples]


@pytest.fixture(scope="module")
def trained() -> tuple[TokenPhoneProbe, list[float]]:
    torch.manual_seed(0)
    codebook = torch.randn(N_TOKENS, 16)
    probe = TokenPhoneProbe(codebook, N_PHONES, hidden=64, dropout=0.0)
    losses = train_probe(probe, _utterances(200, 1), steps=300, seed=0, batch=16, lr=3e-3, progress=False)
    return probe, losses


def test_probe_reads_phones_from_tokens_that_carry_them_and_not_from_shuffled_ones(
    trained: tuple[TokenPhoneProbe, list[float]],
) -> None:
    probe, losses = trained
    assert losses[-1] < 0.5 * losses[0]
    held_out = _utterances(40, 2)
    assert phone_error_rate(probe, held_out) < 0.2
    assert phone_error_rate(probe, _shuffled(held_out, 3)) > 0.5  # a bag of the right tokens is not enough


def test_best_of_keeps_per_segment_the_candidate_the_reader_reads_best(
    trained: tuple[TokenPhoneProbe, list[float]],
) -> None:
    probe, _ = trained
    held_out = _utterances(40, 2)
    candidates = [_shuffled(held_out, 3), held_out, _shuffled(held_out, 4)]
    chosen = best_of(candidates, probe)
    assert len(chosen) == len(held_out)
    assert sum(c is h for c, h in zip(chosen, held_out)) >= 30  # mostly the intact streams
    # per segment, never worse than any candidate by the reader's own count
    errors = [phone_errors(probe, c) for c in candidates]
    for i, c in enumerate(chosen):
        assert phone_errors(probe, [c])[0] == min(e[i] for e in errors)
    assert phone_error_rate(probe, chosen) <= min(phone_error_rate(probe, c) for c in candidates)
    # equals go to the first candidate, and a stream with no tokens reads as nothing
    twin = [ProbeExample(e.tokens.clone(), e.phones) for e in held_out]
    assert all(c is h for c, h in zip(best_of([held_out, twin], probe), held_out))
    empty = ProbeExample(torch.zeros(0, dtype=torch.long), held_out[0].phones)
    assert phone_errors(probe, [empty]) == [len(held_out[0].phones)]
