"""`TorchRuntime`: the `Runtime` contract in plain PyTorch over a `BaseModel` (CPU or CUDA).

The reference backend: it runs the same graph modules `build` exports
(`tritone.serving.runtime_graphs`), eagerly, with the adapter bank and the KV cache resident as
torch tensors on the model's device. The model is copied (its LoRA targets are replaced by bank
layers in the copy), so the caller's model stays untouched. One call at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tritone.models.base import BaseModel
from tritone.serving.runtime import DEFAULT_TARGETS
from tritone.serving.runtime_common import RuntimeBase
from tritone.serving.runtime_graphs import BankTensors, Graph, build_graphs, prepare_model


class TorchRuntime(RuntimeBase):
    """Eager PyTorch runtime with a resident adapter bank and KV cache."""

    def __init__(
        self,
        model: BaseModel,
        *,
        targets: Sequence[str] = DEFAULT_TARGETS,
        bank_size: int = 8,
        max_rank: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        base_sha256 = model.weights_sha256
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = copy.deepcopy(model).eval().to(device=self.device, dtype=dtype)
        self.ctx, names = prepare_model(self.model, targets)
        super().__init__(
            model.config, BankTensors.for_model(self.model, names, bank_size, max_rank), base_sha256
        )
        self.graphs: dict[str, Graph] = build_graphs(self.model, self.ctx, names)
        self.k: Tensor = torch.zeros(0)
        self.v: Tensor = torch.zeros(0)

    # -- tensors ---------------------------------------------------------------------------------

    def _tensor(self, a: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    @staticmethod
    def _numpy(t: Tensor) -> np.ndarray:
        t = t.detach()
        return (t.float() if t.is_floating_point() else t).cpu().numpy()

    @torch.no_grad()
    def _call(self, graph: str, data: Sequence[Tensor], slots: np.ndarray | None) -> tuple[Tensor, ...]:
        g = self.graphs[graph]
        if not g.bank_names:
            return g(*data)
        assert slots is not None
        return g(*data, self._tensor(slots), *self.bank.inputs(g.bank_names))

    def _run(self, graph: str, data: Sequence[np.ndarray], slots: np.ndarray | None) -> list[np.ndarray]:
        return [self._numpy(t) for t in self._call(graph, [self._tensor(a) for a in data], slots)]

    # -- KV cache --------------------------------------------------------------------------------

    @property
    def kv_capacity(self) -> int:
        return int(self.k.shape[1]) if self.k.dim() == 5 else 0

    @property
    def kv_max_len(self) -> int:
        return int(self.k.shape[3]) if self.k.dim() == 5 else 0

    def allocate_kv(self, capacity: int, max_len: int) -> None:
        shape = self._kv_shape(capacity, max_len)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)

    def _cache_rows(self, rows: np.ndarray, t: int) -> tuple[Tensor, Tensor]:
        """The cache of `rows` up to position t: a view when rows are consecutive, else a copy."""
        first = int(rows[0])
        if np.array_equal(rows, np.arange(first, first + rows.size)):
            return self.k[:, first : first + rows.size, :, :t], self.v[:, first : first + rows.size, :, :t]
        r = self._tensor(rows)
        return self.k[:, r, :, :t], self.v[:, r, :, :t]

    def _prefill_into_cache(
        self, data: Sequence[np.ndarray], slots: np.ndarray, rows: np.ndarray, n: int
    ) -> np.ndarray:
        logits, k, v = self._call("gpt_prefill", [self._tensor(a) for a in data], slots)
        r = self._tensor(rows)
        self.k[:, r, :, :n] = k[:, :, :, :n]
        self.v[:, r, :, :n] = v[:, :, :, :n]
        return self._numpy(logits)

    def _decode_from_cache(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        k_rows, v_rows = self._cache_rows(rows, int(lengths.max()))
        lens = self._tensor(lengths)
        data = [self._tensor(tokens), self._tensor(audio_pos), k_rows, v_rows, lens]
        logits, k_new, v_new = self._call("gpt_decode", data, slots)
        r = self._tensor(rows)
        self.k[:, r, :, lens] = k_new.transpose(0, 1)
        self.v[:, r, :, lens] = v_new.transpose(0, 1)
        return self._numpy(logits)
