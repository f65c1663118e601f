"""`TorchRuntime`: the `Runtime` contract in plain PyTorch over a `BaseModel` (CPU or CUDA).

The reference backend: it runs the same graph modules `build` exports
(`tritone.serving.runtime_graphs`), eagerly, with the adapter bank and KV cache resident as
torch tensors on the model's device. The model is copied (its LoRA targets are replaced by bank
layers in the copy), so the caller's model stays untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from tritone.lora import LoRAWeights
from tritone.models.base import BaseModel
from tritone.serving.runtime import (
    DEFAULT_TARGETS,
    AdapterRefused,
    check_batch,
    check_rows,
    check_slots,
    equal_length_groups,
    latent_frames_batch,
)
from tritone.serving.runtime_graphs import BankTensors, Graph, build_graphs, prepare_model

if TYPE_CHECKING:
    from adapters.format import Adapter


def check_adapter(adapter: Adapter, base_sha256: str) -> None:
    """Refuse an adapter of another base, or one a LoRA bank cannot hold (fully trained modules)."""
    from adapters.format import check_base

    check_base(adapter.manifest.base, base_sha256)
    if adapter.full:
        raise AdapterRefused(
            f"voice {adapter.manifest.tenant}.{adapter.manifest.voice} carries fully trained modules "
            f"({', '.join(adapter.manifest.modules_to_save)}); a LoRA bank cannot serve it"
        )


class TorchRuntime:
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
        self.base_sha256 = model.weights_sha256
        self.config = model.config
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = copy.deepcopy(model).eval().to(device=self.device, dtype=dtype)
        self.ctx, names = prepare_model(self.model, targets)
        self.targets: tuple[str, ...] = tuple(names)
        self.bank = BankTensors.for_model(self.model, names, bank_size, max_rank)
        self.bank_size, self.max_rank = bank_size, max_rank
        self.graphs: dict[str, Graph] = build_graphs(self.model, self.ctx, names)
        self.hop = self.model.vocoder.hop_length
        self.k: Tensor = torch.zeros(0)
        self.v: Tensor = torch.zeros(0)

    # -- adapter bank ----------------------------------------------------------------------------

    def load_slot(self, slot: int, lora: Mapping[str, LoRAWeights]) -> None:
        self.bank.load(slot, lora)

    def load_adapter(self, slot: int, adapter: Adapter) -> None:
        check_adapter(adapter, self.base_sha256)
        self.bank.load(slot, adapter.lora)

    def clear_slot(self, slot: int) -> None:
        self.bank.clear(slot)

    # -- helpers ---------------------------------------------------------------------------------

    def _long(self, a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def _float(self, a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device).to(self.dtype)

    @staticmethod
    def _numpy(t: Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()

    @torch.no_grad()
    def _run(self, graph: str, data: Sequence[Tensor], slots: np.ndarray | None) -> tuple[Tensor, ...]:
        g = self.graphs[graph]
        if not g.bank_names:
            return g(*data)
        assert slots is not None
        check_slots(np.asarray(slots), self.bank_size)
        return g(*data, self._long(slots), *self.bank.inputs(g.bank_names))

    # -- KV cache --------------------------------------------------------------------------------

    @property
    def kv_capacity(self) -> int:
        return int(self.k.shape[1]) if self.k.dim() == 5 else 0

    @property
    def kv_max_len(self) -> int:
        return int(self.k.shape[3]) if self.k.dim() == 5 else 0

    def allocate_kv(self, capacity: int, max_len: int) -> None:
        if capacity < 1 or max_len < 2:
            raise ValueError(f"need capacity >= 1 and max_len >= 2, got {capacity} and {max_len}")
        c = self.config.gpt
        shape = (c.n_layer, capacity, c.n_head, max_len, c.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)

    def _cache_rows(self, rows: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """The cache of `rows` up to position t: a view when rows are consecutive, else a copy."""
        n = rows.shape[0]
        first = int(rows[0]) if n else 0
        if n and bool((rows == torch.arange(first, first + n, device=rows.device)).all()):
            return self.k[:, first : first + n, :, :t], self.v[:, first : first + n, :, :t]
        return self.k[:, rows, :, :t], self.v[:, rows, :, :t]

    # -- GPT ---------------------------------------------------------------------------------------

    def gpt_prefill(
        self,
        phones: np.ndarray,
        phone_lens: np.ndarray,
        bert: np.ndarray,
        prompt: np.ndarray,
        prompt_lens: np.ndarray,
        slots: np.ndarray,
        rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        B = phones.shape[0]
        for name, a in (("phone_lens", phone_lens), ("bert", bert), ("prompt", prompt)):
            check_batch(name, a, B)
        for name, a in (("prompt_lens", prompt_lens), ("slots", slots), ("rows", rows)):
            check_batch(name, a, B)
        check_rows(np.asarray(rows), self.kv_capacity)
        lengths = np.asarray(phone_lens, np.int64) + np.asarray(prompt_lens, np.int64)
        if int(np.asarray(phone_lens).min()) < 1:
            raise ValueError("every row needs at least one phone")
        if int(lengths.max()) > self.kv_max_len:
            raise ValueError(
                f"a row needs {int(lengths.max())} cache positions; the cache holds {self.kv_max_len}"
            )
        if prompt.shape[1] == 0:  # graphs take Ty >= 1: one padding position changes nothing
            prompt = np.zeros((B, 1), np.int64)
        logits, k, v = self._run(
            "gpt_prefill",
            [
                self._long(phones),
                self._long(phone_lens),
                self._float(bert),
                self._long(prompt),
                self._long(prompt_lens),
            ],
            slots,
        )
        n = int(lengths.max())
        r = self._long(rows)
        self.k[:, r, :, :n] = k[:, :, :, :n]
        self.v[:, r, :, :n] = v[:, :, :, :n]
        return self._numpy(logits), lengths

    def gpt_decode(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        B = tokens.shape[0]
        for name, a in (("audio_pos", audio_pos), ("lengths", lengths), ("rows", rows), ("slots", slots)):
            check_batch(name, a, B)
        check_rows(np.asarray(rows), self.kv_capacity)
        lengths = np.asarray(lengths, np.int64)
        if int(lengths.max()) >= self.kv_max_len or int(lengths.min()) < 1:
            raise ValueError(f"lengths must lie in 1..{self.kv_max_len - 1} (cache of {self.kv_max_len})")
        r, lens = self._long(rows), self._long(lengths)
        k_rows, v_rows = self._cache_rows(r, int(lengths.max()))
        logits, k_new, v_new = self._run(
            "gpt_decode", [self._long(tokens), self._long(audio_pos), k_rows, v_rows, lens], slots
        )
        self.k[:, r, :, lens] = k_new.transpose(0, 1)
        self.v[:, r, :, lens] = v_new.transpose(0, 1)
        return self._numpy(logits)

    # -- SoVITS, vocoder, SSL ------------------------------------------------------------------

    def ref_embedding(self, refer_spec: np.ndarray, spec_lens: np.ndarray, slots: np.ndarray) -> np.ndarray:
        (ge,) = self._run("ref_enc", [self._float(refer_spec), self._long(spec_lens)], slots)
        return self._numpy(ge)

    def sovits(
        self,
        codes: np.ndarray,
        code_lens: np.ndarray,
        phones: np.ndarray,
        phone_lens: np.ndarray,
        ge: np.ndarray,
        noise: np.ndarray,
        noise_scale: np.ndarray,
        speed: np.ndarray,
        slots: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        frames = latent_frames_batch(code_lens, speed)
        if int(frames.max()) > noise.shape[2]:
            raise ValueError(f"noise holds {noise.shape[2]} frames; a row needs {int(frames.max())}")
        data = [
            self._long(codes),
            self._long(code_lens),
            self._long(phones),
            self._long(phone_lens),
            self._float(ge),
            self._float(noise),
            self._float(noise_scale),
            self._long(frames),
        ]
        (z,) = self._run("sovits", data, slots)
        return self._numpy(z), frames

    def vocoder(
        self, z: np.ndarray, ge: np.ndarray, slots: np.ndarray, lengths: np.ndarray | None = None
    ) -> np.ndarray:
        if lengths is None:
            (audio,) = self._run("vocoder", [self._float(z), self._float(ge)], slots)
            return self._numpy(audio)
        out = np.zeros((z.shape[0], z.shape[2] * self.hop), np.float32)
        for group in equal_length_groups(lengths):
            n = int(lengths[group[0]])
            (audio,) = self._run(
                "vocoder", [self._float(z[group, :, :n]), self._float(ge[group])], slots[group]
            )
            out[group, : n * self.hop] = self._numpy(audio)
        return out

    def semantic_codes(self, wav16k: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stride = self.config.sovits.semantic_stride
        code_lens = np.array([self.model.ssl.num_frames(int(n)) // stride for n in lens], np.int64)
        codes = np.zeros((wav16k.shape[0], max(int(code_lens.max()), 1)), np.int64)
        for group in equal_length_groups(lens):
            n = int(lens[group[0]])
            (c,) = self._run("ssl", [self._float(wav16k[group, :n])], None)
            m = int(code_lens[group[0]])
            codes[group, :m] = self._numpy(c)[:, :m]
        return codes, code_lens
