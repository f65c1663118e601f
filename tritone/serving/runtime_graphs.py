"""The graphs every runtime executes, as PyTorch modules: what `build` exports and what
`TorchRuntime` / `CudaGraphRuntime` run eagerly, so all backends compute the same thing.

Six graphs over one `BaseModel` (inference form):

| graph         | inputs (then `slots` + bank tensors)                          | outputs                 |
|---------------|---------------------------------------------------------------|-------------------------|
| `gpt_prefill` | phones, phone_lens, bert, prompt, prompt_lens                 | logits, k, v            |
| `gpt_decode`  | tokens, audio_pos, k_cache, v_cache, lengths                  | logits, k_new, v_new    |
| `ref_enc`     | refer_spec, spec_lens                                         | ge                      |
| `sovits`      | codes, code_lens, phones, phone_lens, ge, noise, noise_scale, frames | z                |
| `vocoder`     | z, ge                                                         | audio                   |
| `ssl`         | wav16k                                                        | codes                   |

A graph whose component has LoRA targets also takes `slots` [B] and, per target module in
order, `<module>.lora_A` [S, r, in(, k)], `<module>.lora_B` [S, out, r] and `<module>.lora_scale`
[S]: the adapter bank is a graph input, so one graph serves rows of different voices.

The LoRA targets of the model are replaced by `BankLinear` / `BankConv1d`, which read the
bank tensors and slots of the current call from a `BankContext` shared by the model (the
model's own code never sees them) and compute `tritone.lora.multi_lora_linear` /
`multi_lora_conv1d`. Parameter names are unchanged, so state dicts and weight hashes are too.

The decode step attends to the cache and to the new position's K/V separately (one softmax
over both), so the graph reads the cache but never copies it; the caller writes `k_new`/`v_new`
into its cache. Shapes never depend on tensor values: SoVITS's time stretch takes each row's
frame count as an input and the output width from `noise`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritone.lora import LoRAWeights, match_modules, multi_lora_conv1d, multi_lora_linear
from tritone.models.base import BaseModel
from tritone.models.gpt import GPT, Block
from tritone.models.s2_modules import length_mask
from tritone.models.sovits import SoVITS
from tritone.models.ssl import SSLEncoder
from tritone.models.vocoders import AnyVocoder
from tritone.serving.runtime import AdapterRefused

# Modules no voice adapter may touch: the zero-shot path (SSL + quantizer) serves no voice.
UNADAPTABLE_PREFIXES = ("ssl.", "sovits.ssl_proj", "sovits.quantizer.")


# --------------------------------------------------------------------------------------------
# Target selection and bank layers
# --------------------------------------------------------------------------------------------


def lora_target_names(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Module names (model order) of every nn.Linear / nn.Conv1d a regex in `targets` fully matches."""
    wanted: set[str] = set()
    for pattern in targets:
        wanted.update(match_modules(model, pattern))
    names = []
    for name, module in model.named_modules():
        if name not in wanted or not isinstance(module, nn.Linear | nn.Conv1d):
            continue
        if name.startswith(UNADAPTABLE_PREFIXES):
            raise AdapterRefused(f"{name}: the SSL encoder and quantizer serve no voice and take no LoRA")
        if isinstance(module, nn.Conv1d) and (
            module.groups != 1 or module.padding_mode != "zeros" or not isinstance(module.padding, tuple)
        ):
            raise AdapterRefused(f"{name}: only groups=1 Conv1d with integer zero padding takes a LoRA")
        names.append(name)
    if not names:
        raise AdapterRefused(f"no nn.Linear / nn.Conv1d matches the LoRA targets {list(targets)}")
    return names


class BankContext:
    """The slots and bank tensors of the current graph call, shared by a model's bank layers."""

    def __init__(self) -> None:
        self.slots: Tensor | None = None
        self.tensors: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    @contextmanager
    def bind(self, slots: Tensor, names: Sequence[str], bank: Sequence[Tensor]) -> Iterator[None]:
        if len(bank) != 3 * len(names):
            raise ValueError(f"{len(bank)} bank tensors for {len(names)} targets (need A, B, scale each)")
        self.slots = slots
        self.tensors = {n: (bank[3 * i], bank[3 * i + 1], bank[3 * i + 2]) for i, n in enumerate(names)}
        try:
            yield
        finally:
            self.slots = None
            self.tensors = {}

    def get(self, name: str) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """(A, B, scales, slots) for `name`, or None when this call binds no bank for it."""
        bank = self.tensors.get(name)
        if bank is None or self.slots is None:
            return None
        return (*bank, self.slots)


class BankLinear(nn.Module):
    """An nn.Linear whose rows each add their slot's LoRA from the bound bank."""

    def __init__(self, base: nn.Linear, name: str, ctx: BankContext) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.name, self.ctx = name, ctx

    def forward(self, x: Tensor) -> Tensor:
        bank = self.ctx.get(self.name)
        if bank is None:
            return F.linear(x, self.weight, self.bias)
        return multi_lora_linear(x, self.weight, self.bias, *bank)


class BankConv1d(nn.Module):
    """An nn.Conv1d (groups=1, zero padding) whose rows each add their slot's LoRA."""

    def __init__(self, base: nn.Conv1d, name: str, ctx: BankContext) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.stride, self.dilation = int(base.stride[0]), int(base.dilation[0])
        padding = base.padding
        assert isinstance(padding, tuple)
        self.padding = int(padding[0])
        self.name, self.ctx = name, ctx

    def forward(self, x: Tensor) -> Tensor:
        bank = self.ctx.get(self.name)
        if bank is None:
            return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return multi_lora_conv1d(x, self.weight, self.bias, *bank, self.stride, self.padding, self.dilation)


def install_bank_layers(model: nn.Module, names: Sequence[str], ctx: BankContext) -> None:
    """Replace each named nn.Linear / nn.Conv1d of `model` (in place) by its bank layer."""
    for name in names:
        module = model.get_submodule(name)
        layer: nn.Module
        if isinstance(module, nn.Linear):
            layer = BankLinear(module, name, ctx)
        elif isinstance(module, nn.Conv1d):
            layer = BankConv1d(module, name, ctx)
        else:
            raise AdapterRefused(f"{name} is a {type(module).__name__}; only Linear and Conv1d take a LoRA")
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)


# --------------------------------------------------------------------------------------------
# The resident bank
# --------------------------------------------------------------------------------------------


class BankTensors:
    """A bank of `bank_size` slots for each target: A [S, r, in(, k)], B [S, out, r], scale [S].

    Slot 0 stays zero (the base voice). Ranks below `max_rank` are zero-padded. `shapes` maps
    each target module to its base weight's shape ([out, in] or [out, in, k]). On the CPU the
    tensors share memory with `numpy()` views, which ONNX Runtime binds once.
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int]],
        bank_size: int,
        max_rank: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if bank_size < 2:
            raise ValueError("a bank needs at least 2 slots (slot 0 is the base voice)")
        if max_rank < 1:
            raise ValueError("max_rank must be >= 1")
        self.bank_size, self.max_rank = bank_size, max_rank
        self.names = list(shapes)
        self.shapes: dict[str, tuple[int, ...]] = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
        self.tensors: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        for name, shape in self.shapes.items():
            self.tensors[name] = (
                torch.zeros((bank_size, max_rank, *shape[1:]), device=device, dtype=dtype),
                torch.zeros((bank_size, shape[0], max_rank), device=device, dtype=dtype),
                torch.zeros(bank_size, device=device, dtype=dtype),
            )

    @classmethod
    def for_model(cls, model: nn.Module, names: Sequence[str], bank_size: int, max_rank: int) -> BankTensors:
        """A bank for the named modules of `model`, on its device and in its dtype."""
        weights = {n: model.get_submodule(n).weight for n in names}
        shapes = {n: tuple(w.shape) for n, w in weights.items() if isinstance(w, Tensor)}
        first = next(iter(weights.values()))
        assert isinstance(first, Tensor)
        return cls(shapes, bank_size, max_rank, first.device, first.dtype)

    def nbytes(self) -> int:
        """Bytes of one slot over all targets."""
        return sum((a[0].numel() + b[0].numel() + 1) * a.element_size() for a, b, _ in self.tensors.values())

    def inputs(self, names: Sequence[str]) -> list[Tensor]:
        """The flat graph inputs [A, B, scale, A, B, scale, ...] for `names`."""
        return [t for n in names for t in self.tensors[n]]

    def _check_slot(self, slot: int) -> None:
        if not 1 <= slot < self.bank_size:
            raise AdapterRefused(f"slot {slot} is outside 1..{self.bank_size - 1} (slot 0 is the base voice)")

    def check(self, lora: Mapping[str, LoRAWeights]) -> None:
        """Raise `AdapterRefused` unless every factor fits this bank."""
        unknown = sorted(set(lora) - set(self.shapes))
        if unknown:
            shown = ", ".join(unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
            raise AdapterRefused(
                f"adapter targets {len(unknown)} module(s) this runtime's bank does not hold: {shown}; "
                "the bank was built for its target list (tritone.serving.runtime.DEFAULT_TARGETS unless "
                "overridden)"
            )
        for name, w in lora.items():
            shape = self.shapes[name]
            if w.weight_shape != shape:
                raise AdapterRefused(f"{name}: LoRA fits a {w.weight_shape} weight, the base has {shape}")
            if w.rank > self.max_rank:
                raise AdapterRefused(
                    f"{name}: LoRA rank {w.rank} exceeds the bank's max rank {self.max_rank}"
                )

    @torch.no_grad()
    def load(self, slot: int, lora: Mapping[str, LoRAWeights]) -> None:
        """Write one adapter into `slot` (checked first: a refusal leaves the slot as it was)."""
        self._check_slot(slot)
        self.check(lora)
        for name, (a, b, s) in self.tensors.items():
            a[slot].zero_()
            b[slot].zero_()
            s[slot] = 0.0
            w = lora.get(name)
            if w is None:
                continue
            r = w.rank
            a[slot, :r].copy_(w.A.to(a.dtype))
            b[slot, :, :r].copy_((w.B if w.kind == "linear" else w.B[:, :, 0]).to(b.dtype))
            s[slot] = w.scale

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        self._check_slot(slot)
        for a, b, s in self.tensors.values():
            a[slot].zero_()
            b[slot].zero_()
            s[slot] = 0.0


# --------------------------------------------------------------------------------------------
# Graph modules
# --------------------------------------------------------------------------------------------


class Graph(nn.Module):
    """One exported graph: positional inputs `(*data, [slots, *bank])`, outputs as a tuple."""

    name: ClassVar[str]
    prefix: ClassVar[str]  # module-name prefix of the component (bank targets under it belong here)
    data_inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]

    def __init__(self, ctx: BankContext, bank_names: Sequence[str]) -> None:
        super().__init__()
        self.ctx = ctx
        self.bank_names = list(bank_names)

    @property
    def input_names(self) -> list[str]:
        if not self.bank_names:
            return list(self.data_inputs)
        bank = [f"{n}.{part}" for n in self.bank_names for part in ("lora_A", "lora_B", "lora_scale")]
        return [*self.data_inputs, "slots", *bank]

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        n = len(self.data_inputs)
        if not self.bank_names:
            return self.run(*args[:n])
        with self.ctx.bind(args[n], self.bank_names, args[n + 1 :]):
            return self.run(*args[:n])

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


class GPTPrefill(Graph):
    name = "gpt_prefill"
    prefix = "gpt."
    data_inputs = ("phones", "phone_lens", "bert", "prompt", "prompt_lens")
    outputs = ("logits", "k", "v")

    def __init__(self, gpt: GPT, ctx: BankContext, bank_names: Sequence[str]) -> None:
        super().__init__(ctx, bank_names)
        self.gpt = gpt

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        phones, phone_lens, bert, prompt, prompt_lens = data
        logits, k, v, _ = self.gpt.prefill_functional(phones, phone_lens, bert, prompt, prompt_lens)
        return logits, k, v


def _attend_with_cache(
    block: Block, q: Tensor, k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor, valid: Tensor
) -> Tensor:
    """Attention of one new position over the cache (positions where `valid`) and itself.

    q, k, v [B, H, 1, hd]; k_cache, v_cache [B, H, T, hd]; valid [B, 1, 1, T] bool -> [B, 1, d]
    """
    B, H, _, hd = q.shape
    scale = 1.0 / math.sqrt(hd)
    cached = torch.matmul(q, k_cache.transpose(-2, -1)) * scale  # [B, H, 1, T]
    cached = cached.masked_fill(~valid, float("-inf"))
    own = (q * k).sum(-1, keepdim=True) * scale  # [B, H, 1, 1]
    p = torch.softmax(torch.cat([cached, own], dim=-1), dim=-1)
    T = k_cache.shape[2]
    y = torch.matmul(p[..., :T], v_cache) + p[..., T:] * v  # [B, H, 1, hd]
    return block.self_attn.out_proj(y.transpose(1, 2).reshape(B, 1, H * hd))


def gpt_decode_step(
    gpt: GPT, tokens: Tensor, audio_pos: Tensor, k_cache: Tensor, v_cache: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One token per row against a read-only cache.

    tokens, audio_pos, lengths [B]; k_cache, v_cache [L, B, H, T, hd] (positions < lengths[b] valid)
    -> (logits [B, V], k_new, v_new [L, B, H, hd]): equals `GPT.decode_step_functional` with the new
    K/V written at position lengths[b].
    """
    B = tokens.shape[0]
    T = k_cache.shape[3]
    x = gpt.embed_audio(tokens.long().view(B, 1), audio_pos.long().view(B, 1))  # [B, 1, d]
    valid = (torch.arange(T, device=k_cache.device).unsqueeze(0) < lengths.long().unsqueeze(1)).view(
        B, 1, 1, T
    )
    ks, vs = [], []
    for layer, block in enumerate(gpt.blocks()):
        q, k, v = block.self_attn.qkv(x)  # [B, H, 1, hd]
        attn = _attend_with_cache(block, q, k_cache[layer], v_cache[layer], k, v, valid)
        x = block._finish(x, attn)
        ks.append(k[:, :, 0])
        vs.append(v[:, :, 0])
    return gpt.ar_predict_layer(x[:, 0]), torch.stack(ks), torch.stack(vs)


class GPTDecode(Graph):
    name = "gpt_decode"
    prefix = "gpt."
    data_inputs = ("tokens", "audio_pos", "k_cache", "v_cache", "lengths")
    outputs = ("logits", "k_new", "v_new")

    def __init__(self, gpt: GPT, ctx: BankContext, bank_names: Sequence[str]) -> None:
        super().__init__(ctx, bank_names)
        self.gpt = gpt

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        return gpt_decode_step(self.gpt, *data)


class RefEncoder(Graph):
    name = "ref_enc"
    prefix = "sovits.ref_enc."
    data_inputs = ("refer_spec", "spec_lens")
    outputs = ("ge",)

    def __init__(self, sovits: SoVITS, ctx: BankContext, bank_names: Sequence[str]) -> None:
        super().__init__(ctx, bank_names)
        self.sovits = sovits

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        refer_spec, spec_lens = data
        return (self.sovits.ref_embedding(refer_spec, spec_lens),)


def stretch_rows(x: Tensor, lengths: Tensor, frames: Tensor, t_out: int) -> Tensor:
    """`tritone.models.s2_modules.stretch_time` with the output lengths given: row b (valid
    length lengths[b]) resampled linearly to frames[b] frames, in a [B, C, t_out] tensor.
    frames == lengths is the identity."""
    B, C, _ = x.shape
    in_len = lengths.to(torch.float32).unsqueeze(1)  # [B, 1]
    scale = in_len / frames.to(torch.float32).unsqueeze(1)
    dst = torch.arange(t_out, device=x.device, dtype=torch.float32).unsqueeze(0)  # [1, T']
    src = (scale * (dst + 0.5) - 0.5).clamp(min=0.0)  # [B, T']
    last = (lengths.long() - 1).unsqueeze(1)
    i0 = torch.minimum(src.long(), last)
    i1 = torch.minimum(i0 + 1, last)
    # positions in float32 (half precision cannot count frames past 2048); weights in x's dtype
    w1 = (src - i0.to(src.dtype)).clamp(0.0, 1.0).unsqueeze(1).to(x.dtype)  # [B, 1, T']
    x0 = x.gather(2, i0.unsqueeze(1).expand(B, C, t_out))
    x1 = x.gather(2, i1.unsqueeze(1).expand(B, C, t_out))
    return (x0 * (1.0 - w1) + x1 * w1) * length_mask(frames, t_out, x.dtype)


class SoVITSDecode(Graph):
    """codes + phones + ge + noise -> z: `SoVITS.decode_latent` with per-row noise scale and speed."""

    name = "sovits"
    prefix = "sovits."
    data_inputs = ("codes", "code_lens", "phones", "phone_lens", "ge", "noise", "noise_scale", "frames")
    outputs = ("z",)

    def __init__(self, sovits: SoVITS, ctx: BankContext, bank_names: Sequence[str]) -> None:
        super().__init__(ctx, bank_names)
        self.sovits = sovits

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        codes, code_lens, phones, phone_lens, ge, noise, noise_scale, frames = data
        s = self.sovits
        enc = s.enc_p
        y = s._content(codes.long().unsqueeze(0))  # [B, ssl_dim, T50]
        y_lens = code_lens.long() * s.config.semantic_stride
        # TextEncoder.forward, with the time stretch driven by `frames`
        y_mask = length_mask(y_lens, y.size(2), y.dtype)
        y = enc.ssl_proj(y * y_mask) * y_mask
        y = enc.encoder_ssl(y * y_mask, y_mask)
        text_mask = length_mask(phone_lens, phones.size(1), y.dtype)
        t = enc.text_embedding(phones.long()).transpose(1, 2)
        t = enc.encoder_text(t * text_mask, text_mask)
        y = enc.mrte(y, y_mask, t, text_mask, ge)
        y = enc.encoder2(y * y_mask, y_mask)
        t_out = noise.shape[2]
        y = stretch_rows(y, y_lens, frames, t_out)
        z_mask = length_mask(frames, t_out, y.dtype)
        stats = enc.proj(y) * z_mask
        m, logs = stats[:, : enc.out_channels], stats[:, enc.out_channels :]
        z_p = (m + noise * torch.exp(logs) * noise_scale.view(-1, 1, 1).to(m.dtype)) * z_mask
        z = s.flow(z_p, z_mask, g=ge, reverse=True)
        return (z * z_mask,)


class VocoderGraph(Graph):
    name = "vocoder"
    prefix = "vocoder."
    data_inputs = ("z", "ge")
    outputs = ("audio",)

    def __init__(self, vocoder: AnyVocoder, ctx: BankContext, bank_names: Sequence[str]) -> None:
        super().__init__(ctx, bank_names)
        self.vocoder = vocoder

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        z, ge = data
        return (self.vocoder(z, ge)[:, 0],)


class SSLCodes(Graph):
    """16 kHz audio -> semantic codes (`SoVITS.extract_latent(ssl(wav))`); rows of one length."""

    name = "ssl"
    prefix = "ssl."
    data_inputs = ("wav16k",)
    outputs = ("codes",)

    def __init__(self, ssl: SSLEncoder, sovits: SoVITS, ctx: BankContext) -> None:
        super().__init__(ctx, [])
        self.ssl, self.sovits = ssl, sovits

    def run(self, *data: Tensor) -> tuple[Tensor, ...]:
        x = self.sovits.ssl_proj(self.ssl(data[0]))  # [B, D, T25]
        B, D, T = x.shape
        # The quantizer's `encode` without its state check, in float32 whatever the model's dtype
        # (a half-precision argmin would flip near ties).
        residual = x.float().transpose(1, 2).reshape(B * T, D)
        codes = []
        for cb in self.sovits.quantizer.codebooks:
            e = cb.embed.float().t()  # [D, K]
            dist = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ e + e.pow(2).sum(0, keepdim=True)
            idx = dist.argmin(dim=1)
            residual = residual - F.embedding(idx, e.t())
            codes.append(idx.view(B, T))
        return (codes[0],)


GRAPH_NAMES = ("gpt_prefill", "gpt_decode", "ref_enc", "sovits", "vocoder", "ssl")


def graph_bank_names(graph: str, names: Sequence[str]) -> list[str]:
    """The bank targets (in order) a graph takes as inputs."""
    if graph in ("gpt_prefill", "gpt_decode"):
        return [n for n in names if n.startswith("gpt.")]
    if graph == "ref_enc":
        return [n for n in names if n.startswith("sovits.ref_enc.")]
    if graph == "sovits":
        return [n for n in names if n.startswith("sovits.") and not n.startswith("sovits.ref_enc.")]
    if graph == "vocoder":
        return [n for n in names if n.startswith("vocoder.")]
    if graph == "ssl":
        return []
    raise KeyError(f"unknown graph {graph!r}; graphs: {', '.join(GRAPH_NAMES)}")


def build_graphs(model: BaseModel, ctx: BankContext, names: Sequence[str]) -> dict[str, Graph]:
    """The six graph modules over `model` (its bank layers already installed with `ctx`)."""
    if model.aligner is not None:
        raise ValueError(
            "this base's SoVITS reads each frame's phone from a token aligner (the aligned MRTE "
            "lookup), which the served graphs do not carry yet; serve a base with another lookup"
        )
    graphs: dict[str, Graph] = {
        "gpt_prefill": GPTPrefill(model.gpt, ctx, graph_bank_names("gpt_prefill", names)),
        "gpt_decode": GPTDecode(model.gpt, ctx, graph_bank_names("gpt_decode", names)),
        "ref_enc": RefEncoder(model.sovits, ctx, graph_bank_names("ref_enc", names)),
        "sovits": SoVITSDecode(model.sovits, ctx, graph_bank_names("sovits", names)),
        "vocoder": VocoderGraph(model.vocoder, ctx, graph_bank_names("vocoder", names)),
        "ssl": SSLCodes(model.ssl, model.sovits, ctx),
    }
    return {k: g.eval() for k, g in graphs.items()}


def prepare_model(model: BaseModel, targets: Sequence[str]) -> tuple[BankContext, list[str]]:
    """Install bank layers for `targets` into `model` (in place); returns (context, target names)."""
    names = lora_target_names(model, targets)
    ctx = BankContext()
    install_bank_layers(model, names, ctx)
    return ctx, names
