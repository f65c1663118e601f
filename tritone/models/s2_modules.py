"""Shared building blocks of SoVITS (s2): masks, weight norm, the relative-position attention
encoder, MRTE and the reference (style) encoder.

Tensors are channels-first, `[B, C, T]`, with float masks `[B, 1, T]` (1 = valid frame), as upstream.
Attribute names follow upstream GPT-SoVITS (`attn_layers`, `norm_layers_1`, `conv_q`, `emb_rel_k`, ...)
so upstream state dicts load by an almost-identity key map (see `tritone.models.sovits`).

Every block here is padding-invariant: a row of a right-padded batch gives the same valid-region
output as that row alone (masks zero the padding before every convolution and attention).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

# ---------------------------------------------------------------------------------------------
# masks and small helpers


def sequence_mask(lengths: Tensor, max_length: int | None = None) -> Tensor:
    """[B] lengths -> [B, T] bool, True on the first `lengths[b]` positions."""
    t = int(lengths.max()) if max_length is None else max_length
    return torch.arange(t, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def length_mask(lengths: Tensor, max_length: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B] lengths -> [B, 1, T] float mask (1 = valid)."""
    return sequence_mask(lengths, max_length).unsqueeze(1).to(dtype)


def stretch_time(x: Tensor, lengths: Tensor, speed: float) -> tuple[Tensor, Tensor]:
    """Change the pace of a [B, C, T] sequence by linear interpolation, row by row.

    Row b (valid length L) becomes `floor(L / speed) + 1` frames, exactly as upstream's
    `F.interpolate(y, size=int(T / speed) + 1, mode="linear")` on that row alone
    (align_corners=False sampling). Each row only reads its own valid frames, so a padded batch
    gives the same result as rows one at a time. Returns (stretched [B, C, T'], new lengths [B]).
    """
    B, C, _ = x.shape
    new_lengths = torch.floor(lengths.double() / speed).long() + 1  # [B]
    t_out = int(new_lengths.max())
    in_len = lengths.to(torch.float32).unsqueeze(1)  # [B, 1]
    scale = in_len / new_lengths.to(torch.float32).unsqueeze(1)  # [B, 1]
    dst = torch.arange(t_out, device=x.device, dtype=torch.float32).unsqueeze(0)  # [1, T']
    src = (scale * (dst + 0.5) - 0.5).clamp(min=0.0)  # [B, T'] source position
    i0 = src.long().clamp(max=lengths.unsqueeze(1) - 1)  # floor, within the row
    i1 = torch.minimum(i0 + 1, lengths.unsqueeze(1) - 1)
    w1 = (src - i0.to(src.dtype)).clamp(0.0, 1.0).unsqueeze(1)  # [B, 1, T']
    x0 = x.gather(2, i0.unsqueeze(1).expand(B, C, t_out))
    x1 = x.gather(2, i1.unsqueeze(1).expand(B, C, t_out))
    out = x0 * (1.0 - w1) + x1 * w1
    return out * length_mask(new_lengths, t_out, x.dtype), new_lengths


def rand_slice_segments(
    x: Tensor, lengths: Tensor, segment: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Pick one random window of `segment` frames per row of x [B, C, T] (inside its valid part).

    Returns (slices [B, C, segment], start frames [B]). Rows shorter than `segment` start at 0
    and are zero-padded past their end.
    """
    B, C, T = x.shape
    max_start = (lengths - segment + 1).clamp(min=1).to(torch.float32)
    device = x.device if generator is None else generator.device
    u = torch.rand(B, generator=generator, device=device).to(x.device)
    starts = (u * max_start).long()
    idx = starts.unsqueeze(1) + torch.arange(segment, device=x.device).unsqueeze(0)  # [B, segment]
    valid = idx < T
    gathered = x.gather(2, idx.clamp(max=T - 1).unsqueeze(1).expand(B, C, segment))
    return gathered * valid.unsqueeze(1).to(x.dtype), starts


# ---------------------------------------------------------------------------------------------
# weight norm (torch parametrizations; upstream's `weight_g`/`weight_v` map onto
# `parametrizations.weight.original0`/`original1`)


M = TypeVar("M", bound=nn.Module)


def weight_norm(module: M) -> M:
    """Weight-normalise `module.weight` (norm over all dims but 0, as upstream)."""
    return parametrizations.weight_norm(module, name="weight", dim=0)


def _is_weight_norm(module: nn.Module) -> bool:
    if not parametrize.is_parametrized(module, "weight"):
        return False
    plist = module.parametrizations["weight"]  # type: ignore[index]
    return any(type(p).__name__ == "_WeightNorm" for p in plist)


def remove_weight_norm(root: nn.Module) -> int:
    """Fold every weight-norm parametrization under `root` into a plain `weight`; returns how many.

    Outputs are unchanged (up to float rounding); use before inference/export.
    """
    n = 0
    for module in list(root.modules()):
        if _is_weight_norm(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            n += 1
    return n


def folded_state_dict(root: nn.Module) -> dict[str, Tensor]:
    """`root`'s state dict with every weight-norm pair folded into a plain `weight`, as
    `remove_weight_norm` would leave it, without touching `root`. (A deep copy cannot stand in: it
    shares the parametrized class with the original, so folding the copy breaks the original.)"""
    state = root.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("." + WN_V):
            continue
        if key.endswith("." + WN_G):
            prefix = key[: -len(WN_G)]
            out[prefix + "weight"] = torch._weight_norm(state[prefix + WN_V], value, 0).detach()
        else:
            out[key] = value
    return out


def weight_norm_prefixes(root: nn.Module) -> list[str]:
    """Dotted names of the modules under `root` whose `weight` is weight-normalised."""
    return [name for name, m in root.named_modules() if _is_weight_norm(m)]


WN_G, WN_V = "parametrizations.weight.original0", "parametrizations.weight.original1"


def normalise_weight_norm_keys(
    sd: Mapping[str, Tensor], wn_prefixes: Sequence[str], where: str = "state dict"
) -> dict[str, Tensor]:
    """Rewrite weight-norm tensors to torch's parametrization keys for the modules in `wn_prefixes`.

    Accepts, per module, old-style `weight_g`/`weight_v`, parametrization `original0`/`original1`,
    or a plain folded `weight` (decomposed as g = ||w|| over all dims but 0, v = w).
    """
    out: dict[str, Tensor] = {}
    wn = set(wn_prefixes)
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in ("weight_g", "weight_v"):
            if prefix not in wn:
                raise KeyError(f"{where}: {key} is weight-normalised upstream but not here")
            out[f"{prefix}.{WN_G if leaf == 'weight_g' else WN_V}"] = value
        elif leaf == "weight" and prefix in wn:
            dims = list(range(1, value.dim()))
            out[f"{prefix}.{WN_G}"] = value.float().norm(dim=dims, keepdim=True).to(value.dtype)
            out[f"{prefix}.{WN_V}"] = value
        else:
            out[key] = value
    return out


def check_state_dict(sd: Mapping[str, Tensor], model: nn.Module, where: str) -> None:
    """Strict comparison against `model`'s keys and shapes; raises KeyError listing every problem."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unknown = sorted(set(sd) - set(expected))
    shapes = [
        f"{k}: got {tuple(sd[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in sorted(set(sd) & set(expected))
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(
            f"missing keys ({len(missing)}): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}"
        )
    if unknown:
        problems.append(
            f"unknown keys ({len(unknown)}): {', '.join(unknown[:12])}{' ...' if len(unknown) > 12 else ''}"
        )
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
    if problems:
        raise KeyError(f"{where} do not match the model: " + " | ".join(problems))


def init_normal_(module: nn.Module, std: float = 0.01) -> None:
    """N(0, std) weights on every conv under `module` (HiFi-GAN's generator init). Call it before
    `weight_norm`, so the normalised weight starts from it."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
            with torch.no_grad():
                m.weight.normal_(0.0, std)


# ---------------------------------------------------------------------------------------------
# attention encoder


class LayerNorm(nn.Module):
    """LayerNorm over channels of a [B, C, T] tensor (parameters `gamma`, `beta`)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.transpose(1, -1), self.gamma.shape, self.gamma, self.beta, self.eps)
        return y.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention on [B, C, T] sequences with 1x1-conv projections.

    With `window_size` w (self-attention only), learned relative-position embeddings (one table
    shared by all heads, `emb_rel_k`/`emb_rel_v` [1, 2w+1, C/h]) add `q . e_k[j-i]` to the logits and
    `sum_j p_ij e_v[j-i]` to the output for offsets |j - i| <= w; farther offsets add nothing.
    Masked logits are set to -1e4 (not -inf) so fully padded query rows stay finite.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        n_heads: int,
        p_dropout: float = 0.0,
        window_size: int | None = None,
    ) -> None:
        super().__init__()
        assert channels % n_heads == 0, "channels must divide into heads"
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        if window_size is not None:
            std = self.k_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def _heads(self, x: Tensor) -> Tensor:
        B, _, T = x.shape  # -> [B, h, T, dk]
        return x.view(B, self.n_heads, self.k_channels, T).transpose(2, 3)

    def forward(self, x: Tensor, c: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x: queries [B, C, Tq]; c: keys/values [B, C, Tk]; attn_mask [B, 1, Tq, Tk] (1 = attend)."""
        return self.forward_with_weights(x, c, attn_mask)[0]

    def forward_with_weights(
        self, x: Tensor, c: Tensor, attn_mask: Tensor | None = None, bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """`forward`, and the attention weights [B, h, Tq, Tk] (before dropout). `bias`
        [B, h, Tq, Tk] is added to the logits before the mask."""
        B, C, Tq = x.shape
        q = self._heads(self.conv_q(x)) / math.sqrt(self.k_channels)  # [B, h, Tq, dk]
        k = self._heads(self.conv_k(c))  # [B, h, Tk, dk]
        v = self._heads(self.conv_v(c))
        scores = q @ k.transpose(-2, -1)  # [B, h, Tq, Tk]
        if self.window_size is not None:
            assert Tq == k.size(2), "relative attention is self-attention only"
            w = self.window_size
            pos = torch.arange(Tq, device=x.device)
            # logits: q_i . e_k[j - i + w] on the band |j - i| <= w
            rel_logits = q @ self.emb_rel_k.transpose(-2, -1)  # [B, h, T, 2w+1]
            offset = pos.unsqueeze(0) - pos.unsqueeze(1)  # [T, T]: j - i
            band = (offset.abs() <= w).to(scores.dtype)
            idx = (offset + w).clamp(0, 2 * w).expand(B, self.n_heads, Tq, Tq)
            scores = scores + rel_logits.gather(3, idx) * band
        if bias is not None:
            scores = scores + bias
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, -1e4)
        weights = F.softmax(scores, dim=-1)  # [B, h, Tq, Tk]
        p = self.drop(weights)
        out = p @ v  # [B, h, Tq, dk]
        if self.window_size is not None:
            # p rearranged by offset: p_rel[i, m] = p[i, i + m - w]
            m = torch.arange(2 * w + 1, device=x.device)
            col = pos.unsqueeze(1) + m.unsqueeze(0) - w  # [T, 2w+1]
            inside = ((col >= 0) & (col < Tq)).to(p.dtype)
            idx_v = col.clamp(0, Tq - 1).expand(B, self.n_heads, Tq, 2 * w + 1)
            out = out + (p.gather(3, idx_v) * inside) @ self.emb_rel_v
        out = out.transpose(2, 3).reshape(B, C, Tq)
        return self.conv_o(out), weights


class FFN(nn.Module):
    """Position-wise conv feed-forward: conv(k) -> ReLU -> conv(k), masked in and out."""

    def __init__(
        self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int, p_dropout: float
    ) -> None:
        super().__init__()
        assert kernel_size % 2 == 1, "odd kernel keeps 'same' padding symmetric"
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: Tensor, x_mask: Tensor) -> Tensor:
        x = self.drop(torch.relu(self.conv_1(x * x_mask)))
        return self.conv_2(x * x_mask) * x_mask


class AttentionEncoder(nn.Module):
    """Post-LN transformer encoder with windowed relative attention (upstream `attentions.Encoder`)."""

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        p_dropout: float = 0.0,
        window_size: int = 4,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList(
            MultiHeadAttention(hidden_channels, hidden_channels, n_heads, p_dropout, window_size)
            for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(LayerNorm(hidden_channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FFN(hidden_channels, hidden_channels, filter_channels, kernel_size, p_dropout)
            for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(LayerNorm(hidden_channels) for _ in range(n_layers))

    def forward(self, x: Tensor, x_mask: Tensor) -> Tensor:
        """x [B, C, T], x_mask [B, 1, T] -> [B, C, T]."""
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [B, 1, T, T]
        x = x * x_mask
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2
        ):
            x = norm1(x + self.drop(attn(x, x, attn_mask)))
            x = norm2(x + self.drop(ffn(x, x_mask)))
        return x * x_mask


MRTE_LOOKUPS = ("content", "content+place", "place", "aligned")
PLACE_LOOKUPS = ("content+place", "place")


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content frames (queries) attend to phones (keys/values),
    then the global speaker embedding is added, all in a wider `hidden` space.

    ssl_enc [B, C, T] + text [B, C, N] + ge [B, hidden, 1] -> [B, out, T]. Needs ge's width == hidden.

    `lookup` says how a frame finds its phones. `content` (upstream): by what the frame sounds
    like, so a frame whose content is wrong cannot find its phone, and which phones a frame
    attends to can itself carry the content. `content+place` adds a place prior to each head's
    logits, -s_h * d^2, d the distance in phones between the phone and where the frame's fraction
    of the way through the content falls among the phones (s_h > 0 learned per head, from 0.1).
    `place`: by that prior alone (the queries see no content), so what MRTE adds is the phones
    at the frame's place and nothing of the content. `aligned`: each frame is given its phone
    (`phone_index`, from a forced alignment: tritone/models/aligner.py) and reads that phone
    alone, again with no content in the queries.
    """

    def __init__(
        self,
        content_channels: int = 192,
        hidden: int = 512,
        out_channels: int = 192,
        n_heads: int = 4,
        lookup: str = "content",
    ) -> None:
        super().__init__()
        if lookup not in MRTE_LOOKUPS:
            raise ValueError(f"MRTE lookup must be one of {MRTE_LOOKUPS}, not {lookup!r}")
        self.lookup = lookup
        self.cross_attention = MultiHeadAttention(hidden, hidden, n_heads)
        self.c_pre = nn.Conv1d(content_channels, hidden, 1)
        self.text_pre = nn.Conv1d(content_channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, out_channels, 1)
        # a fixed start (not random): a bundle trained without it gains it by loading as is
        self.position_log_strength = (
            nn.Parameter(torch.full((n_heads,), math.log(0.1))) if lookup in PLACE_LOOKUPS else None
        )

    def forward(
        self,
        ssl_enc: Tensor,
        ssl_mask: Tensor,
        text: Tensor,
        text_mask: Tensor,
        ge: Tensor,
        phone_index: Tensor | None = None,
    ) -> Tensor:
        return self.forward_with_attention(ssl_enc, ssl_mask, text, text_mask, ge, phone_index=phone_index)[0]

    def lookup_bias(self, ssl_mask: Tensor, text_mask: Tensor, phone_index: Tensor | None) -> Tensor | None:
        """The logits' bias [B, heads or 1, T, N] of this lookup, or None (`content`)."""
        if self.lookup != "aligned":
            return self.position_bias(ssl_mask, text_mask)
        if phone_index is None:
            raise ValueError("MRTE's aligned lookup needs each content frame's phone (phone_index)")
        if phone_index.shape != (ssl_mask.size(0), ssl_mask.size(2)):
            raise ValueError(
                f"phone_index must be [B, T] = {(ssl_mask.size(0), ssl_mask.size(2))}, got {tuple(phone_index.shape)}"
            )
        n = torch.arange(text_mask.size(2), device=text_mask.device)
        own = phone_index.clamp(0, text_mask.size(2) - 1).unsqueeze(2) == n.view(1, 1, -1)  # [B, T, N]
        return torch.where(own, 0.0, -1e4).to(ssl_mask.dtype).unsqueeze(1)

    def position_bias(self, ssl_mask: Tensor, text_mask: Tensor) -> Tensor | None:
        """ssl_mask [B, 1, T], text_mask [B, 1, N] -> the place prior [B, heads, T, N], or None."""
        if self.position_log_strength is None:
            return None
        frames = ssl_mask.sum(2).clamp(min=1.0)  # [B, 1]
        phones = text_mask.sum(2).clamp(min=1.0)  # [B, 1]
        t = torch.arange(ssl_mask.size(2), device=ssl_mask.device, dtype=ssl_mask.dtype)
        n = torch.arange(text_mask.size(2), device=text_mask.device, dtype=text_mask.dtype)
        where = (t.unsqueeze(0) + 0.5) / frames * phones  # [B, T]: the frame's place, in phones
        d = where.unsqueeze(2) - (n + 0.5).view(1, 1, -1)  # [B, T, N]
        strength = self.position_log_strength.exp().to(d.dtype).view(1, -1, 1, 1)
        return -strength * d.square().unsqueeze(1)

    def forward_with_attention(
        self,
        ssl_enc: Tensor,
        ssl_mask: Tensor,
        text: Tensor,
        text_mask: Tensor,
        ge: Tensor,
        keep_content: Tensor | None = None,
        phone_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """`forward`, and each content frame's attention over the phones [B, heads, T, N].
        `keep_content` [B] (training only) scales each row's residual content path: a row at 0
        passes on only what its frames looked up in the phones, and the speaker. `phone_index`
        [B, T] long: each frame's phone, for the `aligned` lookup (ignored by the others)."""
        attn_mask = text_mask.unsqueeze(2) * ssl_mask.unsqueeze(-1)  # [B, 1, T, N]
        c = self.c_pre(ssl_enc * ssl_mask)  # [B, hidden, T]
        t = self.text_pre(text * text_mask)  # [B, hidden, N]
        # place or aligned: constant queries (conv_q's bias) leave a per-phone salience and the bias
        queries = c * ssl_mask if self.lookup in ("content", "content+place") else torch.zeros_like(c)
        attended, weights = self.cross_attention.forward_with_weights(
            queries, t * text_mask, attn_mask, self.lookup_bias(ssl_mask, text_mask, phone_index)
        )
        residual = c if keep_content is None else c * keep_content.view(-1, 1, 1).to(c.dtype)
        x = attended + residual + ge
        return self.c_post(x * ssl_mask), weights


# ---------------------------------------------------------------------------------------------
# reference encoder (upstream `MelStyleEncoder`, applied to a linear spectrogram)


class GLUConv(nn.Module):
    """Residual gated conv: x + dropout(GLU(conv(x))) on [B, C, T]."""

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(F.glu(self.conv(x), dim=1))


class StyleAttention(nn.Module):
    """Self-attention with a residual, Linear projections on [B, T, C] (upstream's MelStyleEncoder MHA).

    Logits are scaled by 1/sqrt(C) (the model width, not the head width), as upstream.
    """

    def __init__(self, n_heads: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.scale = d_model**-0.5
        self.w_qs = nn.Linear(d_model, n_heads * self.d_head)
        self.w_ks = nn.Linear(d_model, n_heads * self.d_head)
        self.w_vs = nn.Linear(d_model, n_heads * self.d_head)
        self.fc = nn.Linear(n_heads * self.d_head, d_model)
        self.attn_drop = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding: Tensor | None) -> Tensor:
        """x [B, T, C]; key_padding [B, T] bool (True = padded key) -> [B, T, C]."""
        B, T, _ = x.shape

        def split(t: Tensor) -> Tensor:  # [B, T, h*d] -> [B, h, T, d]
            return t.view(B, T, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.w_qs(x)), split(self.w_ks(x)), split(self.w_vs(x))
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, h, T, T]
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        p = self.attn_drop(F.softmax(scores, dim=-1))
        out = (p @ v).transpose(1, 2).reshape(B, T, -1)
        return self.dropout(self.fc(out)) + x


class MelStyleEncoder(nn.Module):
    """Reference encoder: spectrogram [B, n_bins, T] -> global embedding ge [B, out_dim, 1].

    Per-frame MLP (`spectral`), two gated convs (`temporal`), self-attention, a Linear (`fc`),
    then a masked average over time. Padded frames are zeroed before each conv so a padded batch
    equals its rows encoded alone (a no-op for unpadded input, where it matches upstream exactly).
    """

    def __init__(
        self,
        n_bins: int,
        hidden: int = 128,
        out_dim: int = 512,
        kernel_size: int = 5,
        n_heads: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.spectral = nn.Sequential(
            nn.Linear(n_bins, hidden),
            nn.Mish(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Dropout(dropout),
        )
        self.temporal = nn.ModuleList(GLUConv(hidden, kernel_size, dropout) for _ in range(2))
        self.slf_attn = StyleAttention(n_heads, hidden, dropout)
        self.fc = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, n_bins, T] (already zeroed past each length), mask [B, 1, T] -> [B, out_dim, 1]."""
        valid = mask.squeeze(1).to(x.dtype) if mask is not None else torch.ones_like(x[:, 0])  # [B, T]
        h = self.spectral(x.transpose(1, 2))  # [B, T, H]
        h = h.transpose(1, 2)  # [B, H, T]
        for block in self.temporal:
            h = block(h * valid.unsqueeze(1))
        h = h.transpose(1, 2) * valid.unsqueeze(-1)  # [B, T, H]
        h = self.slf_attn(h, key_padding=None if mask is None else valid == 0)
        h = self.fc(h)  # [B, T, out]
        pooled = (h * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True)  # [B, out]
        return pooled.unsqueeze(-1)
