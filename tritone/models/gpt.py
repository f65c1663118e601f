"""GPT "s1": GPT-SoVITS's text-to-semantic prefix LM, with a static KV cache.

Module for module the same network as upstream's `Text2SemanticDecoder` (v1/v2):

    phones [B, Tx] ─ ar_text_embedding ─┐
    bert [B, 1024, Tx] ─ bert_proj ─────┴─ + ─ ar_text_position ─┐
    semantic [B, Ty] ─ ar_audio_embedding ─ ar_audio_position ───┴─ n_layer × Block ─ ar_predict_layer

Text and audio each get their own sinusoidal positions counted from 0, scaled by a learnable
`alpha`. Blocks are post-LN (`x = norm1(x + attn(x)); x = norm2(x + ffn(x))`). The attention
is a prefix LM: text attends to all text (never audio); audio attends to all text and causally
to audio. EOS is the last vocabulary entry (1024).

Every projection is an `nn.Linear` (attention: one fused `in_proj` d→3d whose output is split
q|k|v, plus `out_proj`; FFN: `linear1`, `linear2`; `bert_proj`; `ar_predict_layer`), so LoRA
wrappers that replace an `nn.Linear` with a module of the same call signature can target them.

Three entry points share the blocks:

- `forward(...)`: teacher-forced training logits, upstream's padded layout
  `[text (padded to Tx) | audio (padded to Ty)]`;
- `prefill_functional(...)`: encode text + reference prompt, each row laid out contiguously
  (`its text, then its prompt, then padding`), returning next-token logits and the prefix K/V;
- `decode_step_functional(tokens, audio_pos, k, v, lengths)`: one token per row against a
  pre-allocated cache `k, v [n_layer, B, n_head, T_max, head_dim]`; each row writes its new K/V
  at position `lengths[b]` (scatter) and attends to positions `<= lengths[b]`.

The two functional pieces contain no Python control flow on tensor values and no growing caches,
so an exporter can trace them as the prefill and decode-step graphs. `GPT.prefill` /
`GPT.decode_step` wrap them with a `KVCache` and argument checks; `DecodeState` keeps the slots
of one cache plus per-row bookkeeping so rows can join and leave between steps;
`GPT.generate` / `GPT.generate_stream` drive it for a fixed list of requests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritone.checkpoints import CheckpointError
from tritone.models.sampling import SamplingParams, sample_next

# ---------------------------------------------------------------------------------------------
# Config


@dataclass
class GPTConfig:
    """Sizes of the s1 GPT. `v2()` is upstream's `s1longer-v2.yaml`."""

    n_layer: int = 24
    n_head: int = 16
    d_model: int = 512
    d_ff: int = 2048  # upstream always builds 4 * d_model
    phoneme_vocab_size: int = 732  # v2 symbols; v1 checkpoints use 512
    vocab_size: int = 1025  # 1024 semantic tokens + EOS
    eos: int = 1024
    bert_dim: int = 1024
    dropout: float = 0.0  # token-embedding dropout (upstream `model.dropout`)
    block_dropout: float = 0.1  # position-encoding, attention and residual dropout (upstream hard-codes 0.1)
    norm_eps: float = 1e-5
    max_sec: int = 54  # upstream `data.max_sec` (longest training utterance)

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "d_model", "d_ff", "phoneme_vocab_size", "vocab_size", "bert_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_head or self.head_dim % 2:
            raise ValueError(
                f"d_model ({self.d_model}) must split into {self.n_head} heads of an even head_dim"
            )
        if self.eos != self.vocab_size - 1:
            raise ValueError(f"eos must be the last vocabulary entry ({self.vocab_size - 1}), got {self.eos}")
        for name in ("dropout", "block_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPTConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def tiny(cls) -> GPTConfig:
        """Test size: 2 layers, d 64, 2 heads; vocabularies and BERT width as v2."""
        return cls(n_layer=2, n_head=2, d_model=64, d_ff=256)

    @classmethod
    def v1(cls) -> GPTConfig:
        """Upstream v1 (`s1longer.yaml`): as v2 with the 512-entry phoneme vocabulary."""
        return cls(phoneme_vocab_size=512)

    @classmethod
    def v2(cls) -> GPTConfig:
        """Upstream v2 (`s1longer-v2.yaml`): 24 layers, 16 heads, d 512, FFN 2048, post-LN."""
        return cls()

    @classmethod
    def from_upstream(cls, cfg: Mapping[str, Any]) -> GPTConfig:
        """Read the `config` dict stored in an upstream s1 checkpoint (the training yaml).

        Uses `model.{embedding_dim, hidden_dim, head, n_layer, vocab_size, phoneme_vocab_size,
        dropout, EOS}` and `data.max_sec` when present. Upstream builds its FFN as 4 × hidden_dim
        whatever `linear_units` says, and so do we.
        """
        model = cfg.get("model")
        if not isinstance(model, Mapping):
            raise CheckpointError("upstream s1 config has no 'model' section")
        required = (
            "embedding_dim",
            "hidden_dim",
            "head",
            "n_layer",
            "vocab_size",
            "phoneme_vocab_size",
            "EOS",
        )
        missing = [k for k in required if k not in model]
        if missing:
            raise CheckpointError(f"upstream s1 config 'model' section lacks {missing}")
        if model["embedding_dim"] != model["hidden_dim"]:
            raise CheckpointError(
                f"embedding_dim ({model['embedding_dim']}) != hidden_dim ({model['hidden_dim']}) is not supported"
            )
        d_model = int(model["hidden_dim"])
        data = cfg.get("data") or {}
        return cls(
            n_layer=int(model["n_layer"]),
            n_head=int(model["head"]),
            d_model=d_model,
            d_ff=4 * d_model,
            phoneme_vocab_size=int(model["phoneme_vocab_size"]),
            vocab_size=int(model["vocab_size"]),
            eos=int(model["EOS"]),
            dropout=float(model.get("dropout", 0.0)),
            max_sec=int(data.get("max_sec", cls.max_sec)),
        )

    def to_upstream(self) -> dict[str, Any]:
        """The upstream config dict for these sizes (for exporting, and to build the oracle)."""
        if self.d_ff != 4 * self.d_model or self.bert_dim != 1024:
            raise ValueError("upstream's s1 fixes d_ff = 4 * d_model and bert_dim = 1024")
        return {
            "model": {
                "embedding_dim": self.d_model,
                "hidden_dim": self.d_model,
                "head": self.n_head,
                "n_layer": self.n_layer,
                "linear_units": self.d_ff,
                "vocab_size": self.vocab_size,
                "phoneme_vocab_size": self.phoneme_vocab_size,
                "dropout": self.dropout,
                "EOS": self.eos,
            },
            "data": {"max_sec": self.max_sec, "pad_val": self.eos},
        }


# ---------------------------------------------------------------------------------------------
# Modules


class SinePositionalEncoding(nn.Module):
    """x + alpha * sinusoid(position), then dropout; sin on even channels, cos on odd."""

    inv_freq: Tensor  # [d/2]

    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        inv_freq = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model)
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def encoding(self, positions: Tensor) -> Tensor:
        """positions [...] (integers) -> [..., d] float32"""
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [..., d/2]
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x [B, T, d], positions [B, T] or [T] -> [B, T, d]"""
        return self.dropout(x + self.alpha * self.encoding(positions).to(x.dtype))


class SelfAttention(nn.Module):
    """Multi-head attention; q, k, v come from one fused `in_proj` (rows q | k | v)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.in_proj = nn.Linear(config.d_model, 3 * config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = config.block_dropout

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, d] -> q, k, v each [B, H, T, hd]"""
        B, T, _ = x.shape
        q, k, v = self.in_proj(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """q [B, H, Tq, hd], k/v [B, H, Tk, hd], mask [B, 1, Tq, Tk] (True = attend) -> [B, Tq, d]"""
        B, _, Tq, _ = q.shape
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # [B, H, Tq, hd]
        return self.out_proj(y.transpose(1, 2).reshape(B, Tq, self.n_head * self.head_dim))


class Block(nn.Module):
    """Post-LN transformer layer: attention, then a ReLU FFN, each added and normalised."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(config)
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.linear1 = nn.Linear(config.d_model, config.d_ff)
        self.linear2 = nn.Linear(config.d_ff, config.d_model)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.block_dropout)  # inside the FFN
        self.dropout1 = nn.Dropout(config.block_dropout)  # attention branch
        self.dropout2 = nn.Dropout(config.block_dropout)  # FFN branch

    def _finish(self, x: Tensor, attn: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout1(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ffn))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Whole sequence. x [B, T, d], mask [B, 1, T, T] -> (x [B, T, d], k, v [B, H, T, hd])"""
        q, k, v = self.self_attn.qkv(x)
        return self._finish(x, self.self_attn.attend(q, k, v, mask)), k, v

    def forward_text_attention(
        self, x: Tensor, mask: Tensor, text_len: int, text_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """As `forward`, and where each audio position looks in the text (for alignment losses).

        x [B, Tx + Ty, d], mask [B, 1, S, S], text_valid [B, Tx]
        -> (x [B, S, d], probs [B, H, Ty, Tx]: each head's softmax over the valid text keys alone)

        The real attention also spreads over audio keys; renormalising over the text keys gives a
        distribution over phones per audio position whatever share of the attention text gets.
        """
        q, k, v = self.self_attn.qkv(x)
        scores = q[:, :, text_len:] @ k[:, :, :text_len].transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~text_valid[:, None, None, :], float("-inf"))
        return self._finish(x, self.self_attn.attend(q, k, v, mask)), scores.softmax(dim=-1)

    def step(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, write_pos: Tensor, mask: Tensor, inplace: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One new position per row against a static cache.

        x [B, 1, d], k_cache/v_cache [B, H, T_max, hd], write_pos [B], mask [B, 1, 1, T_att]
        (T_att <= T_max: attention reads the first T_att cache positions)
        -> (x [B, 1, d], k_cache, v_cache with row b's new entry at write_pos[b])
        """
        q, k, v = self.self_attn.qkv(x)  # [B, H, 1, hd]
        B, H, _, hd = k.shape
        index = write_pos.view(B, 1, 1, 1).expand(B, H, 1, hd)
        if inplace:
            k_cache, v_cache = k_cache.scatter_(2, index, k), v_cache.scatter_(2, index, v)
        else:
            k_cache, v_cache = k_cache.scatter(2, index, k), v_cache.scatter(2, index, v)
        t_att = mask.shape[-1]
        attn = self.self_attn.attend(q, k_cache[:, :, :t_att], v_cache[:, :, :t_att], mask)
        return self._finish(x, attn), k_cache, v_cache


# ---------------------------------------------------------------------------------------------
# KV cache and decode bookkeeping


@dataclass
class KVCache:
    """Pre-allocated keys/values for every layer; row b holds `lengths[b]` valid positions.

    k, v [n_layer, B, n_head, T_max, head_dim]; lengths [B] long.
    """

    k: Tensor
    v: Tensor
    lengths: Tensor

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def rows(self, stop: int) -> KVCache:
        """A view of rows [0, stop): writes through it land in this cache."""
        return KVCache(self.k[:, :stop], self.v[:, :stop], self.lengths[:stop])


@dataclass
class GenerationRequest:
    """One row to decode: phones [Tx] long, bert [bert_dim, Tx], prompt [Ty] long (Ty may be 0)."""

    phones: Tensor
    bert: Tensor
    prompt: Tensor
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class TokenEvent:
    """What one step did to one row. `token` is None on the step a row stops at EOS."""

    slot: int
    token: int | None
    finished: bool
    reason: Literal["eos", "length"] | None = None


@dataclass
class RowState:
    """Bookkeeping of one occupied slot."""

    params: SamplingParams
    generator: torch.Generator
    text_len: int
    prompt_len: int
    tokens: list[int] = field(default_factory=list)


class DecodeState:
    """Slots of one static KV cache plus per-row sampling state.

    Rows join with `add` (one batched prefill, copied into free slots) and leave with `remove`
    or by finishing inside `step`; a scheduler may call `add`/`remove` between any two steps.
    Each step samples one token for every occupied slot from its pending logits, then runs one
    decode step over the cache for the rows that go on.
    """

    def __init__(self, model: GPT, capacity: int, max_len: int) -> None:
        if capacity < 1 or max_len < 1:
            raise ValueError(f"capacity and max_len must be >= 1, got {capacity} and {max_len}")
        self.model = model
        self.cache = model.new_cache(capacity, max_len)
        vocab, device = model.config.vocab_size, self.cache.k.device
        self.logits = torch.zeros(capacity, vocab, device=device)  # next-token logits per slot
        self.seen = torch.zeros(capacity, vocab, dtype=torch.bool, device=device)  # for the penalty
        self.rows: list[RowState | None] = [None] * capacity

    @property
    def capacity(self) -> int:
        return len(self.rows)

    @property
    def active_slots(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r is not None]

    @property
    def free_slots(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r is None]

    def add(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prefill `requests` together and place them in free slots; returns their slots."""
        if not requests:
            return []
        free = self.free_slots
        if len(requests) > len(free):
            raise ValueError(f"{len(requests)} new rows but only {len(free)} free slots")
        cfg, device = self.model.config, self.cache.k.device
        for i, req in enumerate(requests):
            need = req.phones.shape[0] + req.prompt.shape[0] + req.params.max_new_tokens - 1
            if need > self.cache.max_len:
                raise ValueError(
                    f"request {i}: {req.phones.shape[0]} phones + {req.prompt.shape[0]} prompt tokens + "
                    f"{req.params.max_new_tokens} new tokens do not fit a cache of {self.cache.max_len} positions"
                )
        phones, phone_lens, bert, prompt, prompt_lens = collate(requests, cfg, device, self.cache.k.dtype)
        slots = free[: len(requests)]
        index = torch.tensor(slots, device=device)
        with torch.no_grad():
            logits, k, v, lengths = self.model.prefill_functional(
                phones, phone_lens, bert, prompt, prompt_lens
            )
        n = int(lengths.max())
        self.cache.k[:, index, :, :n] = k[:, :, :, :n].to(self.cache.k.dtype)
        self.cache.v[:, index, :, :n] = v[:, :, :, :n].to(self.cache.v.dtype)
        self.cache.lengths[index] = lengths
        self.logits[index] = logits.float()
        self.seen[index] = False
        for slot, req in zip(slots, requests):
            self.seen[slot, req.prompt.to(device=device, dtype=torch.long)] = True
            self.rows[slot] = RowState(
                params=req.params,
                generator=req.params.make_generator(device),
                text_len=req.phones.shape[0],
                prompt_len=req.prompt.shape[0],
            )
        return slots

    def remove(self, slot: int) -> RowState:
        """Free a slot and return its bookkeeping."""
        row = self.rows[slot]
        if row is None:
            raise ValueError(f"slot {slot} is not occupied")
        self.rows[slot] = None
        self.cache.lengths[slot] = 0
        return row

    def step(self) -> list[TokenEvent]:
        """Sample one token for every occupied slot and advance the rows that go on.

        Finished rows (EOS or max_new_tokens) are removed and reported with `finished=True`.
        """
        slots = self.active_slots
        if not slots:
            return []
        eos, device = self.model.config.eos, self.logits.device
        rows = [r for r in self.rows if r is not None]
        index = torch.tensor(slots, device=device)
        blocked = torch.tensor([len(r.tokens) < r.params.min_new_tokens for r in rows], device=device)
        tokens, stop = sample_next(
            self.logits[index],
            self.seen[index],
            [r.params for r in rows],
            [r.generator for r in rows],
            blocked,
            eos,
        )
        events: list[TokenEvent] = []
        going: list[tuple[int, int]] = []  # (slot, token)
        emitted = ~stop
        self.seen[index[emitted], tokens[emitted]] = True
        for slot, row, tok, st in zip(slots, rows, tokens.tolist(), stop.tolist()):
            if st:
                events.append(TokenEvent(slot, None, True, "eos"))
                self.remove(slot)
                continue
            row.tokens.append(tok)
            if len(row.tokens) >= row.params.max_new_tokens:
                events.append(TokenEvent(slot, tok, True, "length"))
                self.remove(slot)
            else:
                events.append(TokenEvent(slot, tok, False))
                going.append((slot, tok))
        if going:
            self._advance(going)
        return events

    def _advance(self, going: list[tuple[int, int]]) -> None:
        """One decode step over the cache rows up to the last continuing slot."""
        device = self.logits.device
        stop = max(s for s, _ in going) + 1
        tok, pos, act = [0] * stop, [0] * stop, [False] * stop
        attend = 1
        for slot, t in going:
            row = self.rows[slot]
            assert row is not None
            tok[slot], pos[slot], act[slot] = t, row.prompt_len + len(row.tokens) - 1, True
            # this step writes the newest token, so the row then holds text + prompt + tokens positions
            attend = max(attend, row.text_len + row.prompt_len + len(row.tokens))
        active = torch.tensor(act, device=device)
        with torch.no_grad():
            logits = self.model.decode_step(
                torch.tensor(tok, device=device),
                torch.tensor(pos, device=device),
                self.cache.rows(stop),
                active=active,
                attend_len=attend,
            )
        self.logits[:stop][active] = logits[active].float()


def collate(
    requests: Sequence[GenerationRequest],
    config: GPTConfig,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Right-pad requests into (phones [B,Tx], phone_lens [B], bert [B,bert_dim,Tx], prompt [B,Ty], prompt_lens [B])."""
    bert_dim = config.bert_dim
    B = len(requests)
    for i, r in enumerate(requests):
        if r.phones.dim() != 1 or r.prompt.dim() != 1:
            raise ValueError(f"request {i}: phones and prompt must be 1-D token tensors")
        if r.phones.shape[0] < 1:
            raise ValueError(f"request {i}: phones must not be empty")
    phone_lens = torch.tensor([r.phones.shape[0] for r in requests], dtype=torch.long, device=device)
    prompt_lens = torch.tensor([r.prompt.shape[0] for r in requests], dtype=torch.long, device=device)
    Tx, Ty = int(phone_lens.max()), int(prompt_lens.max())
    phones = torch.zeros(B, Tx, dtype=torch.long, device=device)
    bert = torch.zeros(B, bert_dim, Tx, device=device, dtype=dtype)
    prompt = torch.zeros(B, Ty, dtype=torch.long, device=device)
    for i, r in enumerate(requests):
        if not 0 <= int(r.phones.min()) <= int(r.phones.max()) < config.phoneme_vocab_size:
            raise ValueError(f"request {i}: phone ids must lie in [0, {config.phoneme_vocab_size})")
        if r.prompt.numel() and not 0 <= int(r.prompt.min()) <= int(r.prompt.max()) < config.eos:
            raise ValueError(f"request {i}: prompt tokens must lie in [0, {config.eos})")
        if tuple(r.bert.shape) != (bert_dim, r.phones.shape[0]):
            raise ValueError(
                f"request {i}: bert must be [{bert_dim}, {r.phones.shape[0]}], got {list(r.bert.shape)}"
            )
        phones[i, : r.phones.shape[0]] = r.phones
        bert[i, :, : r.phones.shape[0]] = r.bert
        prompt[i, : r.prompt.shape[0]] = r.prompt
    return phones, phone_lens, bert, prompt, prompt_lens


# ---------------------------------------------------------------------------------------------
# The model


class GPT(nn.Module):
    """The s1 decoder. Parameter names follow upstream's where they can (see the key map)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.bert_proj = nn.Linear(config.bert_dim, d)
        self.ar_text_embedding = nn.Embedding(config.phoneme_vocab_size, d)
        self.ar_text_position = SinePositionalEncoding(d, config.block_dropout)
        self.ar_audio_embedding = nn.Embedding(config.vocab_size, d)
        self.ar_audio_position = SinePositionalEncoding(d, config.block_dropout)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ar_predict_layer = nn.Linear(d, config.vocab_size, bias=False)
        for block in self.blocks():
            nn.init.xavier_uniform_(block.self_attn.in_proj.weight)
            nn.init.zeros_(block.self_attn.in_proj.bias)
            nn.init.zeros_(block.self_attn.out_proj.bias)

    def blocks(self) -> list[Block]:
        """The transformer layers, typed."""
        return [b for b in self.layers if isinstance(b, Block)]

    # -- embeddings -------------------------------------------------------------------------

    def embed_text(self, phones: Tensor, bert: Tensor) -> Tensor:
        """phones [B, Tx], bert [B, bert_dim, Tx] -> [B, Tx, d] at text positions 0..Tx-1"""
        x = self.embedding_dropout(self.ar_text_embedding(phones)) + self.bert_proj(bert.transpose(1, 2))
        return self.ar_text_position(x, torch.arange(phones.shape[1], device=phones.device))

    def embed_audio(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens [B, T], positions [B, T] or [T] -> [B, T, d]"""
        return self.ar_audio_position(self.embedding_dropout(self.ar_audio_embedding(tokens)), positions)

    # -- training ---------------------------------------------------------------------------

    def forward(
        self, phones: Tensor, phone_lens: Tensor, bert: Tensor, semantic: Tensor, semantic_lens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing, as upstream trains.

        phones [B, Tx], phone_lens [B], bert [B, bert_dim, Tx], semantic [B, Ty], semantic_lens [B]
        -> (logits [B, Ty, V], targets [B, Ty])

        The inputs are the semantic tokens (padding replaced by EOS); position t predicts token
        t+1, and EOS after a row's last token and at its padding (upstream includes the padding
        positions in its loss).
        """
        logits, targets, _ = self._teacher_forced(phones, phone_lens, bert, semantic, semantic_lens, False)
        return logits, targets

    def forward_with_text_attention(
        self, phones: Tensor, phone_lens: Tensor, bert: Tensor, semantic: Tensor, semantic_lens: Tensor
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """`forward`, plus every layer's text attention of the audio positions
        (`Block.forward_text_attention`): -> (logits, targets, [n_layer x probs [B, H, Ty, Tx]])"""
        return self._teacher_forced(phones, phone_lens, bert, semantic, semantic_lens, True)

    def _teacher_forced(
        self,
        phones: Tensor,
        phone_lens: Tensor,
        bert: Tensor,
        semantic: Tensor,
        semantic_lens: Tensor,
        text_attention: bool,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        B, Tx = phones.shape
        Ty = semantic.shape[1]
        if Ty < 1:
            raise ValueError("training needs at least one semantic token per batch")
        _check_lengths(phone_lens, Tx, "phone_lens", minimum=1)
        _check_lengths(semantic_lens, Ty, "semantic_lens", minimum=0)
        eos = self.config.eos
        device = phones.device
        y_pad = torch.arange(Ty, device=device) >= semantic_lens.unsqueeze(1)  # [B, Ty]
        inputs = semantic.long().masked_fill(y_pad, eos)
        targets = torch.cat([inputs[:, 1:], inputs.new_full((B, 1), eos)], dim=1)  # [B, Ty]

        x = self.embed_text(phones, bert)  # [B, Tx, d]
        y = self.embed_audio(inputs, torch.arange(Ty, device=device))  # [B, Ty, d]
        h = torch.cat([x, y], dim=1)  # [B, S, d], S = Tx + Ty

        # prefix-LM structure: text rows see text; audio rows see text and audio up to themselves
        i = torch.arange(Tx + Ty, device=device).unsqueeze(1)  # [S, 1] query
        j = torch.arange(Tx + Ty, device=device).unsqueeze(0)  # [1, S] key
        structure = (j < Tx) | ((i >= Tx) & (j <= i))  # [S, S]
        text_valid = torch.arange(Tx, device=device) < phone_lens.unsqueeze(1)  # [B, Tx]
        key_valid = torch.cat([text_valid, ~y_pad], dim=1)
        mask = (structure.unsqueeze(0) & key_valid.unsqueeze(1)).unsqueeze(1)  # [B, 1, S, S]
        attention: list[Tensor] = []
        for block in self.blocks():
            if text_attention:
                h, probs = block.forward_text_attention(h, mask, Tx, text_valid)
                attention.append(probs)
            else:
                h, _, _ = block(h, mask)
        return self.ar_predict_layer(h[:, Tx:]), targets, attention

    def loss(
        self,
        phones: Tensor,
        phone_lens: Tensor,
        bert: Tensor,
        semantic: Tensor,
        semantic_lens: Tensor,
        reduction: Literal["sum", "mean"] = "sum",
        top_k: int = 3,
    ) -> tuple[Tensor, Tensor]:
        """Cross-entropy over every target position (upstream sums), and top-k accuracy.

        The accuracy is upstream's metric: the share of non-EOS targets found among the k
        highest logits. -> (loss [], accuracy [] without grad)
        """
        logits, targets = self(phones, phone_lens, bert, semantic, semantic_lens)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction=reduction)
        return loss, topk_accuracy(logits.detach(), targets, top_k, ignore_index=self.config.eos)

    # -- inference: functional core ---------------------------------------------------------

    def prefill_functional(
        self, phones: Tensor, phone_lens: Tensor, bert: Tensor, prompt: Tensor, prompt_lens: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encode text + reference prompt; each row laid out as [its text | its prompt | padding].

        phones [B, Tx], phone_lens [B] (>= 1), bert [B, bert_dim, Tx], prompt [B, Ty] (Ty may be 0),
        prompt_lens [B]
        -> (logits [B, V] at each row's last position,
            k, v [n_layer, B, H, S, hd] for cache positions 0..S-1 (S = Tx + Ty; positions at or
            beyond lengths[b] hold padding), lengths [B] = phone_lens + prompt_lens)
        """
        B, Tx = phones.shape
        Ty = prompt.shape[1]
        S, d = Tx + Ty, self.config.d_model
        device = phones.device
        x = self.embed_text(phones, bert)  # [B, Tx, d]
        y = self.embed_audio(prompt.long(), torch.arange(Ty, device=device))  # [B, Ty, d]
        tx = phone_lens.long().unsqueeze(1)  # [B, 1]
        lengths = phone_lens.long() + prompt_lens.long()  # [B]

        # gather each row into its contiguous layout
        pos = torch.arange(S, device=device).unsqueeze(0)  # [1, S]
        src = torch.where(pos < tx, pos, Tx + pos - tx).clamp(max=S - 1)  # [B, S]
        h = torch.cat([x, y], dim=1).gather(1, src.unsqueeze(-1).expand(B, S, d))  # [B, S, d]

        # text queries see the row's text; prompt queries see text and prompt up to themselves;
        # padding queries see the text only (never an empty row, so no NaN reaches the cache)
        i = pos.unsqueeze(2)  # [1, S, 1] query
        j = pos.unsqueeze(1)  # [1, 1, S] key
        t3, n3 = tx.unsqueeze(2), lengths.view(B, 1, 1)
        mask = ((j < t3) | ((i >= t3) & (i < n3) & (j <= i))).unsqueeze(1)  # [B, 1, S, S]
        ks, vs = [], []
        for block in self.layers:
            h, k, v = block(h, mask)
            ks.append(k)
            vs.append(v)
        last = h.gather(1, (lengths - 1).view(B, 1, 1).expand(B, 1, d)).squeeze(1)  # [B, d]
        return self.ar_predict_layer(last), torch.stack(ks), torch.stack(vs), lengths

    def decode_step_functional(
        self,
        tokens: Tensor,
        audio_pos: Tensor,
        k: Tensor,
        v: Tensor,
        lengths: Tensor,
        inplace: bool = False,
        attend_len: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One token per row against a static cache.

        tokens [B], audio_pos [B] (the token's audio position: prompt_len + tokens before it),
        k, v [n_layer, B, H, T_max, hd], lengths [B] (valid positions before this step; the new
        K/V goes to position lengths[b], which must be < T_max)
        -> (logits [B, V], k, v with the new entries written)

        `inplace=False` returns new cache tensors (export); `inplace=True` writes into `k`/`v`.
        `attend_len` (eager only) limits attention to the first positions when every row's
        valid positions fit in it; None reads the whole cache.
        """
        B = tokens.shape[0]
        T = k.shape[3] if attend_len is None else attend_len
        x = self.embed_audio(tokens.long().view(B, 1), audio_pos.long().view(B, 1))  # [B, 1, d]
        lengths = lengths.long()
        mask = (torch.arange(T, device=k.device).unsqueeze(0) <= lengths.unsqueeze(1)).view(B, 1, 1, T)
        ks, vs = [], []
        for layer, block in enumerate(self.blocks()):
            x, k_l, v_l = block.step(x, k[layer], v[layer], lengths, mask, inplace)
            ks.append(k_l)
            vs.append(v_l)
        logits = self.ar_predict_layer(x[:, 0])
        if inplace:
            return logits, k, v
        return logits, torch.stack(ks), torch.stack(vs)

    # -- inference: cache wrappers ----------------------------------------------------------

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """A zeroed cache for `batch` rows of up to `max_len` positions (model's device and dtype)."""
        c = self.config
        p = self.ar_predict_layer.weight
        shape = (c.n_layer, batch, c.n_head, max_len, c.head_dim)
        return KVCache(
            k=torch.zeros(shape, device=p.device, dtype=p.dtype),
            v=torch.zeros(shape, device=p.device, dtype=p.dtype),
            lengths=torch.zeros(batch, dtype=torch.long, device=p.device),
        )

    def prefill(
        self,
        phones: Tensor,
        phone_lens: Tensor,
        bert: Tensor,
        prompt: Tensor,
        prompt_lens: Tensor,
        cache: KVCache,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Prefill into `cache` rows `rows` (default: all rows, B must equal the cache's batch).

        Shapes as `prefill_functional`; sets the rows' lengths. -> logits [B, V]
        """
        B, Tx = phones.shape
        Ty = prompt.shape[1]
        _check_lengths(phone_lens, Tx, "phone_lens", minimum=1)
        _check_lengths(prompt_lens, Ty, "prompt_lens", minimum=0)
        if tuple(bert.shape) != (B, self.config.bert_dim, Tx):
            raise ValueError(f"bert must be [{B}, {self.config.bert_dim}, {Tx}], got {list(bert.shape)}")
        if rows is None:
            if phones.shape[0] != cache.batch_size:
                raise ValueError(f"{B} rows for a cache of {cache.batch_size}; pass `rows`")
            rows = torch.arange(B, device=cache.k.device)
        n = int((phone_lens + prompt_lens).max())
        if n > cache.max_len:
            raise ValueError(f"a row needs {n} positions; the cache holds {cache.max_len}")
        logits, k, v, lengths = self.prefill_functional(phones, phone_lens, bert, prompt, prompt_lens)
        cache.k[:, rows, :, :n] = k[:, :, :, :n]
        cache.v[:, rows, :, :n] = v[:, :, :, :n]
        cache.lengths[rows] = lengths
        return logits

    def decode_step(
        self,
        tokens: Tensor,
        audio_pos: Tensor,
        cache: KVCache,
        active: Tensor | None = None,
        attend_len: int | None = None,
    ) -> Tensor:
        """Write each active row's token at its next cache position, in place; -> logits [B, V].

        tokens, audio_pos [B]; active [B] bool (default all): inactive rows are computed but their
        lengths stay (their output is meaningless). attend_len: see `decode_step_functional`.
        """
        if active is None:
            active = torch.ones_like(cache.lengths, dtype=torch.bool)
        if bool(((cache.lengths >= cache.max_len) & active).any()):
            raise ValueError(f"a row's cache is full ({cache.max_len} positions)")
        if attend_len is not None and not 1 <= attend_len <= cache.max_len:
            raise ValueError(f"attend_len must be in [1, {cache.max_len}], got {attend_len}")
        write_pos = torch.where(active, cache.lengths, cache.lengths.clamp(max=cache.max_len - 1))
        logits, _, _ = self.decode_step_functional(
            tokens, audio_pos, cache.k, cache.v, write_pos, inplace=True, attend_len=attend_len
        )
        cache.lengths += active.long()
        return logits

    # -- generation ---------------------------------------------------------------------------

    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[list[TokenEvent]]:
        """Decode all requests together; yields each step's events (`slot` = request index)."""
        if not requests:
            return
        max_len = max(r.phones.shape[0] + r.prompt.shape[0] + r.params.max_new_tokens - 1 for r in requests)
        state = DecodeState(self, len(requests), max_len)
        state.add(requests)
        while state.active_slots:
            yield state.step()

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Tensor]:
        """Per request, the new semantic tokens [n] long (no prompt, no EOS)."""
        out: list[list[int]] = [[] for _ in requests]
        for events in self.generate_stream(requests):
            for e in events:
                if e.token is not None:
                    out[e.slot].append(e.token)
        return [torch.tensor(t, dtype=torch.long) for t in out]


def _check_lengths(lengths: Tensor, width: int, name: str, minimum: int) -> None:
    if lengths.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < minimum or int(lengths.max()) > width):
        raise ValueError(f"{name} must lie in [{minimum}, {width}], got {lengths.tolist()}")


def topk_accuracy(logits: Tensor, targets: Tensor, k: int, ignore_index: int) -> Tensor:
    """Share of targets (other than ignore_index) among the k highest logits. logits [..., V]"""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # [..., k]
    hit = (top == targets.unsqueeze(-1)).any(-1)
    keep = targets != ignore_index
    return (hit & keep).sum() / keep.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Upstream key map

_TOP_LEVEL_MAP = {
    "bert_proj.weight": "bert_proj.weight",
    "bert_proj.bias": "bert_proj.bias",
    "ar_text_embedding.word_embeddings.weight": "ar_text_embedding.weight",
    "ar_text_position.alpha": "ar_text_position.alpha",
    "ar_audio_embedding.word_embeddings.weight": "ar_audio_embedding.weight",
    "ar_audio_position.alpha": "ar_audio_position.alpha",
    "ar_predict_layer.weight": "ar_predict_layer.weight",
}
_LAYER_MAP = {
    "self_attn.in_proj_weight": "self_attn.in_proj.weight",
    "self_attn.in_proj_bias": "self_attn.in_proj.bias",
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "self_attn.out_proj.bias": "self_attn.out_proj.bias",
    "linear1.weight": "linear1.weight",
    "linear1.bias": "linear1.bias",
    "linear2.weight": "linear2.weight",
    "linear2.bias": "linear2.bias",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
}
_LAYER_KEY = re.compile(r"h\.layers\.(\d+)\.(.+)")


def gpt_state_dict_from_upstream(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert an upstream s1 state dict (`Text2SemanticDecoder`) to `GPT`'s keys, strictly.

    Accepts the bare decoder's keys or the Lightning module's (every key prefixed `model.`).
    Any key it cannot map, and any key a complete model needs but `sd` lacks, raises
    `CheckpointError`. Tensors are passed through unchanged (no copy, no dtype change).

    | upstream key (after stripping `model.`)                | ours                                   |
    |--------------------------------------------------------|----------------------------------------|
    | `bert_proj.{weight,bias}`                              | `bert_proj.{weight,bias}`              |
    | `ar_text_embedding.word_embeddings.weight`             | `ar_text_embedding.weight`             |
    | `ar_text_position.alpha`                               | `ar_text_position.alpha`               |
    | `ar_audio_embedding.word_embeddings.weight`            | `ar_audio_embedding.weight`            |
    | `ar_audio_position.alpha`                              | `ar_audio_position.alpha`              |
    | `h.layers.{i}.self_attn.in_proj_weight` [3d, d]        | `layers.{i}.self_attn.in_proj.weight`  |
    | `h.layers.{i}.self_attn.in_proj_bias` [3d]             | `layers.{i}.self_attn.in_proj.bias`    |
    | `h.layers.{i}.self_attn.out_proj.{weight,bias}`        | `layers.{i}.self_attn.out_proj.*`      |
    | `h.layers.{i}.linear1.{weight,bias}`                   | `layers.{i}.linear1.*`                 |
    | `h.layers.{i}.linear2.{weight,bias}`                   | `layers.{i}.linear2.*`                 |
    | `h.layers.{i}.norm1.{weight,bias}`                     | `layers.{i}.norm1.*`                   |
    | `h.layers.{i}.norm2.{weight,bias}`                     | `layers.{i}.norm2.*`                   |
    | `ar_predict_layer.weight`                              | `ar_predict_layer.weight`              |

    The fused `in_proj` keeps upstream's row order (q | k | v), so it maps as is.
    """
    keys = list(sd)
    if not keys:
        raise CheckpointError("upstream s1 state dict is empty")
    prefixed = [k.startswith("model.") for k in keys]
    if any(prefixed) and not all(prefixed):
        odd = [k for k, p in zip(keys, prefixed) if not p][:5]
        raise CheckpointError(f"upstream s1 state dict mixes `model.`-prefixed and bare keys, e.g. {odd}")
    strip = len("model.") if all(prefixed) else 0

    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    layers: set[int] = set()
    for key in keys:
        name = key[strip:]
        if name in _TOP_LEVEL_MAP:
            out[_TOP_LEVEL_MAP[name]] = sd[key]
            continue
        m = _LAYER_KEY.fullmatch(name)
        if m and m.group(2) in _LAYER_MAP:
            i = int(m.group(1))
            layers.add(i)
            out[f"layers.{i}.{_LAYER_MAP[m.group(2)]}"] = sd[key]
            continue
        unknown.append(key)
    if unknown:
        raise CheckpointError(f"upstream s1 state dict has {len(unknown)} unmapped keys: {unknown[:10]}")

    n_layer = max(layers) + 1 if layers else 0
    expected = set(_TOP_LEVEL_MAP.values()) | {
        f"layers.{i}.{ours}" for i in range(n_layer) for ours in _LAYER_MAP.values()
    }
    missing = sorted(expected - set(out))
    if not layers:
        missing.append("layers.*")
    if missing:
        raise CheckpointError(f"upstream s1 state dict lacks {len(missing)} keys (ours): {missing[:10]}")
    return out
