"""SoVITS "s2" (GPT-SoVITS v1/v2), content path and flow: semantic codes + phones + a reference
spectrogram -> the latent `z` that the vocoder (`tritone.models.vocoder`) turns into 32 kHz audio.

This is upstream's `SynthesizerTrn` without its generator (`dec`, which lives in vocoder.py):

    ssl [B, 768, T50] --ssl_proj (k=2, s=2)--> [B, 768, T25] --quantizer--> codes [B, T25]
    codes --codebook--> [B, 768, T25] --x2 nearest--> [B, 768, T50]
          --enc_p (TextEncoder: ssl_proj, encoder_ssl, text_embedding + encoder_text, MRTE(+ge),
                   encoder2, proj)--> m, logs [B, 192, T50]     (speed: linear time-stretch)
          z_p = m + eps * exp(logs) * noise_scale
          --flow (reverse, conditioned on ge)--> z [B, 192, T50]
    refer spectrogram [B, 1025, Tr] --ref_enc (v2: first 704 bins)--> ge [B, 512, 1]

`enc_q` (PosteriorEncoder over the target's linear spectrogram) exists only for training
(`forward_train`): inference and export never touch it, and a model built with
`posterior=False` (or from released upstream weights, which strip it) has none.

Batches of different lengths are supported throughout: every block masks its padding, so a
padded row decodes exactly as it would alone (given the same noise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritone.models.s2_flow import PosteriorEncoder, ResidualCouplingBlock
from tritone.models.s2_modules import (
    MRTE,
    MRTE_LOOKUPS,
    AttentionEncoder,
    MelStyleEncoder,
    check_state_dict,
    length_mask,
    normalise_weight_norm_keys,
    rand_slice_segments,
    remove_weight_norm,
    stretch_time,
    weight_norm_prefixes,
)
from tritone.models.s2_quantizer import ResidualVectorQuantizer
from tritone.models.vocoder import Vocoder, VocoderConfig

N_SYMBOLS = {"v1": 322, "v2": 732}
REF_BINS_V2 = 704  # v2 reads only the first 704 of 1025 linear-spectrogram bins (up to ~11 kHz)


@dataclass
class SoVITSConfig:
    """Sizes of the s2 content path. Defaults are upstream v2 (`configs/s2.json`)."""

    version: str = "v2"
    n_symbols: int = 732  # phone vocabulary: v1 322, v2 732
    # audio / spectrogram (32 kHz, 50 Hz frames)
    sampling_rate: int = 32_000
    filter_length: int = 2048  # n_fft
    hop_length: int = 640
    win_length: int = 2048
    spec_channels: int = 1025  # linear-spectrogram bins, n_fft // 2 + 1 (enc_q input)
    ref_spec_channels: int = 704  # bins the reference encoder reads (v1: all 1025)
    # semantic path
    ssl_dim: int = 768
    semantic_frame_rate: str = "25hz"  # "25hz": ssl_proj k=2 stride 2; "50hz": k=1
    codebook_size: int = 1024
    codebook_decay: float = 0.99
    kmeans_iters: int = 50
    dead_code_threshold: int = 2
    freeze_quantizer: bool = True  # forward_train: ssl_proj + quantizer frozen (as upstream fine-tuning)
    # text encoder
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6  # encoder_text; encoder_ssl and encoder2 get n_layers // 2
    kernel_size: int = 3
    p_dropout: float = 0.1
    window_size: int = 4
    mrte_channels: int = 512
    mrte_heads: int = 4
    mrte_lookup: str = "content"  # how MRTE's frames find their phones (s2_modules.MRTE_LOOKUPS)
    # reference encoder
    gin_channels: int = 512
    style_hidden: int = 128
    style_heads: int = 2
    style_kernel_size: int = 5
    style_dropout: float = 0.1
    # flow and posterior encoder
    n_flows: int = 4
    flow_kernel_size: int = 5
    flow_dilation_rate: int = 1
    flow_n_layers: int = 4
    posterior_kernel_size: int = 5
    posterior_dilation_rate: int = 1
    posterior_n_layers: int = 16
    segment_frames: int = 32  # training slice for the vocoder: 20480 samples / 640

    def __post_init__(self) -> None:
        if self.version not in N_SYMBOLS:
            raise ValueError(f"unsupported SoVITS version {self.version!r} (v1, v2)")
        if self.semantic_frame_rate not in ("25hz", "50hz"):
            raise ValueError(
                f"semantic_frame_rate must be '25hz' or '50hz', got {self.semantic_frame_rate!r}"
            )
        if self.gin_channels != self.mrte_channels:
            raise ValueError("MRTE adds ge in its hidden space: gin_channels must equal mrte_channels")
        if self.ref_spec_channels > self.spec_channels:
            raise ValueError("ref_spec_channels cannot exceed spec_channels")
        if self.mrte_lookup not in MRTE_LOOKUPS:
            raise ValueError(f"mrte_lookup must be one of {MRTE_LOOKUPS}, not {self.mrte_lookup!r}")

    @property
    def semantic_stride(self) -> int:
        """SSL frames per semantic token (2 at 25 Hz)."""
        return 2 if self.semantic_frame_rate == "25hz" else 1

    @classmethod
    def v1(cls) -> SoVITSConfig:
        return cls(version="v1", n_symbols=N_SYMBOLS["v1"], ref_spec_channels=1025)

    @classmethod
    def v2(cls) -> SoVITSConfig:
        return cls(version="v2", n_symbols=N_SYMBOLS["v2"], ref_spec_channels=REF_BINS_V2)

    @classmethod
    def tiny(cls) -> SoVITSConfig:
        """Same structure as v2, small widths/depths: for tests."""
        return cls(
            ssl_dim=32,
            codebook_size=64,
            kmeans_iters=5,
            inter_channels=8,
            hidden_channels=16,
            filter_channels=32,
            n_heads=2,
            n_layers=2,
            mrte_channels=32,
            mrte_heads=2,
            gin_channels=32,
            style_hidden=16,
            n_flows=2,
            flow_n_layers=2,
            posterior_n_layers=2,
            segment_frames=8,
        )

    @classmethod
    def from_upstream(cls, hps: Mapping[str, Any], version: str | None = None) -> SoVITSConfig:
        """From an upstream s2 `config` dict (`{"data": ..., "model": ..., "train": ...}`).

        `version` overrides `hps["model"]["version"]` (upstream infers it from the weights, see
        `sovits_version_from_state_dict`); v1 when neither says.
        """
        data, model, train = hps.get("data", {}), hps.get("model", {}), hps.get("train", {})
        version = version or model.get("version") or hps.get("version") or "v1"
        if version not in N_SYMBOLS:
            raise ValueError(f"unsupported SoVITS version {version!r}: only v1 and v2 load")
        base = cls.v1() if version == "v1" else cls.v2()
        kw: dict[str, Any] = {}
        for name in (
            "inter_channels",
            "hidden_channels",
            "filter_channels",
            "n_heads",
            "n_layers",
            "kernel_size",
            "p_dropout",
            "gin_channels",
            "semantic_frame_rate",
            "freeze_quantizer",
        ):
            if name in model:
                kw[name] = model[name]
        for name in ("sampling_rate", "filter_length", "hop_length", "win_length"):
            if name in data:
                kw[name] = data[name]
        n_fft = int(kw.get("filter_length", base.filter_length))
        kw["spec_channels"] = n_fft // 2 + 1
        kw["ref_spec_channels"] = kw["spec_channels"] if version == "v1" else REF_BINS_V2
        if "segment_size" in train:
            kw["segment_frames"] = int(train["segment_size"]) // int(kw.get("hop_length", base.hop_length))
        if "gin_channels" in kw:
            kw["mrte_channels"] = kw["gin_channels"]
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: getattr(base, k) for k in known}, **kw})


def sovits_version_from_state_dict(sd: Mapping[str, Tensor]) -> str:
    """Upstream's rule: 322 phone embeddings -> v1, otherwise v2 (v2Pro has `sv_emb`)."""
    if any(k.startswith(("sv_emb.", "ge_to512.", "prelu.")) for k in sd):
        raise ValueError("v2Pro/v2ProPlus SoVITS weights are not supported (v1, v2 only)")
    emb = sd.get("enc_p.text_embedding.weight")
    if emb is None:
        raise ValueError("not a v1/v2 SoVITS state dict: no enc_p.text_embedding.weight")
    return "v1" if emb.shape[0] == N_SYMBOLS["v1"] else "v2"


class TextEncoder(nn.Module):
    """Prior encoder `enc_p`: 50 Hz content + phones + ge -> prior stats (m, logs)."""

    def __init__(self, cfg: SoVITSConfig) -> None:
        super().__init__()
        self.out_channels = cfg.inter_channels
        h, f, nh, k, p, w = (
            cfg.hidden_channels,
            cfg.filter_channels,
            cfg.n_heads,
            cfg.kernel_size,
            cfg.p_dropout,
            cfg.window_size,
        )
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, h, 1)
        self.encoder_ssl = AttentionEncoder(h, f, nh, cfg.n_layers // 2, k, p, w)
        self.text_embedding = nn.Embedding(cfg.n_symbols, h)
        self.encoder_text = AttentionEncoder(h, f, nh, cfg.n_layers, k, p, w)
        self.mrte = MRTE(h, cfg.mrte_channels, h, cfg.mrte_heads, cfg.mrte_lookup)
        self.encoder2 = AttentionEncoder(h, f, nh, cfg.n_layers // 2, k, p, w)
        self.proj = nn.Conv1d(h, 2 * cfg.inter_channels, 1)

    def forward(
        self,
        y: Tensor,
        y_lengths: Tensor,
        text: Tensor,
        text_lengths: Tensor,
        ge: Tensor,
        speed: float = 1.0,
        text_attention: list[Tensor] | None = None,
        keep_content: Tensor | None = None,
        phone_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """y [B, ssl_dim, T], text [B, N] ids, ge [B, gin, 1] -> m, logs [B, inter, T'], mask [B, 1, T'],
        lengths [B] (T' = T unless speed != 1: then each row becomes floor(len / speed) + 1 frames).
        A `text_attention` list receives MRTE's attention of the content frames over the phones
        [B, heads, T, N] (training reads it; inference passes none). `keep_content` [B]: MRTE's
        (training only). `phone_index` [B, T]: each frame's phone, for MRTE's `aligned` lookup."""
        y_mask = length_mask(y_lengths, y.size(2), y.dtype)
        y = self.ssl_proj(y * y_mask) * y_mask
        y = self.encoder_ssl(y * y_mask, y_mask)
        text_mask = length_mask(text_lengths, text.size(1), y.dtype)
        t = self.text_embedding(text).transpose(1, 2)  # [B, H, N]
        t = self.encoder_text(t * text_mask, text_mask)
        y, weights = self.mrte.forward_with_attention(y, y_mask, t, text_mask, ge, keep_content, phone_index)
        if text_attention is not None:
            text_attention.append(weights)
        y = self.encoder2(y * y_mask, y_mask)
        lengths = y_lengths
        if speed != 1.0:
            y, lengths = stretch_time(y, y_lengths, speed)
            y_mask = length_mask(lengths, y.size(2), y.dtype)
        stats = self.proj(y) * y_mask
        m, logs = stats[:, : self.out_channels], stats[:, self.out_channels :]
        return m, logs, y_mask, lengths


def corrupt_content(
    q: Tensor,
    quantizer: ResidualVectorQuantizer,
    share: float,
    span: int = 4,
    generator: torch.Generator | None = None,
) -> Tensor:
    """q [B, D, T] quantized content -> the same with random spans of `span` frames (about
    `share` of each row; spans may overlap) replaced by uniformly drawn entries of `quantizer`'s
    first codebook: content that is wrong where a GPT's tokens would be."""
    B, _, T = q.shape
    starts = max(1, round(share * T / span))
    first = torch.randint(-span + 1, T, (B, starts), generator=generator, device=q.device)  # [B, S]
    frames = first.unsqueeze(2) + torch.arange(span, device=q.device)  # [B, S, span]
    hit = torch.zeros(B, T + 2 * span, dtype=torch.bool, device=q.device)
    hit.scatter_(1, (frames + span).view(B, -1), True)
    hit = hit[:, span : span + T]  # [B, T]
    bins = quantizer.codebooks[0].codebook_size
    noise = torch.randint(0, bins, (1, B, T), generator=generator, device=q.device)
    return torch.where(hit.unsqueeze(1), quantizer.decode(noise).to(q.dtype), q)


@dataclass
class S2TrainOutput:
    """What the VITS + GAN losses need from one training forward (T = spectrogram frames).

    KL loss: `kl(z_p, logs_q, m_p, logs_p, z_mask)`; the generator runs on `z_slice` with `ge`, and
    its target is the waveform from sample `ids_slice * hop_length`, `segment_frames * hop_length` long.
    """

    z: Tensor  # [B, inter, T] posterior sample from enc_q
    z_p: Tensor  # [B, inter, T] flow(z): the posterior sample mapped to prior space
    m_p: Tensor  # [B, inter, T] prior mean (enc_p)
    logs_p: Tensor  # [B, inter, T] prior log-std
    m_q: Tensor  # [B, inter, T] posterior mean
    logs_q: Tensor  # [B, inter, T] posterior log-std
    z_mask: Tensor  # [B, 1, T]
    commit_loss: Tensor  # scalar quantizer commitment loss (no gradient when the quantizer is frozen)
    z_slice: Tensor  # [B, inter, segment_frames] vocoder input segment
    ids_slice: Tensor  # [B] first frame of each segment
    ge: Tensor  # [B, gin, 1] global reference embedding (of the target itself)
    quantized: Tensor  # [B, ssl_dim, T] quantized content at 50 Hz
    text_attention: Tensor  # [B, heads, T, N] MRTE: each content frame's attention over the phones


class SoVITS(nn.Module):
    """s2 content path + flow. Build with `posterior=False` for inference/export (no enc_q)."""

    def __init__(self, config: SoVITSConfig, posterior: bool = True) -> None:
        super().__init__()
        cfg = self.config = config
        s = cfg.semantic_stride
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, s, stride=s)
        self.quantizer = ResidualVectorQuantizer(
            cfg.ssl_dim,
            n_q=1,
            bins=cfg.codebook_size,
            decay=cfg.codebook_decay,
            kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.dead_code_threshold,
        )
        self.enc_p = TextEncoder(cfg)
        self.ref_enc = MelStyleEncoder(
            cfg.ref_spec_channels,
            hidden=cfg.style_hidden,
            out_dim=cfg.gin_channels,
            kernel_size=cfg.style_kernel_size,
            n_heads=cfg.style_heads,
            dropout=cfg.style_dropout,
        )
        self.flow = ResidualCouplingBlock(
            cfg.inter_channels,
            cfg.hidden_channels,
            cfg.flow_kernel_size,
            cfg.flow_dilation_rate,
            cfg.flow_n_layers,
            n_flows=cfg.n_flows,
            gin_channels=cfg.gin_channels,
        )
        self.enc_q: PosteriorEncoder | None = None
        if posterior:
            self.enc_q = PosteriorEncoder(
                cfg.spec_channels,
                cfg.inter_channels,
                cfg.hidden_channels,
                cfg.posterior_kernel_size,
                cfg.posterior_dilation_rate,
                cfg.posterior_n_layers,
                gin_channels=cfg.gin_channels,
            )

    # -- inference ---------------------------------------------------------------------------

    @torch.no_grad()
    def extract_latent(self, ssl: Tensor) -> Tensor:
        """SSL features [B, ssl_dim, T50] -> semantic codes [B, T50 // 2] (long).

        Rows padded past their length get codes there too; keep the first `len // 2`.
        """
        return self.quantizer.encode(self.ssl_proj(ssl))[0]

    def ref_embedding(self, refer_spec: Tensor, refer_lengths: Tensor | None = None) -> Tensor:
        """Linear spectrogram of the reference [B, spec_channels, T] (v2 keeps the first 704 bins
        itself) -> global embedding ge [B, gin, 1]. Optional lengths [B] for padded batches."""
        if refer_spec.size(1) < self.config.ref_spec_channels:
            raise ValueError(
                f"reference spectrogram has {refer_spec.size(1)} bins, need >= {self.config.ref_spec_channels}"
            )
        if refer_lengths is None:
            refer_lengths = torch.full(
                (refer_spec.size(0),), refer_spec.size(2), dtype=torch.long, device=refer_spec.device
            )
        mask = length_mask(refer_lengths, refer_spec.size(2), refer_spec.dtype)
        return self.ref_enc(refer_spec[:, : self.config.ref_spec_channels] * mask, mask)

    def _content(self, codes: Tensor) -> Tensor:
        """codes [n_q, B, T25] -> quantized content at SSL rate [B, ssl_dim, T25 * stride]."""
        return self._to_ssl_rate(self.quantizer.decode(codes))

    def _to_ssl_rate(self, q: Tensor) -> Tensor:
        """[B, ssl_dim, T25] -> [B, ssl_dim, T25 * stride] (each vector repeated)."""
        if self.config.semantic_stride > 1:
            q = F.interpolate(q, size=q.size(2) * self.config.semantic_stride, mode="nearest")
        return q

    @torch.no_grad()
    def decode_latent(
        self,
        codes: Tensor,
        code_lens: Tensor,
        phones: Tensor,
        phone_lens: Tensor,
        ge: Tensor,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        noise: Tensor | None = None,
        phone_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Semantic codes + phones + ge -> latent z [B, inter, T'] and its mask [B, 1, T'].

        codes [B, T25] long, code_lens [B]; phones [B, N] long, phone_lens [B]; ge [B or 1, gin, 1].
        T' = 2 * T25 at speed 1; otherwise each row becomes floor(2 * len / speed) + 1 frames.
        z_p = m + eps * exp(logs) * noise_scale, eps ~ N(0, 1) drawn, in this order of preference,
        from `noise` (given as [B, inter, T']), from per-row `generator`s (a sequence of B: each row's
        eps depends only on its own generator and length, so it does not change with the batch),
        from one `generator` for the whole [B, inter, T'] draw, or from torch's global RNG (one
        `randn` of that shape, as upstream's `randn_like`). Then the flow runs in reverse.
        `phone_index` [B, 2 * T25]: each content frame's phone, which MRTE's `aligned` lookup needs.
        """
        q = self.quantizer.decode(codes.unsqueeze(0))  # [B, ssl_dim, T25]
        return self.decode_content(
            q,
            code_lens,
            phones,
            phone_lens,
            ge,
            noise_scale,
            speed,
            generator,
            noise,
            phone_index=phone_index,
        )

    @torch.no_grad()
    def decode_content(
        self,
        content: Tensor,
        content_lens: Tensor,
        phones: Tensor,
        phone_lens: Tensor,
        ge: Tensor,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        noise: Tensor | None = None,
        keep_content: Tensor | None = None,
        phone_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """`decode_latent` from content vectors [B, ssl_dim, T25] instead of codes: the codebook's
        vectors, or any other quantisation of `ssl_proj`'s output (the resynthesis check compares
        them). content_lens [B]; `keep_content` [B] as `TextEncoder.forward` (0: the prior hears
        the content only through the phones its frames look up); the rest as `decode_latent`."""
        content_lens = content_lens.to(content.device)
        q = self._to_ssl_rate(content)
        y_lens = content_lens * self.config.semantic_stride
        m, logs, y_mask, lengths = self.enc_p(
            q,
            y_lens,
            phones,
            phone_lens.to(phones.device),
            ge,
            speed,
            keep_content=keep_content,
            phone_index=phone_index,
        )
        eps = self._noise(m, lengths, generator, noise)
        z_p = (m + eps * torch.exp(logs) * noise_scale) * y_mask
        z = self.flow(z_p, y_mask, g=ge, reverse=True)
        return z * y_mask, y_mask

    @staticmethod
    def _noise(
        m: Tensor,
        lengths: Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        noise: Tensor | None,
    ) -> Tensor:
        if noise is not None:
            if noise.shape != m.shape:
                raise ValueError(f"noise must have shape {tuple(m.shape)}, got {tuple(noise.shape)}")
            return noise.to(m)
        if generator is None or isinstance(generator, torch.Generator):
            dev = m.device if generator is None else generator.device
            return torch.randn(m.shape, generator=generator, dtype=m.dtype, device=dev).to(m.device)
        if len(generator) != m.size(0):
            raise ValueError(f"need one generator per row: got {len(generator)} for batch {m.size(0)}")
        eps = torch.zeros_like(m)
        for b, g in enumerate(generator):
            n = int(lengths[b])
            eps[b, :, :n] = torch.randn(m.size(1), n, generator=g, dtype=m.dtype, device=g.device).to(
                m.device
            )
        return eps

    # -- training ----------------------------------------------------------------------------

    def forward_train(
        self,
        ssl: Tensor,
        spec: Tensor,
        spec_lens: Tensor,
        phones: Tensor,
        phone_lens: Tensor,
        generator: torch.Generator | None = None,
        content_corruption: float = 0.0,
        corruption_span: int = 4,
        content_cut: float = 0.0,
        phone_index: Tensor | None = None,
    ) -> S2TrainOutput:
        """One VITS training step's forward (upstream `SynthesizerTrn.forward` minus the generator).

        ssl [B, ssl_dim, T50] (same 50 Hz frames as spec), spec [B, spec_channels, T] linear
        spectrogram of the target, spec_lens [B], phones [B, N], phone_lens [B].
        The reference embedding comes from the target's own spectrogram. With
        `config.freeze_quantizer`, ssl_proj and the quantizer run without gradients or codebook
        updates (upstream fine-tuning); otherwise the quantizer trains (EMA codebook, straight-through
        gradients to ssl_proj and whatever produced `ssl`). The quantized content is cut or
        edge-padded to T frames when the SSL length is odd. `generator` drives the posterior noise
        and the slice positions. With `content_corruption`, about that share of each row's
        semantic frames, in spans of `corruption_span`, are replaced by random codebook entries
        before the prior reads them (only the prior's input; training only): the prior can then
        say those frames only by reading the phones. With `content_cut`, each row with that
        probability loses MRTE's residual content path: its prior hears the content only through
        the phones it looks up. `phone_index` [B, T]: each frame's phone (MRTE's `aligned` lookup).
        """
        if self.enc_q is None:
            raise RuntimeError("this SoVITS was built without enc_q (posterior=False); it cannot train")
        T = spec.size(2)
        z_mask = length_mask(spec_lens, T, spec.dtype)
        ge = self.ref_enc(spec[:, : self.config.ref_spec_channels] * z_mask, z_mask)

        if self.config.freeze_quantizer:
            with torch.no_grad():
                x = self.ssl_proj(ssl)
                codes = self.quantizer.encode(x)
                q = self.quantizer.decode(codes)
                commit_loss = F.mse_loss(q, x)
        else:
            q, _, commit_loss = self.quantizer(self.ssl_proj(ssl))
        if content_corruption > 0:
            q = corrupt_content(q, self.quantizer, content_corruption, corruption_span, generator)
        if self.config.semantic_stride > 1:
            q = F.interpolate(q, size=q.size(2) * self.config.semantic_stride, mode="nearest")
        if q.size(2) < T:
            q = F.pad(q, (0, T - q.size(2)), mode="replicate")
        q = q[:, :, :T]

        attention: list[Tensor] = []
        keep = None
        if content_cut > 0:
            draw = torch.rand(q.size(0), generator=generator, device=q.device)
            keep = (draw >= content_cut).to(q.dtype)  # [B]
        m_p, logs_p, _, _ = self.enc_p(
            q,
            spec_lens,
            phones,
            phone_lens,
            ge,
            text_attention=attention,
            keep_content=keep,
            phone_index=phone_index,
        )
        z, m_q, logs_q, _ = self.enc_q(spec, spec_lens, g=ge.detach(), generator=generator)
        z_p = self.flow(z, z_mask, g=ge)
        z_slice, ids_slice = rand_slice_segments(z, spec_lens, self.config.segment_frames, generator)
        return S2TrainOutput(
            z=z,
            z_p=z_p,
            m_p=m_p,
            logs_p=logs_p,
            m_q=m_q,
            logs_q=logs_q,
            z_mask=z_mask,
            commit_loss=commit_loss,
            z_slice=z_slice,
            ids_slice=ids_slice,
            ge=ge,
            quantized=q,
            text_attention=attention[0],
        )

    # -- utilities ---------------------------------------------------------------------------

    def remove_weight_norm(self) -> None:
        """Fold weight norm (flow and enc_q WN stacks) into plain weights, for inference/export."""
        remove_weight_norm(self)

    def num_params(self, include_posterior: bool = True) -> int:
        return sum(
            p.numel() for n, p in self.named_parameters() if include_posterior or not n.startswith("enc_q.")
        )


# ---------------------------------------------------------------------------------------------
# upstream key map

_RENAMES: tuple[tuple[str, str], ...] = (
    # upstream wraps Linear/Conv layers of MelStyleEncoder in LinearNorm/ConvNorm (`.fc`, `.conv`)
    ("ref_enc.spectral.0.fc.", "ref_enc.spectral.0."),
    ("ref_enc.spectral.3.fc.", "ref_enc.spectral.3."),
    ("ref_enc.fc.fc.", "ref_enc.fc."),
    ("quantizer.vq.layers.", "quantizer.layers."),
)


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        if key.startswith(old):
            key = new + key[len(old) :]
    if key.startswith("ref_enc.temporal.") and ".conv1.conv." in key:
        key = key.replace(".conv1.conv.", ".conv.")
    if key.startswith("quantizer.layers.") and "._codebook." in key:
        key = key.replace("._codebook.", ".")
    return key


def sovits_state_dict_from_upstream(
    sd: Mapping[str, Tensor],
    version: str,
    *,
    config: SoVITSConfig | None = None,
    vocoder_config: VocoderConfig | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split an upstream `SynthesizerTrn` state dict (v1/v2) into (SoVITS, Vocoder) state dicts.

    The map (everything not listed is identity):

    | upstream                                      | here                                     |
    |-----------------------------------------------|------------------------------------------|
    | `dec.*`                                       | Vocoder `*` (second dict)                |
    | `enc_q.*`                                     | kept when present (training-only); when  |
    |                                               | absent (released weights) the SoVITS     |
    |                                               | dict has none: build `posterior=False`   |
    | `ref_enc.spectral.{0,3}.fc.*`                 | `ref_enc.spectral.{0,3}.*`               |
    | `ref_enc.temporal.{i}.conv1.conv.*`           | `ref_enc.temporal.{i}.conv.*`            |
    | `ref_enc.fc.fc.*`                             | `ref_enc.fc.*`                           |
    | `quantizer.vq.layers.{i}._codebook.*`         | `quantizer.layers.{i}.*`                 |
    | `<wn>.weight_g` / `<wn>.weight_v`             | `<wn>.parametrizations.weight.original0` |
    |                                               | / `.original1` (also accepted as input;  |
    |                                               | a folded `<wn>.weight` is decomposed)    |

    `<wn>` = the weight-normalised convs: flow/enc_q `WN` layers, generator `ups` and `resblocks`.
    Strict otherwise: unknown or missing keys and shape mismatches raise KeyError naming them;
    v2Pro weights and a version that disagrees with the phone table raise ValueError.
    `config`/`vocoder_config` default to `SoVITSConfig.v1()/v2()` and `VocoderConfig()`.
    """
    if version not in N_SYMBOLS:
        raise ValueError(f"unsupported SoVITS version {version!r} (v1, v2)")
    detected = sovits_version_from_state_dict(sd)
    if detected != version:
        raise ValueError(
            f"weights look like {detected} (text_embedding has "
            f"{sd['enc_p.text_embedding.weight'].shape[0]} rows), not {version}"
        )
    cfg = config or (SoVITSConfig.v1() if version == "v1" else SoVITSConfig.v2())
    if cfg.version != version:
        raise ValueError(f"config is {cfg.version}, weights are {version}")
    vcfg = vocoder_config or VocoderConfig()

    s2: dict[str, Tensor] = {}
    dec: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith("dec."):
            dec[key[len("dec.") :]] = value
        else:
            s2[_rename(key)] = value
    has_posterior = any(k.startswith("enc_q.") for k in s2)
    with torch.device("meta"):
        ref_s2 = SoVITS(cfg, posterior=has_posterior)
        ref_dec = Vocoder(vcfg)
    s2 = normalise_weight_norm_keys(s2, weight_norm_prefixes(ref_s2), "SoVITS weights")
    dec = normalise_weight_norm_keys(dec, weight_norm_prefixes(ref_dec), "generator (dec.*) weights")
    check_state_dict(s2, ref_s2, "SoVITS weights")
    check_state_dict(dec, ref_dec, "generator (dec.*) weights")
    return s2, dec


def load_upstream_sovits(
    sd: Mapping[str, Tensor],
    version: str | None = None,
    *,
    config: SoVITSConfig | None = None,
    vocoder_config: VocoderConfig | None = None,
) -> tuple[SoVITS, Vocoder]:
    """Build SoVITS + Vocoder from an upstream state dict (version detected when not given).

    The SoVITS has enc_q only when the weights carry it. Both models are returned in eval mode,
    weight norm still in place (call `remove_weight_norm()` for export).
    """
    version = version or sovits_version_from_state_dict(sd)
    cfg = config or (SoVITSConfig.v1() if version == "v1" else SoVITSConfig.v2())
    vcfg = vocoder_config or VocoderConfig()
    s2_sd, dec_sd = sovits_state_dict_from_upstream(sd, version, config=cfg, vocoder_config=vcfg)
    model = SoVITS(cfg, posterior=any(k.startswith("enc_q.") for k in s2_sd))
    model.load_state_dict(s2_sd)
    vocoder = Vocoder(vcfg)
    vocoder.load_state_dict(dec_sd)
    return model.eval(), vocoder.eval()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "S2TrainOutput",
    "SoVITS",
    "SoVITSConfig",
    "TextEncoder",
    "count_params",
    "load_upstream_sovits",
    "sovits_state_dict_from_upstream",
    "sovits_version_from_state_dict",
]
