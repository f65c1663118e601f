"""Start the real `tritonserver` that the nvidia-pytriton wheel ships, on loopback.

The recipe (shared/reference ecosystem notes): the python backend stub for this Python is copied
into the wheel's backends/python folder, the wheel's bundled libraries and this interpreter's
LIBDIR go on LD_LIBRARY_PATH, and the environment's bin goes first on PATH so the stub's
`python3` sees numpy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def backend_dir() -> Path:
    """The wheel's backends folder with this Python's stub in place (copied once)."""
    root = _pytriton_root() / "tritonserver"
    python_backend = root / "backends" / "python"
    stub = python_backend / "triton_python_backend_stub"
    if not stub.exists():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy2(root / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    return root / "backends"


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    purelib = Path(sysconfig.get_paths()["purelib"])
    libs = [str(purelib / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR") or "")]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


class TritonProcess:
    """One tritonserver process on 127.0.0.1 (ports picked when 0)."""

    def __init__(
        self,
        repository: str | Path,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_file: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_file = Path(log_file) if log_file else None
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        binary = _pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir()}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=true",
            "--log-verbose=0",
        ]

    def start(self, timeout: float = 90.0) -> TritonProcess:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(self.env),
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode} (log: {self.log_file})")
            if self.ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s (log: {self.log_file})")

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and its python model stubs)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> TritonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.testing.triton REPO GRPC_PORT HTTP_PORT METRICS_PORT``: run until killed."""
    args = argv if argv is not None else sys.argv[1:]
    proc = TritonProcess(args[0], grpc_port=int(args[1]), http_port=int(args[2]), metrics_port=int(args[3]))
    os.execve(proc.command()[0], proc.command(), server_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
