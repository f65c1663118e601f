"""Sampling rules of the GPT decode loop (tritone.models.sampling)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tritone.models.sampling import (
    UPSTREAM_MAX_STEPS,
    UPSTREAM_MIN_STEPS_BEFORE_EOS,
    SamplingParams,
    logits_to_probs,
    sample_next,
)

V, EOS = 1025, 1024


def _logits(rows: int, seed: int = 0) -> Tensor:
    return 3 * torch.randn(rows, V, generator=torch.Generator().manual_seed(seed))


def _no_seen(rows: int) -> Tensor:
    return torch.zeros(rows, V, dtype=torch.bool)


def _draw(
    logits: Tensor, params: list[SamplingParams], steps: int, blocked: bool = False
) -> tuple[list[list[int]], list[list[bool]]]:
    """`steps` draws per row from fixed logits, each row with its own fresh generator."""
    gens = [p.make_generator() for p in params]
    toks: list[list[int]] = [[] for _ in params]
    stops: list[list[bool]] = [[] for _ in params]
    block = torch.full((len(params),), blocked)
    for _ in range(steps):
        t, s = sample_next(logits, _no_seen(len(params)), params, gens, block, EOS)
        for i in range(len(params)):
            toks[i].append(int(t[i]))
            stops[i].append(bool(s[i]))
    return toks, stops


def test_defaults_follow_upstream() -> None:
    p = SamplingParams()
    assert (p.top_k, p.top_p, p.temperature, p.repetition_penalty) == (15, 1.0, 1.0, 1.35)
    assert p.max_new_tokens == UPSTREAM_MAX_STEPS == 1500
    assert p.min_new_tokens == UPSTREAM_MIN_STEPS_BEFORE_EOS == 11


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.35}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": UPSTREAM_MAX_STEPS + 1}, "max_new_tokens"),
        ({"min_new_tokens": -1}, "min_new_tokens"),
    ],
)
def test_bad_params_raise(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_same_seed_same_tokens_and_seeds_differ() -> None:
    logits = _logits(1)
    a, _ = _draw(logits, [SamplingParams(seed=5, top_k=50)], 40)
    b, _ = _draw(logits, [SamplingParams(seed=5, top_k=50)], 40)
    c, _ = _draw(logits, [SamplingParams(seed=6, top_k=50)], 40)
    assert a == b
    assert a != c
    assert len(set(a[0])) > 1  # it does sample, not always the same token


def test_top_k_one_is_greedy() -> None:
    logits = _logits(4, seed=1)
    seen = torch.zeros(4, V, dtype=torch.bool)
    seen[:, :300] = True  # greedy on the repetition-penalised logits
    params = [SamplingParams(top_k=1, seed=s, temperature=t) for s, t in zip(range(4), (0.3, 1.0, 1.7, 5.0))]
    gens = [p.make_generator() for p in params]
    penalised = torch.where(logits < 0, logits * 1.35, logits / 1.35)
    expected = torch.where(seen, penalised, logits).argmax(-1)
    for _ in range(5):
        tokens, _ = sample_next(logits, seen, params, gens, torch.zeros(4, dtype=torch.bool), EOS)
        assert torch.equal(tokens, expected)


def test_top_k_limits_support_and_top_p_keeps_the_nucleus() -> None:
    logits = _logits(1, seed=2)
    toks, _ = _draw(logits, [SamplingParams(top_k=3, seed=1)], 200)
    assert set(toks[0]) <= set(logits[0].topk(3).indices.tolist())
    # upstream's nucleus: the tokens whose inclusive cumulative mass stays <= top_p (at least one)
    logits = logits / 3
    probs, _ = logits_to_probs(
        logits, _no_seen(1), [SamplingParams(top_k=V, top_p=0.5)], torch.tensor([False]), EOS
    )
    kept = probs[0] > 0
    order = logits[0].softmax(-1).sort(descending=True)
    n = int(kept.sum())
    assert 1 < n < V
    assert set(kept.nonzero().flatten().tolist()) == set(order.indices[:n].tolist())
    assert order.values[:n].sum() <= 0.5 < order.values[: n + 1].sum()


def test_repetition_penalty_lowers_seen_tokens() -> None:
    logits = torch.zeros(1, V)
    logits[0, 10], logits[0, 11], logits[0, 12] = 2.0, -1.0, 1.0
    seen = _no_seen(1)
    seen[0, [10, 11]] = True
    params = [SamplingParams(top_k=V, repetition_penalty=1.35)]
    block = torch.tensor([True])
    plain, _ = logits_to_probs(logits, _no_seen(1), params, block, EOS)
    penalised, pl = logits_to_probs(logits, seen, params, block, EOS)
    assert penalised[0, 10] < plain[0, 10] and penalised[0, 11] < plain[0, 11]  # positive and negative
    assert penalised[0, 12] > plain[0, 12]  # unseen tokens gain the mass
    assert pl[0, 10].item() == pytest.approx(2.0 / 1.35) and pl[0, 11].item() == pytest.approx(-1.35)
    # a penalty of 1 changes nothing
    same, _ = logits_to_probs(logits, seen, [SamplingParams(top_k=V, repetition_penalty=1.0)], block, EOS)
    torch.testing.assert_close(same, plain)


def test_eos_blocked_and_stop_rule() -> None:
    logits = _logits(2, seed=3)
    logits[:, EOS] = 50.0  # EOS would win every draw
    toks, stops = _draw(logits, [SamplingParams(seed=0), SamplingParams(seed=1)], 30, blocked=True)
    assert all(EOS not in row for row in toks) and not any(any(s) for s in stops)
    toks, stops = _draw(logits[:1], [SamplingParams(seed=0)], 5, blocked=False)
    assert all(stops[0]) and toks[0] == [EOS] * 5
    # the penalised argmax being EOS stops the row even when the draw is another token
    logits = torch.full((1, V), -10.0)
    logits[0, EOS], logits[0, 7] = 1.0, 0.999
    tokens, stop = sample_next(
        logits, _no_seen(1), [SamplingParams(top_k=1)], [torch.Generator()], torch.tensor([False]), EOS
    )
    assert bool(stop[0]) and int(tokens[0]) == EOS
    seen = _no_seen(1)
    seen[0, 7] = True  # penalising 7 does not change that EOS is the argmax
    logits[0, 7] = 1.2
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        tokens, stop = sample_next(
            logits, _no_seen(1), [SamplingParams(top_k=2)], [gen], torch.tensor([False]), EOS
        )
        assert bool(stop[0]) == (int(tokens[0]) == EOS)  # argmax is 7 here: only an EOS draw stops
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        tokens, stop = sample_next(logits, seen, [SamplingParams(top_k=2)], [gen], torch.tensor([False]), EOS)
        assert bool(stop[0])  # penalised argmax is EOS: stops whatever was drawn


def test_rows_are_independent_of_the_batch() -> None:
    logits = _logits(3, seed=4)
    params = [
        SamplingParams(seed=11, top_k=40, temperature=1.3),
        SamplingParams(seed=12, top_k=5, top_p=0.8),
        SamplingParams(seed=13, top_k=100, repetition_penalty=2.0),
    ]
    together, _ = _draw(logits, params, 25)
    for i, p in enumerate(params):
        alone, _ = _draw(logits[i : i + 1], [p], 25)
        assert alone[0] == together[i]


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="generators"):
        sample_next(
            _logits(2),
            _no_seen(2),
            [SamplingParams()] * 2,
            [torch.Generator()],
            torch.zeros(2, dtype=torch.bool),
            EOS,
        )
    with pytest.raises(ValueError, match="EOS"):
        sample_next(
            _logits(1),
            _no_seen(1),
            [SamplingParams()],
            [torch.Generator()],
            torch.zeros(1, dtype=torch.bool),
            3,
        )


@pytest.mark.oracle
def test_matches_upstream_sampling() -> None:
    """Same filtering as upstream's logits_to_probs, and the same draw for the same seed."""
    from tests import oracle

    utils = oracle.t2s_module().__dict__  # the module imports utils' sample/logits_to_probs
    up_probs_fn, up_sample = utils["logits_to_probs"], utils["sample"]
    logits = _logits(4, seed=6)
    prev = [torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(n)) for n in (0, 3, 17, 50)]
    seen = _no_seen(4)
    for i, p in enumerate(prev):
        seen[i, p] = True
    cases = [(15, 1.0, 1.0), (5, 0.7, 0.8), (1025, 0.95, 1.5), (40, 1.0, 0.6)]
    for blocked in (False, True):
        width = V - 1 if blocked else V
        for (k, top_p, temp), seed in zip(cases, range(100, 104)):
            params = [SamplingParams(top_k=k, top_p=top_p, temperature=temp, seed=seed)] * 4
            probs, _ = logits_to_probs(logits, seen, params, torch.full((4,), blocked), EOS)
            tokens, _ = sample_next(
                logits, seen, params, [p.make_generator() for p in params], torch.full((4,), blocked), EOS
            )
            for i in range(4):
                kwargs = {"top_k": k, "top_p": top_p, "temperature": temp, "repetition_penalty": 1.35}
                ref = up_probs_fn(logits[i, :width].clone(), prev[i].view(1, -1), **kwargs)
                torch.testing.assert_close(probs[i, :width], ref, atol=1e-6, rtol=1e-5)
                torch.manual_seed(seed)
                ref_token, _ = up_sample(logits[i, :width].clone(), prev[i].view(1, -1), **kwargs)
                assert int(tokens[i]) == int(ref_token)
