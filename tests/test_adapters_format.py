"""The adapter directory format: round trip, integrity, base pin, peft conversion, SVD import."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from adapters.apply import apply_adapter, load_into_bank, merged_state_dict
from adapters.errors import (
    AdapterError,
    AdapterFormatError,
    BasePinMismatch,
    IntegrityError,
    InvalidName,
    UnsupportedFormatVersion,
)
from adapters.format import (
    ADAPTER_FILE,
    MANIFEST_FILE,
    PROMPT_FILE,
    BasePin,
    read_adapter,
    verify_adapter_dir,
    write_adapter,
)
from adapters.names import parse_voice_ref
from adapters.synthetic import STANDIN_TARGETS, demo_prompt, make_adapter, make_standin, random_lora
from adapters.util import sha256_bytes
from tritone.checkpoints import weights_hash
from tritone.lora import wrap_lora


@pytest.fixture
def base() -> nn.Module:
    return make_standin(0)


@pytest.fixture
def pin(base: nn.Module) -> BasePin:
    return BasePin("tritone-base", 1, weights_hash(base.state_dict()))


def flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_and_content_address(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    full = {"head.weight": torch.randn(5, 16), "head.bias": torch.randn(5)}
    out = make_adapter(tmp_path / "a", base, pin, voice="alice", tenant="acme", rank=3, full=full)
    assert sorted(p.name for p in out.iterdir()) == sorted([ADAPTER_FILE, PROMPT_FILE, MANIFEST_FILE])
    adapter = read_adapter(out, expect_base=pin)
    m = adapter.manifest
    assert (m.voice, m.tenant, m.rank, m.base, m.format_version) == ("alice", "acme", 3, pin, 1)
    assert set(m.targets) == {
        "pre",
        "blocks.0.q_proj",
        "blocks.0.v_proj",
        "blocks.1.q_proj",
        "blocks.1.v_proj",
    }
    assert m.targets["pre"].kind == "conv1d" and m.targets["blocks.0.q_proj"].kind == "linear"
    assert m.modules_to_save == ["head"] and set(adapter.full) == set(full)
    assert m.metrics == {"speaker_similarity": 0.91, "wer": 0.04} and m.consent_id == "consent-0001"
    expected = random_lora(base, STANDIN_TARGETS, 3, 0)
    for name, w in expected.items():
        assert torch.equal(adapter.lora[name].A, w.A) and adapter.lora[name].alpha == w.alpha
    prompt = demo_prompt(0)
    assert adapter.prompt.metadata() == prompt.metadata()
    assert all(torch.equal(adapter.prompt.tensors()[k], v) for k, v in prompt.tensors().items())
    assert adapter.content_sha256 == sha256_bytes((out / MANIFEST_FILE).read_bytes())
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {ADAPTER_FILE, PROMPT_FILE}


@pytest.mark.parametrize("victim", [ADAPTER_FILE, PROMPT_FILE])
def test_flipped_byte_is_refused_naming_the_file(
    tmp_path: Path, base: nn.Module, pin: BasePin, victim: str
) -> None:
    out = make_adapter(tmp_path / "a", base, pin, voice="alice")
    flip_byte(out / victim)
    with pytest.raises(IntegrityError, match=victim.replace(".", r"\.")):
        read_adapter(out)


def test_altered_manifest_is_refused_against_the_registered_hash(
    tmp_path: Path, base: nn.Module, pin: BasePin
) -> None:
    out = make_adapter(tmp_path / "a", base, pin, voice="alice")
    content = read_adapter(out).content_sha256
    data = json.loads((out / MANIFEST_FILE).read_text())
    data["metrics"]["speaker_similarity"] = 0.99  # inflate a metric: hashes of the files still match
    (out / MANIFEST_FILE).write_text(json.dumps(data))
    read_adapter(out)  # self-consistent on its own...
    with pytest.raises(IntegrityError, match=r"manifest\.json"):
        read_adapter(out, expect_content_sha256=content)  # ...but not what was registered


def test_unknown_format_version_is_refused(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    out = make_adapter(tmp_path / "a", base, pin, voice="alice")
    data = json.loads((out / MANIFEST_FILE).read_text())
    data["format_version"] = 99
    (out / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(UnsupportedFormatVersion, match="format version 99"):
        read_adapter(out)
    (out / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(AdapterFormatError, match="not valid JSON"):
        read_adapter(out)


def test_wrong_base_pin_is_refused(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    out = make_adapter(tmp_path / "a", base, pin, voice="alice")
    other = make_standin(1)
    with pytest.raises(BasePinMismatch, match="pinned to base tritone-base v1"):
        read_adapter(out, expect_base=weights_hash(other.state_dict()))
    with pytest.raises(BasePinMismatch):
        apply_adapter(other, read_adapter(out))
    bank = wrap_lora(other, STANDIN_TARGETS, 3, 4)
    with pytest.raises(BasePinMismatch):
        load_into_bank(bank, 1, read_adapter(out), base_sha256=weights_hash(other.state_dict()))


def test_manifest_tensors_must_agree(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    out = make_adapter(tmp_path / "a", base, pin, voice="alice")
    data = json.loads((out / MANIFEST_FILE).read_text())
    data["targets"]["pre"]["rank"] = 7
    (out / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(AdapterFormatError, match="rank 2, manifest says conv1d rank 7"):
        read_adapter(out)


@pytest.mark.parametrize("bad", ["../evil", "a/b", "Alice", "a.b", "", "x" * 64, "-lead"])
def test_bad_voice_names_are_refused(tmp_path: Path, base: nn.Module, pin: BasePin, bad: str) -> None:
    with pytest.raises(InvalidName):
        make_adapter(tmp_path / "a", base, pin, voice=bad)
    with pytest.raises(InvalidName):
        parse_voice_ref(f"acme.{bad}@production" if bad else "")


def test_voice_references_parse() -> None:
    r = parse_voice_ref("acme.alice@staging")
    assert (str(r.voice), r.alias, r.version) == ("acme.alice", "staging", None)
    r = parse_voice_ref("alice/3", default_tenant="t1")
    assert (str(r.voice), r.alias, r.version) == ("t1.alice", None, 3)
    assert parse_voice_ref("alice").alias == "production"
    for bad in ["alice/0", "alice/x", "alice/²", "alice@", "a.b.c", "alice@Prod", "alice/1@x"]:
        with pytest.raises(InvalidName):
            parse_voice_ref(bad)


def test_apply_and_bank_match_merged_weights(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    a1 = read_adapter(make_adapter(tmp_path / "a1", base, pin, voice="alice", rank=2, seed=1))
    a2 = read_adapter(make_adapter(tmp_path / "a2", base, pin, voice="bob", rank=4, seed=2))
    x = torch.randn(3, 4, 9)
    with torch.no_grad():
        refs = [base(x)] + [apply_adapter(copy.deepcopy(base), a)(x) for a in (a1, a2)]
        merged = copy.deepcopy(base)
        merged.load_state_dict(merged_state_dict(base.state_dict(), a2))
        assert torch.allclose(merged(x), refs[2], atol=1e-6)
        assert not torch.allclose(refs[1], refs[0], atol=1e-3)  # the adapter does something
        bank = wrap_lora(base, STANDIN_TARGETS, bank_size=3, max_rank=4)
        sha = pin.weights_sha256
        load_into_bank(bank, 1, a1, base_sha256=sha)
        load_into_bank(bank, 2, a2, base_sha256=sha)
        with bank.use_slots([2, 0, 1]):
            y = base(x)
    for row, slot in enumerate([2, 0, 1]):
        assert torch.allclose(y[row], refs[slot][row], atol=1e-5)


def test_bank_refuses_adapters_with_full_modules(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    full = {"head.bias": torch.randn(5)}
    a = read_adapter(make_adapter(tmp_path / "a", base, pin, voice="alice", full=full))
    bank = wrap_lora(base, STANDIN_TARGETS, 3, 4)
    with pytest.raises(AdapterError, match="fully trained modules"):
        load_into_bank(bank, 1, a, base_sha256=pin.weights_sha256)


def test_write_refuses_conflicts_and_existing_dirs(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    make_adapter(tmp_path / "a", base, pin, voice="alice")
    with pytest.raises(FileExistsError):
        make_adapter(tmp_path / "a", base, pin, voice="alice")
    with pytest.raises(AdapterFormatError, match="both LoRA-adapted and fully replaced"):
        write_adapter(
            tmp_path / "b",
            voice="alice",
            tenant="default",
            base=pin,
            lora=random_lora(base, ["q_proj"], 2, 0),
            full={"blocks.0.q_proj.weight": torch.zeros(16, 16)},
            prompt=demo_prompt(),
            consent_id="c-1",
            training_data_sha256="0" * 64,
        )
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary leftovers


# --------------------------------------------------------------------------------------------
# peft round trip
# --------------------------------------------------------------------------------------------


def _peft_model(base: nn.Module, seed: int, **config: object) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(target_modules=["pre", "q_proj", "v_proj"], init_lora_weights="gaussian", **config)  # type: ignore[arg-type]
    model = get_peft_model(copy.deepcopy(base), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # gaussian init leaves lora_B at zero: make the adapter do something
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize(
    "config",
    [
        {"r": 4, "lora_alpha": 8, "modules_to_save": ["head"]},
        {"r": 4, "lora_alpha": 8, "rank_pattern": {"v_proj": 2}, "alpha_pattern": {r"blocks\.1\.q_proj": 3}},
        {"r": 4, "lora_alpha": 6, "use_rslora": True},
    ],
    ids=["modules_to_save", "rank_alpha_patterns", "rslora"],
)
def test_peft_adapter_converts_and_matches_peft_merged_model(
    tmp_path: Path, base: nn.Module, pin: BasePin, config: dict[str, object]
) -> None:
    pytest.importorskip("peft")
    from adapters.peft_import import convert_peft

    peft_model = _peft_model(base, 1, **config)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    x = torch.randn(3, 4, 9)
    with torch.no_grad():
        unmerged = peft_model(x)
        merged_by_peft = peft_model.merge_and_unload()(x)
    out = convert_peft(
        tmp_path / "peft",
        tmp_path / "ours",
        voice="alice",
        tenant="acme",
        base=pin,
        prompt=demo_prompt(),
        consent_id="consent-0001",
        training_data_sha256="a" * 64,
    )
    adapter = read_adapter(out, expect_base=pin)
    assert adapter.manifest.source["kind"] == "peft"
    with torch.no_grad():
        ours = apply_adapter(copy.deepcopy(base), adapter)(x)
    assert torch.allclose(ours, merged_by_peft, atol=1e-5)
    assert torch.allclose(ours, unmerged, atol=1e-5)
    if "modules_to_save" not in config:
        bank = wrap_lora(copy.deepcopy(base), STANDIN_TARGETS, 2, 4)
        load_into_bank(bank, 1, adapter, base_sha256=pin.weights_sha256)
        with torch.no_grad(), bank.use_slots([1, 1, 0]):
            y = bank.model(x)
        assert torch.allclose(y[:2], unmerged[:2], atol=1e-5)
        assert torch.allclose(y[2], base(x)[2], atol=1e-6)


def test_peft_variants_with_other_maths_are_refused(tmp_path: Path, base: nn.Module) -> None:
    pytest.importorskip("peft")
    from adapters.peft_import import load_peft_adapter

    peft_model = _peft_model(base, 1, r=2, lora_alpha=2, use_dora=True)
    peft_model.save_pretrained(str(tmp_path / "dora"))
    with pytest.raises(AdapterFormatError, match="DoRA"):
        load_peft_adapter(tmp_path / "dora")
    with pytest.raises(AdapterFormatError, match="not a peft adapter"):
        load_peft_adapter(tmp_path)


# --------------------------------------------------------------------------------------------
# SVD import of a full fine-tune
# --------------------------------------------------------------------------------------------


def _finetune_with_rank(base: nn.Module, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A synthetic full fine-tune: exactly rank-``rank`` deltas on the targets, plus a changed bias."""
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for name, lora in random_lora(base, STANDIN_TARGETS, rank, seed).items():
        state[f"{name}.weight"] += lora.delta()
    state["head.bias"] += 0.05
    return state


def test_svd_import_recovers_exact_rank_deltas(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    from adapters.svd_import import import_finetune, svd_import

    finetuned = _finetune_with_rank(base, 3, seed=5)
    result = svd_import(
        base.state_dict(), finetuned, 3, targets=r"pre|blocks\.\d+\.(q|v)_proj", keep_other=True
    )
    assert set(result.lora) == {
        "pre",
        "blocks.0.q_proj",
        "blocks.0.v_proj",
        "blocks.1.q_proj",
        "blocks.1.v_proj",
    }
    assert result.report["max_rel_error"] < 1e-5
    assert result.report["max_output_rel_diff"] < 1e-5
    assert result.full.keys() == {"head.bias"} and result.report["kept_full"] == ["head.bias"]
    for name, w in result.lora.items():
        assert w.rank == 3
        recovered = base.state_dict()[f"{name}.weight"] + w.delta()
        assert torch.allclose(recovered, finetuned[f"{name}.weight"], atol=1e-5)

    def probe(state: dict[str, torch.Tensor]) -> torch.Tensor:
        model = make_standin(0)
        model.load_state_dict(state)
        return model(torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(0)))

    path, _ = import_finetune(
        base.state_dict(),
        finetuned,
        3,
        tmp_path / "imported",
        voice="alice",
        tenant="acme",
        base_pin=pin,
        prompt=demo_prompt(),
        consent_id="consent-0001",
        training_data_sha256="b" * 64,
        keep_other=True,
        probe=probe,
    )
    adapter = read_adapter(path, expect_base=pin)
    source = adapter.manifest.source
    assert source["kind"] == "svd-import" and source["max_rel_error"] < 1e-5
    assert source["model_output"]["rel_diff"] < 1e-5
    with torch.no_grad():
        assert torch.allclose(
            apply_adapter(make_standin(0), adapter)(torch.ones(1, 4, 9)),
            probe_model(finetuned)(torch.ones(1, 4, 9)),
            atol=1e-5,
        )


def probe_model(state: dict[str, torch.Tensor]) -> nn.Module:
    model = make_standin(0)
    model.load_state_dict(state)
    return model


def test_svd_import_reports_the_error_of_a_lower_rank(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    from adapters.svd_import import import_finetune

    finetuned = _finetune_with_rank(base, 3, seed=5)
    path, result = import_finetune(
        base.state_dict(),
        finetuned,
        1,
        tmp_path / "low",
        voice="alice",
        tenant="acme",
        base_pin=pin,
        prompt=demo_prompt(),
        consent_id="consent-0001",
        training_data_sha256="b" * 64,
    )
    source = read_adapter(path).manifest.source
    assert source["rank"] == 1 and 0.05 < source["max_rel_error"] < 1.0
    for name, entry in source["matrices"].items():
        assert entry["rank"] == 1 and entry["rel_error"] > 0.01 and entry["output_rel_diff"] > 0.0, name
    # The changed bias is not silently lost: it is listed as dropped with its relative change.
    assert set(source["dropped"]) == {"head.bias"} and source["dropped"]["head.bias"] > 0
    assert result.report == source


def test_svd_import_refuses_a_different_base(base: nn.Module, pin: BasePin, tmp_path: Path) -> None:
    from adapters.svd_import import import_finetune, svd_import

    finetuned = _finetune_with_rank(base, 2, seed=1)
    other = make_standin(3).state_dict()
    with pytest.raises(BasePinMismatch):
        import_finetune(
            other,
            finetuned,
            2,
            tmp_path / "x",
            voice="a",
            tenant="t",
            base_pin=pin,
            prompt=demo_prompt(),
            consent_id="c",
            training_data_sha256="c" * 64,
        )
    bigger = dict(finetuned)
    bigger["head.weight"] = torch.zeros(6, 16)
    with pytest.raises(AdapterError, match=r"head\.weight"):
        svd_import(base.state_dict(), bigger, 2)
    with pytest.raises(AdapterError, match="missing"):
        svd_import(base.state_dict(), {k: v for k, v in finetuned.items() if k != "head.bias"}, 2)


def test_verify_detects_missing_files(tmp_path: Path, base: nn.Module, pin: BasePin) -> None:
    out = make_adapter(tmp_path / "a", base, pin, voice="alice")
    (out / PROMPT_FILE).unlink()
    with pytest.raises(IntegrityError, match=r"voice_prompt\.safetensors is missing"):
        verify_adapter_dir(out)


# --------------------------------------------------------------------------------------------
# the real base bundle (GPT + SoVITS + vocoder + SSL)
# --------------------------------------------------------------------------------------------


def test_base_bundle_pin_apply_and_svd_import(tmp_path: Path) -> None:
    base_mod = pytest.importorskip("tritone.models.base")
    from adapters.base import load_base, model_weights_sha256
    from adapters.svd_import import import_finetune

    model = base_mod.BaseModel.random(base_mod.BaseModelConfig.tiny())
    bundle = model.save(tmp_path / "base")
    state, sha = load_base(bundle)
    assert sha == model.weights_sha256 == model_weights_sha256(model)
    assert set(state) == set(model.state_dict())
    pin = BasePin("tritone-base", 1, sha)

    # A "full fine-tune" that moved the GPT's attention projections by rank-2 deltas.
    targets = r"gpt\.layers\.\d+\.self_attn\.(in_proj|out_proj)"
    finetuned = dict(state)
    for name, lora in random_lora(model, targets, 2, 3).items():
        finetuned[f"{name}.weight"] = state[f"{name}.weight"] + lora.delta()
    path, result = import_finetune(
        state,
        finetuned,
        2,
        tmp_path / "voice",
        voice="alice",
        tenant="acme",
        base_pin=pin,
        base_sha256=sha,
        prompt=demo_prompt(),
        consent_id="consent-0001",
        training_data_sha256="e" * 64,
    )
    assert len(result.lora) == 2 * base_mod.BaseModelConfig.tiny().gpt.n_layer
    assert result.report["max_rel_error"] < 1e-5 and result.report["dropped"] == {}
    adapter = read_adapter(path, expect_base=sha)
    apply_adapter(model, adapter)  # pin checked against the bundle's own hash
    after = model.state_dict()
    assert all(torch.allclose(after[k], finetuned[k], atol=1e-5) for k in finetuned)
    with pytest.raises(BasePinMismatch):
        apply_adapter(model, adapter)  # the weights changed: no longer the pinned base

    # A bundle whose component was altered is refused when loaded.
    flip_byte(bundle / "gpt" / "model.safetensors", -4)
    with pytest.raises(IntegrityError, match="gpt"):
        load_base(bundle)
