"""Shared fixtures: a tiny base model, a real MLflow voice registry, a started Triton server.

Everything is session-scoped and built lazily (only tests that ask for a fixture pay for it):

- `tiny_base`: a tiny random base model (vocoder rescaled so audio depends on the latent) saved
  as a bundle; `reference_voice`: a voice prompt built from a synthetic reference clip;
- `voice_registry`: an embedded-sqlite MLflow registry with the base registered and helpers to
  register synthetic LoRA voices (`add_voice`), promoted to production;
- `triton_server`: the real `tritonserver` with `model_repository/` serving `tts` over that base
  and registry (bank of `TRITON_TEST_BANK_SLOTS` voices, change feed every second);
- `tts_client`: a gRPC streaming client of the `tts` model (`tritone.serving.client.TTSClient`:
  `run` sends requests concurrently and collects every response with its arrival time).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tritone.serving.client import Reply, TTSClient, tts_inputs  # re-exported for the tests

__all__ = ["Reply", "TTSClient", "tts_inputs"]

SR = 32_000
TRITON_TEST_BANK_SLOTS = 8
# LoRA targets of the synthetic test voices: GPT attention/FFN, SoVITS MRTE, vocoder input.
TEST_VOICE_TARGETS = (
    r"gpt\.layers\.\d+\.(self_attn\.in_proj|linear1)|sovits\.enc_p\.mrte\.c_pre|vocoder\.conv_pre"
)


def reference_clip(seconds: float = 4.0, pitch: float = 180.0) -> np.ndarray:
    """A synthetic, voiced-sounding reference clip (32 kHz float32)."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * pitch * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def make_tiny_base(seed: int = 0) -> Any:
    from tritone.models.base import BaseModel, BaseModelConfig

    model = BaseModel.random(BaseModelConfig.tiny(), seed=seed)
    # Random init leaves the tiny vocoder almost deaf to z; rescale its convs so the audio
    # depends on the latent (and on adapters of SoVITS and the vocoder).
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.vocoder.modules():
            if isinstance(mod, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * mod.weight[0].numel() ** -0.5)
    return model.eval()


@dataclass
class TinyBase:
    model: Any  # tritone.models.base.BaseModel
    path: Path

    def fresh(self) -> Any:
        """An independent copy of the base (to merge an adapter into)."""
        from tritone.models.base import BaseModel

        return BaseModel.load(self.path)


@pytest.fixture(scope="session")
def serving_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TRITONE_HOME for the serving stack (registry, adapter store, Triton backends, logs)."""
    return tmp_path_factory.mktemp("tritone-home")


@pytest.fixture(scope="session")
def tiny_base(serving_home: Path) -> TinyBase:
    model = make_tiny_base(0)
    return TinyBase(model, model.save(serving_home / "base"))


@pytest.fixture(scope="session")
def reference_voice(tiny_base: TinyBase) -> Any:
    """A voice prompt (tritone.voice.VoicePrompt) from a synthetic reference clip."""
    from tritone.pipeline import Pipeline

    return Pipeline(tiny_base.model).build_voice_prompt(
        reference_clip(), SR, "This is the reference clip.", "en"
    )


@dataclass
class RegisteredVoice:
    name: str  # "tenant.voice"
    version: int
    adapter_dir: Path
    source: str  # the registry's artifact URI of this version


@dataclass
class VoiceRegistry:
    uri: str
    registry: Any  # adapters.registry.AdapterRegistry
    pin: Any  # adapters.format.BasePin
    base: TinyBase
    prompt: Any
    root: Path
    voices: dict[str, RegisteredVoice] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_voice(
        self,
        name: str,
        seed: int,
        *,
        tenant: str = "test",
        targets: str = TEST_VOICE_TARGETS,
        rank: int = 4,
        scale: float = 0.3,
        pin: Any = None,
        model: Any = None,
        promote: bool = True,
    ) -> RegisteredVoice:
        """Register a random LoRA voice `tenant.name` (its own LoRA seed) and promote it."""
        from adapters.format import write_adapter
        from adapters.synthetic import GOOD_METRICS, demo_consent, random_lora
        from adapters.util import sha256_bytes

        key = f"{tenant}.{name}"
        with self._lock:
            if key in self.voices:
                return self.voices[key]
            out = write_adapter(
                self.root / "adapters" / key,
                voice=name,
                tenant=tenant,
                base=pin or self.pin,
                lora=random_lora(model or self.base.model, targets, rank, seed=seed, scale=scale),
                prompt=self.prompt,
                consent_id="consent-0001",
                training_data_sha256=sha256_bytes(f"training data of {key}".encode()),
                metrics=GOOD_METRICS,
            )
            info = self.registry.register(out, consent=demo_consent())
            if promote:
                self.registry.promote(info.voice, to="production", version=info.version)
            voice = RegisteredVoice(key, info.version, out, info.source)
            self.voices[key] = voice
            return voice

    def merged_pipeline(self, voice: RegisteredVoice) -> Any:
        """The reference path: `Pipeline` over the base with this voice's adapter merged in."""
        from adapters.apply import apply_adapter
        from adapters.format import read_adapter
        from tritone.pipeline import Pipeline

        model = self.base.fresh()
        adapter = read_adapter(voice.adapter_dir)
        apply_adapter(model, adapter, base_sha256=model.weights_sha256)
        return Pipeline(model), adapter.prompt


@pytest.fixture(scope="session")
def voice_registry(serving_home: Path, tiny_base: TinyBase, reference_voice: Any) -> VoiceRegistry:
    from adapters.registry import AdapterRegistry
    from adapters.store import AdapterStore

    uri = f"sqlite:///{serving_home / 'mlflow' / 'mlflow.db'}"
    registry = AdapterRegistry(uri, store=AdapterStore(serving_home / "store-test-process"))
    pin = registry.register_base(tiny_base.path)
    return VoiceRegistry(uri, registry, pin, tiny_base, reference_voice, serving_home)


@pytest.fixture(scope="session")
def triton_server(serving_home: Path, tiny_base: TinyBase, voice_registry: VoiceRegistry) -> Iterator[Any]:
    """The real tritonserver serving `model_repository/` (the tts model) for this session."""
    from tritone.serving.server import TritonServer

    env = {
        "TRITONE_HOME": str(serving_home),
        "TRITONE_BASE_MODEL": str(tiny_base.path),
        "TRITONE_MLFLOW_URI": voice_registry.uri,
        "TRITONE_BANK_SLOTS": str(TRITON_TEST_BANK_SLOTS),
        "TRITONE_FEED_INTERVAL_S": "1",
        "TRITONE_MAX_CONTEXT": "1024",
        "TRITONE_THREADS": "1",
    }
    server = TritonServer(
        env=env, log_file=serving_home / "triton-test.log", startup_timeout_s=240, exit_timeout_s=5
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def tts_client(triton_server: Any) -> TTSClient:
    return TTSClient(triton_server.grpc_url)
