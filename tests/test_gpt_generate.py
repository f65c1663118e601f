"""GPT decode loop: batched generation, streaming, in-flight rows, upstream token parity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

from tests.test_gpt import make_model, oracle_pair
from tritone.models.gpt import GPT, DecodeState, GenerationRequest, GPTConfig
from tritone.models.sampling import SamplingParams

CFG = GPTConfig.tiny()


def request(tx: int, ty: int, seed: int, **params: float | int) -> GenerationRequest:
    g = torch.Generator().manual_seed(1000 + seed)
    return GenerationRequest(
        phones=torch.randint(0, CFG.phoneme_vocab_size, (tx,), generator=g),
        bert=torch.randn(CFG.bert_dim, tx, generator=g),
        prompt=torch.randint(0, 1024, (ty,), generator=g),
        params=SamplingParams(seed=seed, **params),  # type: ignore[arg-type]
    )


REQUESTS = [
    request(9, 6, seed=1, max_new_tokens=30),
    request(4, 0, seed=2, max_new_tokens=18, top_k=3, temperature=0.7),
    request(12, 11, seed=3, max_new_tokens=25, top_p=0.8, repetition_penalty=1.1),
    request(6, 2, seed=4, max_new_tokens=7, top_k=1),
]


def run_logged(model: GPT, reqs: list[GenerationRequest]) -> tuple[list[list[int]], list[list[Tensor]]]:
    """Decode like `generate`, keeping every row's tokens and the logits each token was drawn from."""
    max_len = max(r.phones.shape[0] + r.prompt.shape[0] + r.params.max_new_tokens for r in reqs)
    state = DecodeState(model, len(reqs), max_len)
    slots = state.add(reqs)
    tokens: list[list[int]] = [[] for _ in reqs]
    logits: list[list[Tensor]] = [[] for _ in reqs]
    while state.active_slots:
        for i, s in enumerate(slots):
            if state.rows[s] is not None:
                logits[i].append(state.logits[s].clone())
        for e in state.step():
            if e.token is not None:
                tokens[slots.index(e.slot)].append(e.token)
    return tokens, logits


@contextmanager
def eos_bias(model: GPT, bias: float) -> Iterator[None]:
    """Add `bias` to the EOS logit of every prediction."""

    def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> Tensor:
        out = out.clone()
        out[..., CFG.eos] += bias
        return out

    handle = model.ar_predict_layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_batch_rows_equal_rows_alone() -> None:
    model = make_model(CFG, seed=3)
    together, together_logits = run_logged(model, REQUESTS)
    for i, req in enumerate(REQUESTS):
        alone, alone_logits = run_logged(model, [req])
        assert together[i] == alone[0], i
        assert len(together_logits[i]) == len(alone_logits[0])
        for a, b in zip(together_logits[i], alone_logits[0]):
            assert (a - b).abs().max() < 1e-5
    # and generate() returns the same tokens
    assert [t.tolist() for t in model.generate(REQUESTS)] == together


def test_rows_finish_independently_at_their_length() -> None:
    model = make_model(CFG, seed=4)
    out = model.generate(REQUESTS)
    # the random tiny model does not pick EOS here, so each row runs to its own cap
    assert [len(t) for t in out] == [r.params.max_new_tokens for r in REQUESTS]
    assert all(t.dtype == torch.long and bool(((t >= 0) & (t < CFG.eos)).all()) for t in out)


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    model = make_model(CFG, seed=5)
    a = model.generate([request(8, 5, seed=7, max_new_tokens=20)])[0]
    b = model.generate([request(8, 5, seed=7, max_new_tokens=20)])[0]
    req = request(8, 5, seed=7, max_new_tokens=20)
    req.params = SamplingParams(seed=8, max_new_tokens=20)
    c = model.generate([req])[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eos_not_before_min_new_tokens() -> None:
    model = make_model(CFG, seed=6)
    reqs = [
        request(5, 3, seed=1, min_new_tokens=11, max_new_tokens=40),
        request(7, 0, seed=2, min_new_tokens=4, max_new_tokens=40),
        request(3, 8, seed=3, min_new_tokens=0, max_new_tokens=40),
        request(6, 1, seed=4, min_new_tokens=20, max_new_tokens=9),
    ]
    with eos_bias(model, 100.0), torch.no_grad():
        events = [e for step in model.generate_stream(reqs) for e in step]
        out = model.generate(reqs)
    # EOS wins as soon as it is allowed: exactly min_new_tokens tokens come out (capped by max)
    assert [len(t) for t in out] == [11, 4, 0, 9]
    finals = {e.slot: e for e in events if e.finished}
    assert [finals[i].reason for i in range(4)] == ["eos", "eos", "eos", "length"]
    assert all(e.token is None for e in finals.values() if e.reason == "eos")


def test_stream_events() -> None:
    model = make_model(CFG, seed=7)
    steps = list(model.generate_stream(REQUESTS))
    out = model.generate(REQUESTS)
    assert len(steps) == max(r.params.max_new_tokens for r in REQUESTS)
    done: set[int] = set()
    streamed: list[list[int]] = [[] for _ in REQUESTS]
    for events in steps:
        assert len({e.slot for e in events}) == len(events)
        for e in events:
            assert e.slot not in done  # a finished row never reappears
            if e.token is not None:
                streamed[e.slot].append(e.token)
            if e.finished:
                done.add(e.slot)
    assert done == set(range(len(REQUESTS)))
    assert streamed == [t.tolist() for t in out]


def test_rows_join_and_leave_between_steps() -> None:
    model = make_model(CFG, seed=8)
    a, b, c = (request(9, 6, seed=1, max_new_tokens=30), request(5, 0, seed=2, max_new_tokens=12),
               request(11, 4, seed=3, max_new_tokens=15))  # fmt: skip
    alone = {name: model.generate([r])[0].tolist() for name, r in zip("abc", (a, b, c))}
    state = DecodeState(model, capacity=2, max_len=64)
    got: dict[int, list[int]] = {}
    (slot_a,) = state.add([a])
    for _ in range(5):
        for e in state.step():
            got.setdefault(e.slot, []).append(e.token)  # type: ignore[arg-type]
    (slot_b,) = state.add([b])  # joins a batch that is five steps in
    assert slot_b != slot_a and not state.free_slots
    with pytest.raises(ValueError, match="free slots"):
        state.add([c])
    for _ in range(3):
        for e in state.step():
            got.setdefault(e.slot, []).append(e.token)  # type: ignore[arg-type]
    row_a = state.remove(slot_a)  # leaves early (e.g. cancelled)
    assert row_a.tokens == alone["a"][:8] == got[slot_a]
    (slot_c,) = state.add([c])  # takes the freed slot, over a's stale cache contents
    assert slot_c == slot_a
    got[slot_c] = []
    while state.active_slots:
        for e in state.step():
            if e.token is not None:
                got[e.slot].append(e.token)
    assert got[slot_b] == alone["b"]
    assert got[slot_c] == alone["c"]


def test_decode_state_rejects_requests_that_do_not_fit() -> None:
    model = make_model(CFG)
    state = DecodeState(model, capacity=2, max_len=20)
    with pytest.raises(ValueError, match="do not fit"):
        state.add([request(10, 5, seed=0, max_new_tokens=7)])
    state.add([request(10, 5, seed=0, max_new_tokens=6)])
    bad = request(4, 2, seed=0, max_new_tokens=5)
    bad.bert = bad.bert[:, :3]
    with pytest.raises(ValueError, match="bert"):
        state.add([bad])
    with pytest.raises(ValueError, match="not occupied"):
        state.remove(1)
    empty = request(4, 2, seed=0, max_new_tokens=5)
    empty.phones, empty.bert = empty.phones[:0], empty.bert[:, :0]
    with pytest.raises(ValueError, match="phones must not be empty"):
        state.add([empty])
    eos_in_prompt = request(4, 2, seed=0, max_new_tokens=5)
    eos_in_prompt.prompt[1] = CFG.eos
    with pytest.raises(ValueError, match="prompt tokens"):
        state.add([eos_in_prompt])
    assert state.active_slots == [0]  # failed adds leave the state as it was


# ---------------------------------------------------------------------------------------------
# token-for-token parity with the upstream decode loop


@pytest.mark.oracle
@pytest.mark.parametrize("eos_scale", [1.0, 3.0], ids=["long", "eos-stops"])
def test_tokens_match_upstream_decode_loop(eos_scale: float) -> None:
    """Upstream's `infer_panel` seeded with torch.manual_seed(s) == our row with seed s.

    The oracle's loop hard-codes repetition penalty 1.35 and blocks EOS for its first step only,
    so the row uses min_new_tokens=1; its `early_stop_num=N` returns N tokens.
    """
    upstream, ours = oracle_pair(CFG, seed=11)
    with torch.no_grad():
        upstream.ar_predict_layer.weight[CFG.eos] *= eos_scale
        ours.ar_predict_layer.weight[CFG.eos] *= eos_scale
    lengths = []
    for trial, (tx, ty, top_k, temp) in enumerate(
        [(9, 6, 15, 1.0), (7, 0, 5, 0.8), (12, 9, 1025, 1.3), (5, 3, 1, 1.0)]
    ):
        n = 30
        req = request(tx, ty, seed=trial)
        req.params = SamplingParams(
            top_k=top_k, temperature=temp, seed=500 + trial, max_new_tokens=n, min_new_tokens=1
        )
        torch.manual_seed(500 + trial)
        with torch.no_grad():
            y, _ = upstream.infer_panel(
                req.phones[None],
                torch.tensor([tx]),
                req.prompt[None] if ty else None,
                req.bert[None],
                top_k=top_k,
                early_stop_num=n,
                temperature=temp,
            )
        expected = y[0, ty:].long().tolist()
        got = ours.generate([req])[0].tolist()
        assert got == expected, trial
        lengths.append(len(got))
    if eos_scale == 1.0:
        assert lengths == [n] * 4
    else:
        assert min(lengths) < n  # some rows ended on EOS
