"""The aligner stage: a CTC phone recogniser over the semantic tokens (tritone/models/aligner.py).

It trains on the encode stage's tokens and the phones of the same clips, with CTC (each
sentence's phones in order, no frame labels needed), and writes `aligner-final.pt`. SoVITS's
`aligned` MRTE lookup then force-aligns every clip's tokens to its phones with it. Small and
quick: one process (rank 0; the others wait), all clips held in memory.

Measured at every evaluation: the held-out greedy phone error rate (what the recogniser alone
hears in the tokens). Forced alignment needs much less than recognition: it only has to place
the phones it is given.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from training.common import lr_at, pad_1d, save_checkpoint, seed_everything, set_lr, to_device
from training.ddp import select_device
from training.preprocess import PrepItem, iter_batches, load_item
from training.tracking import Tracker
from training.train_ssl import edit_distance, greedy_phones
from tritone.models.aligner import AlignerConfig, TokenAligner

ALIGNER_FINAL = "aligner-final.pt"


@dataclass
class AlignerTrainConfig:
    steps: int = 2000
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    max_frames: int = 8000  # padded 50 Hz content frames per batch
    max_batch: int = 32
    seed: int = 1234
    log_every: int = 50
    eval_every: int = 500
    eval_utts: int = 120
    threads: int | None = None
    device: str = "auto"


@dataclass
class TokenClip:
    codes: Tensor  # [T25] long
    phones: Tensor  # [N] long


def load_clips(items: Sequence[PrepItem], encoded: dict[str, Path]) -> list[TokenClip]:
    """The tokens (encode stage) and phones (stage 1) of each item."""
    return [
        TokenClip(load_item(encoded[it.key])["codes"].long().view(-1), it.load()["phones"].long())
        for it in items
    ]


def _batch(clips: Sequence[TokenClip], idx: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    codes, code_lens = pad_1d([clips[i].codes for i in idx])
    phones, phone_lens = pad_1d([clips[i].phones for i in idx])
    return codes, code_lens, phones, phone_lens


@torch.no_grad()
def token_phone_error_rate(model: TokenAligner, clips: Sequence[TokenClip]) -> float:
    """Greedy CTC decoding of the tokens against the true phones (edit distance / phones)."""
    model.eval()
    device = next(model.parameters()).device
    errors = total = 0
    for start in range(0, len(clips), 16):
        idx = list(range(start, min(len(clips), start + 16)))
        codes, code_lens, phones, phone_lens = to_device(_batch(clips, idx), device)
        log_probs = model(codes, code_lens).transpose(0, 1)  # [T, B, C]
        hyp = greedy_phones(log_probs, code_lens * model.config.stride, model.config.blank)
        for b, h in enumerate(hyp):
            ref = phones[b, : int(phone_lens[b])].tolist()
            errors += edit_distance(ref, h)
            total += len(ref)
    model.train()
    return errors / max(1, total)


def train_aligner(
    config: AlignerConfig,
    items: Sequence[PrepItem],
    encoded: dict[str, Path],
    eval_items: Sequence[PrepItem],
    run_dir: Path,
    cfg: AlignerTrainConfig | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> Path:
    """Train and write `run_dir/aligner-final.pt` ({"config", "state_dict", "stats"})."""
    cfg = cfg or AlignerTrainConfig()
    final = run_dir / ALIGNER_FINAL
    if final.is_file():
        return final
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    clips = load_clips(items, encoded)
    eval_clips = load_clips(eval_items[: cfg.eval_utts], encoded)
    model = TokenAligner(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tracker = Tracker(
        "tritone-train-aligner",
        f"aligner-{run_dir.parent.name}",
        {**asdict(cfg), **{f"aligner.{k}": v for k, v in asdict(config).items()}},
        uri=tracking_uri,
    )
    lengths = [c.codes.numel() * config.stride for c in clips]
    bar = tqdm(total=cfg.steps, desc="aligner", disable=not progress)
    step, epoch, t0, run_loss, seen = 0, 0, time.time(), 0.0, 0
    stats: dict[str, float] = {}
    while step < cfg.steps:
        for idx in iter_batches(lengths, cfg.max_frames, cfg.max_batch, cfg.seed + epoch):
            if step >= cfg.steps:
                break
            set_lr(opt, lr_at(step, cfg.lr, cfg.warmup, cfg.steps))
            codes, code_lens, phones, phone_lens = to_device(_batch(clips, idx), device)
            log_probs = model(codes, code_lens).transpose(0, 1)  # [T, B, C]
            loss = F.ctc_loss(
                log_probs,
                phones,
                code_lens * config.stride,
                phone_lens,
                blank=config.blank,
                zero_infinity=True,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            run_loss, seen = run_loss + loss.item(), seen + 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                tracker.log_metrics({"loss": run_loss / seen, "step_time": (time.time() - t0) / seen}, step)
                bar.set_postfix(loss=f"{run_loss / seen:.3f}")
                t0, run_loss, seen = time.time(), 0.0, 0
            if step % cfg.eval_every == 0 or step == cfg.steps:
                stats = {"eval_phone_error_rate": token_phone_error_rate(model, eval_clips)}
                tracker.log_metrics(stats, step)
        epoch += 1
    bar.close()
    tracker.finish()
    save_checkpoint(final, {**model.checkpoint(), "stats": stats})
    return final


def load_aligner(path: Path) -> TokenAligner:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return TokenAligner.from_checkpoint(ckpt)
