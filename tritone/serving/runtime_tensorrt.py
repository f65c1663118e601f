"""`TensorRTRuntime`: the gpu target over the FP16 engines `tritone build --target gpu` writes
(`<graph>.plan`), where the `tensorrt` Python package and a GPU exist (the official Triton /
TensorRT containers).

Memory is PyTorch's (CUDA tensors), handed to TensorRT by address: the adapter bank lives on the
GPU and is bound once per engine (a slot load writes into the same memory), the KV cache is a
CUDA tensor [L, capacity, H, max_len, hd] owned by the runtime, and each call binds its inputs
and freshly allocated outputs (every output shape follows from the input shapes). A decode step
gathers the rows it serves (their valid prefix) into one contiguous input, as the engine needs
dense tensors, and scatters the new K/V back. Calls run on one CUDA stream, one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tritone.serving.runtime_common import RuntimeBase
from tritone.serving.runtime_graphs import GRAPH_NAMES, BankTensors
from tritone.serving.runtime_manifest import config_from_dict, read_manifest

BANK_PARTS = ("lora_A", "lora_B", "lora_scale")


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    import tensorrt as trt

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    return table[trt_dtype]


class EngineSession:
    """One deserialised engine and its execution context, bank bound once."""

    def __init__(
        self, plan: Path, bank_modules: Sequence[str], bank: BankTensors, device: torch.device
    ) -> None:
        import tensorrt as trt

        self.device = device
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{plan}: TensorRT could not load the engine (built by another version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.outputs = [n for n in names if not is_input[n]]
        self.bank_modules = list(bank_modules)
        bank_names = [f"{m}.{p}" for m in self.bank_modules for p in BANK_PARTS]
        self.data_inputs = [n for n in names if is_input[n] and n != "slots" and n not in set(bank_names)]
        self._bank = bank.inputs(self.bank_modules)  # keep the tensors (and their addresses) alive
        for name, tensor in zip(bank_names, self._bank):
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.stream = torch.cuda.Stream(device=device)

    def run(self, data: Sequence[Tensor], slots: Tensor | None) -> list[Tensor]:
        keep = [t.contiguous() for t in data]
        for name, t in zip(self.data_inputs, keep):
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        if self.bank_modules:
            assert slots is not None
            keep.append(slots.contiguous())
            self.context.set_input_shape("slots", tuple(slots.shape))
            self.context.set_tensor_address("slots", keep[-1].data_ptr())
        outputs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(
                shape, dtype=torch_dtype(self.engine.get_tensor_dtype(name)), device=self.device
            )
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return outputs


class TensorRTRuntime(RuntimeBase):
    """TensorRT engines over a gpu build's version folder (see the module docstring)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        device: str | torch.device = "cuda",
        graphs: Sequence[str] = GRAPH_NAMES,
    ) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        engines = self.manifest.get("engines") or {}
        if "skipped" in engines or not engines:
            raise FileNotFoundError(
                f"{self.directory}: the build holds no TensorRT engines ({engines.get('skipped')})"
            )
        self.device = torch.device(device)
        base, bank = self.manifest["base"], self.manifest["bank"]
        shapes = {name: tuple(shape) for name, shape in bank["modules"].items()}
        super().__init__(
            config_from_dict(base["config"]),
            BankTensors(shapes, int(bank["size"]), int(bank["max_rank"]), device=self.device),
            str(base["weights_sha256"]),
        )
        self.sessions: dict[str, EngineSession] = {}
        wanted = graphs if graphs is not None else [g for g in GRAPH_NAMES if g in engines]
        for name in wanted:
            if name not in engines:
                raise FileNotFoundError(f"{self.directory}: no TensorRT engine for {name!r}")
            modules = self.manifest["graphs"][name]["bank_modules"]
            self.sessions[name] = EngineSession(
                self.directory / engines[name]["file"], modules, self.bank, self.device
            )
        self.k: Tensor = torch.zeros(0)
        self.v: Tensor = torch.zeros(0)

    def _tensor(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    def _call(self, graph: str, data: Sequence[Tensor], slots: np.ndarray | None) -> list[Tensor]:
        session = self.sessions.get(graph)
        if session is None:
            raise RuntimeError(f"graph {graph!r} was not opened by this runtime")
        s = self._tensor(slots) if session.bank_modules and slots is not None else None
        return session.run(data, s)

    def _run(self, graph: str, data: Sequence[np.ndarray], slots: np.ndarray | None) -> list[np.ndarray]:
        return [t.cpu().numpy() for t in self._call(graph, [self._tensor(a) for a in data], slots)]

    # -- KV cache --------------------------------------------------------------------------------

    @property
    def kv_capacity(self) -> int:
        return int(self.k.shape[1]) if self.k.dim() == 5 else 0

    @property
    def kv_max_len(self) -> int:
        return int(self.k.shape[3]) if self.k.dim() == 5 else 0

    def allocate_kv(self, capacity: int, max_len: int) -> None:
        shape = self._kv_shape(capacity, max_len)
        self.k = torch.zeros(shape, device=self.device)
        self.v = torch.zeros(shape, device=self.device)

    def _prefill_into_cache(
        self, data: Sequence[np.ndarray], slots: np.ndarray, rows: np.ndarray, n: int
    ) -> np.ndarray:
        logits, k, v = self._call("gpt_prefill", [self._tensor(a) for a in data], slots)
        r = self._tensor(rows)
        self.k[:, r, :, :n] = k[:, :, :, :n]
        self.v[:, r, :, :n] = v[:, :, :, :n]
        return logits.cpu().numpy()

    def _decode_from_cache(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        t = int(lengths.max())
        r, lens = self._tensor(rows), self._tensor(lengths)
        k_rows = self.k[:, r, :, :t]
        v_rows = self.v[:, r, :, :t]
        data = [self._tensor(tokens), self._tensor(audio_pos), k_rows, v_rows, lens]
        logits, k_new, v_new = self._call("gpt_decode", data, slots)
        self.k[:, r, :, lens] = k_new.transpose(0, 1)
        self.v[:, r, :, lens] = v_new.transpose(0, 1)
        return logits.cpu().numpy()
