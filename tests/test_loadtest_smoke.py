"""A short real headless Locust run (HTTP and gRPC users, unary and streaming) against a real
gateway stack on loopback (`gateway.testing.stack.GatewayStack`: the gateway in-process, the real
`tritonserver` running the `tts` model over the tiny test base, an embedded-sqlite registry with
real LoRA voices of two tenants). No failures; Locust's CSVs, its HTML and our report exist."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.testing.stack import GatewayStack
from loadtest.scenario import Scenario, Voice

REPO = Path(__file__).resolve().parent.parent
TENANTS = ("lt0", "lt1")
VOICES = [(TENANTS[i % 2], f"voice{i:03d}", 100 + i) for i in range(4)]
POLICY = {"max_concurrent": 64, "rate_per_s": 1000.0, "burst": 1000}


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Any, reference_voice: Any
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("loadtest-smoke")
    with GatewayStack.running(
        root,
        base=tiny_base.model,
        base_dir=tiny_base.path,
        prompt=reference_voice,
        tenants={t: (t, POLICY) for t in TENANTS},
        voices=VOICES,
        mlflow_server=False,
        health_interval_s=0.5,
    ) as stack:
        voices = [Voice(f"{t}.{v}", t) for t, v, _ in VOICES]
        keys = {t: stack.keys[t] for t in TENANTS}
        yield Scenario(voices, keys, stack.gw.http, stack.gw.grpc).save(root / "scenario.json")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_headless_locust_run(scenario: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "out" / "lt"
    prefix.parent.mkdir()
    cmd = [
        sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "-u", "2", "-r", "2",
        "-t", "10s", "--scenario", str(scenario), "--csv", str(prefix), "--csv-full-history",
        "--html", f"{prefix}_locust.html", "--only-summary", "--think-max", "0.2", "--stream-ratio", "0.5",
        "--text-max", "120", "--max-new-tokens", "40", "HttpTTSUser", "GrpcTTSUser",
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    stats = {r["Name"]: r for r in _rows(Path(f"{prefix}_stats.csv"))}
    assert stats["Aggregated"]["Failure Count"] == "0"
    assert int(stats["Aggregated"]["Request Count"]) >= 4
    assert {r["Type"] for r in stats.values()} >= {"HTTP", "gRPC"}
    assert any("first audio" in name for name in stats), sorted(stats)
    assert _rows(Path(f"{prefix}_failures.csv")) == []
    requests = _rows(Path(f"{prefix}_requests.csv"))
    assert requests and all(r["ok"] == "1" and float(r["audio_s"]) > 0 for r in requests)
    assert {r["api"] for r in requests} == {"http", "grpc"}
    assert {r["tenant"] for r in requests} <= set(TENANTS)
    assert Path(f"{prefix}_stats_history.csv").stat().st_size > 0
    assert Path(f"{prefix}_locust.html").stat().st_size > 0

    report = subprocess.run(
        [sys.executable, "-m", "loadtest.report", str(prefix)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    page = Path(f"{prefix}_report.html").read_text()
    assert len(re.findall(r"data:image/png;base64,", page)) == 4
    assert "0 failures" in page and "lt_locust.html" in page
