"""`make serve` (scripts/serve.sh) from a fresh copy of the working tree: it reaches readiness,
serves one request over the real `tts` model, and Ctrl-C stops everything; and the demo it
serves: the shipped one under demo/ when present, else a tiny random base with a warning."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tritone.serving.server import free_port

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


def _ship_demo(demo: Path, tiny_base: Any, prompt: Any) -> Path:
    """A demo folder as the training recipe ships it (base bundle, voice adapter, consent record),
    made from the tiny base. The adapter pins the base as version 3 of the registry it was trained
    against, and its metrics miss the promotion gate."""
    from adapters.format import BasePin, write_adapter
    from adapters.synthetic import demo_consent, random_lora
    from adapters.util import sha256_bytes
    from gateway.testing.stack import lora_targets

    shutil.copytree(tiny_base.path, demo / "base")
    sha = json.loads((demo / "base" / "manifest.json").read_text())["weights_sha256"]
    write_adapter(
        demo / "voice",
        voice="demo",
        tenant="public",
        base=BasePin("tritone-base", 3, sha),
        lora=random_lora(tiny_base.model, lora_targets(), 4, seed=17, scale=0.3),
        prompt=prompt,
        consent_id="consent-shipped",
        training_data_sha256=sha256_bytes(b"the demo corpus"),
        metrics={"speaker_similarity": 0.5, "wer": 0.4},
    )
    (demo / "consent.json").write_text(demo_consent("consent-shipped", "Demo Speaker").to_json())
    return demo


def test_prepare_serves_the_shipped_demo_when_present(
    tmp_path: Path,
    tiny_base: Any,
    reference_voice: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make serve` uses demo/ when it is there (also in a home that served the fallback before),
    and otherwise falls back to a tiny random base with a loud warning."""
    from adapters.format import DATA_FILES
    from adapters.registry import AdapterRegistry
    from gateway.demo import DEMO_VOICE, prepare

    home, demo = tmp_path / "home", tmp_path / "demo"
    monkeypatch.setenv("TRITONE_HOME", str(home))  # as scripts/serve.sh runs it
    fallback = prepare(home, demo)  # no demo folder yet
    err = capsys.readouterr().err
    assert "NO SHIPPED DEMO MODEL FOUND" in err and "RANDOM" in err
    assert not fallback["shipped"] and fallback["base"] == home / "serve" / "fallback" / "base"

    demo.mkdir()
    (demo / "consent.json").write_text("{}")
    assert not prepare(home, demo)["shipped"]  # an incomplete folder is reported, not used
    assert "incomplete" in capsys.readouterr().err
    shutil.rmtree(demo)

    _ship_demo(demo, tiny_base, reference_voice)
    ready = prepare(home, demo)
    out = capsys.readouterr()
    assert ready["shipped"] and ready["base"] == demo / "base"
    assert "NO SHIPPED DEMO" not in out.err and "serving the demo voice anyway" in out.err
    registry = AdapterRegistry(ready["uri"])
    details = registry.show(DEMO_VOICE)
    assert details.summary.aliases["production"] == ready["version"] != fallback["version"]
    served = registry.resolve(DEMO_VOICE)
    assert served.version == ready["version"]
    # the shipped tensors and prompt, unchanged, pinned to this registry's version of the base
    for name in DATA_FILES:
        assert (served.path / name).read_bytes() == (demo / "voice" / name).read_bytes()
    pin = registry.find_base(json.loads((demo / "base" / "manifest.json").read_text())["weights_sha256"])
    assert pin is not None and served.base == pin
    assert prepare(home, demo)["version"] == ready["version"]  # idempotent
