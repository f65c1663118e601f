"""A whole serving stack on loopback for tests: MLflow server, registry with voices, API keys,
Triton (real server; stand-in or real `tts` model) and a gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gateway.testing.triton import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TTS_CONFIG = REPO_ROOT / "model_repository" / "tts" / "config.pbtxt"


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store, in its own process group."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child holds it
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
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
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError("mlflow server not healthy")

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


def make_keys(path: Path, spec: dict[str, tuple[str, dict[str, object]]]) -> Keys:
    """``{label: (tenant, policy)}`` → a keys file and the clear keys by label."""
    from gateway.auth import add_key

    path.unlink(missing_ok=True)
    keys = Keys(path)
    for label, (tenant, policy) in spec.items():
        _, key = add_key(path, tenant, label, dict(policy))
        keys.by_name[label] = key
    return keys
