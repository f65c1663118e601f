"""How fast does the acoustic decoder learn? Train the SoVITS posterior path alone (a clip's
linear spectrogram -> posterior encoder -> generator, no GPT, prior or flow) with different
objectives for the same time or steps, then resynthesise held-out sentences of training
speakers and score them (docs/QUALITY.md §4).

    python -m training.recipes.decoder_probe [--variants sample sample+stft mean mean+stft
        sample+nsf mean+nsf sample+spec mean+spec mean+spec+mag] [--minutes 45] [--max-steps N]
        [--jobs 2]

Variants: the generator's input is the posterior's sample (`sample`, with a KL of 0.1 to a
standard normal standing in for the prior, which the probe has not) or its mean (`mean`, no
KL); `+stft` adds the multi-resolution STFT loss (x 2.5) to the mel L1 (x 45); `+nsf` swaps the
generator for its source-filter form (`tritone.models.source_filter`: a harmonic excitation at
the clip's pitch added at every upsampling stage) and trains a pitch head on the posterior's
mean, detached, to say whether the latent carries the pitch; `+spec` swaps it for a spectral
generator of about the same size (`tritone.models.spectral_vocoder`: ConvNeXt blocks predict a
short-time spectrum's log magnitude and phase, inverted by an inverse STFT); `+mag` adds, for
the spectral generator, the L1 between the log magnitudes it writes and the clip's own on the same
frames (x 45, `training.losses.spectrum_magnitude_loss`). All variants: the
demo preset's sizes, 0.64 s slices, 4 per step, random gain 0.5-1.1, the narrow period
discriminator from step 400, AdamW 3e-4. `+stft` and `mean` are the choices
`S2TrainConfig.stft_weight` and `posterior_mean_steps` make available to the real trainer, as
`magnitude_weight` does `+mag`; `+spec` is a served generator kind, `+nsf` is not. Each variant
trains in its own single-threaded process under `<out>/<variant>/probe.pt` (a finished one is reused); the report (`probe.json` /
`.md`: pocketsphinx WER, mel L1 and periodicity of the resynthesis, next to the recordings and
to their magnitudes with random phases) evaluates every variant's weights on the same
sentences, a `+nsf` one twice: with the pitch its head predicts and with the recording's own
(`, true pitch`).
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

VARIANTS = (
    "sample",
    "sample+stft",
    "mean",
    "mean+stft",
    "sample+nsf",
    "mean+nsf",
    "sample+spec",
    "mean+spec",
    "mean+spec+mag",
)
PROBE_FILE = "probe.pt"
SEGMENT_FRAMES = 32
BATCH = 4
GAN_START = 400
PROBE_KL_WEIGHT = 0.1  # the side runs' --kl-weight
STFT_WEIGHT = 2.5
MAG_WEIGHT = 45.0  # the direct log-magnitude L1 of `+mag`, weighted as the mel L1
RANDOM_PHASE_ROW = "recordings, random phase"  # their 1280-point magnitudes, phases scrambled


def _modules(preset: str, variant: str) -> tuple[Any, Any, Any]:
    """(posterior encoder, generator, pitch head or None) of a variant."""
    from tritone.models.base import BaseModelConfig
    from tritone.models.source_filter import PitchHead, SourceFilterVocoder
    from tritone.models.sovits import SoVITS
    from tritone.models.spectral_vocoder import SpectralVocoder, SpectralVocoderConfig
    from tritone.models.vocoder import Vocoder, VocoderConfig

    config = BaseModelConfig.preset(preset)
    if not isinstance(config.vocoder, VocoderConfig):
        raise ValueError(f"the probe compares generators itself: preset {preset!r} must be a HiFi-GAN one")
    enc_q = SoVITS(config.sovits, posterior=True).enc_q
    assert enc_q is not None
    if variant.endswith("+nsf"):
        return enc_q, SourceFilterVocoder(config.vocoder), PitchHead(config.vocoder.in_channels)
    if "+spec" in variant:
        spectral = SpectralVocoderConfig(  # symmetric depthwise convs, as the probe's runs had
            in_channels=config.vocoder.in_channels, hop_length=config.vocoder.hop_length, lookahead_taps=3
        )
        return enc_q, SpectralVocoder(spectral), None
    return enc_q, Vocoder(config.vocoder), None


def _pitch(audio: Tensor, hop: int, frames: int) -> Tensor:
    """f0 [B, frames] of audio [B, samples] (`tritone.audio.pitch`)."""
    from tritone.audio.pitch import pitch_track

    rows = [pitch_track(a.numpy(), 32_000, hop)[:frames] for a in audio]
    return torch.from_numpy(np.stack(rows))


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
        spectrum_magnitude_loss,
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
    enc_q, vocoder, pitch_head = _modules(preset, variant)
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
    if pitch_head is not None:
        params += list(pitch_head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.8, 0.99), eps=1e-9)
    disc = make_discriminator(8)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=3e-4, betas=(0.8, 0.99), eps=1e-9)
    mel, stft = MelLoss((SpectrogramConfig(), FINE_MEL)), StftLoss()
    lengths = torch.full((BATCH,), SEGMENT_FRAMES)
    use_mean, use_stft, use_source, use_mag = (
        variant.startswith("mean"),
        variant.endswith("+stft"),
        pitch_head is not None,
        variant.endswith("+mag"),
    )
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
        latent = m if use_mean else z
        if use_source:  # trained on the true pitch; the head learns to read it from the latent
            f0 = _pitch(y[:, 0], hop, SEGMENT_FRAMES)
            y_hat = vocoder(latent, f0)
            loss = MEL_WEIGHT * mel(y_hat, y) + pitch_head.loss(pitch_head(m.detach()), f0)
        elif use_mag:  # the spectrum the generator writes, scored against the clip's own, frame by frame
            real, imag = vocoder.spectrum(latent)
            y_hat = vocoder.istft(real, imag)
            magnitude = spectrum_magnitude_loss(real, imag, y, vocoder.config.n_fft, vocoder.config.frame_hop)
            loss = MEL_WEIGHT * mel(y_hat, y) + MAG_WEIGHT * magnitude
        else:
            y_hat = vocoder(latent)
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
    if pitch_head is not None:
        state["pitch"] = pitch_head.state_dict()
    torch.save({**state, "preset": preset, "seconds": time.time() - t0}, path)
    return path


def evaluate(
    variants: list[str], corpus: Path, out: Path, voices: int, per_voice: int, preset: str
) -> dict[str, Any]:
    """Resynthesise `per_voice` English `eval.list` sentences of the first `voices` speakers.

    A `+nsf` variant gives two rows: with the pitch its head predicts from the latent (what a
    served model would have) and, marked `true pitch`, with the recording's own.
    """
    from training.data import read_list
    from training.losses import MelLoss
    from tritone.audio.features import SpectrogramConfig, spectrogram
    from tritone.audio.io import load_audio
    from tritone.models.source_filter import PitchHead

    by_voice: dict[str, list[Any]] = {}
    for e in read_list(corpus / "eval.list").utterances:
        if e.lang == "en":
            by_voice.setdefault(e.speaker, []).append(e)
    chosen = [e for v in sorted(by_voice)[:voices] for e in by_voice[v][:per_voice]]
    recordings = [torch.from_numpy(load_audio(e.wav_path, 32_000)[0]) for e in chosen]
    mel = MelLoss((SpectrogramConfig(),))
    rows: dict[str, Any] = {"recordings": score_clips(recordings, recordings, chosen, mel)}
    # how much the recogniser needs the phase: what a generator that gets only the magnitudes right makes
    scrambled = [_random_phase(y, seed=i) for i, y in enumerate(recordings)]
    rows[RANDOM_PHASE_ROW] = score_clips(scrambled, recordings, chosen, mel)
    for name in variants:
        state = torch.load(out / name / PROBE_FILE, map_location="cpu")
        enc_q, vocoder, pitch_head = _modules(state.get("preset", preset), name)
        enc_q.load_state_dict(state["enc_q"])
        vocoder.load_state_dict(state["voc"])
        enc_q.eval()
        vocoder.eval()
        if pitch_head is not None:
            pitch_head.load_state_dict(state["pitch"])
        outputs: dict[str, list[Tensor]] = {name: [], f"{name}, true pitch": []}
        voicing, cents = [], []
        torch.manual_seed(0)  # the excitation's phases and noise
        with torch.no_grad():
            for y in recordings:
                spec = spectrogram(y.unsqueeze(0))
                _, m, _, _ = enc_q(spec, torch.tensor([spec.shape[2]]))  # the posterior mean
                if pitch_head is None:
                    outputs[name].append(vocoder(m)[0, 0])
                    continue
                true_f0 = _pitch(y.unsqueeze(0), vocoder.hop_length, m.shape[2])
                f0 = PitchHead.decode(pitch_head(m))
                outputs[name].append(vocoder(m, f0)[0, 0])
                outputs[f"{name}, true pitch"].append(vocoder(m, true_f0)[0, 0])
                voicing.append(float(((f0 > 0) == (true_f0 > 0)).float().mean()))
                both = (f0 > 0) & (true_f0 > 0)
                if both.any():
                    cents.append(float(torch.median(torch.abs(1200 * torch.log2(f0[both] / true_f0[both])))))
        for row, audio in outputs.items():
            if audio:
                rows[row] = {**score_clips(audio, recordings, chosen, mel), "steps": int(state["step"])}
        if pitch_head is not None:
            rows[name]["pitch_voicing_agreement"] = float(np.mean(voicing))
            rows[name]["pitch_median_error_cents"] = float(np.median(cents)) if cents else None
    return {"sentences": [e.utt_id for e in chosen], "rows": rows}


def _random_phase(audio: Tensor, seed: int, n_fft: int = 1280, hop: int = 320) -> Tensor:
    """`audio` [samples] rebuilt from its short-time magnitudes with uniformly random phases."""
    window = torch.hann_window(n_fft)
    magnitude = torch.stft(audio, n_fft, hop, window=window, return_complex=True).abs()
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(seed)) * 2 * torch.pi
    return torch.istft(torch.polar(magnitude, phase), n_fft, hop, window=window, length=audio.shape[0])


def score_clips(
    audio: list[Tensor], recordings: list[Tensor], utterances: list[Any], mel: Any
) -> dict[str, Any]:
    """WER over all sentences, mean mel L1 to the recordings, mean periodicity."""
    from training.metrics import audio_wer, periodicity

    words = errors = 0.0
    mels, voiced = [], []
    for a, y, e in zip(audio, recordings, utterances):
        n = min(a.shape[0], y.shape[0])
        mels.append(float(mel(a[:n].view(1, 1, -1), y[:n].view(1, 1, -1))))
        voiced.append(periodicity(a.numpy(), 32_000))
        result = audio_wer(a.numpy(), 32_000, e.text)
        n_words = len(result.reference.split())
        words, errors = words + n_words, errors + result.wer * n_words
    wer, mel_l1, voicing = errors / max(words, 1.0), float(np.mean(mels)), float(np.mean(voiced))
    return {"steps": None, "wer": wer, "mel_l1": mel_l1, "periodicity": voicing}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{len(report['sentences'])} held-out sentences of training speakers, resynthesised from their spectrograms",
        "",
        "| variant | steps | WER | mel L1 | periodicity | predicted pitch: voicing agreement, median error |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["rows"].items():
        steps = "-" if r["steps"] is None else str(r["steps"])
        pitch = "-"
        if "pitch_voicing_agreement" in r:
            cents = r["pitch_median_error_cents"]
            pitch = f"{r['pitch_voicing_agreement']:.0%}, " + ("-" if cents is None else f"{cents:.0f} cents")
        row = f"| {name} | {steps} | {r['wer']:.1%} | {r['mel_l1']:.3f} | {r['periodicity']:.3f} | {pitch} |"
        lines.append(row)
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
