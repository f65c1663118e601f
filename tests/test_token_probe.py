"""The token probe: a CTC phone reader over semantic tokens that scores how much text they carry."""

from __future__ import annotations

import torch

from training.recipes.token_probe import ProbeExample, TokenPhoneProbe, phone_error_rate, train_probe

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


def test_probe_reads_phones_from_tokens_that_carry_them_and_not_from_shuffled_ones() -> None:
    torch.manual_seed(0)
    codebook = torch.randn(N_TOKENS, 16)
    probe = TokenPhoneProbe(codebook, N_PHONES, hidden=64, dropout=0.0)
    losses = train_probe(probe, _utterances(200, 1), steps=300, seed=0, batch=16, lr=3e-3, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    held_out = _utterances(40, 2)
    g = torch.Generator().manual_seed(3)
    shuffled = [
        ProbeExample(e.tokens[torch.randperm(len(e.tokens), generator=g)], e.phones) for e in held_out
    ]
    assert phone_error_rate(probe, held_out) < 0.2
    assert phone_error_rate(probe, shuffled) > 0.5  # a bag of the right tokens is not enough
