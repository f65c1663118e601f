"""GPT (s1): config, upstream key map, oracle parity, static KV cache."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from tritone.checkpoints import CheckpointError
from tritone.models.gpt import GPT, GPTConfig, gpt_state_dict_from_upstream

# ---------------------------------------------------------------------------------------------
# helpers shared with the other test_gpt* files


def random_batch(
    cfg: GPTConfig, phone_lens: list[int], prompt_lens: list[int], seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Right-padded random (phones, phone_lens, bert, prompt, prompt_lens); padding is random too."""
    g = torch.Generator().manual_seed(seed)
    B, Tx, Ty = len(phone_lens), max(phone_lens), max(prompt_lens)
    phones = torch.randint(0, cfg.phoneme_vocab_size, (B, Tx), generator=g)
    bert = torch.randn(B, cfg.bert_dim, Tx, generator=g)
    prompt = torch.randint(0, cfg.vocab_size - 1, (B, Ty), generator=g)
    return phones, torch.tensor(phone_lens), bert, prompt, torch.tensor(prompt_lens)


def make_model(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():  # non-trivial norms and alphas so a mixed-up map shows
        for name, p in model.named_parameters():
            if "norm" in name or "alpha" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def oracle_pair(cfg: GPTConfig, seed: int = 0) -> tuple[Any, GPT]:
    """The upstream decoder with random weights, and ours loaded from its state dict."""
    from tests import oracle

    torch.manual_seed(seed)
    upstream = oracle.t2s_module().Text2SemanticDecoder(cfg.to_upstream(), norm_first=False).eval()
    with torch.no_grad():
        for name, p in upstream.named_parameters():
            if "norm" in name or "alpha" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = GPT(cfg).eval()
    ours.load_state_dict(gpt_state_dict_from_upstream(upstream.state_dict()), strict=True)
    return upstream, ours


# ---------------------------------------------------------------------------------------------
# config


def test_presets() -> None:
    v2 = GPTConfig.v2()
    assert (v2.n_layer, v2.n_head, v2.d_model, v2.d_ff) == (24, 16, 512, 2048)
    assert (v2.phoneme_vocab_size, v2.vocab_size, v2.eos, v2.dropout) == (732, 1025, 1024, 0.0)
    assert GPTConfig.v1().phoneme_vocab_size == 512
    tiny = GPTConfig.tiny()
    assert (tiny.phoneme_vocab_size, tiny.bert_dim, tiny.vocab_size) == (732, 1024, 1025)


def test_from_upstream_reads_checkpoint_config() -> None:
    cfg = {  # the `config` of an upstream v2 checkpoint (s1longer-v2.yaml)
        "train": {"seed": 1234},
        "data": {"max_sec": 54, "pad_val": 1024},
        "model": {
            "vocab_size": 1025,
            "phoneme_vocab_size": 732,
            "embedding_dim": 512,
            "hidden_dim": 512,
            "head": 16,
            "linear_units": 2048,
            "n_layer": 24,
            "dropout": 0,
            "EOS": 1024,
            "random_bert": 0,
        },
    }
    assert GPTConfig.from_upstream(cfg) == GPTConfig.v2()
    assert GPTConfig.from_upstream(GPTConfig.tiny().to_upstream()) == GPTConfig.tiny()
    with pytest.raises(CheckpointError, match="head"):
        GPTConfig.from_upstream({"model": {k: v for k, v in cfg["model"].items() if k != "head"}})
    with pytest.raises(CheckpointError, match="model"):
        GPTConfig.from_upstream({"data": {}})


@pytest.mark.parametrize(
    "kwargs",
    [{"d_model": 60, "n_head": 8}, {"eos": 5}, {"n_layer": 0}, {"dropout": 1.0}],
)
def test_bad_config_raises(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        GPTConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.oracle
@pytest.mark.parametrize("cfg", [GPTConfig.v2(), GPTConfig.v1()], ids=["v2", "v1"])
def test_parameter_count_matches_upstream(cfg: GPTConfig) -> None:
    from tests import oracle

    with torch.device("meta"):
        upstream = oracle.t2s_module().Text2SemanticDecoder(cfg.to_upstream(), norm_first=False)
        ours = GPT(cfg)
    n_up = sum(p.numel() for p in upstream.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == n_up
    if cfg.phoneme_vocab_size == 732:
        assert n_ours == 77_606_402  # "77.6 M"


# ---------------------------------------------------------------------------------------------
# key map


def _upstream_style_state_dict(cfg: GPTConfig) -> dict[str, Tensor]:
    """Our weights renamed the way upstream stores them (the inverse of the documented map)."""
    sd = make_model(cfg).state_dict()
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        k = k.replace("ar_text_embedding.weight", "ar_text_embedding.word_embeddings.weight")
        k = k.replace("ar_audio_embedding.weight", "ar_audio_embedding.word_embeddings.weight")
        k = k.replace("self_attn.in_proj.weight", "self_attn.in_proj_weight")
        k = k.replace("self_attn.in_proj.bias", "self_attn.in_proj_bias")
        if k.startswith("layers."):
            k = "h." + k
        out[k] = v
    return out


def test_key_map_round_trip_with_and_without_lightning_prefix() -> None:
    cfg = GPTConfig.tiny()
    upstream = _upstream_style_state_dict(cfg)
    ours = make_model(cfg).state_dict()
    for sd in (upstream, {f"model.{k}": v for k, v in upstream.items()}):
        mapped = gpt_state_dict_from_upstream(sd)
        assert set(mapped) == set(ours)
        for k, v in mapped.items():
            assert torch.equal(v, ours[k]), k
        GPT(cfg).load_state_dict(mapped, strict=True)


def test_key_map_is_strict() -> None:
    upstream = _upstream_style_state_dict(GPTConfig.tiny())
    with pytest.raises(CheckpointError, match="unmapped"):
        gpt_state_dict_from_upstream({**upstream, "h.layers.0.self_attn.bias_k": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unmapped"):
        gpt_state_dict_from_upstream({**upstream, "ar_accuracy_metric.tp": torch.zeros(1)})
    missing = dict(upstream)
    del missing["h.layers.1.linear2.bias"]
    with pytest.raises(CheckpointError, match=r"layers\.1\.linear2\.bias"):
        gpt_state_dict_from_upstream(missing)
    missing = dict(upstream)
    del missing["ar_predict_layer.weight"]
    with pytest.raises(CheckpointError, match="ar_predict_layer"):
        gpt_state_dict_from_upstream(missing)
    mixed = dict(upstream)
    mixed["model.bert_proj.bias"] = mixed.pop("bert_proj.bias")
    with pytest.raises(CheckpointError, match="mixes"):
        gpt_state_dict_from_upstream(mixed)
    with pytest.raises(CheckpointError, match="empty"):
        gpt_state_dict_from_upstream({})


@pytest.mark.oracle
def test_key_map_matches_upstream_module_names() -> None:
    upstream, ours = oracle_pair(GPTConfig.tiny())
    mapped = gpt_state_dict_from_upstream({f"model.{k}": v for k, v in upstream.state_dict().items()})
    assert set(mapped) == set(ours.state_dict())


# ---------------------------------------------------------------------------------------------
# LoRA-friendliness


class _Wrapped(nn.Module):
    """Stands in for a LoRA layer: same call signature as the nn.Linear it replaces."""

    calls = 0

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.delta = nn.Linear(base.in_features, base.out_features, bias=False)
        nn.init.zeros_(self.delta.weight)

    def forward(self, x: Tensor) -> Tensor:
        _Wrapped.calls += 1
        return self.base(x) + self.delta(x)


def test_projections_are_replaceable_linears() -> None:
    cfg = GPTConfig.tiny()
    model = make_model(cfg)
    # every weight matrix lives in an nn.Linear or nn.Embedding; nothing else holds a 2-D parameter
    owners = dict(model.named_modules())
    for name, p in model.named_parameters():
        if p.dim() == 2:
            assert isinstance(owners[name.rsplit(".", 1)[0]], nn.Linear | nn.Embedding), name
    batch = random_batch(cfg, [5, 3], [4, 0], seed=1)
    with torch.no_grad():
        before = model.prefill_functional(*batch)[0]
    targets = ("self_attn.in_proj", "self_attn.out_proj", "linear1", "linear2")
    for block in model.blocks():
        for t in targets:
            parent = block.self_attn if t.startswith("self_attn") else block
            attr = t.split(".")[-1]
            setattr(parent, attr, _Wrapped(getattr(parent, attr)))
    _Wrapped.calls = 0
    with torch.no_grad():
        after = model.prefill_functional(*batch)[0]
        assert _Wrapped.calls == 4 * cfg.n_layer
        cache = model.new_cache(2, 16)
        model.prefill(*batch, cache=cache)
        model.decode_step(torch.tensor([1, 2]), batch[4], cache)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert _Wrapped.calls == 3 * 4 * cfg.n_layer  # the decode step went through the wrappers too


# ---------------------------------------------------------------------------------------------
# parity with the upstream oracle

PARITY_CONFIGS = [
    GPTConfig.tiny(),
    GPTConfig(n_layer=3, n_head=4, d_model=96, d_ff=384, phoneme_vocab_size=512),  # v1 vocabulary
]


def _oracle_teacher_forced(upstream: Any, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    phones, phone_lens, bert, semantic, semantic_lens = batch
    xy_pos, mask, targets = upstream.make_input_data(phones, phone_lens, semantic, semantic_lens, bert)
    dec, _ = upstream.h((xy_pos, None), mask=mask)
    return upstream.ar_predict_layer(dec[:, phones.shape[1] :]), targets


def _oracle_last_logits(upstream: Any, phones: Tensor, bert: Tensor, y: Tensor) -> Tensor:
    """Upstream's inference first step for one row: text + y through the prefix-LM mask."""
    x = upstream.ar_text_position(
        upstream.ar_text_embedding(phones) + upstream.bert_proj(bert.transpose(1, 2))
    )
    tx, ty = x.shape[1], y.shape[1]
    xy = torch.cat([x, upstream.ar_audio_position(upstream.ar_audio_embedding(y))], dim=1)
    mask = torch.zeros(tx + ty, tx + ty, dtype=torch.bool)
    mask[:tx, tx:] = True
    mask[tx:, tx:] = torch.triu(torch.ones(ty, ty, dtype=torch.bool), diagonal=1)
    dec, _ = upstream.h((xy, None), mask=mask)
    return upstream.ar_predict_layer(dec[:, -1])


@pytest.mark.oracle
@pytest.mark.parametrize("cfg", PARITY_CONFIGS, ids=["tiny-v2vocab", "small-v1vocab"])
def test_teacher_forced_logits_match_oracle(cfg: GPTConfig) -> None:
    upstream, ours = oracle_pair(cfg)
    for seed, (pl, sl) in enumerate([([7, 4, 6], [5, 2, 1]), ([3], [9]), ([8, 8], [6, 0])]):
        batch = random_batch(cfg, pl, sl, seed=seed)
        phones, phone_lens, bert, semantic, semantic_lens = batch
        with torch.no_grad():
            ref_logits, ref_targets = _oracle_teacher_forced(upstream, batch)
            logits, targets = ours(phones, phone_lens, bert, semantic, semantic_lens)
        assert torch.equal(targets, ref_targets)
        assert (logits - ref_logits).abs().max() < 1e-4


@pytest.mark.oracle
def test_loss_and_accuracy_match_oracle() -> None:
    cfg = GPTConfig.tiny()
    upstream, ours = oracle_pair(cfg)
    batch = random_batch(cfg, [7, 4, 6], [9, 5, 3], seed=3)
    phones, phone_lens, bert, semantic, semantic_lens = batch
    with torch.no_grad():
        ref_loss, ref_acc = upstream.forward_old(phones, phone_lens, semantic, semantic_lens, bert)
        loss, acc = ours.loss(phones, phone_lens, bert, semantic, semantic_lens)
    assert abs(loss.item() - ref_loss.item()) < 1e-3 * max(1.0, abs(ref_loss.item()))
    assert abs(acc.item() - ref_acc) < 1e-6


def test_loss_backpropagates() -> None:
    cfg = GPTConfig.tiny()
    model = make_model(cfg).train()
    batch = random_batch(cfg, [5, 3], [6, 4], seed=2)
    loss, acc = model.loss(*batch, reduction="mean")
    loss.backward()
    assert 0.0 <= acc.item() <= 1.0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()), [
        n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0
    ]


@pytest.mark.oracle
@pytest.mark.parametrize("cfg", PARITY_CONFIGS, ids=["tiny-v2vocab", "small-v1vocab"])
def test_prefill_and_first_decode_step_match_oracle(cfg: GPTConfig) -> None:
    upstream, ours = oracle_pair(cfg)
    phone_lens, prompt_lens = [9, 4, 6, 7], [5, 0, 8, 2]
    phones, pl, bert, prompt, ql = random_batch(cfg, phone_lens, prompt_lens, seed=5)
    cache = ours.new_cache(4, 32)
    next_tokens = torch.tensor([3, 1000, 512, 7])
    with torch.no_grad():
        first = ours.prefill(phones, pl, bert, prompt, ql, cache)
        second = ours.decode_step(next_tokens, ql, cache)
        for b, (tx, ty) in enumerate(zip(phone_lens, prompt_lens)):
            row = (phones[b : b + 1, :tx], bert[b : b + 1, :, :tx])
            y = prompt[b : b + 1, :ty]
            assert (first[b] - _oracle_last_logits(upstream, *row, y)[0]).abs().max() < 1e-4
            y2 = torch.cat([y, next_tokens[b].view(1, 1)], dim=1)
            assert (second[b] - _oracle_last_logits(upstream, *row, y2)[0]).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------
# static KV cache


def test_cached_decode_equals_full_recomputation() -> None:
    cfg = GPTConfig.tiny()
    model = make_model(cfg, seed=1)
    phone_lens, prompt_lens = [6, 3, 8], [4, 0, 7]
    phones, pl, bert, prompt, ql = random_batch(cfg, phone_lens, prompt_lens, seed=7)
    steps = 24
    g = torch.Generator().manual_seed(9)
    fed = torch.randint(0, 1024, (3, steps), generator=g)
    cache = model.new_cache(3, max(p + q for p, q in zip(phone_lens, prompt_lens)) + steps)
    with torch.no_grad():
        logits = model.prefill(phones, pl, bert, prompt, ql, cache)
        for n in range(steps + 1):
            # recompute from scratch: each row's prompt grown by the tokens fed so far
            full_prompt = torch.zeros(3, max(prompt_lens) + n, dtype=torch.long)
            for b, q in enumerate(prompt_lens):
                full_prompt[b, : q + n] = torch.cat([prompt[b, :q], fed[b, :n]])
            ref = model.prefill_functional(phones, pl, bert, full_prompt, ql + n)[0]
            assert (logits - ref).abs().max() < 1e-5, n
            assert cache.lengths.tolist() == [p + q + n for p, q in zip(phone_lens, prompt_lens)]
            if n < steps:
                logits = model.decode_step(fed[:, n], ql + n, cache)


def test_functional_decode_step_is_pure_and_matches_in_place() -> None:
    cfg = GPTConfig.tiny()
    model = make_model(cfg)
    batch = random_batch(cfg, [5, 2], [3, 6], seed=4)
    cache = model.new_cache(2, 20)
    tokens, pos = torch.tensor([5, 6]), batch[4]
    with torch.no_grad():
        model.prefill(*batch, cache=cache)
        k0, v0, len0 = cache.k.clone(), cache.v.clone(), cache.lengths.clone()
        logits_f, k1, v1 = model.decode_step_functional(tokens, pos, cache.k, cache.v, cache.lengths)
        assert torch.equal(cache.k, k0) and torch.equal(cache.v, v0)  # inputs untouched
        logits_i = model.decode_step(tokens, pos, cache)
    torch.testing.assert_close(logits_f, logits_i, atol=1e-6, rtol=0)
    assert torch.equal(cache.k, k1) and torch.equal(cache.v, v1)
    assert torch.equal(cache.lengths, len0 + 1)
    changed = (k1 != k0).any(dim=(0, 2, 4))  # [B, T]: positions written
    for b in range(2):
        assert changed[b].nonzero().flatten().tolist() == [int(len0[b])]


def test_decode_step_rejects_full_cache() -> None:
    cfg = GPTConfig.tiny()
    model = make_model(cfg)
    batch = random_batch(cfg, [4], [3], seed=0)
    cache = model.new_cache(1, 7)
    with torch.no_grad():
        model.prefill(*batch, cache=cache)
        with pytest.raises(ValueError, match="full"):
            model.decode_step(torch.tensor([1]), torch.tensor([3]), cache)
    with pytest.raises(ValueError, match="positions"):
        model.prefill(*batch, cache=model.new_cache(1, 6))
    with pytest.raises(ValueError, match="phone_lens"):
        phones, _, bert, prompt, ql = batch
        model.prefill(phones, torch.tensor([0]), bert, prompt, ql, model.new_cache(1, 8))


def test_peft_lora_targets_the_projections() -> None:
    peft = pytest.importorskip("peft")
    cfg = GPTConfig.tiny()
    model = make_model(cfg)
    batch = random_batch(cfg, [5, 3], [4, 0], seed=1)
    with torch.no_grad():
        base = model.prefill_functional(*batch)[0]
    targets = ["in_proj", "out_proj", "linear1", "linear2"]
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    inner = wrapped.base_model.model
    lora_layers = [n for n, m in inner.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert len(lora_layers) == 4 * cfg.n_layer
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_()
        changed = inner.prefill_functional(*batch)[0]
    assert (changed - base).abs().max() > 1e-3
    loss, _ = inner.loss(*batch)
    loss.backward()
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.grad is not None for p in wrapped.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# export-friendliness: the functional pieces trace with dynamic batch and lengths


def test_functional_pieces_export_with_dynamic_shapes() -> None:
    cfg = GPTConfig.tiny()
    model = make_model(cfg)

    class Prefill(nn.Module):
        def __init__(self, gpt: GPT) -> None:
            super().__init__()
            self.gpt = gpt

        def forward(
            self, phones: Tensor, phone_lens: Tensor, bert: Tensor, prompt: Tensor, prompt_lens: Tensor
        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            return self.gpt.prefill_functional(phones, phone_lens, bert, prompt, prompt_lens)

    class Decode(nn.Module):
        def __init__(self, gpt: GPT) -> None:
            super().__init__()
            self.gpt = gpt

        def forward(
            self, tokens: Tensor, audio_pos: Tensor, k: Tensor, v: Tensor, lengths: Tensor
        ) -> tuple[Tensor, Tensor, Tensor]:
            return self.gpt.decode_step_functional(tokens, audio_pos, k, v, lengths)

    Dim = torch.export.Dim
    B, Tx, Ty, T = (
        Dim("B", min=1, max=64),
        Dim("Tx", min=1, max=512),
        Dim("Ty", min=0, max=512),
        Dim("T", max=4096),
    )
    batch = random_batch(cfg, [5, 3], [4, 2], seed=1)
    prefill = torch.export.export(
        Prefill(model), batch, dynamic_shapes=({0: B, 1: Tx}, {0: B}, {0: B, 2: Tx}, {0: B, 1: Ty}, {0: B})
    ).module()
    cache = model.new_cache(2, 12)
    args = (torch.tensor([1, 2]), torch.tensor([3, 4]), cache.k, cache.v, torch.tensor([5, 6]))
    decode = torch.export.export(
        Decode(model), args, dynamic_shapes=({0: B}, {0: B}, {1: B, 3: T}, {1: B, 3: T}, {0: B})
    ).module()
    with torch.no_grad():
        # other batch sizes, lengths and a reference-free row than the ones traced
        other = random_batch(cfg, [7, 2, 4], [0, 5, 3], seed=3)
        for got, want in zip(prefill(*other), model.prefill_functional(*other)):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        cache = model.new_cache(3, 20)
        model.prefill(*other, cache=cache)
        step = (torch.tensor([7, 8, 9]), other[4], cache.k, cache.v, cache.lengths)
        for got, want in zip(decode(*step), model.decode_step_functional(*step)):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
