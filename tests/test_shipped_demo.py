"""The shipped demo under demo/ (training/recipes/demo.py `ship`): complete, within the 30 MiB
budget, self-consistent (the voice is pinned to exactly this base, its consent record is the one
it names), it makes sentence-length audio (not a quality check: that is docs/QUALITY.md), and
docs/QUALITY.md quotes the evaluation report it was shipped with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo"
QUALITY = REPO / "docs" / "QUALITY.md"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEMO / "eval" / "rms.json").read_text())
    return data


def test_demo_folder_is_complete_and_within_budget() -> None:
    from gateway.demo import shipped_demo
    from training.recipes.demo import SHIP_LIMIT_BYTES

    assert shipped_demo(DEMO) is not None, "demo/ is missing or incomplete"
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert 0 < total <= SHIP_LIMIT_BYTES, f"{total / 2**20:.1f} MiB"


def test_voice_is_pinned_to_the_shipped_base_and_names_its_consent() -> None:
    from adapters.consent import ConsentRecord
    from adapters.format import read_adapter
    from training.recipes.demo import SHIPPED_TENANT, SHIPPED_VOICE

    base_sha = json.loads((DEMO / "base" / "manifest.json").read_text())["weights_sha256"]
    adapter = read_adapter(DEMO / "voice", expect_base=base_sha)  # verifies every file hash too
    assert (adapter.manifest.voice, adapter.manifest.tenant) == (SHIPPED_VOICE, SHIPPED_TENANT)
    assert adapter.manifest.consent_id == ConsentRecord.load(DEMO / "consent.json").id
    for key in ("speaker_similarity", "wer", "zero_shot_similarity", "ground_truth_wer"):
        assert key in adapter.manifest.metrics, key


def test_voice_fits_the_serving_bank() -> None:
    from adapters.format import read_manifest
    from tritone.models.base import BaseModel
    from tritone.serving.runtime import DEFAULT_TARGETS
    from tritone.serving.runtime_graphs import lora_target_names

    manifest, _ = read_manifest(DEMO / "voice")
    served = set(lora_target_names(BaseModel.load(DEMO / "base"), DEFAULT_TARGETS))
    assert set(manifest.targets) <= served, sorted(set(manifest.targets) - served)[:8]


def test_the_demo_voice_produces_sentence_length_audio() -> None:
    from training.evaluate import load_model
    from tritone.pipeline import SynthesisParams

    pipe, adapter = load_model(DEMO / "base", DEMO / "voice")
    audio = pipe.synthesize(
        "Hello from tritone.", "en", adapter.prompt, SynthesisParams(seed=1234, max_new_tokens=300)
    )
    seconds = len(audio) / 32_000
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    assert 0.4 < seconds < 6.0, seconds
    assert np.isfinite(audio).all() and rms > 0.01, rms


def test_report_is_side_by_side_on_every_heldout_sentence(report: dict[str, Any]) -> None:
    from training.recipes.demo import DEMO_SEED

    systems = [s["system"] for s in report["summary"]]
    assert systems[:2] == ["ground truth (own recordings)", "base zero-shot (1 reference clip)"]
    assert any(s.startswith("adapter") for s in systems)
    assert report["seed"] == DEMO_SEED and report["sentences"] > 0
    for s in report["summary"]:
        assert s["n"] == report["sentences"], s
        assert 0.0 <= s["similarity"] <= 1.0 and s["wer"] is not None
        assert (s["rtf"] is None) == s["system"].startswith("ground truth")


def test_quality_doc_quotes_the_shipped_report(report: dict[str, Any]) -> None:
    text = QUALITY.read_text()
    assert report["date"] in text and str(report["seed"]) in text
    for s in report["summary"]:
        assert f"{s['similarity']:.3f}" in text, (s["system"], "similarity")
        assert f"{100 * s['wer']:.1f}%" in text, (s["system"], "wer")
        if s["rtf"] is not None:
            assert f"{s['rtf']:.2f}" in text, (s["system"], "rtf")
