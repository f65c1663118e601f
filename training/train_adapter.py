"""`tritone train adapter`: a per-speaker LoRA adapter over a frozen base, from 1-5 minutes of audio.

1. The clips are preprocessed and encoded with the base's own SSL encoder and codebook (cached).
2. The voice prompt is built from one reference clip (3-10 s) exactly as serving builds it
   (`Pipeline.build_voice_prompt`), and ships with the adapter.
3. peft `LoraConfig` wraps the target modules of the base bundle (names as in the bundle:
   `gpt.layers.0.self_attn.in_proj`, `sovits.enc_p.mrte.c_post`, ...) and only the LoRA factors
   train, on two losses that follow the serving path:
   - GPT: next-token cross-entropy on the speaker's semantic tokens, each utterance prefixed by
     the voice prompt (prompt phones + utterance phones | prompt tokens + utterance tokens), the
     loss on the utterance part only, which is how the GPT is used at inference;
   - SoVITS + vocoder: the inference path itself (tokens -> prior -> reverse flow -> generator,
     `ge` from the voice prompt's spectrogram) on random 32-frame slices, mel L1 against the
     real audio. The base bundle has no posterior encoder or discriminator, so there is no KL
     or adversarial term: an adapter can be trained from the shipped base alone.
4. The adapter is evaluated (training/evaluate.py) on held-out sentences, written in the adapter
   format with its metrics, and registered as a new version of `voice.<tenant>.<name>` at alias
   `staging`, with the training run as its lineage.

Target groups (`--targets`): `gpt` (attention in/out projections and FFN of every layer), `ref`
(reference encoder), `mrte` (the timbre cross-attention block), `flow` (the `ge` conditioning of
every coupling layer), `vocoder` (the generator's input conv and its `ge` conditioning),
`vocoder_body` (the spectral generator's ConvNeXt pointwise layers and its spectrum head; nothing
in a HiFi-GAN generator). They are exactly the serving runtime's targets
(`tritone.serving.runtime.DEFAULT_TARGETS`), so an adapter trained with any of them can be loaded
into the Triton adapter bank; the default trains all six.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from training.common import pad_1d, seed_everything
from training.data import Utterance, load_audio, load_dataset
from training.losses import FINE_MEL, MEL_WEIGHT, MelLoss, spectrum_magnitude_loss
from training.preprocess import PrepConfig, PrepItem, encode, load_item, prepare
from training.tracking import Tracker
from tritone.audio.features import SpectrogramConfig
from tritone.lora import LoRAWeights
from tritone.models.base import BaseModel
from tritone.models.spectral_vocoder import SpectralVocoder
from tritone.serving.runtime import (
    FLOW_TARGETS,
    GPT_TARGETS,
    REF_TARGETS,
    SOVITS_TARGETS,
    VOCODER_BODY_TARGETS,
    VOCODER_TARGETS,
)
from tritone.voice import VoicePrompt

# The served groups are the serving runtime's own patterns: an adapter the Triton bank cannot
# hold would register fine and then be refused at the first request.
TARGET_GROUPS: dict[str, str] = {
    "gpt": GPT_TARGETS,
    "ref": REF_TARGETS,
    "mrte": SOVITS_TARGETS,
    "flow": FLOW_TARGETS,
    "vocoder": VOCODER_TARGETS,
    "vocoder_body": VOCODER_BODY_TARGETS,
}
DEFAULT_TARGETS = ("gpt", "ref", "mrte", "flow", "vocoder", "vocoder_body")


@dataclass
class AdapterTrainConfig:
    steps: int = 300
    lr: float = 1e-3
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = DEFAULT_TARGETS
    gpt_batch: int = 8
    s2_batch: int = 4
    segment_frames: int = 32
    noise_scale: float = 0.5  # as at inference
    max_seconds: float = 300.0  # use at most 5 minutes of the speaker
    seed: int = 1234
    log_every: int = 10
    threads: int | None = None
    fine_mel: bool = True
    # the spectral generator's direct log-magnitude L1 next to the mel L1 (0 = off; as the base's
    # `--magnitude-weight`, training/train_sovits.py); refused for a HiFi-GAN base
    magnitude_weight: float = 0.0


@dataclass
class AdapterResult:
    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    version: int | None = None
    run_id: str | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    report: dict[str, Any] | None = None


def target_modules(model: nn.Module, groups: Sequence[str]) -> list[str]:
    """Names of the plain Linear / undilated Conv1d modules in the chosen target groups."""
    unknown = [g for g in groups if g not in TARGET_GROUPS]
    if unknown:
        raise ValueError(f"unknown target groups {unknown}; choose from {sorted(TARGET_GROUPS)}")
    pattern = re.compile("|".join(f"(?:{TARGET_GROUPS[g]})" for g in groups) + "$")
    names = []
    for name, module in model.named_modules():
        if not pattern.fullmatch(name):
            continue
        plain_conv = type(module) is nn.Conv1d and module.dilation == (1,) and module.groups == 1
        if type(module) is nn.Linear or plain_conv:
            names.append(name)
    if not names:
        raise ValueError(
            f"the target groups {list(groups)} match no Linear / Conv1d of this base "
            "(vocoder_body exists only in a spectral generator)"
        )
    return names


def speaker_utterances(path: Path, speaker: str | None, lang: str | None) -> list[Utterance]:
    """A folder of clips or a .list file; with `speaker`, only that speaker's clips."""
    ds = load_dataset(path, speaker=speaker if path.is_dir() else None, lang=lang)
    ds.raise_if_errors()
    utts = [u for u in ds.utterances if speaker is None or path.is_dir() or u.speaker == speaker]
    if not utts:
        raise ValueError(f"{path}: no clips" + (f" of speaker {speaker!r}" if speaker else ""))
    return utts


def limit_seconds(utts: Sequence[Utterance], seconds: float) -> list[Utterance]:
    import soundfile as sf

    out: list[Utterance] = []
    total = 0.0
    for u in utts:
        d = sf.info(str(u.wav_path)).duration
        if total + d > seconds and out:
            break
        out.append(u)
        total += d
    return out


def data_sha256(items: Sequence[PrepItem]) -> str:
    h = hashlib.sha256()
    for it in sorted(items, key=lambda i: i.key):
        h.update(it.key.encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# losses on the wrapped base


def gpt_prompted_loss(model: BaseModel, prompt: VoicePrompt, examples: Sequence[dict[str, Tensor]]) -> Tensor:
    """Cross-entropy of each utterance's tokens after the voice prompt (utterance part only)."""
    phones = [torch.cat([prompt.phone_ids, e["phones"]]) for e in examples]
    codes = [torch.cat([prompt.semantic, e["codes"]]) for e in examples]
    ph, ph_lens = pad_1d(phones)
    y, y_lens = pad_1d(codes)
    bert = torch.zeros(len(examples), model.config.gpt.bert_dim, ph.shape[1])
    logits, targets = model.gpt(ph, ph_lens, bert, y, y_lens)
    pos = torch.arange(y.shape[1]).unsqueeze(0)
    start = prompt.semantic.shape[0] - 1  # this position predicts the utterance's first token
    valid = (pos >= start) & (pos < y_lens.unsqueeze(1))
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (ce * valid).sum() / valid.sum().clamp(min=1)


def s2_inference_path_loss(
    model: BaseModel,
    prompt: VoicePrompt,
    examples: Sequence[dict[str, Tensor]],
    mel: MelLoss,
    segment: int,
    noise_scale: float,
    generator: torch.Generator,
    magnitude: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Mel L1 of the serving path (tokens -> prior -> reverse flow -> generator) on random slices,
    and with `magnitude` the spectral generator's log-magnitude L1 on them (else None)."""
    sovits, vocoder = model.sovits, model.vocoder
    hop = vocoder.hop_length
    ge = sovits.ref_embedding(prompt.refer_spec.unsqueeze(0))  # [1, gin, 1]
    codes, code_lens = pad_1d([e["codes"] for e in examples])
    phones, phone_lens = pad_1d([e["phones"] for e in examples])
    q = sovits.quantizer.decode(codes.unsqueeze(0))
    stride = sovits.config.semantic_stride
    if stride > 1:
        q = F.interpolate(q, size=q.size(2) * stride, mode="nearest")
    B = len(examples)
    ge_b = ge.expand(B, -1, -1)
    phone_index = None
    if model.aligner is not None:  # SoVITS's aligned lookup: each frame's phone, as the pipeline places it
        aligned = [model.aligner.align(e["codes"], e["phones"]) for e in examples]
        phone_index = pad_1d(aligned)[0]
    m, logs, y_mask, lengths = sovits.enc_p(
        q, code_lens * stride, phones, phone_lens, ge_b, phone_index=phone_index
    )
    eps = torch.randn(m.shape, generator=generator)
    z_p = (m + eps * torch.exp(logs) * noise_scale) * y_mask
    z = sovits.flow(z_p, y_mask, g=ge_b, reverse=True) * y_mask
    ys, zs = [], []
    for b, e in enumerate(examples):
        n = min(int(lengths[b]), e["wav"].shape[0] // hop)
        start = int(torch.randint(0, max(1, n - segment + 1), (1,), generator=generator))
        z_b = z[b, :, start : start + segment]
        y_b = e["wav"][start * hop : (start + segment) * hop]
        if z_b.shape[1] < segment:
            z_b = F.pad(z_b, (0, segment - z_b.shape[1]))
        if y_b.shape[0] < segment * hop:
            y_b = F.pad(y_b, (0, segment * hop - y_b.shape[0]))
        zs.append(z_b)
        ys.append(y_b)
    y = torch.stack(ys).unsqueeze(1)
    if not magnitude:
        return mel(vocoder(torch.stack(zs), ge_b), y), None
    if not isinstance(vocoder, SpectralVocoder):
        raise ValueError(
            "the magnitude loss scores a spectral generator's spectrum; this base has a HiFi-GAN one"
        )
    real, imag = vocoder.spectrum(torch.stack(zs), ge_b)
    spectral = spectrum_magnitude_loss(real, imag, y, vocoder.config.n_fft, vocoder.config.frame_hop)
    return mel(vocoder.istft(real, imag), y), spectral


def extract_lora(model: nn.Module, names: Sequence[str], alpha: float) -> dict[str, LoRAWeights]:
    """peft's factors per wrapped module, in the adapter format's layout."""
    out = {}
    for name in names:
        module: Any = model.get_submodule(name)
        a = module.lora_A["default"].weight.detach().clone()
        b = module.lora_B["default"].weight.detach().clone()
        out[name] = LoRAWeights(a, b, alpha)
    return out


# ---------------------------------------------------------------------------------------------
# the whole job


@dataclass
class AdapterJob:
    voice: str
    tenant: str
    base: Path
    audio: Path
    consent: Path
    out: Path
    speaker: str | None = None  # select one speaker of a multi-speaker .list
    lang: str | None = None
    reference: Path | None = None  # a clip to use as the voice prompt (default: picked from the data)
    reference_text: str | None = None
    eval_list: Path | None = None  # held-out sentences of the speaker (default: some clips held back)
    register: bool = True
    tracking_uri: str | None = None
    cache_dir: Path | None = None
    progress: bool = True
    eval_sentences: int | None = None
    eval_max_tokens: int = 600  # per sentence, a guard against a GPT that never stops
    config: AdapterTrainConfig = field(default_factory=AdapterTrainConfig)


def train_adapter(job: AdapterJob) -> AdapterResult:
    from adapters.consent import ConsentRecord
    from adapters.format import write_adapter
    from adapters.registry import AdapterRegistry
    from training import evaluate
    from tritone.pipeline import Pipeline

    cfg = job.config
    t_start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    consent = ConsentRecord.load(job.consent)
    utts = speaker_utterances(job.audio, job.speaker, job.lang)
    if job.eval_list is not None:
        held = speaker_utterances(job.eval_list, job.speaker, job.lang)
        train_utts = list(utts)
    else:  # hold back a tenth (at most 10 clips) of the speaker's own clips for evaluation
        n_eval = min(10, max(1, len(utts) // 10)) if len(utts) >= 5 else 0
        held, train_utts = list(utts[len(utts) - n_eval :]), list(utts[: len(utts) - n_eval])
    train_utts = limit_seconds(train_utts, cfg.max_seconds)
    if job.eval_sentences is not None:
        held = held[: job.eval_sentences]

    base = BaseModel.load(job.base)
    if cfg.magnitude_weight > 0 and not isinstance(base.vocoder, SpectralVocoder):
        raise ValueError("--magnitude-weight needs a base with the spectral generator; this one has HiFi-GAN")
    base_sha256 = base.weights_sha256
    pipe = Pipeline(base)
    # voice prompt: the given clip, or the first training clip of a comfortable length
    if job.reference is not None:
        if not job.reference_text:
            raise ValueError("a reference clip needs its transcript (reference_text)")
        ref = Utterance(job.reference.stem, job.reference, job.voice, job.lang or "en", job.reference_text)
    else:
        ref = evaluate.pick_reference(train_utts)
    ref_audio, ref_sr = load_audio(ref.wav_path)
    prompt = pipe.build_voice_prompt(ref_audio.astype(np.float32), ref_sr, ref.text, ref.lang)

    items, _ = prepare(train_utts, PrepConfig(), job.cache_dir, job.progress)
    encoded, _ = encode(
        items,
        base.ssl,
        base.sovits.ssl_proj,
        base.sovits.quantizer,
        job.cache_dir,
        PrepConfig().digest(),
        progress=job.progress,
    )
    examples = []
    for it in items:
        data, enc = it.load(), load_item(encoded[it.key])
        examples.append(
            {
                "phones": data["phones"].long(),
                "codes": enc["codes"].long(),
                "wav": data["wav"].float() / 32767.0,
            }
        )
    train_seconds = sum(e["wav"].shape[0] for e in examples) / 32_000

    from peft import LoraConfig, inject_adapter_in_model

    names = target_modules(base, cfg.targets)
    base.train()
    lora_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=names, lora_dropout=0.0)
    inject_adapter_in_model(lora_cfg, base)
    params = [p for n, p in base.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    mel = MelLoss((SpectrogramConfig(), FINE_MEL) if cfg.fine_mel else (SpectrogramConfig(),))
    has_gpt = any(n.startswith("gpt.") for n in names)
    has_s2 = any(not n.startswith("gpt.") for n in names)
    tracker = Tracker(
        "tritone-train-adapter",
        f"{job.tenant}.{job.voice}",
        {
            **{k: v for k, v in asdict(cfg).items()},
            "voice": job.voice,
            "tenant": job.tenant,
            "base": str(job.base),
            "base_weights_sha256": base_sha256,
            "train_clips": len(examples),
            "train_seconds": round(train_seconds, 1),
            "reference": ref.utt_id,
            "lora_modules": len(names),
            "lora_params": sum(p.numel() for p in params),
        },
        uri=job.tracking_uri,
        tags={"voice": f"{job.tenant}.{job.voice}"},
    )
    g = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc=f"adapter {job.voice}", disable=not job.progress)
    sums: dict[str, float] = {}
    history: list[dict[str, float]] = []
    seen = 0
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / 20)  # short warm-up, then constant
        for group in opt.param_groups:
            group["lr"] = lr
        loss = torch.zeros(())
        logs: dict[str, float] = {}
        if has_gpt:
            pick = torch.randint(0, len(examples), (min(cfg.gpt_batch, len(examples)),), generator=g).tolist()
            ce = gpt_prompted_loss(base, prompt, [examples[i] for i in pick])
            loss = loss + ce
            logs["gpt_ce"] = ce.item()
        if has_s2:
            pick = torch.randint(0, len(examples), (min(cfg.s2_batch, len(examples)),), generator=g).tolist()
            ml, mag = s2_inference_path_loss(
                base,
                prompt,
                [examples[i] for i in pick],
                mel,
                cfg.segment_frames,
                cfg.noise_scale,
                g,
                cfg.magnitude_weight > 0,
            )
            loss = loss + MEL_WEIGHT * ml
            logs["mel_l1"] = ml.item()
            if mag is not None:
                loss = loss + cfg.magnitude_weight * mag
                logs["magnitude_l1"] = mag.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        seen += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            avg = {k: v / seen for k, v in sums.items()}
            history.append({"step": step + 1, **avg})
            tracker.log_metrics({**avg, "lr": lr}, step + 1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in avg.items()})
            sums, seen = {}, 0
    bar.close()
    lora = extract_lora(base, names, float(cfg.alpha))
    fit_seconds = time.time() - t_start

    # register the base (idempotent) to get its pin
    registry = AdapterRegistry(job.tracking_uri)
    pin = registry.find_base(base_sha256) or registry.register_base(job.base)
    source = {
        "kind": "training",
        "recipe": "training/train_adapter.py",
        "steps": cfg.steps,
        "targets": list(cfg.targets),
        "train_clips": len(examples),
        "train_seconds": round(train_seconds, 1),
        "reference": ref.utt_id,
        "seed": cfg.seed,
        "mlflow_run_id": tracker.run_id,
        "loss_first": history[0] if history else {},
        "loss_last": history[-1] if history else {},
    }
    training_sha = data_sha256(items)

    def write(path: Path, metrics: dict[str, float]) -> Path:
        return write_adapter(
            path,
            voice=job.voice,
            tenant=job.tenant,
            base=pin,
            lora=lora,
            prompt=prompt,
            consent_id=consent.id,
            training_data_sha256=training_sha,
            metrics=metrics,
            source=source,
            overwrite=True,
        )

    metrics: dict[str, float] = {}
    report: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        draft = write(Path(tmp) / "draft", {})
        if held:
            enrol = train_utts
            rep = evaluate.evaluate_speaker(
                job.base,
                held,
                enrol,
                adapters=[("adapter", draft)],
                reference=ref,
                seed=cfg.seed,
                max_new_tokens=job.eval_max_tokens,
            )
            report = rep.to_dict()
            by_name = {s.name: s.summary() for s in rep.systems}
            a = by_name["adapter"]
            zs = by_name.get("base zero-shot (1 reference clip)", {})
            gt = by_name.get("ground truth (own recordings)", {})
            metrics["speaker_similarity"] = a["similarity"]
            metrics["accept_rate"] = a["accept_rate"]
            if a["wer"] is not None:
                metrics["wer"] = a["wer"]
            if a["rtf"] is not None:
                metrics["rtf"] = a["rtf"]
            if zs:
                metrics["zero_shot_similarity"] = zs["similarity"]
                if zs.get("wer") is not None:
                    metrics["zero_shot_wer"] = zs["wer"]
            if gt:
                metrics["ground_truth_similarity"] = gt["similarity"]
                if gt.get("wer") is not None:
                    metrics["ground_truth_wer"] = gt["wer"]
            metrics["eval_sentences"] = float(len(held))
            tracker.log_metrics(metrics, cfg.steps)
            rpath = Path(tmp) / "eval.json"
            rpath.write_text(json.dumps(report, indent=2, ensure_ascii=False))
            tracker.log_artifact(rpath, "eval")
    out = write(job.out, metrics)
    tracker.log_artifacts(out, "adapter")
    version = None
    if job.register:
        info = registry.register(out, consent=consent, run_id=tracker.run_id, stage=True)
        version = info.version
        tracker.set_tags({"registered_version": str(version)})
    tracker.finish()
    return AdapterResult(
        path=out,
        metrics=metrics,
        version=version,
        run_id=tracker.run_id,
        seconds=time.time() - t_start,
        train_seconds=fit_seconds,
        report=report,
    )


def copy_adapter(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst
