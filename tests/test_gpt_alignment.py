"""The GPT's text attention and the guided-attention loss that pulls it to the diagonal."""

from __future__ import annotations

import pytest
import torch

from training.train_gpt import GPTLoss, GPTTrainConfig, diagonal_attention_cost
from tritone.models.gpt import GPT, GPTConfig


def _batch(cfg: GPTConfig) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    phones = torch.randint(0, cfg.phoneme_vocab_size, (2, 7), generator=g)
    phone_lens = torch.tensor([7, 4])
    bert = torch.zeros(2, cfg.bert_dim, 7)
    codes = torch.randint(0, cfg.eos, (2, 12), generator=g)
    code_lens = torch.tensor([12, 9])
    return phones, phone_lens, bert, codes, code_lens


def test_text_attention_is_a_distribution_over_the_valid_phones() -> None:
    cfg = GPTConfig.tiny()
    torch.manual_seed(0)
    gpt = GPT(cfg).eval()
    batch = _batch(cfg)
    with torch.no_grad():
        logits, targets = gpt(*batch)
        logits2, targets2, attention = gpt.forward_with_text_attention(*batch)
    assert torch.allclose(logits, logits2, atol=1e-6) and torch.equal(targets, targets2)
    assert len(attention) == cfg.n_layer
    for probs in attention:
        assert probs.shape == (2, cfg.n_head, 12, 7)  # [B, H, Ty, Tx]
        assert torch.allclose(probs.sum(-1), torch.ones(2, cfg.n_head, 12), atol=1e-5)
        assert float(probs[1, :, :, 4:].abs().max()) == 0.0  # row 1 has 4 phones
        assert float(probs[0].std()) > 0  # not a constant map


def _map(ty: int, tx: int, kind: str) -> torch.Tensor:
    """A [1, 1, ty, tx] attention map: each audio position on one phone, or uniform."""
    probs = torch.zeros(1, 1, ty, tx)
    if kind == "uniform":
        return probs + 1.0 / tx
    for t in range(ty):
        n = round(t / ty * tx) if kind == "diagonal" else tx - 1 - round(t / ty * tx)
        probs[0, 0, t, min(max(n, 0), tx - 1)] = 1.0
    return probs


def test_diagonal_attention_cost_orders_diagonal_uniform_and_reversed_maps() -> None:
    lens = (torch.tensor([10]), torch.tensor([30]))
    diagonal = float(diagonal_attention_cost(_map(30, 10, "diagonal"), *lens, width=0.2))
    uniform = float(diagonal_attention_cost(_map(30, 10, "uniform"), *lens, width=0.2))
    reversed_ = float(diagonal_attention_cost(_map(30, 10, "reversed"), *lens, width=0.2))
    assert diagonal < 0.02 < 0.3 < uniform < reversed_
    # padding beyond a row's lengths does not count: the same map inside a larger padded batch
    padded = torch.zeros(1, 1, 40, 16)
    padded[:, :, :30, :10] = _map(30, 10, "reversed")
    padded[:, :, 30:, :] = 1.0 / 16  # padded audio positions, anything
    assert float(diagonal_attention_cost(padded, *lens, width=0.2)) == pytest.approx(reversed_)


def _copy_task(cfg: GPTConfig, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Utterances whose tokens read their phones in order, 2-4 tokens per phone (as speech does)."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(n):
        phones = torch.randint(0, 40, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g)
        repeats = torch.randint(2, 5, phones.shape, generator=g)
        data.append((phones, torch.repeat_interleave(phones * 7 % (cfg.eos - 1), repeats)))
    return data


def _collate(cfg: GPTConfig, data: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    tx, ty = max(len(p) for p, _ in data), max(len(c) for _, c in data)
    phones, codes = torch.zeros(len(data), tx, dtype=torch.long), torch.zeros(len(data), ty, dtype=torch.long)
    for i, (p, c) in enumerate(data):
        phones[i, : len(p)], codes[i, : len(c)] = p, c
    lens = torch.tensor([len(p) for p, _ in data]), torch.tensor([len(c) for _, c in data])
    return phones, lens[0], torch.zeros(len(data), cfg.bert_dim, tx), codes, lens[1]


def _train(align_weight: float, steps: int = 150) -> tuple[float, float]:
    """-> the guided heads' alignment cost on held-out utterances before and after training"""
    cfg = GPTConfig(
        n_layer=2, n_head=2, d_model=32, d_ff=64, vocab_size=65, eos=64, bert_dim=8, block_dropout=0.0
    )
    torch.manual_seed(0)
    model = GPTLoss(GPT(cfg), align_weight=align_weight, align_heads=1)
    train, held_out = _collate(cfg, _copy_task(cfg, 32, 1)), _collate(cfg, _copy_task(cfg, 16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(model(*held_out)[2])
    for _ in range(steps):
        loss, _, _ = model(*train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return before, float(model(*held_out)[2])


def test_guided_attention_loss_pulls_the_guided_heads_to_the_diagonal() -> None:
    before, guided = _train(align_weight=1.0)
    _, unguided = _train(align_weight=0.0)
    # next-token loss alone leaves the heads about where they started on this budget
    assert guided < 0.6 * before, (before, guided)
    assert guided < 0.6 * unguided, (guided, unguided)


@pytest.mark.parametrize(
    "kwargs", [{"align_weight": -1.0}, {"align_heads": 0}, {"align_width": 0.0}, {"align_width": 1.5}]
)
def test_bad_alignment_settings_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="align_"):
        GPTTrainConfig(**kwargs)  # type: ignore[arg-type]
