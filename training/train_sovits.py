"""SoVITS (s2) + vocoder training: VITS with the base's generator (HiFi-GAN or spectral:
`tritone.models.vocoders`) and period/scale discriminators.

Per step, as upstream's s2_train: the posterior encoder `enc_q` encodes the target's linear
spectrogram into z; the flow maps z to the prior space, where the KL to the content prior
(`enc_p`: semantic tokens + phones + the reference embedding `ge`) is taken; the generator
vocodes a random 32-frame slice of z; the losses are mel L1 (x45), KL, least-squares adversarial,
feature matching and the quantizer commitment (0 here: the codebook from the SSL stage is frozen,
with `ssl_proj`). The discriminators are trained on the same slices.

Demo-scale departures, all switches of `S2TrainConfig`: the discriminators are `NarrowMPD`
(1/8 width, `d_shrink`); the first `gan_start` steps train without them (mel + KL only), which
gets a CPU run to intelligible audio sooner; a second, finer mel resolution joins the L1
(`fine_mel`). Off by default, for faster generator learning: a multi-resolution STFT loss
(`stft_weight`) and, for the first `posterior_mean_steps`, vocoding the posterior's mean instead
of a sample (the generator first learns from a clean latent). Every `eval_every` steps the
inference path (tokens -> prior -> reverse flow -> vocoder, reference = the clip itself) is
scored by mel L1 on held-out sentences and one sample is logged to MLflow as audio and a
spectrogram image.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from training import ddp
from training.common import (
    CKPT_LATEST,
    grad_norm,
    load_checkpoint,
    lr_at,
    pad_1d,
    pad_2d,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_lr,
    set_rng_state,
    to_device,
)
from training.gan import make_discriminator
from training.losses import (
    FINE_MEL,
    KL_WEIGHT,
    MEL_WEIGHT,
    MelLoss,
    StftLoss,
    diagonal_attention_cost,
    discriminator_loss,
    feature_loss,
    generator_loss,
    kl_loss,
    spectrum_magnitude_loss,
)
from training.preprocess import PrepItem, iter_batches, load_item
from training.tracking import Tracker
from tritone.audio.features import SpectrogramConfig, spec_to_mel
from tritone.models.aligner import TokenAligner
from tritone.models.s2_modules import normalise_weight_norm_keys, weight_norm_prefixes
from tritone.models.sovits import S2TrainOutput, SoVITS, SoVITSConfig
from tritone.models.spectral_vocoder import SpectralVocoder
from tritone.models.vocoders import AnyVocoder, AnyVocoderConfig, build_vocoder

S2_FINAL = "sovits-final.pt"
PRIOR_TARGETS = ("sample", "mean")  # S2TrainConfig.prior_target


@dataclass
class S2TrainConfig:
    steps: int = 6000
    lr: float = 3e-4
    warmup: int = 200
    lr_floor: float = 0.3
    betas: tuple[float, float] = (0.8, 0.99)
    max_frames: int = 1600  # padded 50 Hz frames per batch (per process)
    max_batch: int = 8
    gan_start: int = 600  # steps of mel + KL only before the discriminators join
    d_shrink: int = 8  # discriminator width divisor (1 = upstream's MPD)
    fine_mel: bool = True
    prior_start: int | None = None  # from this step the generator trains on the inference path
    prior_noise: float = 0.5  # the noise scale of that path (the pipeline's default)
    prior_mel_weight: float = 0.0  # L1 of a linear log-mel read-out of the prior mean (training only)
    kl_weight: float = KL_WEIGHT  # below 1, the posterior may carry detail before the prior can follow
    stft_weight: float = 0.0  # multi-resolution STFT loss on the generator's slice (0 = off, as upstream)
    # L1 of the log magnitudes the spectral generator writes against the slice's own (0 = off)
    magnitude_weight: float = 0.0
    posterior_mean_steps: int = 0  # for these first steps the generator gets the posterior's mean
    # what the KL term fits the prior to: "sample", VITS's KL to a posterior sample (it also pulls
    # the posterior towards the prior); "mean", the negative log-likelihood of the posterior's mean,
    # detached, under the flow prior: the prior learns to predict the latent the generator reads
    # (with `posterior_mean_steps`) and the posterior answers to the generator alone
    prior_target: str = "sample"
    # guided-attention cost of MRTE's attention of the content frames over the phones (0 = off,
    # as upstream): pulls it to the diagonal, so the prior can read the phones it is given
    mrte_align_weight: float = 0.0
    mrte_align_width: float = 0.2
    # share of the semantic frames the prior reads replaced by random codebook entries, in spans
    # (0 = off, as upstream): wrong content the prior can only correct by reading the phones, as
    # a GPT's wrong tokens would need
    content_corruption: float = 0.0
    corruption_span: int = 4  # semantic frames per replaced span (4 at 25 Hz: 160 ms, about a phone)
    # share of the rows whose prior loses MRTE's residual content path (0 = off): it must say the
    # clip from the phones its content frames look up
    content_cut: float = 0.0
    gain_min: float = 0.5  # random per-clip gain (spectrogram and waveform together): the model
    gain_max: float = 1.1  # then clones references recorded at any level
    seed: int = 1234
    log_every: int = 25
    eval_every: int = 500
    ckpt_every: int = 200
    eval_utts: int = 12
    threads: int | None = None
    device: str = "auto"  # training/ddp.py: auto | cpu | cuda


@dataclass
class S2Batch:
    ssl: Tensor  # [B, ssl_dim, T] (edge-padded to the spectrogram's length)
    spec: Tensor  # [B, bins, T]
    spec_lens: Tensor  # [B]
    phones: Tensor  # [B, N]
    phone_lens: Tensor  # [B]
    wav: Tensor  # [B, 1, T * hop]
    phone_index: Tensor | None = None  # [B, T]: each frame's phone, for MRTE's aligned lookup

    def to(self, device: torch.device) -> S2Batch:
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = None if value is None else value.to(device)
        return S2Batch(**moved)


def load_s2_example(
    item: PrepItem,
    encoded_path: Path,
    aligner: TokenAligner | None = None,
    alignments: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """One clip's training tensors; with an `aligner`, also each spectrogram frame's phone
    ("phone_index" [T]), remembered in `alignments` by the item's key (the aligner is frozen)."""
    data = item.load()
    enc = load_item(encoded_path)
    spec = data["spec"].float()
    T = spec.shape[1]
    ssl = enc["ssl"].float()
    if ssl.shape[1] < T:
        ssl = torch.cat([ssl, ssl[:, -1:].expand(-1, T - ssl.shape[1])], dim=1)
    example = {
        "ssl": ssl[:, :T],
        "spec": spec,
        "phones": data["phones"].long(),
        "wav": data["wav"].float() / 32767.0,
        "codes": enc["codes"].long(),
    }
    if aligner is not None:
        cached = alignments.get(item.key) if alignments is not None else None
        if cached is None:
            cached = aligner.align(example["codes"].view(-1), example["phones"], frames=T)
            if alignments is not None:
                alignments[item.key] = cached
        example["phone_index"] = cached
    return example


def collate_s2(examples: Sequence[dict[str, Tensor]], gains: Sequence[float] | None = None) -> S2Batch:
    """Pad a batch; `gains` scales each clip's spectrogram and waveform (level augmentation)."""
    g = list(gains) if gains is not None else [1.0] * len(examples)
    ssl, _ = pad_2d([e["ssl"] for e in examples])
    spec, spec_lens = pad_2d([e["spec"] * gi for e, gi in zip(examples, g)])
    phones, phone_lens = pad_1d([e["phones"] for e in examples])
    wav, _ = pad_1d([e["wav"] * gi for e, gi in zip(examples, g)])
    phone_index = pad_1d([e["phone_index"] for e in examples])[0] if "phone_index" in examples[0] else None
    return S2Batch(ssl, spec, spec_lens, phones, phone_lens, wav.unsqueeze(1), phone_index)


def slice_wav(wav: Tensor, starts: Tensor, frames: int, hop: int) -> Tensor:
    """The waveform segments matching z slices: wav [B, 1, N], starts [B] (frames) -> [B, 1, frames*hop]."""
    n = frames * hop
    out = torch.zeros(wav.shape[0], 1, n, dtype=wav.dtype, device=wav.device)
    for b, s in enumerate(starts.tolist()):
        seg = wav[b, :, s * hop : s * hop + n]
        out[b, :, : seg.shape[1]] = seg
    return out


class S2Generator(nn.Module):
    """SoVITS (with enc_q) + vocoder as one module, so DDP sees a single forward."""

    def __init__(
        self,
        sovits: SoVITS,
        vocoder: AnyVocoder,
        content_corruption: float = 0.0,
        corruption_span: int = 4,
        content_cut: float = 0.0,
    ) -> None:
        super().__init__()
        self.sovits = sovits
        self.vocoder = vocoder
        self.content_corruption = content_corruption  # in training mode only (the eval reads clean content)
        self.corruption_span = corruption_span
        self.content_cut = content_cut  # in training mode only, as content_corruption

    def forward(
        self,
        batch: S2Batch,
        prior_noise: float | None = None,
        posterior_mean: bool = False,
        with_spectrum: bool = False,
    ) -> tuple[S2TrainOutput, Tensor, tuple[Tensor, Tensor] | None]:
        """-> (the VITS outputs, generated audio of the slice, the spectral generator's (real,
        imag) spectrum of it when `with_spectrum`, else None). By default the generator vocodes
        the slice of the posterior sample z. With `posterior_mean`, the slice of the posterior's
        mean instead (no sampling noise; the KL still sees the sample). With `prior_noise`, the
        inference path's latent: a prior sample (m_p + eps * exp(logs_p) * prior_noise) through
        the reverse flow, cut at the same slice."""
        out = self.sovits.forward_train(
            batch.ssl,
            batch.spec,
            batch.spec_lens,
            batch.phones,
            batch.phone_lens,
            content_corruption=self.content_corruption if self.training else 0.0,
            corruption_span=self.corruption_span,
            content_cut=self.content_cut if self.training else 0.0,
            phone_index=batch.phone_index,
        )
        seg = out.z_slice.shape[2]
        if prior_noise is None:
            z_slice = slice_segments(out.m_q, out.ids_slice, seg) if posterior_mean else out.z_slice
        else:
            eps = torch.randn_like(out.m_p)
            z_p = (out.m_p + eps * torch.exp(out.logs_p) * prior_noise) * out.z_mask
            z = self.sovits.flow(z_p, out.z_mask, g=out.ge, reverse=True) * out.z_mask
            z_slice = slice_segments(z, out.ids_slice, seg)
        if not with_spectrum:
            return out, self.vocoder(z_slice, out.ge), None
        if not isinstance(self.vocoder, SpectralVocoder):
            raise ValueError("only the spectral generator writes a spectrum to score")
        spectrum = self.vocoder.spectrum(z_slice, out.ge)
        return out, self.vocoder.istft(*spectrum), spectrum


def prior_nll(sovits: SoVITS, out: S2TrainOutput) -> Tensor:
    """Negative log-likelihood (up to a constant, per element as `kl_loss`) of the posterior's
    mean under the flow prior, with the mean detached: the prior and flow learn to predict it,
    nothing pulls on the posterior. The flow is volume-preserving, so this is a proper density."""
    z_p = sovits.flow(out.m_q.detach(), out.z_mask, g=out.ge)
    return kl_loss(z_p, torch.zeros_like(out.logs_q), out.m_p, out.logs_p, out.z_mask)


def slice_segments(x: Tensor, starts: Tensor, segment: int) -> Tensor:
    """Windows of `segment` frames of x [B, C, T] starting at `starts` [B] (zero past the end)."""
    B, C, T = x.shape
    idx = starts.unsqueeze(1) + torch.arange(segment, device=x.device).unsqueeze(0)  # [B, segment]
    gathered = x.gather(2, idx.clamp(max=T - 1).unsqueeze(1).expand(B, C, segment))
    return gathered * (idx < T).unsqueeze(1).to(x.dtype)


@torch.no_grad()
def synthesize_from_codes(
    sovits: SoVITS,
    vocoder: AnyVocoder,
    codes: Tensor,
    phones: Tensor,
    ref_spec: Tensor,
    noise_scale: float = 0.5,
    seed: int = 0,
    aligner: TokenAligner | None = None,
) -> Tensor:
    """Inference path for one clip: codes [T25], phones [N], ref_spec [bins, Tr] -> wav [samples]
    (on the models' device). SoVITS's aligned lookup needs the `aligner` that places the phones."""
    device = next(sovits.parameters()).device
    codes, phones, ref_spec = to_device((codes, phones, ref_spec), device)
    ge = sovits.ref_embedding(ref_spec.unsqueeze(0))
    g = torch.Generator(device=device).manual_seed(seed)
    phone_index = None
    if aligner is not None:
        phone_index = aligner.to(device).align(codes, phones).view(1, -1).to(device)
    z, _ = sovits.decode_latent(
        codes.view(1, -1),
        torch.tensor([codes.shape[0]], device=device),
        phones.view(1, -1),
        torch.tensor([phones.shape[0]], device=device),
        ge,
        noise_scale=noise_scale,
        generator=g,
        phone_index=phone_index,
    )
    return vocoder(z, ge)[0, 0]


@torch.no_grad()
def evaluate_s2(
    sovits: SoVITS,
    vocoder: AnyVocoder,
    examples: Sequence[dict[str, Tensor]],
    mel: MelLoss,
    aligner: TokenAligner | None = None,
) -> tuple[dict[str, float], Tensor | None]:
    """Mel L1 of the inference path (tokens -> audio, reference = the clip) on held-out clips."""
    was = sovits.training, vocoder.training
    sovits.eval()
    vocoder.eval()
    total = 0.0
    first: Tensor | None = None
    for i, ex in enumerate(examples):
        wav = synthesize_from_codes(
            sovits, vocoder, ex["codes"], ex["phones"], ex["spec"], seed=i, aligner=aligner
        ).cpu()
        n = min(wav.shape[0], ex["wav"].shape[0])
        total += float(mel(wav[:n].view(1, 1, -1), ex["wav"][:n].view(1, 1, -1)))
        if first is None:
            first = wav
    sovits.train(was[0])
    vocoder.train(was[1])
    return {"eval_mel_l1": total / max(1, len(examples))}, first


def load_init_weights(
    module: nn.Module, state: dict[str, Tensor], what: str, optional: Sequence[str] = ()
) -> None:
    """Load a bundle's weights into a training module. Bundles store weight norm folded into
    plain `weight`s, the training modules keep it as a parametrization: the folded tensors are
    decomposed again (g = norm, v = weight). Every other key must match; only those under the
    `optional` prefixes may be absent (they start fresh), so no layer is silently left random."""
    state = normalise_weight_norm_keys(state, weight_norm_prefixes(module), f"{what} weights")
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(tuple(optional))]
    if missing or unexpected:
        raise KeyError(f"{what} weights do not fit the model: missing {missing}, unexpected {unexpected}")


def train_sovits(
    sovits_config: SoVITSConfig,
    vocoder_config: AnyVocoderConfig,
    ssl_stage: dict[str, Any],
    items: Sequence[PrepItem],
    encoded: dict[str, Path],
    eval_items: Sequence[PrepItem],
    eval_encoded: dict[str, Path],
    run_dir: Path,
    cfg: S2TrainConfig | None = None,
    init_sovits: dict[str, Tensor] | None = None,
    init_vocoder: dict[str, Tensor] | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    aligner: TokenAligner | None = None,
) -> Path:
    """Train and write `run_dir/sovits-final.pt` (SoVITS without enc_q, vocoder); resumable.

    `ssl_stage` supplies the frozen `ssl_proj` and quantizer; `init_*` start from existing
    weights (fine-tuning an upstream base) instead of random ones. MRTE's `aligned` lookup
    needs the (frozen) `aligner` that places each clip's phones on its frames.
    """
    cfg = cfg or S2TrainConfig()
    if cfg.prior_target not in PRIOR_TARGETS:
        raise ValueError(f"prior_target must be one of {PRIOR_TARGETS}, not {cfg.prior_target!r}")
    if cfg.mrte_align_weight < 0 or cfg.mrte_align_width <= 0:
        raise ValueError(
            f"mrte_align_weight must be >= 0 and mrte_align_width > 0, got {cfg.mrte_align_weight}, "
            f"{cfg.mrte_align_width}"
        )
    if not 0 <= cfg.content_cut < 1:
        raise ValueError(f"content_cut must be in [0, 1), got {cfg.content_cut}")
    if not 0 <= cfg.content_corruption < 1 or cfg.corruption_span < 1:
        raise ValueError(
            f"content_corruption must be in [0, 1) and corruption_span >= 1, got {cfg.content_corruption}, "
            f"{cfg.corruption_span}"
        )
    if (sovits_config.mrte_lookup == "aligned") != (aligner is not None):
        raise ValueError("an aligner is needed by, and only by, MRTE's aligned lookup")
    info = ddp.setup(cfg.threads, cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / S2_FINAL
    if ddp.broadcast_object(final.is_file(), info):
        return final
    seed_everything(cfg.seed)
    sovits = SoVITS(sovits_config, posterior=True)
    vocoder = build_vocoder(vocoder_config)
    if cfg.magnitude_weight > 0 and not isinstance(vocoder, SpectralVocoder):
        raise ValueError(
            "the magnitude loss scores a spectral generator's spectrum: train with --vocoder spectral"
        )
    # the frames the spectral generator writes its spectrum on: (n_fft, hop)
    spectrum_frames = (
        (vocoder.config.n_fft, vocoder.config.frame_hop) if isinstance(vocoder, SpectralVocoder) else (0, 0)
    )
    if init_sovits is not None:
        # released weights have no enc_q, and the codebook comes from the SSL stage
        # (and MRTE's place prior, when this run adds it: it starts from a fixed value)
        load_init_weights(
            sovits,
            init_sovits,
            "SoVITS",
            optional=("enc_q.", "quantizer.", "enc_p.mrte.position_log_strength"),
        )
    if init_vocoder is not None:
        load_init_weights(vocoder, init_vocoder, "generator")
    sovits.ssl_proj.load_state_dict(ssl_stage["ssl_proj"])
    sovits.quantizer.load_state_dict(ssl_stage["quantizer"])
    sovits.ssl_proj.requires_grad_(False)
    sovits.quantizer.requires_grad_(False)
    gen = S2Generator(sovits, vocoder, cfg.content_corruption, cfg.corruption_span, cfg.content_cut)
    gen = gen.to(info.device)
    disc = make_discriminator(cfg.d_shrink).to(info.device)
    g_params = [p for p in gen.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(g_params, lr=cfg.lr, betas=cfg.betas, eps=1e-9)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=cfg.betas, eps=1e-9)
    # training-only: a 1x1 conv from the prior mean to the log-mel of the same frames
    aux = nn.Conv1d(sovits_config.inter_channels, SpectrogramConfig().n_mels, 1).to(info.device)
    opt_aux = torch.optim.AdamW(aux.parameters(), lr=cfg.lr, betas=cfg.betas, eps=1e-9)
    mel = MelLoss((SpectrogramConfig(), FINE_MEL) if cfg.fine_mel else (SpectrogramConfig(),))
    stft = StftLoss()
    eval_mel = MelLoss((SpectrogramConfig(),))
    hop = sovits_config.hop_length
    seg = sovits_config.segment_frames

    state = load_checkpoint(run_dir / CKPT_LATEST)
    step, run_id = 0, None
    if state is not None:
        gen.load_state_dict(state["gen"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if "aux" in state:
            aux.load_state_dict(state["aux"])
            opt_aux.load_state_dict(state["opt_aux"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        run_id = state.get("mlflow_run_id")
    params = {
        **asdict(cfg),
        **{f"sovits.{k}": v for k, v in asdict(sovits_config).items()},
        **{f"vocoder.{k}": v for k, v in asdict(vocoder_config).items()},
        "n_params_gen": sum(p.numel() for p in g_params),
        "n_params_disc": sum(p.numel() for p in disc.parameters()),
        "world": info.world,
        "device_type": info.device.type,
    }
    tracker = Tracker(
        "tritone-train-sovits",
        f"sovits-{run_dir.parent.name}",
        params,
        enabled=info.is_main,
        uri=tracking_uri,
        run_id=run_id,
    )
    gen_net, disc_net, aux_net = ddp.wrap(gen, info), ddp.wrap(disc, info), ddp.wrap(aux, info)
    eval_examples = (
        [load_s2_example(it, eval_encoded[it.key], aligner) for it in eval_items[: cfg.eval_utts]]
        if info.is_main
        else []
    )
    alignments: dict[str, Tensor] = {}  # each clip's phone_index, made once
    lengths = [it.frames for it in items]
    per_epoch = max(1, sum(lengths) // cfg.max_frames)
    epoch = step // per_epoch
    bar = tqdm(total=cfg.steps, initial=step, desc="sovits", disable=not (progress and info.is_main))
    sums: dict[str, float] = {}
    seen, t0 = 0, time.time()
    last_eval: dict[str, float] = {}
    while step < cfg.steps:
        for idx in iter_batches(
            lengths, cfg.max_frames, cfg.max_batch, cfg.seed + epoch, info.rank, info.world
        ):
            if step >= cfg.steps:
                break
            lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.lr_floor)
            set_lr(opt_g, lr)
            set_lr(opt_d, lr)
            set_lr(opt_aux, lr)
            gains = (torch.rand(len(idx)) * (cfg.gain_max - cfg.gain_min) + cfg.gain_min).tolist()
            batch = collate_s2(
                [load_s2_example(items[i], encoded[items[i].key], aligner, alignments) for i in idx], gains
            )
            batch = batch.to(info.device)
            prior_noise = cfg.prior_noise if cfg.prior_start is not None and step >= cfg.prior_start else None
            out, y_hat, spectrum = gen_net(
                batch, prior_noise, step < cfg.posterior_mean_steps, cfg.magnitude_weight > 0
            )
            y = slice_wav(batch.wav, out.ids_slice, seg, hop)
            use_gan = step >= cfg.gan_start
            logs: dict[str, float] = {}
            if use_gan:
                d_real, d_fake, _, _ = disc_net(y, y_hat.detach())
                loss_d = discriminator_loss(d_real, d_fake)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                logs["grad_norm_d"] = float(nn.utils.clip_grad_norm_(disc.parameters(), 100.0))
                opt_d.step()
                logs["loss_d"] = loss_d.item()
            loss_mel = mel(y_hat, y)
            if cfg.prior_target == "mean":
                loss_kl = prior_nll(gen.sovits, out)
            else:
                loss_kl = kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.z_mask)
            loss_g = MEL_WEIGHT * loss_mel + cfg.kl_weight * loss_kl + out.commit_loss
            # how diagonal MRTE's attention is, logged whether or not it is trained
            align_cost = diagonal_attention_cost(
                out.text_attention, batch.phone_lens, batch.spec_lens, cfg.mrte_align_width
            ).mean()
            logs["mrte_align_cost"] = align_cost.item()
            if cfg.mrte_align_weight > 0:
                loss_g = loss_g + cfg.mrte_align_weight * align_cost
            if cfg.stft_weight > 0:
                loss_stft = stft(y_hat, y)
                loss_g = loss_g + cfg.stft_weight * loss_stft
                logs["loss_stft"] = loss_stft.item()
            if spectrum is not None:
                n_fft, frame_hop = spectrum_frames
                loss_mag = spectrum_magnitude_loss(spectrum[0], spectrum[1], y, n_fft, frame_hop)
                loss_g = loss_g + cfg.magnitude_weight * loss_mag
                logs["loss_magnitude"] = loss_mag.item()
            if cfg.prior_mel_weight > 0:
                target = spec_to_mel(batch.spec)  # [B, n_mels, T], the frames of m_p
                frames = out.z_mask.sum().clamp(min=1.0) * target.shape[1]
                loss_pm = torch.sum(torch.abs(aux_net(out.m_p) - target) * out.z_mask) / frames
                loss_g = loss_g + cfg.prior_mel_weight * loss_pm
                logs["loss_prior_mel"] = loss_pm.item()
            if use_gan:
                _, d_fake, fmap_r, fmap_g = disc_net(y, y_hat)
                loss_adv = generator_loss(d_fake)
                loss_fm = feature_loss(fmap_r, fmap_g)
                loss_g = loss_g + loss_adv + loss_fm
                logs["loss_adv"], logs["loss_fm"] = loss_adv.item(), loss_fm.item()
            opt_g.zero_grad(set_to_none=True)
            opt_aux.zero_grad(set_to_none=True)
            loss_g.backward()
            logs["grad_norm_g"] = grad_norm(g_params)
            nn.utils.clip_grad_norm_(g_params, 100.0)
            opt_g.step()
            if cfg.prior_mel_weight > 0:
                opt_aux.step()
            logs.update(loss_g=loss_g.item(), loss_mel=loss_mel.item(), loss_kl=loss_kl.item())
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            seen += 1
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                metrics = {k: ddp.all_mean(v / seen, info) for k, v in sorted(sums.items())}
                metrics.update(lr=lr, epoch=float(epoch), sec_per_step=(time.time() - t0) / seen)
                bar.set_postfix(mel=f"{metrics['loss_mel']:.3f}", kl=f"{metrics['loss_kl']:.2f}")
                tracker.log_metrics(metrics, step)
                sums, seen, t0 = {}, 0, time.time()
            if info.is_main and (step % cfg.eval_every == 0 or step == cfg.steps) and eval_examples:
                last_eval, sample = evaluate_s2(sovits, vocoder, eval_examples, eval_mel, aligner)
                tracker.log_metrics(last_eval, step)
                if sample is not None:
                    tracker.log_audio(
                        sample.cpu().numpy(),
                        sovits_config.sampling_rate,
                        f"step{step:06d}_{eval_items[0].utt_id}",
                    )
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                if info.is_main:
                    save_checkpoint(
                        run_dir / CKPT_LATEST,
                        {
                            "gen": gen.state_dict(),
                            "disc": disc.state_dict(),
                            "opt_g": opt_g.state_dict(),
                            "opt_d": opt_d.state_dict(),
                            "aux": aux.state_dict(),
                            "opt_aux": opt_aux.state_dict(),
                            "step": step,
                            "rng": rng_state(),
                            "config": asdict(cfg),
                            "mlflow_run_id": tracker.run_id,
                        },
                    )
                ddp.barrier(info)
        epoch += 1
    bar.close()
    if info.is_main:
        s2_state = {k: v for k, v in sovits.state_dict().items() if not k.startswith("enc_q.")}
        save_checkpoint(
            final,
            {
                "sovits": s2_state,
                "vocoder": vocoder.state_dict(),
                "enc_q": {
                    k[len("enc_q.") :]: v for k, v in sovits.state_dict().items() if k.startswith("enc_q.")
                },
                "disc": disc.state_dict(),
                "stats": last_eval,
                "steps": step,
                "mlflow_run_id": tracker.run_id,
            },
        )
        tracker.finish()
    ddp.barrier(info)
    return final
