"""`OnnxRuntime`: the `Runtime` contract over the ONNX graphs `tritone build` writes (the cpu
target), executed by ONNX Runtime's CPU provider.

Per-call overhead is kept low with IOBinding: each session's bank inputs are bound once, as
OrtValues that alias the bank's memory (a slot loaded later is seen without rebinding), and only
the data inputs and `slots` are bound per call, again without copying. The KV cache is a numpy
array owned by the runtime; a decode step gathers the rows it serves (their valid prefix only)
into one contiguous input. One call at a time per runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tritone.serving.runtime_common import RuntimeBase
from tritone.serving.runtime_graphs import GRAPH_NAMES, BankTensors
from tritone.serving.runtime_manifest import config_from_dict, read_manifest


class GraphSession:
    """One ONNX Runtime session with its bank inputs bound once."""

    def __init__(
        self, path: Path, options: ort.SessionOptions, entry: dict[str, Any], bank: BankTensors
    ) -> None:
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.bank_modules: list[str] = list(entry["bank_modules"])
        bank_names = [f"{m}.{part}" for m in self.bank_modules for part in ("lora_A", "lora_B", "lora_scale")]
        self.data_inputs = [n for n in self.inputs if n != "slots" and n not in set(bank_names)]
        missing = sorted(set(bank_names) - set(self.inputs))
        if missing or (self.bank_modules and "slots" not in self.inputs):
            raise ValueError(f"{path.name}: the graph lacks bank inputs {missing[:4]} (or slots)")
        self.binding = self.session.io_binding()
        # OrtValues over numpy views of the bank tensors: no copy, and later slot loads show through.
        self._bank_values = []
        for name, tensor in zip(bank_names, bank.inputs(self.bank_modules)):
            value = ort.OrtValue.ortvalue_from_numpy(tensor.numpy())
            self._bank_values.append(value)
            self.binding.bind_ortvalue_input(name, value)

    def run(self, data: Sequence[np.ndarray], slots: np.ndarray | None) -> list[np.ndarray]:
        if len(data) != len(self.data_inputs):
            raise ValueError(f"{len(data)} inputs for a graph that takes {self.data_inputs}")
        keep = []  # the arrays must outlive the run: their OrtValues alias them
        for name, array in zip(self.data_inputs, data):
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
            keep.append(value)
            self.binding.bind_ortvalue_input(name, value)
        if self.bank_modules:
            assert slots is not None
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(slots, np.int64))
            keep.append(value)
            self.binding.bind_ortvalue_input("slots", value)
        for name in self.outputs:
            self.binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(self.binding)
        out: list[np.ndarray] = self.binding.copy_outputs_to_cpu()
        self.binding.clear_binding_outputs()
        return out


class OnnxRuntime(RuntimeBase):
    """ONNX Runtime (CPU) over a build's graphs directory (e.g. `model_repository/tts/1`)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        intra_op_threads: int = 0,
        graphs: Sequence[str] | None = None,
    ) -> None:
        """`intra_op_threads`: threads per graph call (0 = ONNX Runtime's default, one per core).
        `graphs`: which graphs to open (default: every graph the build holds; leave out `ssl`
        where zero-shot is off)."""
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        base, bank = self.manifest["base"], self.manifest["bank"]
        shapes = {name: tuple(shape) for name, shape in bank["modules"].items()}
        super().__init__(
            config_from_dict(base["config"]),
            BankTensors(shapes, int(bank["size"]), int(bank["max_rank"])),
            str(base["weights_sha256"]),
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.sessions: dict[str, GraphSession] = {}
        for name in (
            graphs if graphs is not None else [g for g in GRAPH_NAMES if g in self.manifest["graphs"]]
        ):
            entry = self.manifest["graphs"].get(name)
            if entry is None:
                raise FileNotFoundError(f"{self.directory}: the build holds no {name!r} graph")
            self.sessions[name] = GraphSession(self.directory / entry["file"], options, entry, self.bank)
        self.k = np.zeros((0,), np.float32)
        self.v = np.zeros((0,), np.float32)

    def _run(self, graph: str, data: Sequence[np.ndarray], slots: np.ndarray | None) -> list[np.ndarray]:
        session = self.sessions.get(graph)
        if session is None:
            raise RuntimeError(f"graph {graph!r} was not opened by this runtime")
        return session.run(data, slots if session.bank_modules else None)

    # -- KV cache --------------------------------------------------------------------------------

    @property
    def kv_capacity(self) -> int:
        return int(self.k.shape[1]) if self.k.ndim == 5 else 0

    @property
    def kv_max_len(self) -> int:
        return int(self.k.shape[3]) if self.k.ndim == 5 else 0

    def allocate_kv(self, capacity: int, max_len: int) -> None:
        shape = self._kv_shape(capacity, max_len)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)

    def _prefill_into_cache(
        self, data: Sequence[np.ndarray], slots: np.ndarray, rows: np.ndarray, n: int
    ) -> np.ndarray:
        logits, k, v = self._run("gpt_prefill", data, slots)
        self.k[:, rows, :, :n] = k[:, :, :, :n]
        self.v[:, rows, :, :n] = v[:, :, :, :n]
        return logits

    def _decode_from_cache(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        t = int(lengths.max())
        # fancy indexing: one contiguous copy of the rows' valid prefix (ONNX Runtime needs dense
        # inputs); at full size this copy, not the graph, dominates large-batch steps (EXPORT.md)
        k_rows = self.k[:, rows, :, :t]
        v_rows = self.v[:, rows, :, :t]
        logits, k_new, v_new = self._run("gpt_decode", [tokens, audio_pos, k_rows, v_rows, lengths], slots)
        # rows and lengths are advanced indices split by a slice: their axis comes first
        self.k[:, rows, :, lengths] = k_new.transpose(1, 0, 2, 3)
        self.v[:, rows, :, lengths] = v_new.transpose(1, 0, 2, 3)
        return logits
