"""Run the real Triton server (2.51, shipped inside the `nvidia-pytriton` wheel) on this machine.

`TritonServer` starts `tritonserver` on loopback with a model repository, waits until the server
and its models are ready, and stops it cleanly; it is a context manager for tests and scripts:

    with TritonServer(repo="model_repository", env={"TRITONE_BASE_MODEL": "data/base"}) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

The wheel's binary needs three things done right (each is a real failure otherwise):

- the python backend's stub must sit in the backend directory: the backend and the stub for this
  interpreter's Python version are copied once into `$TRITONE_HOME/triton/backends/python/`;
- the copied stub loses its `$ORIGIN` library path: `LD_LIBRARY_PATH` gets the wheel's bundled
  libraries and this interpreter's `LIBDIR` (the matching libpython);
- the stub finds numpy, torch and `tritone` through `python3` on `PATH`: this interpreter's
  `bin` directory goes first on `PATH`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock

from tritone.config import REPO_ROOT, data_dir

DEFAULT_REPO = REPO_ROOT / "model_repository"
DEFAULT_PORTS = (8000, 8001, 8002)  # http, grpc, metrics: Triton's own defaults


class TritonError(RuntimeError):
    """The server could not be found, started or reached."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend: Path  # the wheel's backends/python directory
    stub: Path  # the python backend stub for this interpreter
    libs: Path  # the wheel's bundled shared libraries

    @classmethod
    def find(cls) -> TritonInstall:
        site = Path(sysconfig.get_paths()["purelib"])
        root = site / "pytriton" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=site / "nvidia_pytriton.libs",
        )
        missing = [str(p) for p in (install.binary, install.backend, install.stub) if not p.exists()]
        if missing:
            raise TritonError(
                f"tritonserver is not installed for Python {version} ({', '.join(missing)} missing); "
                "install the nvidia-pytriton wheel (scripts/setup.sh does)"
            )
        return install


def backend_dir(install: TritonInstall | None = None, root: Path | None = None) -> Path:
    """`<root>/python/` holding the python backend and this interpreter's stub (copied once)."""
    install = install or TritonInstall.find()
    root = root or data_dir() / "triton" / "backends"
    target = root / "python"
    sources = {p.name: p for p in install.backend.iterdir() if p.is_file()}
    sources[install.stub.name] = install.stub

    def current() -> bool:
        return all(
            (target / n).is_file() and (target / n).stat().st_size == p.stat().st_size
            for n, p in sources.items()
        )

    if current():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".copy.lock")):
        if current():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=".python-", dir=root))
        for name, src in sources.items():
            shutil.copy2(src, tmp / name)
        (tmp / install.stub.name).chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    return root


def server_env(install: TritonInstall, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `tritonserver` (and the stubs it spawns) must run with."""
    env = dict(os.environ)
    env.update(extra or {})
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = [str(install.libs), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in ld if p)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class TritonServer:
    """One `tritonserver` process (see the module docstring)."""

    def __init__(
        self,
        repo: str | Path = DEFAULT_REPO,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_file: str | Path | None = None,
        models: Sequence[str] = ("tts",),
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 300.0,
        exit_timeout_s: int = 15,
    ) -> None:
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise TritonError(f"model repository {self.repo} does not exist")
        self.host = host
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.env = dict(env or {})
        # the server's files (backend copy, logs) go under the TRITONE_HOME it is given
        self.home = Path(self.env["TRITONE_HOME"]) if self.env.get("TRITONE_HOME") else data_dir()
        self.log_file = Path(log_file) if log_file else self.home / "triton" / f"server-{self.http_port}.log"
        self.models = list(models)
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._owned = True

    # -- addresses -------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        return [
            str(install.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=true",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-verbose=0",
            *self.extra_args,
        ]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> TritonServer:
        install = TritonInstall.find()
        backends = backend_dir(install, self.home / "triton" / "backends")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 (owned by the child for its lifetime)
        try:
            self.process = subprocess.Popen(
                self.command(install, backends),
                env=server_env(install, self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stubs are stopped with it
            )
        finally:
            log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        urls = [f"http://{self.http_url}/v2/health/ready"]
        urls += [f"http://{self.http_url}/v2/models/{m}/ready" for m in self.models]
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with code {self.process.returncode} while starting:\n{self.log_tail()}"
                )
            if all(http_ok(u) for u in urls):
                return
            time.sleep(0.25)
        raise TritonError(
            f"tritonserver was not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def ready(self) -> bool:
        return http_ok(f"http://{self.http_url}/v2/health/ready")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (Triton drains in-flight requests for up to exit_timeout_s), then SIGKILL."""
        proc = self.process
        if proc is None or not self._owned:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stubs that outlived it
            os.killpg(proc.pid, signal.SIGKILL)
        self.process = None
        return proc.returncode

    def detach(self) -> dict[str, Any]:
        """Leave the server running after this object is gone; returns its state for `stop`."""
        self._owned = False
        assert self.process is not None
        return {
            "pid": self.process.pid,
            "repo": str(self.repo),
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "log": str(self.log_file),
            "started": time.time(),
        }

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def state_file() -> Path:
    return data_dir() / "triton" / "server.json"


def read_state() -> dict[str, Any] | None:
    path = state_file()
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
