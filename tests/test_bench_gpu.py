"""The prepared GPU check (`python -m loadtest.bench_gpu`), run here on the CPU target.

On a GPU it compares the CUDA runtime with the CPU reference and times the serving stack, over
the real Triton server and in process; here the same script runs end to end on the tiny size, in
a process where MLflow cannot be imported (the GPU machines it is meant for have PyTorch but not
the registry's dependencies; the Triton model reads its voices from a folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loadtest.bench_gpu import output_error

BLOCK_MLFLOW = "import sys; sys.modules['mlflow'] = None; from loadtest.bench_gpu import main; "


def test_output_error_is_relative_and_counts_integer_mismatches() -> None:
    ref = np.array([[10.0, -20.0], [5.0, 0.0]], np.float32)
    assert output_error(ref, ref.copy()) == 0.0
    assert output_error(ref, ref + np.array([[0.0, 2.0], [0.0, 0.0]], np.float32)) == pytest.approx(0.1)
    assert output_error(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.25
    assert output_error((ref, np.array([1, 2])), (ref, np.array([1, 3]))) == 0.5
    assert output_error(ref, np.full_like(ref, np.nan)) == float("inf")
    with pytest.raises(AssertionError, match="shape"):
        output_error(ref, ref[:1])


def test_the_gpu_check_runs_end_to_end_on_the_cpu_target(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    args = ["--size", "tiny", "--target", "cpu", "--voices", "3", "--concurrency", "1", "3",
            "--requests", "6", "--max-new-tokens", "16", "--json", str(out)]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_MLFLOW + f"raise SystemExit(main({args!r}))"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["runtime"] == "TorchRuntime" and result["target"] == "cpu"
    # the CPU target's runtime is the reference itself: every graph agrees exactly
    assert set(result["parity"]) == {"gpt_prefill", "gpt_decode", "ref_enc", "sovits", "vocoder", "ssl"}
    assert all(e == 0.0 for e in result["parity"].values())
    for served in ("triton", "in-process"):
        for level, c in zip(result[served], (1, 3), strict=True):
            assert level["concurrency"] == c and level["requests"] == 6
            assert level["audio_s_per_request"] > 0.5  # 16 tokens per text segment, two segments
            assert 0 < level["ttfa_p50_ms"] / 1000 < level["rtf_p50"] * level["audio_s_per_request"]
            assert level["audio_s_per_s"] > 0
    table = run.stdout.strip().splitlines()
    assert table[0].startswith("| figure |") and len(table) == 2 + 1 + 2 + 2
    assert sum("Triton: streaming" in row for row in table) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_target_without_a_gpu_is_refused() -> None:
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_MLFLOW + "raise SystemExit(main(['--size', 'tiny']))"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "needs a CUDA GPU" in run.stderr
