"""`TTSService`: the whole serving stack of one `tts` model instance, without Triton.

Settings come from the model's `config.pbtxt` parameters and the environment (the environment
wins); the service opens the base model and the runtime for the target, the registry and the
local adapter store, the adapter bank, the scheduler thread and the registry change feed.
`submit(request, sink)` runs the text frontend on the caller's thread and hands the request to
the scheduler; audio and errors go to the sink. The Triton model (`tritone.serving.triton`) is
a thin adapter around this class, and tests can drive it in-process.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from adapters.names import DEFAULT_TENANT, VoiceId
from tritone.config import data_dir
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.serving.bank import AdapterBank
from tritone.serving.errors import ServeError, from_exception, invalid
from tritone.serving.request import Job, ResponseSink, SynthesisRequest
from tritone.serving.runtime import Runtime
from tritone.serving.scheduler import Scheduler, SchedulerConfig
from tritone.serving.voices import RegistryVoices, VoiceSource, prepare_reference
from tritone.text import TextFrontend

if TYPE_CHECKING:
    from adapters.feed import VoiceChange, Watcher
    from adapters.registry import AdapterRegistry

log = logging.getLogger(__name__)

ENV_PREFIX = "TRITONE_"
RUNTIMES = ("auto", "onnx", "tensorrt", "cuda", "torch")


@dataclass
class ServeSettings:
    """Every knob of the `tts` model. Each is read from `$TRITONE_<NAME>` (upper case), else from
    the config.pbtxt parameter `<name>`, else this default."""

    target: str = "cpu"  # cpu | gpu
    runtime: str = "auto"  # auto (what the build selected, else PyTorch) | onnx | tensorrt | cuda | torch
    base_model: str = ""  # base model bundle ("" -> <model version dir>/base, else the build's weights)
    mlflow_uri: str = ""  # registry tracking URI ("" -> the registry's default, under TRITONE_HOME)
    adapter_store: str = ""  # local adapter store ("" -> $TRITONE_HOME/adapters/store)
    voices_dir: str = ""  # serve the voices of this folder instead of the registry (adapters/directory.py)
    default_tenant: str = DEFAULT_TENANT  # tenant of a voice name given without one
    bank_slots: int = 16  # resident voices (LoRA slots besides slot 0, the base voice)
    max_rank: int = 16  # LoRA rank the bank holds (smaller ranks are zero-padded)
    max_rows: int = 32  # GPT batch capacity (one row per decoding text segment)
    max_context: int = 2048  # KV-cache positions per row
    max_queue: int = 256  # requests queued or running before new ones get UNAVAILABLE
    max_active: int = 0  # requests decoding at once (0: no limit; 1: one request at a time)
    acoustic_batch: int = 16  # rows per SoVITS / vocoder call
    loader_threads: int = 2  # background adapter loads
    feed_interval_s: float = 5.0  # registry change feed poll (revocations); 0 turns it off
    threads: int = 0  # torch intra-op threads (0: torch's default)
    max_text_chars: int = 2000  # longest text accepted

    @classmethod
    def from_sources(
        cls, parameters: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> ServeSettings:
        parameters = parameters or {}
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            source = f"${ENV_PREFIX}{f.name.upper()}"
            if raw is None or raw == "":
                raw, source = parameters.get(f.name), f"parameter {f.name}"
            if raw is None or raw == "":
                continue
            kind: type = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{source} must be {kind.__name__}, got {raw!r}") from None
        settings = cls(**values)
        if settings.target not in ("cpu", "gpu"):
            raise ValueError(f"target must be cpu or gpu, got {settings.target!r}")
        if settings.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {settings.runtime!r}")
        if settings.bank_slots < 1:
            raise ValueError("bank_slots must be >= 1")
        return settings

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            max_rows=self.max_rows,
            max_context=self.max_context,
            max_queue=self.max_queue,
            max_active=self.max_active,
            acoustic_batch=self.acoustic_batch,
        )


def find_base_model(settings: ServeSettings, version_dir: Path | None) -> Path | None:
    """The base model bundle: `base_model` (relative paths from the model version directory),
    else `<version dir>/base`; None when there is none."""
    if settings.base_model:
        path = Path(settings.base_model).expanduser()
        if not path.is_absolute() and version_dir is not None:
            path = version_dir / path
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"TRITONE_BASE_MODEL / base_model {path} is not a base model bundle")
        return path
    if version_dir is not None and (version_dir / "base" / "manifest.json").is_file():
        return version_dir / "base"
    return None


def _built(version_dir: Path | None) -> dict[str, Any] | None:
    """The build manifest `tritone build` wrote into the model version directory, if any."""
    from tritone.serving.runtime_manifest import MANIFEST_FILE, read_manifest

    if version_dir is None or not (version_dir / MANIFEST_FILE).is_file():
        return None
    return read_manifest(version_dir)


def _torch_model(
    settings: ServeSettings, version_dir: Path | None, built: dict[str, Any] | None
) -> BaseModel:
    base_dir = find_base_model(settings, version_dir)
    if base_dir is not None:
        log.info("loading base model from %s", base_dir)
        return BaseModel.load(base_dir)
    weights = (built or {}).get("torch_weights")
    if weights and version_dir is not None:
        from tritone.serving.runtime_manifest import load_torch_weights

        log.info("loading the build's base weights from %s", version_dir / weights["file"])
        model: BaseModel = load_torch_weights(version_dir / weights["file"])
        return model
    raise FileNotFoundError(
        "no base model: set TRITONE_BASE_MODEL to a base model bundle (`tritone init-model`, training), "
        "or build the model repository (`tritone build`)"
    )


def open_runtime(
    settings: ServeSettings, version_dir: Path | None, model: BaseModel | None = None
) -> Runtime:
    """The runtime for the target, as the build selected it.

    cpu: ONNX Runtime over the graphs `tritone build --target cpu` wrote into the version
    directory (the bank size and rank are then the build's), else PyTorch on the base bundle.
    gpu: the build's TensorRT engines where it built them, else PyTorch CUDA with CUDA graphs
    (over the base bundle or the build's `base.safetensors`).
    A build of another base than the one `base_model` names is ignored. `runtime` forces one:
    onnx | tensorrt (a build's), cuda (CUDA graphs) or torch (eager PyTorch on the target).
    """
    built = _built(version_dir) if model is None else None
    if built is not None and settings.base_model and settings.runtime == "auto":
        bundle = find_base_model(settings, version_dir)
        pin = json.loads((bundle / "manifest.json").read_text()).get("weights_sha256") if bundle else None
        if pin != built["base"]["weights_sha256"]:
            log.warning(
                "the build in %s is of another base than %s; serving that base with PyTorch",
                version_dir,
                bundle,
            )
            built = None
    if settings.runtime in ("onnx", "tensorrt") and built is None:
        raise FileNotFoundError(
            f"runtime {settings.runtime}: no build in {version_dir} (run `tritone build --target "
            f"{'cpu' if settings.runtime == 'onnx' else 'gpu'}`)"
        )
    if built is not None and settings.target == "cpu" and settings.runtime in ("auto", "onnx"):
        from tritone.serving.runtime_onnx import OnnxRuntime

        assert version_dir is not None
        log.info("opening the ONNX graphs in %s", version_dir)
        return OnnxRuntime(version_dir, intra_op_threads=settings.threads)
    engines = (built or {}).get("engines") or {}
    has_engines = bool(engines) and "skipped" not in engines
    if settings.runtime == "tensorrt" or (
        settings.runtime == "auto" and settings.target == "gpu" and has_engines
    ):
        from tritone.serving.runtime_tensorrt import TensorRTRuntime

        assert version_dir is not None
        log.info("opening the TensorRT engines in %s", version_dir)
        return TensorRTRuntime(version_dir)
    model = model or _torch_model(settings, version_dir, built)
    bank_size = settings.bank_slots + 1
    cuda = settings.target == "gpu" and torch.cuda.is_available()
    if settings.target == "gpu" and not cuda:
        log.warning("target gpu but no CUDA device: serving with PyTorch on the CPU")
    if cuda and settings.runtime in ("auto", "cuda"):
        from tritone.serving.runtime_cuda import CudaGraphRuntime

        return CudaGraphRuntime(model, bank_size=bank_size, max_rank=settings.max_rank)
    from tritone.serving.runtime_torch import TorchRuntime

    return TorchRuntime(
        model, bank_size=bank_size, max_rank=settings.max_rank, device="cuda" if cuda else "cpu"
    )


class TTSService:
    """The serving stack of one model instance (see the module docstring)."""

    def __init__(
        self,
        settings: ServeSettings,
        *,
        version_dir: Path | None = None,
        model: BaseModel | None = None,
        runtime: Runtime | None = None,
        registry: VoiceSource | None = None,
    ) -> None:
        self.settings = settings
        if settings.threads > 0:
            torch.set_num_threads(settings.threads)
        self.runtime = runtime or open_runtime(settings, version_dir, model)
        config: BaseModelConfig | None = getattr(self.runtime, "config", None)
        if config is None and model is not None:
            config = model.config
        if config is None:
            raise ValueError("the runtime exposes no model config; pass the base model")
        self.model_config = config
        self.base_sha256: str = self.runtime.base_sha256
        self.sample_rate = config.vocoder.sampling_rate
        self.frontend = TextFrontend(version=config.version, max_chars=settings.max_text_chars)
        self.frontend.warmup()
        from adapters.directory import VoiceDirectory

        if registry is None and settings.voices_dir:
            registry = VoiceDirectory(settings.voices_dir, settings.default_tenant)
        if registry is None:  # MLflow is imported only here: callers may bring their own voices
            from adapters.registry import AdapterRegistry
            from adapters.store import AdapterStore

            store = AdapterStore(
                Path(settings.adapter_store).expanduser() if settings.adapter_store else None
            )
            registry = AdapterRegistry(
                settings.mlflow_uri or None,
                store=store,
                serving_base=self.base_sha256,
                default_tenant=settings.default_tenant,
            )
        self.registry: VoiceSource = registry
        self.voices = RegistryVoices(registry, self.base_sha256)
        self.bank = AdapterBank(self.runtime, self.voices.load, workers=settings.loader_threads)
        self.scheduler = Scheduler(self.runtime, self.bank, config, settings.scheduler_config()).start()
        self.watcher: Watcher | None = None
        if settings.feed_interval_s > 0 and not isinstance(registry, VoiceDirectory):  # a folder has no feed
            from adapters.feed import ChangeFeed

            self.watcher = ChangeFeed(
                cast("AdapterRegistry", registry), interval_s=settings.feed_interval_s
            ).watch(self.voices.on_changes(self._on_revoked))
        log.info(
            "tts ready: base %s, %s runtime, %d voice slots, %d batch rows, data in %s",
            self.base_sha256[:12],
            type(self.runtime).__name__,
            self.runtime.bank_size - 1,
            settings.max_rows,
            data_dir(),
        )

    # -- requests --------------------------------------------------------------------------------

    def prepare(self, request: SynthesisRequest, sink: ResponseSink) -> Job:
        """Run the text frontend (and the CPU half of a zero-shot reference) for a request."""
        try:
            segments = self.frontend.segments(request.text, request.lang, request.params.split)
            reference = None
            if request.reference is not None:
                reference = prepare_reference(request.reference, self.frontend)
        except ServeError:
            raise
        except Exception as exc:
            raise from_exception(exc) from None
        return Job(request=request, sink=sink, segments=segments, reference=reference)

    def submit(self, request: SynthesisRequest, sink: ResponseSink) -> None:
        """Serve a request; its responses (or one error) go to `sink`."""
        try:
            job = self.prepare(request, sink)
            if request.voice is not None and self.bank.is_revoked(request.voice.voice):
                raise ServeError(
                    "NOT_FOUND", f"voice {request.voice.voice} is revoked; it can no longer be served"
                )
        except ServeError as exc:
            sink.fail(exc)
            return
        self.scheduler.submit(job)

    # -- control ---------------------------------------------------------------------------------

    def evict(self, voice: str, *, revoked: bool) -> dict[str, Any]:
        """Drop a voice from the bank (`revoked`: also refuse it from now on and stop its requests)."""
        from adapters.names import parse_voice_id

        try:
            vid = parse_voice_id(voice, self.settings.default_tenant)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        if revoked:
            self.registry.forget(vid)
        ended = self.scheduler.call(lambda: self.scheduler.evict(vid, revoked=revoked))
        return {"voice": str(vid), "revoked": revoked, "requests_ended": ended}

    def _on_revoked(self, change: VoiceChange) -> None:
        log.info("change feed: voice %s %s; evicting it", change.voice, change.kind)
        self.scheduler.call(lambda: self.scheduler.evict(change.voice, revoked=True))

    def is_revoked(self, voice: VoiceId) -> bool:
        return self.bank.is_revoked(voice)

    def stats(self) -> dict[str, Any]:
        return self.scheduler.snapshot()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop(timeout=2.0)
        self.scheduler.stop()
