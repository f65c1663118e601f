"""Export: graphs match PyTorch with random adapters in random slots, the build manifest records
it, the TensorRT operator check passes on our graphs and fails on unsupported ones, and the
`tritone build` command renders a version folder for each target."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from build.export import GRAPH_AXES, graph_modules
from build.parity import ATOL, check_graph, fill_bank
from build.trt_ops import OpTable, check_file, check_model
from build.trt_ops import main as trt_main
from tests.test_runtime import BANK_SIZE, MAX_RANK, exported_tiny, tiny_model
from tritone.serving.runtime import DEFAULT_TARGETS
from tritone.serving.runtime_graphs import GRAPH_NAMES
from tritone.serving.runtime_manifest import file_sha256, load_torch_weights, read_manifest


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(build_dir: Path) -> dict:
    return read_manifest(build_dir)


def test_manifest_records_parity_hashes_and_base(build_dir: Path, manifest: dict) -> None:
    model = tiny_model()
    assert manifest["base"]["weights_sha256"] == model.weights_sha256
    assert (
        manifest["base"]["version"] == "v2"
        and manifest["exporter"] == "torchscript"
        and manifest["opset"] >= 17
    )
    assert manifest["bank"]["size"] == BANK_SIZE and manifest["bank"]["max_rank"] == MAX_RANK
    assert set(manifest["graphs"]) == set(GRAPH_NAMES)
    assert len(manifest["parity_adapters"]) == BANK_SIZE - 1  # every slot but 0 held an adapter
    for name, entry in manifest["graphs"].items():
        assert file_sha256(build_dir / entry["file"]) == entry["sha256"], name
        parity = entry["parity"]
        assert parity["ok"], name
        assert parity["max_abs"] <= ATOL, f"{name}: {parity['max_abs']}"
        assert len(parity["inputs_sha256"]) == 64 and len(parity["outputs_sha256"]) == 64
        names = [i["name"] for i in entry["inputs"]]
        if entry["bank_modules"]:
            # several rows, several slots: the base voice and at least two adapters
            assert parity["slots"][0] == 0 and len(set(parity["slots"]) - {0}) >= 2, name
            assert "slots" in names and f"{entry['bank_modules'][0]}.lora_A" in names
        # dynamic axes carry their names; bank tensors are static
        by_name = {i["name"]: i["shape"] for i in entry["inputs"]}
        for inp, axes in GRAPH_AXES[name].items():
            for axis, dim in axes.items():
                assert isinstance(by_name[inp][axis], str), (
                    f"{name}.{inp} axis {axis} should be dynamic ({dim})"
                )
    gpt_modules = manifest["graphs"]["gpt_decode"]["bank_modules"]
    assert len(gpt_modules) == 4 * model.config.gpt.n_layer
    assert manifest["graphs"]["ssl"]["bank_modules"] == []
    assert [o["name"] for o in manifest["graphs"]["gpt_decode"]["outputs"]] == ["logits", "k_new", "v_new"]


@pytest.mark.parametrize("batch", [1, 5])
def test_graphs_match_pytorch_on_fresh_inputs_and_adapters(build_dir: Path, batch: int) -> None:
    """Another seed, another batch size (1 included) and other lengths than the build checked."""
    modules, bank = graph_modules(tiny_model(), DEFAULT_TARGETS, BANK_SIZE, MAX_RANK)
    fill_bank(bank, seed=123)
    sizes = {
        "batch": batch,
        "text_len": 5,
        "prompt_len": 3,
        "cache_len": 21,
        "spec_len": 17,
        "code_len": 12,
        "phone_len": 9,
        "frames": 11,
        "samples": 6400,
    }
    for name in GRAPH_NAMES:
        result = check_graph(modules[name], build_dir / f"{name}.onnx", bank, tiny_model().config, 7, sizes)
        assert result.ok and result.max_abs <= ATOL, f"{name}: max abs {result.max_abs}, rel {result.max_rel}"
        if modules[name].bank_names and batch > 2:
            assert len(set(result.slots)) >= 3


# --------------------------------------------------------------------------------------------
# TensorRT operator check
# --------------------------------------------------------------------------------------------


def test_operator_table_has_its_source() -> None:
    table = OpTable.load()
    assert table.source["repository"] == "onnx/onnx-tensorrt" and table.source["path"] == "docs/operators.md"
    assert len(table.source["commit"]) == 40 and "10." in table.source["release"]
    assert {"MatMul", "Softmax", "Conv", "ConvTranspose", "LayerNormalization"} <= set(table.supported)
    assert "Unique" not in table.supported and table.opset_max >= 18


def test_operator_check_passes_on_the_exported_graphs(build_dir: Path, manifest: dict) -> None:
    table = OpTable.load()
    for entry in manifest["graphs"].values():
        assert check_file(build_dir / entry["file"], table) == []
    assert trt_main([str(build_dir)]) == 0


def test_operator_check_fails_on_an_op_marked_unsupported(build_dir: Path) -> None:
    findings = check_file(build_dir / "gpt_decode.onnx", OpTable.load().without(["Softmax"]))
    assert findings and all(f.op == "Softmax" for f in findings)
    assert len(findings) == tiny_model().config.gpt.n_layer  # one attention softmax per layer
    assert trt_main([str(build_dir / "gpt_decode.onnx"), "--unsupported", "Softmax"]) == 1


def _model(
    nodes: list, inputs: list, outputs: list, inits: list | None = None, opset: int = 18
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_operator_check_flags_unsupported_ops_constants_opsets_and_domains() -> None:
    table = OpTable.load()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    unique = _model([helper.make_node("Unique", ["x"], ["y"], name="u")], [x], [y])
    assert [f.op for f in check_model(unique, "unique", table)] == ["Unique"]
    # Slice needs its axes at build time: an initializer passes, a graph input does not
    ax_in = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    starts, ends = (
        helper.make_tensor("s", TensorProto.INT64, [1], [0]),
        helper.make_tensor("e", TensorProto.INT64, [1], [2]),
    )
    dyn = _model(
        [helper.make_node("Slice", ["x", "s", "e", "axes"], ["y"], name="sl")],
        [x, ax_in],
        [y],
        [starts, ends],
    )
    (f,) = check_model(dyn, "dyn", table)
    assert f.op == "Slice" and "must be a constant" in f.reason
    const_axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    ok = _model(
        [helper.make_node("Slice", ["x", "s", "e", "axes"], ["y"])], [x], [y], [starts, ends, const_axes]
    )
    assert check_model(ok, "ok", table) == []
    relu = helper.make_node("Relu", ["x"], ["y"])
    assert [f.op for f in check_model(_model([relu], [x], [y], opset=21), "new", table)] == ["opset"]
    custom = _model([helper.make_node("Fancy", ["x"], ["y"], domain="com.example")], [x], [y])
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    assert "custom-domain" in check_model(custom, "custom", table)[0].reason


# --------------------------------------------------------------------------------------------
# `tritone build`
# --------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from build.cli import add_commands

    parser = argparse.ArgumentParser(prog="tritone")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_build_command_renders_cpu_and_gpu_version_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cpu with the dynamo exporter (the decode graph and a conv-LoRA graph), gpu with the default."""
    model = tiny_model()
    model_dir = model.save(tmp_path / "base")
    out = tmp_path / "repo"
    common = ["--model", str(model_dir), "--out", str(out), "--bank-size", "3", "--max-rank", "2"]
    dynamo = ["--graphs", "gpt_decode", "vocoder", "--exporter", "dynamo"]
    assert _cli(["build", *common, *dynamo, "--target", "cpu"]) == 0
    version = out / "tts" / "1"
    cpu = json.loads((version / "build_manifest.json").read_text())
    assert cpu["target"] == "cpu" and cpu["exporter"] == "dynamo"
    assert sorted(cpu["graphs"]) == ["gpt_decode", "vocoder"]
    for name, entry in cpu["graphs"].items():
        assert entry["parity"]["ok"] and entry["parity"]["max_abs"] <= ATOL, name
    assert cpu["tensorrt_ops"]["ok"] and cpu["bank"]["size"] == 3
    assert (version / "vocoder.onnx").is_file() and not (version / "base.safetensors").exists()

    assert _cli(["build", *common, "--graphs", "ref_enc", "--target", "gpu", "--model-version", "2"]) == 0
    gpu_dir = out / "tts" / "2"
    gpu = read_manifest(gpu_dir)
    assert gpu["target"] == "gpu" and gpu["exporter"] == "torchscript"
    if "skipped" in gpu["engines"]:  # no TensorRT here: the CUDA fallback's weights are there instead
        assert "tensorrt" in gpu["engines"]["skipped"] or "CUDA" in gpu["engines"]["skipped"]
    weights = gpu_dir / gpu["torch_weights"]["file"]
    assert file_sha256(weights) == gpu["torch_weights"]["sha256"]
    assert load_torch_weights(weights).weights_sha256 == model.weights_sha256
    assert "wrote 1 graphs" in capsys.readouterr().out
    assert _cli(["build", "--check-trt", str(gpu_dir)]) == 0


def test_build_refuses_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--model"):
        _cli(["build", "--out", str(tmp_path)])


# --------------------------------------------------------------------------------------------
# The CUDA-graph runtime's CPU-verifiable parts (no GPU here: capture and replay are not run)
# --------------------------------------------------------------------------------------------


def test_cuda_graph_buckets_and_feed() -> None:
    from tritone.serving.runtime_cuda import bucket, graph_feed, packed_rows

    assert bucket(3, (1, 2, 4, 8), 10) == 4 and bucket(9, (1, 2, 4, 8, 16), 10) == 10
    assert bucket(11, (1, 2, 4), 10) is None and bucket(1, (1, 2), 5) == 1
    assert (
        packed_rows(np.array([0, 1, 2]))
        and not packed_rows(np.array([1, 2]))
        and not packed_rows(np.array([1, 0]))
    )
    feed = graph_feed(
        np.array([5, 6]), np.array([3, 4]), np.array([9, 7]), np.array([2, 1]), 4, scratch_row=8
    )
    assert feed.tolist() == [
        [5, 6, 0, 0],
        [3, 4, 0, 0],
        [9, 7, 1, 1],
        [2, 1, 0, 0],
        [0, 1, 8, 8],
        [9, 7, 0, 0],
    ]


def test_cuda_graph_step_pads_rows_into_the_scratch_row() -> None:
    """The function a CUDA graph captures, run eagerly on the CPU: a padded bucket computes the
    real rows exactly as the eager decode does and writes padding only into the scratch row."""
    from tritone.serving.runtime_cuda import CudaGraphRuntime, graph_feed
    from tritone.serving.runtime_torch import TorchRuntime

    model = tiny_model()
    kw = dict(bank_size=3, max_rank=2, device="cpu", dtype=torch.float32)
    cuda = CudaGraphRuntime(model, **kw)  # type: ignore[arg-type]
    ref = TorchRuntime(model, **kw)  # type: ignore[arg-type]
    assert not cuda.cuda_graphs
    g = torch.Generator().manual_seed(0)
    for rt in (cuda, ref):
        rt.allocate_kv(4, 16)
    assert cuda.kv_capacity == 4 and cuda.k.shape[1] == 5  # one scratch row
    phones = torch.randint(1, 100, (2, 6), generator=g).numpy()
    bert = torch.randn(2, 1024, 6, generator=g).numpy()
    prompt = torch.randint(0, 60, (2, 3), generator=g).numpy()
    args = (phones, np.array([6, 4]), bert, prompt, np.array([3, 1]), np.array([1, 0]), np.array([0, 1]))
    for rt in (cuda, ref):
        rt.gpt_prefill(*args)
    before = cuda.k[:, 2:4].clone()
    tokens, pos, lengths, slots = np.array([7, 8]), np.array([3, 1]), np.array([9, 5]), np.array([1, 0])
    want = ref.gpt_decode(tokens, pos, lengths, np.array([0, 1]), slots)
    feed = torch.from_numpy(graph_feed(tokens, pos, lengths, slots, 4, cuda.scratch_row))
    with torch.no_grad():
        got = cuda.decode_step_fn(feed, batch=4, length=12)()[:2].numpy()
    assert np.abs(got - want).max() < 1e-5
    assert torch.equal(cuda.k[:, 2:4], before)  # padding rows 2, 3 of the bucket were not written
    assert cuda.k[:, cuda.scratch_row, :, 0].abs().sum() > 0  # their K/V went to the scratch row
    for b in range(2):
        n = int(lengths[b]) + 1  # the prefix and the new position
        assert torch.allclose(cuda.k[:, b, :, :n], ref.k[:, b, :, :n], atol=1e-6)
        assert torch.allclose(cuda.v[:, b, :, :n], ref.v[:, b, :, :n], atol=1e-6)


def test_the_gpu_targets_half_precision_runs_every_graph_and_serves(tmp_path: Path) -> None:
    """The gpu target's default runtime computes in float16 (CUDA graphs aside, the same code on
    the CPU): every graph runs with half weights (a float32 tensor meeting half weights fails)
    within fp16 rounding of the fp32 reference, and a request is served end to end with it."""
    from build.bench_components import calls, load_adapters
    from loadtest.bench_gpu import output_error, write_voices
    from tritone.serving.runtime_cuda import CudaGraphRuntime
    from tritone.serving.runtime_torch import TorchRuntime
    from tritone.serving.service import ServeSettings, TTSService

    model = tiny_model()
    half = CudaGraphRuntime(model, bank_size=9, max_rank=16, device="cpu", dtype=torch.float16)
    ref = TorchRuntime(model, bank_size=9, max_rank=16, device="cpu")
    for rt in (half, ref):
        load_adapters(rt, model)
    want, got = calls(ref, model.config, 8), calls(half, model.config, 8)
    errors = {graph: output_error(want[graph](), got[graph]()) for graph in want}
    assert max(errors.values()) < 2e-2, errors
    assert max(errors.values()) > 0  # it did compute in half precision

    served = CudaGraphRuntime(model, bank_size=2, max_rank=16, device="cpu", dtype=torch.float16)
    voices = write_voices(model, served.base_sha256, 1, tmp_path / "voices")
    settings = ServeSettings(bank_slots=2, feed_interval_s=0, voices_dir=str(tmp_path / "voices"))
    service = TTSService(settings, model=model, runtime=served)
    try:
        from loadtest.bench_gpu import in_process

        timing = in_process(service)(voices[0], 3, 20)
        assert timing.samples > 0 and timing.first is not None
    finally:
        service.close()


def test_gpu_runtimes_refuse_to_start_without_a_gpu(build_dir: Path) -> None:
    from tritone.serving.runtime_cuda import CudaGraphRuntime

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        CudaGraphRuntime(tiny_model())
    from tritone.serving.runtime_tensorrt import TensorRTRuntime

    with pytest.raises(FileNotFoundError, match="no TensorRT engines"):
        TensorRTRuntime(build_dir)


def test_a_dilated_ssl_encoder_exports_with_parity_and_tensorrt_ops(tmp_path: Path) -> None:
    """`--ssl-dilation-cycle` changes the `ssl` graph (dilated convolutions): ONNX Runtime
    matches PyTorch on it at several lengths, and TensorRT has every operator it uses."""
    from build.export import export_graphs
    from tritone.models.base import BaseModel, BaseModelConfig

    model = BaseModel.random(BaseModelConfig.tiny().with_ssl_shape(3, 3), seed=2).eval()
    assert [b.dilation[0] for b in model.ssl.blocks] == [1, 2, 4]  # type: ignore[union-attr]
    manifest = export_graphs(model, tmp_path, graphs=["ssl"], bank_size=2, max_rank=4)
    parity = manifest["graphs"]["ssl"]["parity"]
    assert parity["ok"] and parity["max_abs"] <= ATOL
    assert check_file(tmp_path / "ssl.onnx") == []
    modules, bank = graph_modules(model, DEFAULT_TARGETS, 2, 4)
    fill_bank(bank, seed=5)
    for samples in (3200, 12800):
        result = check_graph(
            modules["ssl"], tmp_path / "ssl.onnx", bank, model.config, 7, {"batch": 2, "samples": samples}
        )
        assert result.ok and result.max_abs <= ATOL, (samples, result.max_abs)


@pytest.mark.parametrize("lookup", ["content+place", "place"])
def test_mrte_place_lookups_export_with_parity_and_tensorrt_ops(tmp_path: Path, lookup: str) -> None:
    """`--mrte-lookup content+place` and `place` change the `sovits` graph (MRTE's place prior,
    counted from each row's lengths): ONNX Runtime matches PyTorch on it at several lengths and
    batch sizes, and TensorRT has every operator it uses."""
    from dataclasses import replace

    from build.export import export_graphs
    from tritone.models.base import BaseModel, BaseModelConfig

    config = BaseModelConfig.tiny()
    model = BaseModel.random(
        replace(config, sovits=replace(config.sovits, mrte_lookup=lookup)), seed=2
    ).eval()
    strength = model.sovits.enc_p.mrte.position_log_strength
    assert strength is not None
    with torch.no_grad():
        strength.copy_(torch.linspace(-1.0, 1.0, strength.numel()))  # the prior matters, unlike at its start
    manifest = export_graphs(model, tmp_path, graphs=["sovits"], bank_size=2, max_rank=4)
    parity = manifest["graphs"]["sovits"]["parity"]
    assert parity["ok"] and parity["max_abs"] <= ATOL
    assert check_file(tmp_path / "sovits.onnx") == []
    modules, bank = graph_modules(model, DEFAULT_TARGETS, 2, 4)
    fill_bank(bank, seed=5)
    for batch, codes, phones in ((1, 7, 3), (3, 15, 11)):
        sizes = {"batch": batch, "code_len": codes, "phone_len": phones}
        result = check_graph(modules["sovits"], tmp_path / "sovits.onnx", bank, model.config, 7, sizes)
        assert result.ok and result.max_abs <= ATOL, (batch, codes, phones, result.max_abs)
