"""The SSL / quantizer stage for corpora without SSL weights (the demo has none).

Choice: the built-in `TinySSL` encoder and SoVITS's `ssl_proj` (k=2, stride 2: 50 -> 25 Hz) are
trained together with a linear CTC head to recognise the utterance's phones (blank = one extra
class). The objective rewards only what was said, never who said it, so the 25 Hz features the
quantizer sees carry content, and the linear head forces that content to be linearly separable,
i.e. phone-like. Then the 1024-entry codebook is fitted by k-means (Lloyd, on a sample of
`ssl_proj` outputs from the training corpus) and frozen for the later stages, as upstream
freezes its pretrained quantizer when training s1/s2.

Alternatives considered: jointly learning the EMA codebook inside s2 (upstream pretraining)
lets the tokens absorb speaker and channel detail that s2 reconstructs from, and makes the GPT
targets move while it trains; a speaker-adversarial loss needs more speakers than the demo has.

With a HuBERT directory configured, no encoder is trained: `ssl_proj` starts as the mean of
each frame pair and only the codebook is fitted by k-means.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from training import ddp
from training.common import (
    CKPT_LATEST,
    load_checkpoint,
    lr_at,
    pad_1d,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_lr,
    set_rng_state,
)
from training.preprocess import PrepItem, iter_batches, wav16_from_item
from training.tracking import Tracker
from tritone.models.base import BaseModelConfig
from tritone.models.s2_quantizer import ResidualVectorQuantizer, kmeans
from tritone.models.ssl import SSLEncoder

SSL_FINAL = "ssl-final.pt"


@dataclass
class SSLTrainConfig:
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    max_frames: int = 3000  # padded 50 Hz frames per batch (60 s of audio)
    max_batch: int = 24
    seed: int = 1234
    log_every: int = 25
    ckpt_every: int = 200
    eval_utts: int = 60
    kmeans_utts: int = 600
    kmeans_samples: int = 100_000
    kmeans_iters: int = 30
    threads: int | None = None
    device: str = "auto"  # training/ddp.py: auto | cpu | cuda


class ContentModel(nn.Module):
    """SSL encoder -> ssl_proj (25 Hz) -> linear CTC head over phones (+ blank)."""

    def __init__(self, ssl: SSLEncoder, ssl_proj: nn.Module, dim: int, n_symbols: int) -> None:
        super().__init__()
        self.ssl = ssl
        self.ssl_proj = ssl_proj
        self.head = nn.Linear(dim, n_symbols + 1)
        self.blank = n_symbols

    def features(self, wav16: Tensor) -> Tensor:
        """wav [B, T16] -> 25 Hz content features [B, dim, T25]."""
        out: Tensor = self.ssl_proj(self.ssl(wav16))
        return out

    def frames(self, n16: Tensor, stride: int) -> Tensor:
        n50 = torch.tensor([self.ssl.num_frames(int(n)) for n in n16], dtype=torch.long)
        return n50 // stride

    def forward(self, wav16: Tensor) -> Tensor:
        """-> log-probabilities [T25, B, V] (CTC layout)."""
        h = self.features(wav16).transpose(1, 2)  # [B, T, dim]
        return F.log_softmax(self.head(h), dim=-1).transpose(0, 1)


def _batch(items: Sequence[PrepItem], idx: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    wavs, phones = [], []
    for i in idx:
        data = items[i].load()
        wavs.append(wav16_from_item(data))
        phones.append(data["phones"].long())
    wav, wav_lens = pad_1d(wavs)
    ph, ph_lens = pad_1d(phones)
    return wav, wav_lens, ph, ph_lens


def greedy_phones(log_probs: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best-path CTC decoding: argmax, merge repeats, drop blanks. log_probs [T, B, V]."""
    best = log_probs.argmax(-1).transpose(0, 1)  # [B, T]
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])].tolist()
        merged = [p for j, p in enumerate(seq) if (j == 0 or p != seq[j - 1]) and p != blank]
        out.append(merged)
    return out


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@torch.no_grad()
def phone_error_rate(model: ContentModel, items: Sequence[PrepItem], stride: int) -> float:
    model.eval()
    device = next(model.parameters()).device
    errors = total = 0
    for start in range(0, len(items), 8):
        idx = list(range(start, min(len(items), start + 8)))
        wav, wav_lens, ph, ph_lens = _batch(items, idx)
        lp = model(wav.to(device))
        hyp = greedy_phones(lp, model.frames(wav_lens, stride), model.blank)
        for b, h in enumerate(hyp):
            ref = ph[b, : int(ph_lens[b])].tolist()
            errors += edit_distance(ref, h)
            total += len(ref)
    model.train()
    return errors / max(1, total)


def fit_codebook(
    model: ContentModel,
    quantizer: ResidualVectorQuantizer,
    items: Sequence[PrepItem],
    stride: int,
    cfg: SSLTrainConfig,
    progress: bool = True,
) -> dict[str, float]:
    """k-means the 25 Hz features of a sample of utterances into the quantizer's codebook."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    pick = torch.randperm(len(items), generator=g)[: cfg.kmeans_utts].tolist()
    feats = []
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in tqdm(pick, desc="k-means features", disable=not progress, mininterval=2.0):
            data = items[i].load()
            wav = wav16_from_item(data)
            n = int(model.frames(torch.tensor([wav.shape[0]]), stride)[0])
            # k-means runs on the CPU with its seeded generator, wherever the encoder ran
            feats.append(model.features(wav.unsqueeze(0).to(device))[0, :, :n].t().cpu())
    x = torch.cat(feats)
    if x.shape[0] > cfg.kmeans_samples:
        x = x[torch.randperm(x.shape[0], generator=g)[: cfg.kmeans_samples]]
    cb = quantizer.codebooks[0]
    means, counts = kmeans(x, cb.codebook_size, cfg.kmeans_iters, generator=g)
    with torch.no_grad():
        cb.embed.copy_(means)
        cb.embed_avg.copy_(means)
        cb.cluster_size.copy_(counts.float())
        cb.inited.fill_(1.0)
    p = counts.float() / counts.sum()
    used = int((counts > 0).sum())
    perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    model.train()
    return {
        "codebook_used": float(used),
        "codebook_perplexity": perplexity,
        "kmeans_frames": float(x.shape[0]),
    }


def init_pair_mean(ssl_proj: nn.Conv1d) -> None:
    """ssl_proj (k=2) as the mean of each pair of frames (no trained encoder to learn it with)."""
    with torch.no_grad():
        ssl_proj.weight.zero_()
        eye = torch.eye(ssl_proj.out_channels, ssl_proj.in_channels)
        for k in range(ssl_proj.kernel_size[0]):
            ssl_proj.weight[:, :, k] = eye / ssl_proj.kernel_size[0]
        if ssl_proj.bias is not None:
            ssl_proj.bias.zero_()


def train_ssl(
    model_config: BaseModelConfig,
    items: Sequence[PrepItem],
    eval_items: Sequence[PrepItem],
    run_dir: Path,
    cfg: SSLTrainConfig | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> Path:
    """Train (or, for HuBERT, skip to k-means) and write `run_dir/ssl-final.pt`; resumable."""
    from tritone.models.sovits import SoVITS

    cfg = cfg or SSLTrainConfig()
    info = ddp.setup(cfg.threads, cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / SSL_FINAL
    if ddp.broadcast_object(final.is_file(), info):
        return final
    seed_everything(cfg.seed)
    s2cfg = model_config.sovits
    stride = s2cfg.semantic_stride
    ssl = model_config.ssl.build()
    sovits = SoVITS(s2cfg, posterior=False)
    model = ContentModel(ssl, sovits.ssl_proj, s2cfg.ssl_dim, s2cfg.n_symbols).to(info.device)
    trainable = model_config.ssl.kind == "tiny"
    tracker = Tracker(
        "tritone-train-ssl",
        f"ssl-{run_dir.parent.name}",
        {
            **asdict(cfg),
            "ssl": asdict(model_config.ssl),
            "ssl_dim": s2cfg.ssl_dim,
            "world": info.world,
            "device_type": info.device.type,
        },
        enabled=info.is_main,
        uri=tracking_uri,
    )
    ckpt_path = run_dir / CKPT_LATEST
    step = 0
    if trainable:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        state = load_checkpoint(ckpt_path)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            step = int(state["step"])
            set_rng_state(state["rng"])
            if info.is_main and state.get("mlflow_run_id"):
                tracker.finish("KILLED")
                tracker = Tracker(
                    "tritone-train-ssl", "", enabled=True, uri=tracking_uri, run_id=state["mlflow_run_id"]
                )
        net = ddp.wrap(model, info)
        lengths = [it.frames for it in items]
        bar = tqdm(total=cfg.steps, initial=step, desc="ssl", disable=not (progress and info.is_main))
        epoch = step // max(1, len(lengths) // 8)
        t0 = time.time()
        while step < cfg.steps:
            for idx in iter_batches(
                lengths, cfg.max_frames, cfg.max_batch, cfg.seed + epoch, info.rank, info.world
            ):
                if step >= cfg.steps:
                    break
                lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
                set_lr(opt, lr)
                wav, wav_lens, ph, ph_lens = _batch(items, idx)
                log_probs = net(wav.to(info.device))
                in_lens = model.frames(wav_lens, stride).clamp(max=log_probs.shape[0])
                targets = torch.cat([ph[b, : int(ph_lens[b])] for b in range(ph.shape[0])]).to(info.device)
                loss = F.ctc_loss(log_probs, targets, in_lens, ph_lens, blank=model.blank, zero_infinity=True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = float(nn.utils.clip_grad_norm_(model.parameters(), 5.0))
                opt.step()
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0:
                    value = ddp.all_mean(loss.item(), info)
                    bar.set_postfix(ctc=f"{value:.3f}")
                    tracker.log_metrics(
                        {
                            "ctc_loss": value,
                            "lr": lr,
                            "grad_norm": gn,
                            "sec_per_step": (time.time() - t0) / cfg.log_every,
                        },
                        step,
                    )
                    t0 = time.time()
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    if info.is_main:
                        per = phone_error_rate(model, eval_items[: cfg.eval_utts], stride)
                        tracker.log_metrics({"eval_per": per}, step)
                        save_checkpoint(
                            ckpt_path,
                            {
                                "model": model.state_dict(),
                                "optim": opt.state_dict(),
                                "step": step,
                                "rng": rng_state(),
                                "config": asdict(cfg),
                                "mlflow_run_id": tracker.run_id,
                            },
                        )
                    ddp.barrier(info)
            epoch += 1
        bar.close()
    else:
        init_pair_mean(sovits.ssl_proj)

    result: dict[str, Any] = {}
    if info.is_main:
        stats = fit_codebook(model, sovits.quantizer, items, stride, cfg, progress)
        if trainable:
            stats["eval_per"] = phone_error_rate(model, eval_items[: cfg.eval_utts], stride)
        tracker.log_metrics(stats, step)
        result = {
            "ssl": model.ssl.state_dict() if trainable else {},
            "ssl_proj": sovits.ssl_proj.state_dict(),
            "quantizer": sovits.quantizer.state_dict(),
            "head": model.head.state_dict(),
            "stats": stats,
            "steps": step,
            "mlflow_run_id": tracker.run_id,
        }
        save_checkpoint(final, result)
        tracker.finish()
    ddp.barrier(info)
    return final


def load_ssl_stage(path: Path) -> dict[str, Any]:
    state = load_checkpoint(path)
    if state is None:
        raise FileNotFoundError(f"{path}: no SSL stage result; run the ssl stage first")
    return state
