"""Multi-LoRA math: merging, the slot bank, heterogeneous batches and export-friendliness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tritone.checkpoints import weights_hash
from tritone.lora import (
    LoRAError,
    LoRAWeights,
    MultiLoRAConv1d,
    MultiLoRALinear,
    match_modules,
    merge_into_module,
    merge_lora,
    multi_lora_conv1d,
    multi_lora_linear,
    unwrap_lora,
    wrap_lora,
)


class StandIn(nn.Module):
    """A small stand-in for the GPT/SoVITS blocks: a Conv1d front end and Linear projections."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.pre = nn.Conv1d(4, d, 3, padding=2, dilation=2)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"q_proj": nn.Linear(d, d), "v_proj": nn.Linear(d, d), "norm": nn.LayerNorm(d)})
            for _ in range(2)
        )
        self.head = nn.Linear(d, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [N, 4, T]
        h = self.pre(x).transpose(1, 2)
        for blk in self.blocks:
            h = blk["norm"](h + torch.tanh(blk["q_proj"](h)) * blk["v_proj"](h))
        return self.head(h)


def rand_lora(module: nn.Module, rank: int, alpha: float, g: torch.Generator) -> LoRAWeights:
    w = module.weight
    assert isinstance(w, torch.Tensor)
    if w.dim() == 2:  # Linear (plain or wrapped)
        a = torch.randn(rank, w.shape[1], generator=g) * 0.3
        b = torch.randn(w.shape[0], rank, generator=g) * 0.3
    else:  # Conv1d
        a = torch.randn(rank, w.shape[1], w.shape[2], generator=g) * 0.3
        b = torch.randn(w.shape[0], rank, 1, generator=g) * 0.3
    return LoRAWeights(a, b, alpha)


def rand_adapter(model: nn.Module, names: list[str], rank: int, seed: int) -> dict[str, LoRAWeights]:
    g = torch.Generator().manual_seed(seed)
    return {n: rand_lora(model.get_submodule(n), rank, 2.0 * rank, g) for n in names}


def merged_copy(model: nn.Module, adapter: dict[str, LoRAWeights]) -> nn.Module:
    import copy

    m = copy.deepcopy(model)
    for name, lora in adapter.items():
        merge_into_module(m.get_submodule(name), lora)
    return m


TARGETS = ["pre", "q_proj", "v_proj"]


def test_linear_merge_matches_lora_forward() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    lora = rand_lora(lin, 3, 6.0, torch.Generator().manual_seed(1))
    x = torch.randn(5, 8)
    expected = lin(x) + lora.scale * (x @ lora.A.T) @ lora.B.T  # peft's unmerged forward
    merged = merge_lora(lin.weight, lora)
    assert torch.allclose(F.linear(x, merged, lin.bias), expected, atol=1e-5)
    assert lora.scale == 2.0 and lora.kind == "linear" and lora.rank == 3


def test_conv1d_merge_matches_lora_forward() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, 5, padding=2)
    lora = rand_lora(conv, 2, 3.0, torch.Generator().manual_seed(2))
    x = torch.randn(3, 4, 11)
    # peft's Conv1d LoRA: lora_A is a conv with the base's geometry, lora_B a 1x1 conv.
    expected = conv(x) + lora.scale * F.conv1d(F.conv1d(x, lora.A, padding=2), lora.B)
    merged = merge_lora(conv.weight, lora)
    assert torch.allclose(F.conv1d(x, merged, conv.bias, padding=2), expected, atol=1e-5)


def test_lora_weights_reject_bad_shapes() -> None:
    with pytest.raises(LoRAError, match="rank"):
        LoRAWeights(torch.zeros(3, 8), torch.zeros(6, 2), 1.0)
    with pytest.raises(LoRAError, match="conv1d"):
        LoRAWeights(torch.zeros(3, 8, 3), torch.zeros(6, 3, 3), 1.0)
    with pytest.raises(LoRAError, match="cannot merge"):
        merge_lora(torch.zeros(6, 9), LoRAWeights(torch.zeros(3, 8), torch.zeros(6, 3), 1.0))


def test_heterogeneous_batch_equals_per_row_merged_models() -> None:
    torch.manual_seed(0)
    model = StandIn().eval()
    names = match_modules(model, TARGETS)
    assert names == ["pre", "blocks.0.q_proj", "blocks.0.v_proj", "blocks.1.q_proj", "blocks.1.v_proj"]
    adapters = {
        1: rand_adapter(model, names, 2, 1),
        2: rand_adapter(model, names, 4, 2),
        3: rand_adapter(model, names[1:3], 1, 3),
    }
    references = {0: model, **{s: merged_copy(model, a) for s, a in adapters.items()}}
    x = torch.randn(6, 4, 9)
    with torch.no_grad():
        base_out = model(x)
        expected = {s: m(x) for s, m in references.items()}

    bank = wrap_lora(model, TARGETS, bank_size=5, max_rank=4)
    assert isinstance(model.pre, MultiLoRAConv1d) and isinstance(model.blocks[0]["q_proj"], MultiLoRALinear)
    for slot, adapter in adapters.items():
        bank.load(slot, adapter)
    slots = [0, 1, 2, 3, 2, 0]
    with torch.no_grad(), bank.use_slots(slots):
        y = model(x)
    for row, slot in enumerate(slots):
        assert torch.allclose(y[row], expected[slot][row], atol=1e-5), f"row {row} (slot {slot})"
    assert torch.equal(y[0], y[0]) and torch.allclose(y[0], base_out[0], atol=1e-6)
    # Outside the context the model computes the base voice again, with no LoRA work.
    assert bank.selector.slots is None
    with torch.no_grad():
        assert torch.allclose(model(x), base_out, atol=1e-6)


def test_wrapping_keeps_state_dict_and_weights_hash() -> None:
    model = StandIn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bank = wrap_lora(model, TARGETS, bank_size=3, max_rank=2)
    assert set(model.state_dict()) == set(before)
    assert weights_hash(model.state_dict()) == weights_hash(before)
    bank.load(1, rand_adapter(model, list(bank.layers), 2, 0))
    assert weights_hash(model.state_dict()) == weights_hash(before)  # the bank is not checkpoint state
    unwrap_lora(model)
    assert isinstance(model.pre, nn.Conv1d) and isinstance(model.blocks[1]["v_proj"], nn.Linear)
    assert weights_hash(model.state_dict()) == weights_hash(before)


def test_regex_targets_and_bad_targets() -> None:
    model = StandIn()
    assert match_modules(model, r"blocks\.\d+\.q_proj") == ["blocks.0.q_proj", "blocks.1.q_proj"]
    with pytest.raises(LoRAError, match="no module"):
        wrap_lora(model, ["nope"], 3, 2)
    with pytest.raises(LoRAError, match="LayerNorm"):
        wrap_lora(model, ["norm"], 3, 2)


def test_bank_refuses_bad_loads_without_touching_the_slot() -> None:
    torch.manual_seed(0)
    model = StandIn().eval()
    bank = wrap_lora(model, TARGETS, bank_size=3, max_rank=2)
    good = rand_adapter(model, list(bank.layers), 2, 0)
    bank.load(1, good)
    layer = bank.layers["blocks.0.q_proj"]
    snapshot = layer.lora_A[1].clone()
    too_big = rand_adapter(model, ["blocks.0.q_proj"], 3, 1)
    with pytest.raises(LoRAError, match="max rank"):
        bank.load(1, too_big)
    with pytest.raises(LoRAError, match="does not wrap"):
        bank.load(1, {"head": rand_lora(model.head, 1, 1.0, torch.Generator())})
    with pytest.raises(LoRAError, match="slot 0"):
        bank.load(0, good)
    with pytest.raises(LoRAError, match="fits"):
        bank.load(1, {"blocks.0.q_proj": LoRAWeights(torch.zeros(1, 7), torch.zeros(16, 1), 1.0)})
    assert torch.equal(layer.lora_A[1], snapshot)
    with pytest.raises(LoRAError, match=r"0\.\.2"):
        bank.set_slots([0, 3])
    x = torch.randn(2, 4, 5)
    with pytest.raises(LoRAError, match="3 slot indices"), bank.use_slots([0, 1, 1]):
        model(x)
    bank.clear(1)
    with torch.no_grad(), bank.use_slots([1, 1]):
        y = model(x)
    unwrap_lora(model)
    with torch.no_grad():
        assert torch.allclose(y, model(x), atol=1e-6)


def test_functional_forms_match_modules_and_handle_sequences() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    layer = MultiLoRALinear(lin, bank_size=3, max_rank=2)
    g = torch.Generator().manual_seed(0)
    layer.set_slot(1, rand_lora(lin, 2, 4.0, g))
    layer.set_slot(2, rand_lora(lin, 1, 1.0, g))
    x = torch.randn(3, 7, 6)  # [N, T, in]
    slots = torch.tensor([2, 0, 1])
    y = multi_lora_linear(x, lin.weight, lin.bias, layer.lora_A, layer.lora_B, layer.lora_scales, slots)
    for n, s in enumerate(slots.tolist()):
        w = lin.weight + layer.lora_scales[s] * layer.lora_B[s] @ layer.lora_A[s]
        assert torch.allclose(y[n], F.linear(x[n], w, lin.bias), atol=1e-5)

    conv = nn.Conv1d(3, 4, 3, stride=2, padding=1)
    cl = MultiLoRAConv1d(conv, bank_size=2, max_rank=2)
    lora = rand_lora(conv, 2, 2.0, g)
    cl.set_slot(1, lora)
    xc = torch.randn(2, 3, 10)
    yc = multi_lora_conv1d(
        xc, conv.weight, conv.bias, cl.lora_A, cl.lora_B, cl.lora_scales, torch.tensor([1, 0]), 2, 1, 1
    )
    assert torch.allclose(
        yc[0], F.conv1d(xc[:1], merge_lora(conv.weight, lora), conv.bias, 2, 1)[0], atol=1e-5
    )
    assert torch.allclose(yc[1], conv(xc[1:])[0], atol=1e-6)


def test_bank_forward_traces_with_slots_as_inputs() -> None:
    """The functional form has no data-dependent Python control flow: a trace generalises
    to other slot assignments and batch contents (what an exported graph needs)."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    layer = MultiLoRALinear(lin, bank_size=4, max_rank=2)
    g = torch.Generator().manual_seed(0)
    for s in (1, 2, 3):
        layer.set_slot(s, rand_lora(lin, 2, 2.0, g))

    bank = tuple(t.detach() for t in (lin.weight, lin.bias, layer.lora_A, layer.lora_B, layer.lora_scales))
    traced = torch.jit.trace(multi_lora_linear, (torch.randn(3, 4, 6), *bank, torch.tensor([0, 1, 2])))
    x2, slots2 = torch.randn(5, 2, 6), torch.tensor([3, 3, 0, 1, 2])  # other batch size and length
    assert torch.allclose(traced(x2, *bank, slots2), multi_lora_linear(x2, *bank, slots2), atol=1e-6)


def test_conv_bank_refuses_unsupported_geometry() -> None:
    with pytest.raises(LoRAError, match="groups=1"):
        MultiLoRAConv1d(nn.Conv1d(4, 4, 3, groups=2), 2, 1)
    with pytest.raises(LoRAError, match="groups=1"):
        MultiLoRAConv1d(nn.Conv1d(4, 4, 3, padding="same"), 2, 1)


class _Functional(nn.Module):
    """Bank and slots as graph inputs, as the export step wants them."""

    def __init__(self, conv: bool) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x, w, b, a_bank, b_bank, scales, slots):  # type: ignore[no-untyped-def]
        if self.conv:
            return multi_lora_conv1d(x, w, b, a_bank, b_bank, scales, slots, 1, 2, 2)
        return multi_lora_linear(x, w, b, a_bank, b_bank, scales, slots)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv1d"])
def test_functional_forms_export_to_onnx_with_dynamic_batch_and_time(conv: bool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    torch.manual_seed(0)
    banks, r = 4, 3
    if conv:
        x, w, a = torch.randn(3, 6, 11), torch.randn(5, 6, 3), torch.randn(banks, r, 6, 3)
        x2, time_axis = torch.randn(5, 6, 17), 2
    else:
        x, w, a = torch.randn(3, 7, 6), torch.randn(5, 6), torch.randn(banks, r, 6)
        x2, time_axis = torch.randn(5, 9, 6), 1
    b, bb, sc = torch.randn(5), torch.randn(banks, 5, r), torch.rand(banks)
    n, t = Dim("n"), Dim("t")
    shapes = {
        "x": {0: n, time_axis: t},
        "w": None,
        "b": None,
        "a_bank": None,
        "b_bank": None,
        "scales": None,
        "slots": {0: n},
    }
    path = tmp_path / "lora.onnx"
    module = _Functional(conv)
    torch.onnx.export(
        module, (x, w, b, a, bb, sc, torch.tensor([0, 1, 2])), str(path), dynamo=True, dynamic_shapes=shapes
    )
    session = ort.InferenceSession(str(path))
    slots2 = torch.tensor([3, 3, 0, 1, 2])  # other batch size, length and slot mix than at export
    inputs = [x2, w, b, a, bb, sc, slots2]
    out = session.run(None, {i.name: v.numpy() for i, v in zip(session.get_inputs(), inputs)})[0]
    assert abs(out - module(*inputs).numpy()).max() < 1e-4


def test_heterogeneous_batch_on_the_gpt() -> None:
    gpt = pytest.importorskip("tritone.models.gpt")

    cfg = gpt.GPTConfig.tiny()
    torch.manual_seed(0)
    model = gpt.GPT(cfg).eval()
    targets = ["in_proj", "out_proj", "linear1", "linear2"]
    names = match_modules(model, targets)
    assert len(names) == 4 * cfg.n_layer
    adapters = {1: rand_adapter(model, names, 4, 1), 2: rand_adapter(model, names[:4], 2, 2)}
    g = torch.Generator().manual_seed(0)
    batch, tx, ty = 3, 7, 5
    phones = torch.randint(0, cfg.phoneme_vocab_size, (batch, tx), generator=g)
    bert = torch.randn(batch, cfg.bert_dim, tx, generator=g)
    semantic = torch.randint(0, cfg.vocab_size - 1, (batch, ty), generator=g)
    inputs = (phones, torch.tensor([7, 5, 6]), bert, semantic, torch.tensor([5, 5, 3]))
    tokens, audio_pos = torch.tensor([3, 4, 5]), torch.tensor([5, 5, 3])

    def run(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits, and the logits of one KV-cache decode step after a prefill."""
        _, k, v, lengths = m.prefill_functional(*inputs)
        step_logits, _, _ = m.decode_step_functional(tokens, audio_pos, k, v, lengths - 1)
        return m(*inputs)[0], step_logits

    with torch.no_grad():
        expected = {0: run(model)}
        for slot, adapter in adapters.items():
            expected[slot] = run(merged_copy(model, adapter))
    bank = wrap_lora(model, targets, bank_size=3, max_rank=4)
    for slot, adapter in adapters.items():
        bank.load(slot, adapter)
    slots = [2, 0, 1]
    with torch.no_grad(), bank.use_slots(slots):
        forced, step = run(model)
    for row, slot in enumerate(slots):
        assert torch.allclose(forced[row], expected[slot][0][row], atol=1e-4), f"row {row} slot {slot}"
        assert torch.allclose(step[row], expected[slot][1][row], atol=1e-4), f"decode row {row} slot {slot}"
    assert not torch.allclose(expected[1][0][2], expected[0][0][2], atol=1e-3)
