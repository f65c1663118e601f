"""`tritone adapters ...` end to end on an embedded sqlite registry."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from adapters.cli import build_parser, main
from adapters.format import BasePin
from adapters.synthetic import (
    STANDIN_TARGETS,
    demo_consent,
    demo_prompt,
    make_adapter,
    make_standin,
    random_lora,
    save_standin,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITONE_HOME", str(root / "home"))
        mp.setenv("TRITONE_MLFLOW_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield root


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        rc = main(list(argv))
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["adapters", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for action in (
        "register-base", "register", "list", "show", "resolve", "promote", "rollback", "revoke",
        "metrics", "verify", "import-peft", "import-finetune", "watch",
    ):  # fmt: skip
        assert f"    {action} " in text or f"    {action}\n" in text, action
    assert "[TENANT.]NAME" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapters", "promote", "--help"])
    assert "--to {staging,production}" in capsys.readouterr().out


def test_commands_end_to_end(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base_model = make_standin(0)
    base_dir = save_standin(base_model, home / "base")
    rc, out, err = run(capsys, "register-base", str(base_dir), "--json")
    assert rc == 0, err
    pin = BasePin(**json.loads(out))
    assert pin.version == 1

    adapter = make_adapter(home / "alice-1", base_model, pin, voice="alice")
    (home / "consent.json").write_text(demo_consent().to_json())
    rc, out, err = run(capsys, "register", str(adapter))
    assert rc == 1 and "no consent record" in err
    rc, out, err = run(capsys, "register", str(adapter), "--consent", str(home / "consent.json"))
    assert rc == 0, err
    assert out.startswith("registered default.alice version 1 (staging)")

    rc, out, _ = run(capsys, "list")
    header, row = out.splitlines()
    assert header.split() == ["VOICE", "STATE", "PRODUCTION", "STAGING", "PREVIOUS", "LATEST", "CONSENT"]
    assert row.split()[:6] == ["default.alice", "active", "-", "1", "-", "1"]
    assert "consent-0001 (Demo Speaker, 2026-01-15)" in row

    rc, out, _ = run(capsys, "show", "alice")
    assert "consent  consent-0001: speaker 'Demo Speaker'" in out and "aliases  staging -> 1" in out
    assert "speaker_similarity=0.91" in out
    assert out.splitlines()[-1].split()[:3] == ["1", "active", "staging"]

    rc, out, _ = run(capsys, "resolve", "alice@staging", "--json")
    resolved = json.loads(out)
    assert resolved["version"] == 1 and Path(resolved["path"], "manifest.json").is_file()

    rc, _, err = run(capsys, "resolve", "../etc")
    assert rc == 1 and "invalid voice reference" in err
    rc, _, err = run(capsys, "resolve", "nobody")
    assert rc == 1 and "no voice default.nobody" in err

    rc, out, _ = run(capsys, "metrics", "alice/1", "speaker_similarity=0.5")
    assert rc == 0 and "recorded speaker_similarity=0.5" in out
    rc, _, err = run(capsys, "promote", "alice")
    assert rc == 1 and "refusing to promote default.alice/1 to production" in err
    assert "speaker_similarity 0.5 < 0.75" in err
    rc, out, err = run(capsys, "promote", "alice", "--min", "speaker_similarity=0.4")
    assert rc == 0, err
    assert out.strip() == "default.alice: production -> version 1"

    # A full fine-tune of the base becomes version 2 through the SVD import.
    finetuned = {k: v.clone() for k, v in base_model.state_dict().items()}
    for name, lora in random_lora(base_model, STANDIN_TARGETS, 2, 9).items():
        finetuned[f"{name}.weight"] += lora.delta()
    save_file(finetuned, str(home / "finetuned.safetensors"))
    demo_prompt().save(home / "prompt.safetensors")
    (home / "data.list").write_text("wavs/1.wav|alice|en|hello\n")
    rc, out, err = run(
        capsys, "import-finetune", "--base", str(base_dir), "--finetuned", str(home / "finetuned.safetensors"),
        "--rank", "2", "-o", str(home / "alice-2"), "--voice", "alice", "--prompt", str(home / "prompt.safetensors"),
        "--consent-id", "consent-0001", "--training-data", str(home / "data.list"),
        "--metric", "speaker_similarity=0.9", "--metric", "wer=0.05",
    )  # fmt: skip
    assert rc == 0, err
    assert "5 matrices at rank <= 2" in out and "relative reconstruction error  max" in out
    rc, out, _ = run(capsys, "verify", str(home / "alice-2"))
    assert rc == 0 and out.startswith("ok: default.alice, 5 LoRA target(s) rank 2")
    rc, out, err = run(capsys, "register", str(home / "alice-2"))
    assert rc == 0 and "version 2" in out, err
    rc, out, _ = run(capsys, "promote", "alice")
    assert out.strip() == "default.alice: production -> version 2 (was 1, now previous)"
    rc, out, _ = run(capsys, "rollback", "alice")
    assert out.strip() == "default.alice: production -> version 1 (rolled back from 2)"

    rc, out, _ = run(capsys, "watch", "--polls", "1", "--interval", "0.1")
    assert rc == 0 and "added" in out and "default.alice" in out and "production->1" in out

    rc, _, err = run(capsys, "revoke", "alice", stdin="no\n")
    assert rc == 1 and "not confirmed" in err
    rc, out, _ = run(capsys, "resolve", "alice")
    assert rc == 0
    rc, out, err = run(capsys, "revoke", "alice", stdin="default.alice\n")
    assert rc == 0, err
    assert "revoked default.alice: versions 1, 2" in out
    rc, _, err = run(capsys, "resolve", "alice")
    assert rc == 1 and "revoked" in err

    # The module runs on its own too, and --json output stays clean.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    [listed] = json.loads(proc.stdout)
    assert listed["voice"] == "default.alice" and listed["state"] == "revoked" and listed["aliases"] == {}


def test_import_peft_command(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("peft")
    import copy

    from peft import LoraConfig, get_peft_model

    base_model = make_standin(0)
    rc, out, err = run(capsys, "register-base", str(save_standin(base_model, tmp_path / "base")), "--json")
    assert rc == 0, err
    peft_model = get_peft_model(
        copy.deepcopy(base_model), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    peft_model.save_pretrained(str(tmp_path / "peft"))
    demo_prompt().save(tmp_path / "prompt.safetensors")
    rc, out, err = run(
        capsys, "import-peft", str(tmp_path / "peft"), "--base-version", "1", "-o", str(tmp_path / "bob"),
        "--voice", "acme.bob", "--prompt", str(tmp_path / "prompt.safetensors"), "--consent-id", "consent-0001",
        "--training-data-sha256", "d" * 64,
    )  # fmt: skip
    assert rc == 0, err
    rc, out, _ = run(capsys, "verify", str(tmp_path / "bob"))
    assert out.startswith("ok: acme.bob, 2 LoRA target(s) rank 2")
    rc, _, err = run(capsys, "import-peft", str(tmp_path / "peft"), "--base-version", "7", "-o", str(tmp_path / "x"),
                     "--voice", "bob", "--prompt", str(tmp_path / "prompt.safetensors"), "--consent-id", "c1",
                     "--training-data-sha256", "d" * 64)  # fmt: skip
    assert rc == 1 and "no version 7" in err
