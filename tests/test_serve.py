"""`make serve` (scripts/serve.sh) from a fresh copy of the working tree: it reaches readiness,
serves one request, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.testing.triton import free_port

REPO = Path(__file__).resolve().parent.parent


def _fresh_copy(dst: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            target = dst / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dst


@pytest.mark.slow
def test_make_serve_from_a_fresh_tree(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    tree = _fresh_copy(tmp_path / "tree")
    home = tmp_path / "home"
    ports = [free_port() for _ in range(5)]
    env = {
        **os.environ,
        "VENV": str(Path(sys.executable).parent.parent),
        "TRITONE_SKIP_SETUP": "1",  # this environment is the one setup.sh made
        "TRITONE_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        ["scripts/serve.sh", "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
         "--triton-ports", ",".join(map(str, ports[2:]))],
        cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        text = ""
        while "tritone is ready" not in text:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make serve not ready in 10 min"
            time.sleep(1)
            text = (tmp_path / "serve.log").read_text()
        time.sleep(1)
        text = (tmp_path / "serve.log").read_text()
        curl = re.search(r"curl -s (\S+) -H \"Authorization: Bearer (\S+)\"", text)
        assert curl, text
        assert "tritone say" in text
        r = httpx.post(
            curl.group(1),
            headers={"Authorization": f"Bearer {curl.group(2)}"},
            json={"text": "Hello from tritone.", "voice": "demo"},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.content[:4] == b"RIFF" and r.headers["x-voice"] == "public.demo"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(90) == 0
        assert "stopping" in (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
