"""How fast does the acoustic decoder learn? Train the SoVITS posterior path alone (a clip's
linear spectrogram -> posterior encoder -> generator, no GPT, prior or flow) with different
objectives for the same time or steps, then resynthesise held-out sentences of training
speakers and score them (docs/QUALITY.md §4).

    python -m training.recipes.decoder_probe [--variants sample sample+stft mean mean+stft]
        [--minutes 45] [--max-steps N] [--jobs 2]

Variants: the generator's input is the posterior's sample (`sample`, with a KL of 0.1 to a
standard normal standing in for the prior, which the probe has not) or its mean (`mean`, no
KL); `+stft` adds the multi-resolution STFT loss (x 2.5) to the mel L1 (x 45). All variants:
the demo preset's sizes, 0.64 s slices, 4 per step, random gain 0.5-1.1, the narrow period
discriminator from step 400, AdamW 3e-4. These are the choices `S2TrainConfig.stft_weight` and
`posterior_mean_steps` make available to the real trainer. Each variant trains in its own
single-threaded process under `<out>/<variant>/probe.pt` (a finished one is reused); the report
(`probe.json` / `.md`: pocketsphinx WER, mel L1 and periodicity of the resynthesis, next to
the recordings) evaluates every variant's weights on the same sentences.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

VARIANTS = ("sample", "sample+stft", "mean", "mean+stft")
PROBE_FILE = "probe.pt"
SEGMENT_FRAMES = 32
BATCH = 4
GAN_START = 400
PROBE_KL_WEIGHT = 0.1  # the side runs' --kl-weight
STFT_WEIGHT = 2.5


def _modules(preset: str) -> tuple[Any, Any]:
    from tritone.models.base import BaseModelConfig
    from tritone.models.sovits import SoVITS
    from tritone.models.vocoder import Vocoder

    config = BaseModelConfig.preset(preset)
    enc_q = SoVITS(config.sovits, posterior=True).enc_q
    assert enc_q is not None
    return enc_q, Vocoder(config.vocoder)


def train_variant(
    variant: str, corpus: Path, out: Path, minutes: float, max_steps: int, seed: int, preset: str
) -> Path:
    """Train one variant on `corpus/train.list` until `minutes` or `max_steps`; -> its weights."""
    from training.common import seed_everything
    from training.data import read_list
    from training.gan import make_discriminator
    from training.losses import (
        FINE_MEL,
        MEL_WEIGHT,
        MelLoss,
        StftLoss,
        discriminator_loss,
        feature_loss,
        generator_loss,
    )
    from tritone.audio.features import SpectrogramConfig, spectrogram
    from tritone.audio.io import load_audio

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    path = out / variant / PROBE_FILE
    if path.is_file():
        return path
    seed_everything(seed)
    torch.set_num_threads(1)
    enc_q, vocoder = _modules(preset)
    hop = vocoder.hop_length
    clips = [u.wav_path for u in read_list(corpus / "train.list").utterances]
    cache: dict[Path, Tensor] = {}

    def clip(p: Path) -> Tensor:
        if p not in cache:
            cache[p] = torch.from_numpy(load_audio(p, 32_000)[0])
        return cache[p]

    long_enough = [p for p in clips if clip(p).shape[0] > SEGMENT_FRAMES * hop]
    if not long_enough:
        raise ValueError(f"{corpus / 'train.list'}: no clip is longer than {SEGMENT_FRAMES * hop} samples")
    params = [*enc_q.parameters(), *vocoder.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.8, 0.99), eps=1e-9)
    disc = make_discriminator(8)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=3e-4, betas=(0.8, 0.99), eps=1e-9)
    mel, stft = MelLoss((SpectrogramConfig(), FINE_MEL)), StftLoss()
    lengths = torch.full((BATCH,), SEGMENT_FRAMES)
    use_mean, use_stft = variant.startswith("mean"), variant.endswith("+stft")
    step, t0 = 0, time.time()
    while step < max_steps and time.time() - t0 < minutes * 60:
        step += 1
        segments = []
        for _ in range(BATCH):
            wav = clip(random.choice(long_enough))
            s = random.randrange(0, wav.shape[0] - SEGMENT_FRAMES * hop)
            segments.append(wav[s : s + SEGMENT_FRAMES * hop] * random.uniform(0.5, 1.1))
        y = torch.stack(segments).unsqueeze(1)  # [B, 1, samples]
        spec = spectrogram(y[:, 0])[:, :, :SEGMENT_FRAMES]  # [B, bins, frames]
        z, m, logs, _ = enc_q(spec, lengths)
        y_hat = vocoder(m if use_mean else z)
        loss = MEL_WEIGHT * mel(y_hat, y)
        if not use_mean:  # KL(q || N(0, I)) per frame, from the sample
            loss = loss + PROBE_KL_WEIGHT * torch.sum(-logs + 0.5 * z**2 - 0.5) / (BATCH * SEGMENT_FRAMES)
        if use_stft:
            loss = loss + STFT_WEIGHT * stft(y_hat, y)
        if step > GAN_START:
            d_real, d_fake, _, _ = disc(y, y_hat.detach())
            loss_d = discriminator_loss(d_real, d_fake)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            _, d_fake, fmap_r, fmap_g = disc(y, y_hat)
            loss = loss + generator_loss(d_fake) + feature_loss(fmap_r, fmap_g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 100.0)
        opt.step()
        if step % 100 == 0:
            print(json.dumps({"variant": variant, "step": step, "loss": round(loss.item(), 3)}), flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"enc_q": enc_q.state_dict(), "voc": vocoder.state_dict(), "step": step}
    torch.save({**state, "preset": preset, "seconds": time.time() - t0}, path)
    return path


def evaluate(
    variants: list[str], corpus: Path, out: Path, voices: int, per_voice: int, preset: str
) -> dict[str, Any]:
    """Resynthesise `per_voice` English `eval.list` sentences of the first `voices` speakers."""
    from training.data import read_list
    from training.losses import MelLoss
    from training.metrics import audio_wer, periodicity
    from tritone.audio.features import SpectrogramConfig, spectrogram
    from tritone.audio.io import load_audio

    by_voice: dict[str, list[Any]] = {}
    for e in read_list(corpus / "eval.list").utterances:
        if e.lang == "en":
            by_voice.setdefault(e.speaker, []).append(e)
    chosen = [e for v in sorted(by_voice)[:voices] for e in by_voice[v][:per_voice]]
    mel = MelLoss((SpectrogramConfig(),))
    rows: dict[str, Any] = {}
    for name in ["recordings", *variants]:
        steps = None
        if name != "recordings":
            state = torch.load(out / name / PROBE_FILE, map_location="cpu")
            enc_q, vocoder = _modules(state.get("preset", preset))
            enc_q.load_state_dict(state["enc_q"])
            vocoder.load_state_dict(state["voc"])
            enc_q.eval()
            vocoder.eval()
            steps = int(state["step"])
        words = errors = 0.0
        mels, voiced = [], []
        for e in chosen:
            y = torch.from_numpy(load_audio(e.wav_path, 32_000)[0])
            audio = y
            if name != "recordings":
                with torch.no_grad():
                    spec = spectrogram(y.unsqueeze(0))
                    _, m, _, _ = enc_q(spec, torch.tensor([spec.shape[2]]))
                    audio = vocoder(m)[0, 0]  # the posterior mean: what the latent carries
            n = min(audio.shape[0], y.shape[0])
            mels.append(float(mel(audio[:n].view(1, 1, -1), y[:n].view(1, 1, -1))))
            voiced.append(periodicity(audio.numpy(), 32_000))
            result = audio_wer(audio.numpy(), 32_000, e.text)
            n_words = len(result.reference.split())
            words, errors = words + n_words, errors + result.wer * n_words
        rows[name] = {
            "steps": steps,
            "wer": errors / max(words, 1.0),
            "mel_l1": float(np.mean(mels)),
            "periodicity": float(np.mean(voiced)),
        }
    return {"sentences": [e.utt_id for e in chosen], "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{len(report['sentences'])} held-out sentences of training speakers, resynthesised from their spectrograms",
        "",
        "| variant | steps | WER | mel L1 | periodicity |",
        "|---|---|---|---|---|",
    ]
    for name, r in report["rows"].items():
        steps = "-" if r["steps"] is None else str(r["steps"])
        lines.append(f"| {name} | {steps} | {r['wer']:.1%} | {r['mel_l1']:.3f} | {r['periodicity']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tritone.config import data_dir

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--corpus", type=Path, default=None, help="demo corpus (default: $TRITONE_HOME/demo)")
    p.add_argument("--out", type=Path, default=None, help="default: $TRITONE_HOME/runs/decoder-probe")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--minutes", type=float, default=45.0, help="training time per variant")
    p.add_argument("--max-steps", type=int, default=10**9, help="training steps per variant")
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once (one core each)")
    p.add_argument("--voices", type=int, default=6, help="training speakers in the evaluation")
    p.add_argument("--per-voice", type=int, default=2, help="sentences per speaker")
    p.add_argument("--preset", default="demo")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--train-one", default=None, help=argparse.SUPPRESS)  # the per-variant worker
    args = p.parse_args(argv)
    corpus = args.corpus or data_dir() / "demo"
    out = args.out or data_dir() / "runs" / "decoder-probe"
    if not (corpus / "train.list").is_file():
        p.error(f"{corpus}/train.list not found: build the corpus with `tritone data demo`")
    common = [str(args.minutes), str(args.max_steps), str(args.seed), args.preset]
    if args.train_one:
        train_variant(args.train_one, corpus, out, args.minutes, args.max_steps, args.seed, args.preset)
        return 0
    pending = list(args.variants)
    running: dict[subprocess.Popen[bytes], str] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            variant = pending.pop(0)
            cmd = [sys.executable, "-m", "training.recipes.decoder_probe", "--corpus", str(corpus)]
            cmd += ["--out", str(out), "--minutes", common[0], "--max-steps", common[1]]
            cmd += ["--seed", common[2], "--preset", common[3], "--train-one", variant]
            running[subprocess.Popen(cmd)] = variant
        time.sleep(1.0)
        for proc in [r for r in running if r.poll() is not None]:
            variant = running.pop(proc)
            if proc.returncode:
                raise RuntimeError(f"training variant {variant!r} failed with exit code {proc.returncode}")
    report = evaluate(args.variants, corpus, out, args.voices, args.per_voice, args.preset)
    report["command"] = "python -m training.recipes.decoder_probe " + " ".join(argv or sys.argv[1:])
    (out / "probe.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "probe.md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
