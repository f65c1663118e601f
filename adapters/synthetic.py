"""Synthetic bases and adapters for tests, benchmarks and demos of the registry.

A small stand-in model (Conv1d front end, Linear projections, LayerNorm, head) exercises
every code path the real GPT/SoVITS targets do, in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from adapters.consent import ConsentRecord
from adapters.format import BasePin, write_adapter
from adapters.util import sha256_bytes
from tritone.checkpoints import save_weights
from tritone.lora import LoRAWeights, match_modules
from tritone.voice import VoicePrompt

STANDIN_TARGETS = ["pre", "q_proj", "v_proj"]
GOOD_METRICS = {"speaker_similarity": 0.91, "wer": 0.04}


@dataclass
class StandInConfig:
    channels: int = 4
    d_model: int = 16
    n_layer: int = 2
    n_out: int = 5
    dilation: int = 1  # peft's unmerged Conv1d LoRA ignores dilation, so its round trip uses 1


class StandIn(nn.Module):
    """``x [N, channels, T] -> [N, T', n_out]`` through Conv1d, Linear q/v blocks and a head."""

    def __init__(self, config: StandInConfig | None = None) -> None:
        super().__init__()
        c = config or StandInConfig()
        self.config = c
        self.pre = nn.Conv1d(c.channels, c.d_model, 3, padding=c.dilation, dilation=c.dilation)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "q_proj": nn.Linear(c.d_model, c.d_model),
                    "v_proj": nn.Linear(c.d_model, c.d_model),
                    "norm": nn.LayerNorm(c.d_model),
                }
            )
            for _ in range(c.n_layer)
        )
        self.head = nn.Linear(c.d_model, c.n_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pre(x).transpose(1, 2)
        for blk in self.blocks:
            assert isinstance(blk, nn.ModuleDict)
            h = blk["norm"](h + torch.tanh(blk["q_proj"](h)) * blk["v_proj"](h))
        return self.head(h)


def make_standin(seed: int = 0, config: StandInConfig | None = None) -> StandIn:
    torch.manual_seed(seed)
    model = StandIn(config).eval()
    with torch.no_grad():  # non-trivial norms so that a mixed-up tensor shows in the output
        for blk in model.blocks:
            assert isinstance(blk, nn.ModuleDict)
            norm = blk["norm"]
            assert isinstance(norm, nn.LayerNorm)
            norm.weight.add_(0.1 * torch.randn_like(norm.weight))
    return model


def save_standin(model: StandIn, directory: str | Path) -> Path:
    """The base as a weights directory (what ``register-base`` takes)."""
    return save_weights(directory, "standin", model.config, model.state_dict())


def random_lora(
    model: nn.Module, targets: str | list[str], rank: int, seed: int, scale: float = 0.3
) -> dict[str, LoRAWeights]:
    """A random LoRA (A and B both non-zero) for every target Linear/Conv1d of ``model``."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, LoRAWeights] = {}
    for name in match_modules(model, targets):
        w = model.get_submodule(name).weight
        assert isinstance(w, Tensor)
        a_shape = (rank, *w.shape[1:])
        b_shape = (w.shape[0], rank) if w.dim() == 2 else (w.shape[0], rank, 1)
        a = torch.randn(a_shape, generator=g) * scale
        b = torch.randn(b_shape, generator=g) * scale
        out[name] = LoRAWeights(a, b, float(2 * rank))
    return out


def demo_prompt(seed: int = 0) -> VoicePrompt:
    """A voice prompt with the kinds of tensors a real one carries (values random)."""
    g = torch.Generator().manual_seed(seed)
    return VoicePrompt(
        text="reference text",
        lang="en",
        phone_ids=torch.randint(0, 732, (20,), generator=g),
        bert=torch.zeros(1024, 20),
        semantic=torch.randint(0, 1024, (50,), generator=g),
        refer_spec=torch.rand(1025, 40, generator=g),
    )


def demo_consent(consent_id: str = "consent-0001", speaker: str = "Demo Speaker") -> ConsentRecord:
    return ConsentRecord(
        id=consent_id,
        speaker=speaker,
        granted_by=speaker,
        scope="synthetic speech for product demos",
        date="2026-01-15",
        evidence_sha256=sha256_bytes(f"signed form of {speaker}".encode()),
    )


def make_adapter(
    out_dir: str | Path,
    model: nn.Module,
    base: BasePin,
    *,
    voice: str,
    tenant: str = "default",
    rank: int = 2,
    seed: int = 0,
    metrics: dict[str, float] | None = None,
    consent_id: str = "consent-0001",
    targets: str | list[str] | None = None,
    full: dict[str, Tensor] | None = None,
) -> Path:
    """Write a random adapter directory for ``model`` pinned to ``base``."""
    return write_adapter(
        out_dir,
        voice=voice,
        tenant=tenant,
        base=base,
        lora=random_lora(model, targets or STANDIN_TARGETS, rank, seed),
        full=full,
        prompt=demo_prompt(seed),
        consent_id=consent_id,
        training_data_sha256=sha256_bytes(f"training data {voice} {seed}".encode()),
        metrics=GOOD_METRICS if metrics is None else metrics,
        source={"kind": "synthetic", "seed": seed},
    )
