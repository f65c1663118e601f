"""Many registered voices for load tests and benchmarks: real adapters, real voice prompts.

Every voice is a real adapter for the serving base: a random LoRA (`adapters.synthetic.random_lora`)
over the targets the serving runtime holds (`tritone.serving.runtime.DEFAULT_TARGETS`) and a
voice prompt built by the base's own `Pipeline.build_voice_prompt` from a spoken reference clip
(Debian `flite`, four voices times several of our sentences; a synthetic voiced signal where
flite is missing). They are registered through the adapters registry API and promoted, so the
gateway and Triton resolve them exactly like trained voices.

`register_voices` uses `AdapterRegistry.register` + `promote` (about 0.4 s per voice on embedded
sqlite). `register_voices_bulk` writes the same registry entries with fewer round trips (one run
holding every adapter, then a model, a version and two aliases per voice), for the 1,000-voice
memory benchmark.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_TEXTS: tuple[str, ...] = (
    "This is my reference clip, read slowly and clearly for the voice prompt.",
    "The morning was bright and calm, and the whole street smelled of fresh bread.",
    "Please leave a message after the tone, and I will call you back soon.",
    "We walked along the river until the lights of the town came into view.",
)
FLITE_VOICES: tuple[str, ...] = ("slt", "rms", "awb", "kal16")
SYNTH_SR = 32_000


@dataclass(frozen=True)
class ReferenceClip:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    text: str
    lang: str = "en"
    source: str = ""


def _synthetic_clip(index: int, seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SYNTH_SR)) / SYNTH_SR
    pitch = 110.0 + 17.0 * (index % 8)
    env = 1 + 0.5 * np.sin(2 * np.pi * (2.5 + 0.3 * (index % 5)) * t)
    return (0.3 * np.sin(2 * np.pi * pitch * t) * env).astype(np.float32)


def reference_clips(count: int) -> list[ReferenceClip]:
    """`count` distinct reference clips (3-10 s): flite voices x our sentences, else synthetic."""
    from tritone.audio import load_audio

    clips: list[ReferenceClip] = []
    flite = shutil.which("flite")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            text = REFERENCE_TEXTS[(i // len(FLITE_VOICES)) % len(REFERENCE_TEXTS)]
            if flite:
                voice = FLITE_VOICES[i % len(FLITE_VOICES)]
                path = Path(tmp) / f"ref{i}.wav"
                subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(path)], check=True, timeout=60)
                audio, sr = load_audio(path)
                audio = audio[: int(9.5 * sr)]
                if len(audio) < 3.2 * sr:  # pad a fast reading up to the 3 s minimum
                    audio = np.concatenate([audio, np.zeros(int(3.2 * sr) - len(audio), np.float32)])
                clips.append(ReferenceClip(audio.astype(np.float32), sr, text, source=f"flite:{voice}"))
            else:
                clips.append(ReferenceClip(_synthetic_clip(i), SYNTH_SR, text, source="synthetic"))
    return clips


def lora_targets() -> str:
    """One regular expression for every target the serving runtime's adapter bank holds."""
    from tritone.serving.runtime import DEFAULT_TARGETS

    return "|".join(f"(?:{t})" for t in DEFAULT_TARGETS)


@dataclass(frozen=True)
class VoiceSpec:
    tenant: str
    name: str
    seed: int  # LoRA seed
    clip: int  # index into the reference clips

    @property
    def ref(self) -> str:
        return f"{self.tenant}.{self.name}"


def voice_specs(count: int, tenants: Sequence[str], clips: int, prefix: str = "voice") -> list[VoiceSpec]:
    """Voice i belongs to tenant i mod len(tenants): the popular voices spread over tenants."""
    width = max(3, len(str(count - 1)))
    return [
        VoiceSpec(tenants[i % len(tenants)], f"{prefix}{i:0{width}d}", 1000 + i, i % max(clips, 1))
        for i in range(count)
    ]


def write_voice(
    out_dir: Path,
    spec: VoiceSpec,
    model: Any,
    pin: Any,
    prompt: Any,
    *,
    rank: int = 8,
    scale: float = 0.05,
    source: dict[str, Any] | None = None,
) -> Path:
    """The adapter directory of one voice (skipped when already written)."""
    from adapters.format import write_adapter
    from adapters.synthetic import GOOD_METRICS, random_lora
    from adapters.util import sha256_bytes

    if (out_dir / "manifest.json").is_file():
        return out_dir
    return write_adapter(
        out_dir,
        voice=spec.name,
        tenant=spec.tenant,
        base=pin,
        lora=random_lora(model, lora_targets(), rank, seed=spec.seed, scale=scale),
        prompt=prompt,
        consent_id=CONSENT_ID,
        training_data_sha256=sha256_bytes(f"load-test voice {spec.ref}".encode()),
        metrics=GOOD_METRICS,
        source=source or {"kind": "synthetic", "note": "load-test voice: random LoRA, real voice prompt"},
    )


CONSENT_ID = "consent-loadtest"


def consent() -> Any:
    from adapters.synthetic import demo_consent

    return demo_consent(CONSENT_ID, "tritone load-test voices (synthetic)")


def registered(registry: Any, ref: str) -> bool:
    from adapters.errors import AdapterError

    try:
        return "production" in registry.show(ref).summary.aliases
    except (AdapterError, ValueError):
        return False


def register_voices(registry: Any, dirs: Sequence[Path]) -> int:
    """Register and promote each adapter directory (the registry's normal path). Returns how many."""
    record = consent()
    for path in dirs:
        info = registry.register(path, consent=record)
        registry.promote(info.voice, to="production", version=info.version)
    return len(dirs)


def register_voices_bulk(registry: Any, dirs: Sequence[Path]) -> int:
    """The same registry entries as `register_voices`, in a few round trips per voice.

    One registration run holds every adapter directory (one artifact upload), then per voice:
    the registered model (tags as `AdapterRegistry.register` writes them), one version (source,
    content hash, base pin, consent, metrics) and the `staging` and `production` aliases.
    """
    from adapters.format import read_manifest
    from adapters.registry import ADAPTER_EXPERIMENT, STATE_ACTIVE, version_tags

    client = registry.client
    record = consent()
    run = client.create_run(registry._experiment_id(ADAPTER_EXPERIMENT), run_name="register-bulk")
    manifests = []
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for path in dirs:
            manifest, content = read_manifest(path)
            manifests.append((manifest, content))
            shutil.copytree(path, staged / content[:16])
        client.log_artifacts(run.info.run_id, str(staged), "adapter")
    client.set_terminated(run.info.run_id)
    for manifest, content in manifests:
        model_name = f"voice.{manifest.tenant}.{manifest.voice}"
        client.create_registered_model(
            model_name,
            tags={
                "kind": "voice",
                "tenant": manifest.tenant,
                "voice": manifest.voice,
                "state": STATE_ACTIVE,
                "consent": record.to_json(),
            },
        )
        mv = client.create_model_version(
            model_name,
            source=f"{run.info.artifact_uri}/adapter/{content[:16]}",
            run_id=run.info.run_id,
            tags=version_tags(manifest, content),
        )
        for alias in ("staging", "production"):
            client.set_registered_model_alias(model_name, alias, str(mv.version))
    registry.invalidate()
    return len(dirs)


class VoiceFactory:
    """Adapters for one serving base: prompts built once per reference clip, LoRAs per voice."""

    def __init__(self, base_dir: Path, pin: Any, clips: int = 16, rank: int = 8, scale: float = 0.05) -> None:
        from tritone.models.base import BaseModel
        from tritone.pipeline import Pipeline

        self.base_dir = base_dir
        self.model = BaseModel.load(base_dir)
        self.pin = pin
        self.rank, self.scale = rank, scale
        self.clips = reference_clips(clips)
        pipeline = Pipeline(self.model)
        self.prompts = [
            pipeline.build_voice_prompt(c.audio, c.sample_rate, c.text, c.lang) for c in self.clips
        ]

    def write(self, root: Path, spec: VoiceSpec) -> Path:
        clip = self.clips[spec.clip % len(self.clips)]
        return write_voice(
            root / spec.ref,
            spec,
            self.model,
            self.pin,
            self.prompts[spec.clip % len(self.prompts)],
            rank=self.rank,
            scale=self.scale,
            source={"kind": "synthetic", "note": "load-test voice", "reference": clip.source},
        )
