"""`tritone triton start --detach | status | stop` and `TritonServer` against the real server,
with a trivial repository (the tts model itself is exercised in test_triton_tts.py)."""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

import pytest

from tritone.serving.server import TritonServer, free_port, read_state
from tritone.triton_cli import add_commands

ECHO_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("echo", text)]))
        return out
"""

ECHO_CONFIG = """
name: "tts"
backend: "python"
max_batch_size: 0
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "echo" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.fixture()
def echo_repo(tmp_path: Path) -> Path:
    model = tmp_path / "repo" / "tts"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(ECHO_CONFIG)
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    return tmp_path / "repo"


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tritone")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return int(args.func(args) or 0)


def test_start_detach_status_stop(
    echo_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRITONE_HOME", str(tmp_path / "home"))
    ports = [str(free_port()) for _ in range(3)]
    assert _cli("triton", "status") == 1
    try:
        code = _cli(
            "triton", "start", "--repo", str(echo_repo), "--detach",
            "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2], "--timeout", "120",
        )  # fmt: skip
        assert code == 0
        state = read_state()
        assert state is not None and state["http_port"] == int(ports[0])
        capsys.readouterr()
        assert _cli("triton", "status", "--json") == 0
        status = json.loads(capsys.readouterr().out)
        assert status["ready"] is True and status["running"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/models/tts/ready", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(ValueError, match="already running"):
            _cli("triton", "start", "--repo", str(echo_repo), "--detach")
    finally:
        assert _cli("triton", "stop") == 0
    assert read_state() is None
    assert _cli("triton", "status") == 1


def test_context_manager_and_startup_failure(echo_repo: Path, tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    with TritonServer(echo_repo, log_file=tmp_path / "ok.log", exit_timeout_s=2) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        item = httpclient.InferInput("text", [1], "BYTES")
        import numpy as np

        item.set_data_from_numpy(np.array([b"hi"], dtype=np.object_))
        assert client.infer("tts", [item]).as_numpy("echo")[0] == b"hi"
        process = server.process
    assert process is not None and process.poll() is not None  # stopped on exit
    (echo_repo / "tts" / "1" / "model.py").write_text("raise RuntimeError('broken model')\n")
    with pytest.raises(RuntimeError, match=r"broken model|exited|not ready"):
        TritonServer(echo_repo, log_file=tmp_path / "bad.log", startup_timeout_s=60, exit_timeout_s=2).start()
