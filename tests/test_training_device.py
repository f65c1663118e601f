"""Training devices: which device a process trains on, and that a checkpoint loads on any machine.

The CUDA path itself needs a GPU; here the choice is checked with the CUDA queries stood in for
(a machine with one GPU), and the CPU path runs for real in tests/test_train.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from training import ddp
from training.common import load_checkpoint, save_checkpoint


def test_auto_and_cpu_pick_the_cpu_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert ddp.select_device("auto") == torch.device("cpu")
    assert ddp.select_device("cpu", local_rank=3) == torch.device("cpu")
    assert ddp.setup(device="auto").device == torch.device("cpu")


def test_cuda_without_a_gpu_and_unknown_devices_are_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ddp.DeviceError, match="no usable CUDA GPU"):
        ddp.select_device("cuda")
    with pytest.raises(ddp.DeviceError, match="unknown device 'tpu'"):
        ddp.select_device("tpu")


def test_one_gpu_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with one GPU: process 0 gets it (auto and cuda), a second process is refused
    with a message rather than sharing or crashing in NCCL."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert ddp.select_device("auto", 0) == torch.device("cuda", 0)
    assert ddp.select_device("cuda", 0) == torch.device("cuda", 0)
    assert ddp.select_device("cpu", 0) == torch.device("cpu")
    with pytest.raises(ddp.DeviceError, match=r"process 1 .* no GPU of its own"):
        ddp.select_device("auto", 1)


def test_checkpoints_hold_cpu_tensors_and_state_dict_metadata(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": model.state_dict(), "optim": opt.state_dict(), "rng": (1, [2])})
    state = load_checkpoint(path)
    assert state is not None
    assert isinstance(state["model"], OrderedDict) and hasattr(state["model"], "_metadata")
    tensors = [*state["model"].values(), *state["optim"]["state"][0].values()]
    assert all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))
    assert state["rng"] == (1, [2])
    again = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    again.load_state_dict(state["model"])
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_base_with_cuda_on_a_cpu_machine_is_a_one_line_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    listing = tmp_path / "x.list"
    listing.write_text("")
    run = subprocess.run(
        [sys.executable, "-m", "tritone.cli", "train", "base", "--train-list", str(listing),
         "--eval-list", str(listing), "--run-dir", str(tmp_path / "run"), "--device", "cuda"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: --device cuda was asked for")
    assert "Traceback" not in run.stderr
