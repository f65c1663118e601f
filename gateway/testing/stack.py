"""A whole serving stack on loopback for tests, with nothing stood in.

`GatewayStack.running(...)` starts, in order: an `mlflow server` (sqlite store, proxied artifacts;
or the embedded sqlite registry), the registry with a real tiny base registered and real voices
(random LoRA adapters over the base's LoRA targets, `tritone.serving.runtime.DEFAULT_TARGETS`,
with a real voice prompt), API keys, the real `tritonserver` serving `model_repository/` (the
`tts` model over that base and registry; started while the voices are registered) and a gateway
in a background thread. Everything stops when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import GatewaySettings
from gateway.testing.harness import ThreadedGateway
from tritone.serving.server import DEFAULT_REPO, TritonServer, free_port

if TYPE_CHECKING:
    from adapters.format import BasePin
    from adapters.registry import AdapterRegistry, VersionInfo
    from tritone.serving.client import TTSClient

TTS_CONFIG = DEFAULT_REPO / "tts" / "config.pbtxt"
CONSENT_ID = "consent-0001"


def lora_targets(*, gpt: bool = True) -> str:
    """One regular expression for every LoRA target the serving runtime's bank holds (`gpt=False`:
    leave GPT alone, so the voice's semantic tokens, and when they stop, are the base's)."""
    from tritone.serving.runtime import DEFAULT_TARGETS, GPT_TARGETS

    return "|".join(f"(?:{t})" for t in DEFAULT_TARGETS if gpt or t != GPT_TARGETS)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store, in its own process group."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        """Where the server keeps artifacts (`mlflow-artifacts:/X` is `artifacts / X`)."""
        return self.root / "artifacts"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 120.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child holds it
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise TimeoutError("mlflow server not healthy")
        # The first API calls load the server's handlers and stores (seconds on a busy machine):
        # make them here, so that clients with short timeouts (the gateway's) find it warm.
        for path in ("registered-models/search?max_results=1", "model-versions/search?max_results=1"):
            with urllib.request.urlopen(
                f"{self.uri}/api/2.0/mlflow/{path}", timeout=max(5.0, deadline - time.monotonic())
            ) as resp:
                resp.read()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class Keys:
    path: Path
    by_name: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.by_name[name]


def make_keys(path: Path, spec: Mapping[str, tuple[str, Mapping[str, object]]]) -> Keys:
    """``{label: (tenant, policy)}`` → a keys file and the clear keys by label."""
    from gateway.auth import add_key

    path.unlink(missing_ok=True)
    keys = Keys(path)
    for label, (tenant, policy) in spec.items():
        _, key = add_key(path, tenant, label, dict(policy))
        keys.by_name[label] = key
    return keys


_patience_lock = threading.Lock()
_patience: list[dict[str, str | None]] = []  # the variables as they were, while patient calls run


@contextlib.contextmanager
def patient_registry_calls(timeout_s: int = 120, retries: int = 3) -> Iterator[None]:
    """Generous MLflow HTTP timeouts and retries for the stack's own registry calls.

    The gateway sets short ones for the whole process (a request must never hang on the
    registry); setting up voices on a busy machine needs more. MLflow reads these variables
    per request; they are restored afterwards.
    """
    names = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    with _patience_lock:
        _patience.append({k: os.environ.get(k) for k in names})
        os.environ.update(names)
    try:
        yield
    finally:
        with _patience_lock:
            saved = _patience.pop()
            if not _patience:  # the outermost restores what was there before any of them
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


def kill_triton(server: TritonServer) -> None:
    """SIGKILL the server's whole process group (the server and its python model stub): a crash."""
    proc = server.process
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # a stub that outlived it
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
    server.process = None


@dataclass
class GatewayStack:
    root: Path
    mlflow: MlflowServer | None  # None: the embedded sqlite registry
    uri: str  # the registry's tracking URI
    registry: AdapterRegistry
    base: Any  # tritone.models.base.BaseModel
    base_dir: Path
    pin: BasePin
    prompt: Any  # tritone.voice.VoicePrompt
    keys: Keys
    triton: TritonServer
    settings: GatewaySettings
    gateway: ThreadedGateway | None = None
    voice_targets: str | None = None  # LoRA targets of `add_version` (default: lora_targets())
    _n: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- voices ----------------------------------------------------------------------------------

    def add_version(
        self,
        tenant: str,
        voice: str,
        seed: int,
        *,
        promote: bool = True,
        rank: int = 4,
        scale: float = 0.3,
        targets: str | None = None,
    ) -> VersionInfo:
        """Register a new version of `tenant.voice`: a random LoRA (its own seed) over `targets`
        (default: every target the runtime holds), with the stack's voice prompt; promoted to
        production by default."""
        from adapters.format import write_adapter
        from adapters.synthetic import GOOD_METRICS, demo_consent, random_lora
        from adapters.util import sha256_bytes

        with self._lock:
            self._n += 1
            out = self.root / "adapters" / f"{tenant}.{voice}-{seed}-{self._n}"
        write_adapter(
            out,
            voice=voice,
            tenant=tenant,
            base=self.pin,
            lora=random_lora(
                self.base, targets or self.voice_targets or lora_targets(), rank, seed=seed, scale=scale
            ),
            prompt=self.prompt,
            consent_id=CONSENT_ID,
            training_data_sha256=sha256_bytes(f"training data of {tenant}.{voice} {seed}".encode()),
            metrics=GOOD_METRICS,
            source={"kind": "synthetic", "seed": seed},
        )
        with patient_registry_calls():
            info = self.registry.register(out, consent=demo_consent(CONSENT_ID))
            if promote:
                self.registry.promote(f"{tenant}.{voice}", to="production", version=info.version)
        return info

    def artifact_dir(self, info: VersionInfo) -> Path:
        """The registry's own copy of a version's adapter files (to corrupt one, say)."""
        source = info.source
        if source.startswith("mlflow-artifacts:/"):
            assert self.mlflow is not None
            return self.mlflow.artifacts / source[len("mlflow-artifacts:/") :].lstrip("/")
        if source.startswith("file://"):
            return Path(source[len("file://") :])
        raise ValueError(f"cannot map artifact source {source!r} to a local path")

    @property
    def gw(self) -> ThreadedGateway:
        """The stack's gateway."""
        assert self.gateway is not None, "the stack's gateway is not running"
        return self.gateway

    # -- Triton ----------------------------------------------------------------------------------

    def tts(self) -> TTSClient:
        """A direct client of the `tts` model (control requests, comparisons)."""
        from tritone.serving.client import TTSClient

        return TTSClient(self.triton.grpc_url)

    def triton_stats(self) -> dict[str, Any]:
        """The model's scheduler and bank counters (`control: stats`)."""
        return self.tts().stats()

    def triton_metrics(self) -> str:
        with urllib.request.urlopen(self.triton.metrics_url, timeout=10) as resp:
            return str(resp.read().decode())

    def kill_triton(self) -> None:
        kill_triton(self.triton)

    # -- gateways --------------------------------------------------------------------------------

    def start_gateway(self, **overrides: Any) -> ThreadedGateway:
        """Another gateway over the same Triton and registry (`overrides`: GatewaySettings fields)."""
        from adapters.registry import AdapterRegistry
        from adapters.store import AdapterStore

        settings = GatewaySettings.from_env(**{**vars(self.settings), **overrides})
        with self._lock:
            self._n += 1
            store = AdapterStore(self.root / f"gateway-store-{self._n}")
        gw = ThreadedGateway(settings, AdapterRegistry(self.uri, store=store))
        try:
            return gw.start().wait_ready()
        except BaseException:
            gw.stop()
            raise

    # -- the whole stack -------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        root: Path,
        *,
        base: Any,
        base_dir: Path,
        prompt: Any,
        tenants: Mapping[str, tuple[str, Mapping[str, object]]],
        voices: Sequence[tuple[str, str, int]] = (),
        mlflow_server: bool = True,
        voice_targets: str | None = None,
        triton_env: Mapping[str, str] | None = None,
        **gateway_settings: Any,
    ) -> Iterator[GatewayStack]:
        """Start the stack; `voices` are (tenant, voice, LoRA seed), registered and promoted (their
        LoRA over `voice_targets`, default every target the runtime holds)."""
        from adapters.registry import AdapterRegistry
        from adapters.store import AdapterStore

        root.mkdir(parents=True, exist_ok=True)
        mlflow: MlflowServer | None = None
        triton: TritonServer | None = None
        stack: GatewayStack | None = None
        try:
            mlflow = MlflowServer(root / "mlflow") if mlflow_server else None
            uri = mlflow.uri if mlflow is not None else f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
            env = {
                "TRITONE_HOME": str(root / "home"),
                "TRITONE_BASE_MODEL": str(base_dir),
                "TRITONE_MLFLOW_URI": uri,
                "TRITONE_TARGET": "cpu",
                "TRITONE_BANK_SLOTS": "4",
                "TRITONE_FEED_INTERVAL_S": "1",
                "TRITONE_THREADS": "1",
                # the model's registry calls fail fast while the registry is down (as the gateway's)
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
                **(triton_env or {}),
            }
            triton = TritonServer(
                env=env, log_file=root / "triton.log", startup_timeout_s=300, exit_timeout_s=30
            )
            # The model loads while the registry starts and the voices are registered: it needs the
            # registry only when a voice is first used (its change feed retries until then).
            failed: list[BaseException] = []

            def start_triton(server: TritonServer) -> None:
                try:
                    server.start()
                except BaseException as exc:  # re-raised by the main thread
                    failed.append(exc)

            starter = threading.Thread(target=start_triton, args=(triton,), name="triton-start", daemon=True)
            starter.start()
            if mlflow is not None:
                mlflow.start()
            registry = AdapterRegistry(uri, store=AdapterStore(root / "store"))
            with patient_registry_calls():
                pin = registry.register_base(base_dir)
            keys = make_keys(root / "api-keys", tenants)
            settings = GatewaySettings.from_env(
                **{
                    "triton_urls": [triton.grpc_url],
                    "mlflow_uri": uri,
                    "api_keys_file": keys.path,
                    "host": "127.0.0.1",
                    "http_port": 0,
                    "grpc_port": 0,
                    "log_level": "warning",
                    **gateway_settings,
                }
            )
            stack = cls(root, mlflow, uri, registry, base, base_dir, pin, prompt, keys, triton, settings)
            stack.voice_targets = voice_targets
            for tenant, voice, seed in voices:
                stack.add_version(tenant, voice, seed)
            starter.join()
            if failed:
                raise failed[0]
            stack.gateway = stack.start_gateway()
            yield stack
        finally:
            if stack is not None and stack.gateway is not None:
                stack.gateway.stop()
            if triton is not None:
                triton.stop()
            if mlflow is not None:
                mlflow.stop()
