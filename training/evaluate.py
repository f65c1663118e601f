"""`tritone eval`: how close a cloned voice is to its speaker, and how intelligible it is.

For one speaker and a set of held-out sentences (never in any training split), three systems
are always measured side by side on the same sentences:

- `ground truth`: the speaker's own recordings of those sentences (the ceiling, and the WER
  baseline of the recogniser on this voice);
- `zero-shot`: the base model cloning from one reference clip (3-10 s) of the speaker;
- `adapter` (one row per adapter): the base with the voice's LoRA adapter merged in, speaking
  with the adapter's own voice prompt.

With `own_tokens` (`tritone eval --own-tokens`), each synthesised row is followed by the same
system speaking the semantic tokens of the speaker's own recording of each sentence instead of
the GPT's: no GPT, one segment per sentence. It is what that voice would score with a perfect
GPT, so the gap between the two rows is the GPT's share of the WER and the gap to the ground
truth the acoustic path's (SoVITS and the vocoder).

Metrics (training/metrics.py): speaker similarity = Resemblyzer d-vector cosine of each
utterance to the centroid of ~60 s of the speaker's enrolment clips (taken from the training
split, not the evaluated sentences); WER = pocketsphinx en-us over all sentences together
(errors / reference words, after the same text normalisation both sides); real-time factor =
synthesis seconds / audio seconds on this machine. No offline Mandarin recogniser exists here,
so zh sentences get similarity and RTF only.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import metrics
from training.data import Utterance, load_audio

ENROL_SECONDS = 60.0
SAME_SPEAKER = metrics.SAME_SPEAKER_THRESHOLD

Synth = Callable[[str, str], np.ndarray]  # (text, lang) -> 32 kHz float audio


@dataclass
class UttResult:
    utt_id: str
    text: str
    seconds: float
    similarity: float
    hypothesis: str | None
    wer: float | None
    synth_seconds: float | None = None


@dataclass
class SystemResult:
    name: str
    utterances: list[UttResult] = field(default_factory=list)

    @property
    def similarity(self) -> float:
        return float(np.mean([u.similarity for u in self.utterances])) if self.utterances else float("nan")

    @property
    def accept_rate(self) -> float:
        """Share of utterances the verifier accepts as the speaker (cosine >= 0.855)."""
        if not self.utterances:
            return float("nan")
        return float(np.mean([u.similarity >= SAME_SPEAKER for u in self.utterances]))

    @property
    def wer(self) -> float | None:
        """Corpus WER over the sentences that could be recognised (en)."""
        import jiwer

        pairs = [
            (metrics.normalize_text(u.text), metrics.normalize_text(u.hypothesis or ""))
            for u in self.utterances
            if u.hypothesis is not None
        ]
        pairs = [(r, h) for r, h in pairs if r]
        if not pairs:
            return None
        refs = [r for r, _ in pairs]
        hyps = [h if h else "<empty>" for _, h in pairs]
        return float(jiwer.wer(refs, hyps))

    @property
    def rtf(self) -> float | None:
        timed = [u for u in self.utterances if u.synth_seconds is not None]
        if not timed:
            return None
        return sum(u.synth_seconds or 0.0 for u in timed) / max(1e-9, sum(u.seconds for u in timed))

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.name,
            "n": len(self.utterances),
            "similarity": round(self.similarity, 4),
            "accept_rate": round(self.accept_rate, 4),
            "wer": None if self.wer is None else round(self.wer, 4),
            "rtf": None if self.rtf is None else round(self.rtf, 4),
        }


def enrolment_centroid(
    clips: Sequence[Utterance], seconds: float = ENROL_SECONDS
) -> tuple[np.ndarray, float]:
    """Centroid of the d-vectors of the first clips that add up to `seconds`; -> (centroid, seconds used)."""
    embs, used = [], 0.0
    for utt in clips:
        audio, sr = load_audio(utt.wav_path)
        embs.append(metrics.speaker_embedding(audio, sr))
        used += len(audio) / sr
        if used >= seconds:
            break
    if not embs:
        raise ValueError("no enrolment clips")
    return metrics.centroid(embs), used


def score(
    audio: np.ndarray, sr: int, text: str, lang: str, centroid: np.ndarray
) -> tuple[float, str | None, float | None]:
    """(similarity, hypothesis, utterance WER) of one clip; no ASR for non-English."""
    if audio.size < sr // 10:  # under 0.1 s: nothing to embed or recognise
        return 0.0, "" if lang == "en" else None, 1.0 if lang == "en" else None
    try:
        sim = metrics.speaker_similarity(audio, sr, centroid)
    except ValueError:  # the verifier found no speech in it at all
        sim = 0.0
    if lang != "en":
        return sim, None, None
    result = metrics.audio_wer(audio, sr, text, lang)
    return sim, result.hypothesis, result.wer


def evaluate_recordings(name: str, sentences: Sequence[Utterance], centroid: np.ndarray) -> SystemResult:
    out = SystemResult(name)
    for utt in sentences:
        audio, sr = load_audio(utt.wav_path)
        sim, hyp, w = score(audio, sr, utt.text, utt.lang, centroid)
        out.utterances.append(UttResult(utt.utt_id, utt.text, len(audio) / sr, sim, hyp, w))
    return out


def evaluate_synth(
    name: str,
    synth: Synth,
    sentences: Sequence[Utterance],
    centroid: np.ndarray,
    sample_rate: int = 32_000,
    save_dir: Path | None = None,
) -> SystemResult:
    out = SystemResult(name)
    for utt in sentences:
        start = time.perf_counter()
        audio = synth(utt.text, utt.lang)
        took = time.perf_counter() - start
        if save_dir is not None:
            from tritone.audio.io import write_wav

            save_dir.mkdir(parents=True, exist_ok=True)
            write_wav(save_dir / f"{utt.utt_id}.wav", audio, sample_rate)
        sim, hyp, w = score(audio, sample_rate, utt.text, utt.lang, centroid)
        out.utterances.append(UttResult(utt.utt_id, utt.text, len(audio) / sample_rate, sim, hyp, w, took))
    return out


OWN_TOKENS_SUFFIX = ", own recordings' tokens (no GPT)"


def evaluate_own_tokens(
    name: str,
    pipe: Any,
    voice: Any,
    sentences: Sequence[Utterance],
    centroid: np.ndarray,
    seed: int,
    save_dir: Path | None = None,
) -> SystemResult:
    """`pipe` with `voice` speaking each recording's own semantic tokens (no GPT): the acoustic
    path's half of the system's WER."""
    from tritone.pipeline import SynthesisParams, segment_seed

    params = SynthesisParams(seed=seed)
    ge = pipe.reference_embedding(voice)
    out = SystemResult(name)
    for utt in sentences:
        recording, sr = load_audio(utt.wav_path)
        start = time.perf_counter()
        tokens = pipe.semantic_tokens(recording.astype(np.float32), sr)
        phones = pipe.frontend.process(utt.text, utt.lang).ids
        audio = np.clip(
            pipe.tokens_to_audio(tokens, list(phones), ge, params, segment_seed(seed, 0)), -1.0, 1.0
        )
        took = time.perf_counter() - start
        if save_dir is not None:
            from tritone.audio.io import write_wav

            save_dir.mkdir(parents=True, exist_ok=True)
            write_wav(save_dir / f"{utt.utt_id}.wav", audio, 32_000)
        sim, hyp, w = score(audio, 32_000, utt.text, utt.lang, centroid)
        out.utterances.append(UttResult(utt.utt_id, utt.text, len(audio) / 32_000, sim, hyp, w, took))
    return out


def machine() -> str:
    import os

    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} (threads {torch.get_num_threads()})"


@dataclass
class EvalReport:
    speaker: str
    sentences: int
    enrol_seconds: float
    reference: dict[str, Any]
    systems: list[SystemResult]
    command: str = ""
    date: str = ""
    machine: str = ""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "sentences": self.sentences,
            "enrol_seconds": round(self.enrol_seconds, 1),
            "reference": self.reference,
            "command": self.command,
            "date": self.date,
            "machine": self.machine,
            "seed": self.seed,
            "summary": [s.summary() for s in self.systems],
            "utterances": {s.name: [asdict(u) for u in s.utterances] for s in self.systems},
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    def markdown(self) -> str:
        rows = [
            "| system | n | similarity (mean cos) | accepted at 0.855 | WER | RTF |",
            "|---|---|---|---|---|---|",
        ]
        for s in self.systems:
            d = s.summary()
            wer = "n/a" if d["wer"] is None else f"{100 * d['wer']:.1f}%"
            rtf = "-" if d["rtf"] is None else f"{d['rtf']:.2f}"
            rows.append(
                f"| {s.name} | {d['n']} | {d['similarity']:.3f} | {100 * d['accept_rate']:.0f}% | {wer} | {rtf} |"
            )
        return "\n".join(rows)


def pick_reference(clips: Sequence[Utterance], min_s: float = 4.0, max_s: float = 8.0) -> Utterance:
    """The first clip (in list order) of a comfortable reference length, else the first in 3-10 s."""
    import soundfile as sf

    fallback = None
    for utt in clips:
        seconds = sf.info(str(utt.wav_path)).duration
        if min_s <= seconds <= max_s:
            return utt
        if fallback is None and 3.0 <= seconds <= 10.0:
            fallback = utt
    if fallback is None:
        raise ValueError("no clip of 3-10 s to use as the reference")
    return fallback


def load_model(base: Path, adapter: Path | None = None) -> tuple[Any, Any]:
    """(Pipeline over the base with the adapter merged in, the adapter or None)."""
    from tritone.models.base import BaseModel
    from tritone.pipeline import Pipeline

    model = BaseModel.load(base)
    adapter_obj = None
    if adapter is not None:
        from adapters.apply import apply_adapter
        from adapters.format import read_adapter

        adapter_obj = read_adapter(adapter, expect_base=model.weights_sha256)
        apply_adapter(model, adapter_obj, base_sha256=model.weights_sha256)
    return Pipeline(model), adapter_obj


def pipeline_synth(
    pipe: Any, voice: Any, seed: int, max_new_tokens: int = 600, top_k: int = 15, temperature: float = 1.0
) -> Synth:
    """Synthesis as served, with the GPT's sampling settings (defaults: the serving defaults)."""
    from tritone.pipeline import SynthesisParams

    params = SynthesisParams(seed=seed, max_new_tokens=max_new_tokens, top_k=top_k, temperature=temperature)

    def run(text: str, lang: str) -> np.ndarray:
        audio: np.ndarray = pipe.synthesize(text, lang, voice, params)
        return audio

    return run


def evaluate_speaker(
    base: Path,
    sentences: Sequence[Utterance],
    enrol: Sequence[Utterance],
    adapters: Sequence[tuple[str, Path]] = (),
    reference: Utterance | None = None,
    seed: int = 1234,
    zero_shot: bool = True,
    ground_truth: bool = True,
    save_dir: Path | None = None,
    command: str = "",
    max_new_tokens: int = 600,
    top_k: int = 15,
    temperature: float = 1.0,
    own_tokens: bool = False,
) -> EvalReport:
    """The side-by-side report for one speaker (see the module docstring)."""
    import datetime as dt

    import torch

    torch.manual_seed(seed)
    speaker = sentences[0].speaker if sentences else "?"
    centroid, enrol_s = enrolment_centroid(enrol)
    ref = reference or pick_reference(enrol)
    systems: list[SystemResult] = []
    if ground_truth:
        systems.append(evaluate_recordings("ground truth (own recordings)", sentences, centroid))
    if zero_shot:
        pipe, _ = load_model(base)
        audio, sr = load_audio(ref.wav_path)
        voice = pipe.build_voice_prompt(audio.astype(np.float32), sr, ref.text, ref.lang)
        systems.append(
            evaluate_synth(
                "base zero-shot (1 reference clip)",
                pipeline_synth(pipe, voice, seed, max_new_tokens, top_k, temperature),
                sentences,
                centroid,
                save_dir=save_dir / "zero_shot" if save_dir else None,
            )
        )
        if own_tokens:
            systems.append(
                evaluate_own_tokens(
                    "base zero-shot" + OWN_TOKENS_SUFFIX,
                    pipe,
                    voice,
                    sentences,
                    centroid,
                    seed,
                    save_dir=save_dir / "zero_shot_own_tokens" if save_dir else None,
                )
            )
    for label, path in adapters:
        pipe, adapter = load_model(base, path)
        systems.append(
            evaluate_synth(
                label,
                pipeline_synth(pipe, adapter.prompt, seed, max_new_tokens, top_k, temperature),
                sentences,
                centroid,
                save_dir=save_dir / label.replace(" ", "_") if save_dir else None,
            )
        )
        if own_tokens:
            systems.append(
                evaluate_own_tokens(
                    label + OWN_TOKENS_SUFFIX,
                    pipe,
                    adapter.prompt,
                    sentences,
                    centroid,
                    seed,
                    save_dir=save_dir / (label.replace(" ", "_") + "_own_tokens") if save_dir else None,
                )
            )
    return EvalReport(
        speaker=speaker,
        sentences=len(sentences),
        enrol_seconds=enrol_s,
        reference={"utt_id": ref.utt_id, "text": ref.text},
        systems=systems,
        command=command,
        date=dt.date.today().isoformat(),
        machine=machine(),
        seed=seed,
    )
