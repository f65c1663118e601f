"""Multi-LoRA math: one base model, many low-rank voice adapters, one batch.

Shared by the adapter format (merging), serving (a resident adapter bank with per-row slot
indices) and export (the same computation as a pure-tensor function whose bank and slots are
graph inputs). The layout follows peft so its tensors drop in unchanged:

- Linear: ``A [r, in]``, ``B [out, r]``; ``W' = W + s · B @ A`` with ``s = alpha / r``.
- Conv1d: ``A [r, in, k]`` (itself a Conv1d), ``B [out, r, 1]`` (a 1x1 Conv1d);
  ``W' = W + s · einsum("or,rik->oik", B[:, :, 0], A)``.

A bank holds ``S`` slots. Slot 0 is all zeros and means "the base voice"; smaller ranks are
padded with zero rows/columns to the bank's ``max_rank``, which leaves the product unchanged.
For a batch whose row ``n`` uses slot ``slots[n]``:
``y[n] = x[n] W^T + b + s[slot] · (x[n] A[slot]^T) B[slot]^T``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LoRAKind = Literal["linear", "conv1d"]


class LoRAError(ValueError):
    """LoRA weights that do not fit the layer, bank or slot they are given to."""


# --------------------------------------------------------------------------------------------
# One adapter for one module
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoRAWeights:
    """The LoRA factors of one target module (peft's shapes) and its alpha."""

    A: Tensor
    B: Tensor
    alpha: float

    def __post_init__(self) -> None:
        a, b = self.A, self.B
        if a.dim() == 2 and b.dim() == 2:
            if b.shape[1] != a.shape[0]:
                raise LoRAError(f"linear LoRA: A {tuple(a.shape)} and B {tuple(b.shape)} disagree on rank")
        elif a.dim() == 3 and b.dim() == 3:
            if b.shape[1] != a.shape[0] or b.shape[2] != 1:
                raise LoRAError(
                    f"conv1d LoRA: expected A [r, in, k] and B [out, r, 1], got {tuple(a.shape)} and {tuple(b.shape)}"
                )
        else:
            raise LoRAError(f"unsupported LoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)}")
        if a.shape[0] < 1:
            raise LoRAError("LoRA rank must be at least 1")

    @property
    def kind(self) -> LoRAKind:
        return "linear" if self.A.dim() == 2 else "conv1d"

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    @property
    def in_features(self) -> int:
        return int(self.A.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.B.shape[0])

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the base weight this adapter fits: ``[out, in]`` or ``[out, in, k]``."""
        if self.kind == "linear":
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features, int(self.A.shape[2]))

    def delta(self) -> Tensor:
        """``s · B @ A`` in the base weight's layout (float32 for accuracy)."""
        a, b = self.A.float(), self.B.float()
        if self.kind == "linear":
            return self.scale * (b @ a)
        return self.scale * torch.einsum("or,rik->oik", b[:, :, 0], a)


def merge_lora(weight: Tensor, lora: LoRAWeights) -> Tensor:
    """``W + s·B@A`` as a new tensor with ``weight``'s dtype."""
    if tuple(weight.shape) != lora.weight_shape:
        raise LoRAError(f"LoRA for a {lora.weight_shape} weight cannot merge into {tuple(weight.shape)}")
    return (weight.float() + lora.delta().to(weight.device)).to(weight.dtype)


@torch.no_grad()
def merge_into_module(module: nn.Module, lora: LoRAWeights) -> None:
    """Merge ``lora`` into ``module.weight`` in place (nn.Linear, nn.Conv1d, or a wrapped layer)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise LoRAError(f"{type(module).__name__} has no weight to merge a LoRA into")
    weight.copy_(merge_lora(weight, lora))


# --------------------------------------------------------------------------------------------
# Functional multi-LoRA (pure tensor ops: gather + batched matmul, exportable to ONNX)
# --------------------------------------------------------------------------------------------


def multi_lora_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    a_bank: Tensor,
    b_bank: Tensor,
    scales: Tensor,
    slots: Tensor,
) -> Tensor:
    """A Linear layer whose batch rows each use their own adapter from a bank.

    x ``[N, ..., in]``; weight ``[out, in]``; a_bank ``[S, r, in]``; b_bank ``[S, out, r]``;
    scales ``[S]``; slots ``[N]`` integer slot per row. Returns ``[N, ..., out]``.
    """
    y = F.linear(x, weight, bias)
    n = x.shape[0]
    # Gathering per row copies N small factor pairs; that is the price of a graph with no
    # data-dependent control flow (grouping rows by slot would not export).
    a = a_bank.index_select(0, slots)  # [N, r, in]
    b = b_bank.index_select(0, slots)  # [N, out, r]
    s = scales.index_select(0, slots).to(x.dtype)
    h = torch.bmm(x.reshape(n, -1, x.shape[-1]), a.transpose(1, 2))  # [N, T, r]
    h = h * s.reshape(n, 1, 1)  # scale the rank-r activations: cheaper than scaling the output
    d = torch.bmm(h, b.transpose(1, 2))  # [N, T, out]
    return y + d.reshape(y.shape)


def multi_lora_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    a_bank: Tensor,
    b_bank: Tensor,
    scales: Tensor,
    slots: Tensor,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> Tensor:
    """A Conv1d (groups=1, zero padding) whose batch rows each use their own adapter.

    x ``[N, in, T]``; weight ``[out, in, k]``; a_bank ``[S, r, in, k]``; b_bank ``[S, out, r]``;
    scales ``[S]``; slots ``[N]``. Returns ``[N, out, T_out]``.
    """
    y = F.conv1d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    n, k, t_out = x.shape[0], a_bank.shape[-1], y.shape[2]
    xp = F.pad(x, (padding, padding)) if padding else x
    a = a_bank.index_select(0, slots)  # [N, r, in, k]
    b = b_bank.index_select(0, slots)  # [N, out, r]
    s = scales.index_select(0, slots).to(x.dtype)
    # One batched matmul per kernel tap over strided slices of the input. A grouped conv
    # would need the batch size as its static group count, and unfold has no exporter for
    # dynamic lengths; slices and bmm export with dynamic batch and time axes.
    h = x.new_zeros(())
    for j in range(int(k)):
        start = j * dilation
        tap = xp[:, :, start : start + (t_out - 1) * stride + 1 : stride]  # [N, in, T_out]
        h = h + torch.bmm(a[..., j], tap)  # [N, r, T_out]
    h = h * s.reshape(n, 1, 1)
    return y + torch.bmm(b, h)


# --------------------------------------------------------------------------------------------
# Bank-holding layers
# --------------------------------------------------------------------------------------------


class SlotSelector:
    """The slot indices of the current forward, shared by every wrapped layer of one model.

    The model's own code never sees slots: the caller sets them around a forward
    (``LoRABank.use_slots``). ``None`` means every row uses the base weights.
    One selector belongs to one model instance; a model shared between threads needs one
    forward at a time, as any stateful module does.
    """

    def __init__(self) -> None:
        self.slots: Tensor | None = None


class _MultiLoRALayer(nn.Module):
    """Common bank bookkeeping; the base weight and bias stay under their original names."""

    kind: LoRAKind
    weight: Tensor
    bias: Tensor | None
    lora_A: Tensor
    lora_B: Tensor
    lora_scales: Tensor

    def __init__(self, weight: Tensor, bias: Tensor | None, selector: SlotSelector) -> None:
        super().__init__()
        # Same parameter objects, same names: the state dict (and its weights hash) is unchanged.
        if not isinstance(weight, nn.Parameter) or not (bias is None or isinstance(bias, nn.Parameter)):
            raise LoRAError("the wrapped layer's weight and bias must be parameters")
        self.weight = weight
        self.register_parameter("bias", bias)
        self.selector = selector

    def _init_bank(self, a_shape: tuple[int, ...], b_shape: tuple[int, ...], bank_size: int) -> None:
        if bank_size < 2:
            raise LoRAError("a bank needs at least 2 slots (slot 0 is the base voice)")
        w = self.weight
        # Non-persistent: adapters are not part of the base checkpoint.
        self.register_buffer("lora_A", w.new_zeros(a_shape), persistent=False)
        self.register_buffer("lora_B", w.new_zeros(b_shape), persistent=False)
        self.register_buffer("lora_scales", w.new_zeros(bank_size), persistent=False)

    @property
    def bank_size(self) -> int:
        return int(self.lora_scales.shape[0])

    @property
    def max_rank(self) -> int:
        return int(self.lora_A.shape[1])

    def _slots_for(self, x: Tensor) -> Tensor | None:
        slots = self.selector.slots
        if slots is not None and slots.shape[0] != x.shape[0]:
            raise LoRAError(f"{slots.shape[0]} slot indices for a batch of {x.shape[0]} rows")
        return slots

    def check_fits(self, lora: LoRAWeights) -> None:
        """Raise unless ``lora`` fits this layer's shape and bank rank."""
        if lora.kind != self.kind:
            raise LoRAError(f"a {lora.kind} LoRA cannot load into a {self.kind} layer")
        if lora.weight_shape != tuple(self.weight.shape):
            raise LoRAError(f"LoRA fits a {lora.weight_shape} weight, layer has {tuple(self.weight.shape)}")
        if lora.rank > self.max_rank:
            raise LoRAError(f"LoRA rank {lora.rank} exceeds the bank's max rank {self.max_rank}")

    @torch.no_grad()
    def set_slot(self, slot: int, lora: LoRAWeights | None) -> None:
        """Write ``lora`` (zero-padded to max rank) into ``slot``; ``None`` clears it."""
        self.lora_A[slot].zero_()
        self.lora_B[slot].zero_()
        self.lora_scales[slot] = 0.0
        if lora is None:
            return
        self.check_fits(lora)
        r = lora.rank
        self.lora_A[slot, :r] = lora.A.to(self.lora_A.dtype)
        b = lora.B if self.kind == "linear" else lora.B[:, :, 0]
        self.lora_B[slot, :, :r] = b.to(self.lora_B.dtype)
        self.lora_scales[slot] = lora.scale


class MultiLoRALinear(_MultiLoRALayer):
    """An nn.Linear plus an adapter bank ``A [S, r_max, in]``, ``B [S, out, r_max]``, ``scales [S]``."""

    kind: LoRAKind = "linear"

    def __init__(
        self, base: nn.Linear, bank_size: int, max_rank: int, selector: SlotSelector | None = None
    ) -> None:
        if not isinstance(base, nn.Linear):
            raise LoRAError(f"MultiLoRALinear wraps nn.Linear, got {type(base).__name__}")
        super().__init__(base.weight, base.bias, selector or SlotSelector())
        self.in_features, self.out_features = base.in_features, base.out_features
        self._init_bank(
            (bank_size, max_rank, base.in_features), (bank_size, base.out_features, max_rank), bank_size
        )

    def forward(self, x: Tensor) -> Tensor:
        slots = self._slots_for(x)
        if slots is None:
            return F.linear(x, self.weight, self.bias)
        return multi_lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.lora_scales, slots)

    def to_base(self) -> nn.Linear:
        """A plain nn.Linear sharing this layer's weight and bias."""
        base = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        base.weight = self.weight
        base.register_parameter("bias", self.bias)  # type: ignore[arg-type]  # checked in __init__
        return base

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, slots={self.bank_size}, max_rank={self.max_rank}"


class MultiLoRAConv1d(_MultiLoRALayer):
    """An nn.Conv1d (groups=1, zero padding) plus an adapter bank ``A [S, r_max, in, k]``, ``B [S, out, r_max]``."""

    kind: LoRAKind = "conv1d"

    def __init__(
        self, base: nn.Conv1d, bank_size: int, max_rank: int, selector: SlotSelector | None = None
    ) -> None:
        if not isinstance(base, nn.Conv1d):
            raise LoRAError(f"MultiLoRAConv1d wraps nn.Conv1d, got {type(base).__name__}")
        if base.groups != 1 or base.padding_mode != "zeros" or not isinstance(base.padding, tuple):
            raise LoRAError("MultiLoRAConv1d supports groups=1 with integer zero padding only")
        super().__init__(base.weight, base.bias, selector or SlotSelector())
        self.in_channels, self.out_channels = base.in_channels, base.out_channels
        self.kernel_size = int(base.kernel_size[0])
        self.stride, self.padding, self.dilation = (
            int(base.stride[0]),
            int(base.padding[0]),
            int(base.dilation[0]),
        )
        self._init_bank(
            (bank_size, max_rank, base.in_channels, self.kernel_size),
            (bank_size, base.out_channels, max_rank),
            bank_size,
        )

    def forward(self, x: Tensor) -> Tensor:
        slots = self._slots_for(x)
        if slots is None:
            return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return multi_lora_conv1d(
            x,
            self.weight,
            self.bias,
            self.lora_A,
            self.lora_B,
            self.lora_scales,
            slots,
            self.stride,
            self.padding,
            self.dilation,
        )

    def to_base(self) -> nn.Conv1d:
        """A plain nn.Conv1d sharing this layer's weight and bias."""
        base = nn.Conv1d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.bias is not None,
            device="meta",
        )
        base.weight = self.weight
        base.register_parameter("bias", self.bias)  # type: ignore[arg-type]  # checked in __init__
        return base

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}, "
            f"slots={self.bank_size}, max_rank={self.max_rank}"
        )


MultiLoRALayer = MultiLoRALinear | MultiLoRAConv1d


# --------------------------------------------------------------------------------------------
# Wrapping a model and managing its bank
# --------------------------------------------------------------------------------------------


def match_modules(model: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """Names of the modules ``targets`` selects, in model order.

    A string is a regular expression that must match the whole module name; a sequence of
    names matches peft's way: a module whose name equals an entry or ends with ``"." + entry``.
    """
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return [n for n in names if pattern.fullmatch(n)]
    wanted = list(targets)
    return [n for n in names if any(n == t or n.endswith("." + t) for t in wanted)]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


class LoRABank:
    """The adapter bank of one wrapped model: load/clear slots and select slots per forward."""

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, MultiLoRALayer],
        selector: SlotSelector,
        bank_size: int,
        max_rank: int,
    ) -> None:
        self.model = model
        self.layers = layers
        self.selector = selector
        self.bank_size = bank_size
        self.max_rank = max_rank

    def _check_slot(self, slot: int) -> None:
        if not 1 <= slot < self.bank_size:
            raise LoRAError(f"slot {slot} is outside 1..{self.bank_size - 1} (slot 0 is the base voice)")

    def load(self, slot: int, loras: Mapping[str, LoRAWeights]) -> None:
        """Put one adapter (module name -> LoRA) into ``slot``; wrapped layers it omits get zeros.

        Everything is checked before anything is written, so a refused adapter leaves the
        slot's previous contents intact.
        """
        self._check_slot(slot)
        unknown = sorted(set(loras) - set(self.layers))
        if unknown:
            raise LoRAError(f"adapter targets modules the bank does not wrap: {', '.join(unknown)}")
        for name, lora in loras.items():
            try:
                self.layers[name].check_fits(lora)
            except LoRAError as exc:
                raise LoRAError(f"{name}: {exc}") from exc
        for name, layer in self.layers.items():
            layer.set_slot(slot, loras.get(name))

    def clear(self, slot: int) -> None:
        """Zero ``slot`` in every layer (it then computes the base voice)."""
        self._check_slot(slot)
        for layer in self.layers.values():
            layer.set_slot(slot, None)

    def set_slots(self, slots: Tensor | Sequence[int] | None) -> None:
        """Slot per batch row for the following forwards (``None``: base weights, no LoRA work)."""
        if slots is None:
            self.selector.slots = None
            return
        t = torch.as_tensor(slots, dtype=torch.long)
        if t.dim() != 1:
            raise LoRAError(f"slots must be one index per batch row, got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.bank_size):
            raise LoRAError(f"slot indices must lie in 0..{self.bank_size - 1}")
        device = next(iter(self.layers.values())).weight.device
        self.selector.slots = t.to(device)

    @contextmanager
    def use_slots(self, slots: Tensor | Sequence[int]) -> Iterator[None]:
        """``with bank.use_slots([0, 3, 3, 1]): y = model(x)``."""
        previous = self.selector.slots
        self.set_slots(slots)
        try:
            yield
        finally:
            self.selector.slots = previous


def wrap_lora(model: nn.Module, targets: str | Sequence[str], bank_size: int, max_rank: int) -> LoRABank:
    """Replace every target nn.Linear / nn.Conv1d of ``model`` (in place) by a bank-holding layer."""
    names = match_modules(model, targets)
    if not names:
        raise LoRAError(f"no module of {type(model).__name__} matches targets {targets!r}")
    selector = SlotSelector()
    layers: dict[str, MultiLoRALayer] = {}
    for name in names:
        module = model.get_submodule(name)
        wrapped: MultiLoRALayer
        if isinstance(module, nn.Linear):
            wrapped = MultiLoRALinear(module, bank_size, max_rank, selector)
        elif isinstance(module, nn.Conv1d):
            wrapped = MultiLoRAConv1d(module, bank_size, max_rank, selector)
        elif isinstance(targets, str):
            continue  # a regex may also match containers; only leaf layers are wrapped
        else:
            raise LoRAError(
                f"target {name} is a {type(module).__name__}; only nn.Linear and nn.Conv1d take a LoRA"
            )
        _set_submodule(model, name, wrapped)
        layers[name] = wrapped
    if not layers:
        raise LoRAError(f"targets {targets!r} match no nn.Linear or nn.Conv1d")
    return LoRABank(model, layers, selector, bank_size, max_rank)


def unwrap_lora(model: nn.Module) -> None:
    """Undo ``wrap_lora``: put plain layers (same parameters) back in place of bank layers."""
    for name, module in list(model.named_modules()):
        if isinstance(module, MultiLoRALinear | MultiLoRAConv1d):
            _set_submodule(model, name, module.to_base())
