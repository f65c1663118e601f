"""GPT (s1) training: phones (+ BERT) -> semantic tokens, teacher forced, as upstream's s1_train.

Every utterance is one sequence `[phones | its semantic tokens]` under the prefix-LM mask; the
model predicts each next token and EOS after the last. Unlike upstream, the padding positions
of a batch are left out of the loss (upstream counts them as EOS targets), so a batch's loss
does not depend on how it was padded. At inference the reference prompt's phones and tokens
come first and the model continues them (`tritone.pipeline`).

From scratch (the demo) or fine-tuned from an upstream s1 checkpoint (`init` = a base model
directory whose GPT is loaded first). Resumable; MLflow logs loss, top-3 accuracy, learning rate.

Optionally (`align_weight` > 0) a guided-attention loss (Tachibana et al., 2017, for DCTTS) pulls
the text attention of the first `align_heads` heads of every layer towards the diagonal: audio
position t of Ty should look at phones near t/Ty of the text. Speech reads its text in order,
so a near-diagonal alignment is what a working model ends up with; on a small corpus it may
never find it from the next-token loss alone. `eval_align_cost` (the guided heads) and
`eval_align_best` (the most diagonal head of all) measure it at every evaluation.
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
    to_device,
)
from training.losses import diagonal_attention_cost
from training.preprocess import PrepItem, iter_batches, load_item
from training.tracking import Tracker
from tritone.models.gpt import GPT, GPTConfig, topk_accuracy

GPT_FINAL = "gpt-final.pt"


@dataclass
class GPTTrainConfig:
    steps: int = 3500
    lr: float = 1e-3
    warmup: int = 300
    weight_decay: float = 0.01
    max_tokens: int = 4000  # padded (phones + tokens) positions per batch
    max_batch: int = 48
    seed: int = 1234
    log_every: int = 25
    eval_every: int = 250
    ckpt_every: int = 250
    threads: int | None = None
    device: str = "auto"  # training/ddp.py: auto | cpu | cuda
    align_weight: float = 0.0  # guided-attention loss weight; 0 = off (upstream has none)
    align_heads: int = 1  # the first heads of every layer that the loss guides
    align_width: float = 0.2  # the diagonal band's width, as a share of both lengths (DCTTS: 0.2)

    def __post_init__(self) -> None:
        if self.align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {self.align_weight}")
        if self.align_heads < 1:
            raise ValueError(f"align_heads must be >= 1, got {self.align_heads}")
        if not 0 < self.align_width <= 1:
            raise ValueError(f"align_width must be in (0, 1], got {self.align_width}")


@dataclass
class GPTExample:
    phones: Tensor  # [N] long
    bert: Tensor | None  # [1024, N] float or None (zeros)
    codes: Tensor  # [T25] long


def load_examples(
    items: Sequence[PrepItem], encoded: dict[str, Path], progress: bool = True
) -> list[GPTExample]:
    out = []
    for it in tqdm(items, desc="load gpt data", disable=not progress, mininterval=2.0):
        data = it.load()
        enc = load_item(encoded[it.key])
        bert = data.get("bert")
        out.append(
            GPTExample(
                phones=data["phones"].long(),
                bert=None if bert is None else bert.float(),
                codes=enc["codes"].long(),
            )
        )
    return out


def collate(examples: Sequence[GPTExample], bert_dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    phones, phone_lens = pad_1d([e.phones for e in examples])
    codes, code_lens = pad_1d([e.codes for e in examples])
    bert = torch.zeros(len(examples), bert_dim, phones.shape[1])
    for i, e in enumerate(examples):
        if e.bert is not None:
            bert[i, :, : e.bert.shape[1]] = e.bert
    return phones, phone_lens, bert, codes, code_lens


class GPTLoss(nn.Module):
    """Wraps the GPT so DDP sees one forward: masked next-token cross-entropy (+ the weighted
    guided-attention cost when `align_weight` > 0), top-3 accuracy and the guided heads' cost."""

    def __init__(
        self, gpt: GPT, align_weight: float = 0.0, align_heads: int = 1, align_width: float = 0.2
    ) -> None:
        super().__init__()
        self.gpt = gpt
        self.align_weight = align_weight
        self.align_heads = min(align_heads, gpt.config.n_head)
        self.align_width = align_width

    def terms(
        self, phones: Tensor, phone_lens: Tensor, bert: Tensor, codes: Tensor, code_lens: Tensor
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """-> (masked next-token cross-entropy [], top-3 accuracy [] without grad,
        every layer's text attention [B, H, Ty, Tx])"""
        logits, targets, attention = self.gpt.forward_with_text_attention(
            phones, phone_lens, bert, codes, code_lens
        )
        positions = torch.arange(codes.shape[1], device=codes.device)
        valid = positions.unsqueeze(0) < code_lens.unsqueeze(1)  # [B, Ty]
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        loss = (ce * valid).sum() / valid.sum().clamp(min=1)
        masked_targets = targets.masked_fill(~valid, self.gpt.config.eos)
        acc = topk_accuracy(logits.detach(), masked_targets, 3, ignore_index=self.gpt.config.eos)
        return loss, acc, attention

    def forward(
        self, phones: Tensor, phone_lens: Tensor, bert: Tensor, codes: Tensor, code_lens: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> (loss [], top-3 accuracy [] and alignment cost [] of the guided heads, both without grad)"""
        loss, acc, attention = self.terms(phones, phone_lens, bert, codes, code_lens)
        guided = torch.stack(
            [
                diagonal_attention_cost(p[:, : self.align_heads], phone_lens, code_lens, self.align_width)
                for p in attention
            ]
        ).mean()
        if self.align_weight > 0:
            loss = loss + self.align_weight * guided
        return loss, acc, guided.detach()


@torch.no_grad()
def evaluate_gpt(model: GPTLoss, examples: Sequence[GPTExample], bert_dim: int) -> dict[str, float]:
    """Held-out next-token loss (without the alignment term), top-3 accuracy, the guided heads'
    alignment cost and the lowest cost of any head (a diagonal head the loss did not guide)."""
    model.eval()
    config = model.gpt.config
    device = next(model.parameters()).device
    total_loss = total_acc = 0.0
    head_costs = torch.zeros(config.n_layer, config.n_head)
    n = 0
    for start in range(0, len(examples), 16):
        batch = examples[start : start + 16]
        phones, phone_lens, bert, codes, code_lens = to_device(collate(batch, bert_dim), device)
        loss, acc, attention = model.terms(phones, phone_lens, bert, codes, code_lens)
        for layer, probs in enumerate(attention):
            costs = diagonal_attention_cost(probs, phone_lens, code_lens, model.align_width)  # [B, H]
            head_costs[layer] += costs.sum(0).cpu()
        total_loss += float(loss) * len(batch)
        total_acc += float(acc) * len(batch)
        n += len(batch)
    model.train()
    head_costs /= max(1, n)
    return {
        "eval_loss": total_loss / max(1, n),
        "eval_top3_acc": total_acc / max(1, n),
        "eval_align_cost": float(head_costs[:, : model.align_heads].mean()),
        "eval_align_best": float(head_costs.min()),
    }


def train_gpt(
    gpt_config: GPTConfig,
    items: Sequence[PrepItem],
    encoded: dict[str, Path],
    eval_items: Sequence[PrepItem],
    eval_encoded: dict[str, Path],
    run_dir: Path,
    cfg: GPTTrainConfig | None = None,
    init_state: dict[str, Tensor] | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> Path:
    """Train and write `run_dir/gpt-final.pt` (the GPT state dict and stats); resumable."""
    cfg = cfg or GPTTrainConfig()
    info = ddp.setup(cfg.threads, cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / GPT_FINAL
    if ddp.broadcast_object(final.is_file(), info):
        return final
    seed_everything(cfg.seed)
    gpt = GPT(gpt_config)
    if init_state is not None:
        gpt.load_state_dict(init_state)
    gpt.to(info.device)
    model = GPTLoss(gpt, cfg.align_weight, cfg.align_heads, cfg.align_width)
    opt = torch.optim.AdamW(gpt.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    examples = load_examples(items, encoded, progress and info.is_main)
    eval_examples = load_examples(eval_items, eval_encoded, False) if info.is_main else []
    params = {
        **asdict(cfg),
        **{f"gpt.{k}": v for k, v in asdict(gpt_config).items()},
        "world": info.world,
        "device_type": info.device.type,
    }
    params["n_params"] = sum(p.numel() for p in gpt.parameters())
    params["n_train"], params["n_eval"] = len(examples), len(eval_examples)
    ckpt_path = run_dir / CKPT_LATEST
    state = load_checkpoint(ckpt_path)
    step = 0
    run_id = None
    if state is not None:
        gpt.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        run_id = state.get("mlflow_run_id")
    tracker = Tracker(
        "tritone-train-gpt",
        f"gpt-{run_dir.parent.name}",
        params,
        enabled=info.is_main,
        uri=tracking_uri,
        run_id=run_id,
    )
    net = ddp.wrap(model, info)
    lengths = [e.phones.shape[0] + e.codes.shape[0] for e in examples]
    per_epoch = max(1, sum(lengths) // cfg.max_tokens)
    epoch = step // per_epoch
    bar = tqdm(total=cfg.steps, initial=step, desc="gpt", disable=not (progress and info.is_main))
    t0, run_loss, run_acc, run_align, seen = time.time(), 0.0, 0.0, 0.0, 0
    best: dict[str, float] = {}
    while step < cfg.steps:
        for idx in iter_batches(
            lengths, cfg.max_tokens, cfg.max_batch, cfg.seed + epoch, info.rank, info.world
        ):
            if step >= cfg.steps:
                break
            lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
            set_lr(opt, lr)
            batch = collate([examples[i] for i in idx], gpt_config.bert_dim)
            loss, acc, align = net(*to_device(batch, info.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(nn.utils.clip_grad_norm_(gpt.parameters(), 1.0))
            opt.step()
            step += 1
            run_loss += float(loss.detach())
            run_acc += float(acc)
            run_align += float(align)
            seen += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                metrics = {
                    "loss": ddp.all_mean(run_loss / seen, info),
                    "top3_acc": ddp.all_mean(run_acc / seen, info),
                    "align_cost": ddp.all_mean(run_align / seen, info),
                    "lr": lr,
                    "grad_norm": gn,
                    "epoch": float(epoch),
                    "sec_per_step": (time.time() - t0) / seen,
                }
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['top3_acc']:.3f}")
                tracker.log_metrics(metrics, step)
                t0, run_loss, run_acc, run_align, seen = time.time(), 0.0, 0.0, 0.0, 0
            if info.is_main and (step % cfg.eval_every == 0 or step == cfg.steps) and eval_examples:
                best = evaluate_gpt(model, eval_examples, gpt_config.bert_dim)
                tracker.log_metrics(best, step)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                if info.is_main:
                    save_checkpoint(
                        ckpt_path,
                        {
                            "model": gpt.state_dict(),
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
    if info.is_main:
        result: dict[str, Any] = {
            "model": gpt.state_dict(),
            "stats": best,
            "steps": step,
            "mlflow_run_id": tracker.run_id,
        }
        save_checkpoint(final, result)
        tracker.finish()
    ddp.barrier(info)
    return final
