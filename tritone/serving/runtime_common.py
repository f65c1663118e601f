"""What every `Runtime` implementation shares: the adapter bank, argument checks, and the
numpy-level orchestration around the graphs (SoVITS frame counts, grouping rows of equal length
for the vocoder and the SSL encoder, padding an empty prompt).

A backend subclasses `RuntimeBase` and provides `_run` (one graph call, numpy in/out), the KV
cache (`allocate_kv`, `kv_capacity`, `kv_max_len`) and the two cache-touching GPT calls
(`_prefill_into_cache`, `_decode_from_cache`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tritone.lora import LoRAWeights
from tritone.models.base import BaseModelConfig
from tritone.models.ssl import HUBERT_CONV_KERNELS, HUBERT_CONV_STRIDES, conv_frames
from tritone.serving.runtime import (
    AdapterRefused,
    check_batch,
    check_rows,
    check_slots,
    equal_length_groups,
    latent_frames_batch,
)
from tritone.serving.runtime_graphs import BankTensors

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


class RuntimeBase:
    """The backend-independent half of a `Runtime`."""

    def __init__(self, config: BaseModelConfig, bank: BankTensors, base_sha256: str) -> None:
        self.config = config
        self.bank = bank
        self.base_sha256 = base_sha256
        self.targets: tuple[str, ...] = tuple(bank.names)
        self.bank_size, self.max_rank = bank.bank_size, bank.max_rank
        self.hop = config.vocoder.hop_length

    # -- backend hooks ---------------------------------------------------------------------------

    def _run(self, graph: str, data: Sequence[np.ndarray], slots: np.ndarray | None) -> list[np.ndarray]:
        """Run one graph on numpy data inputs (bank and slots added when the graph takes them)."""
        raise NotImplementedError

    def _prefill_into_cache(
        self, data: Sequence[np.ndarray], slots: np.ndarray, rows: np.ndarray, n: int
    ) -> np.ndarray:
        """Run the prefill graph, write positions [0, n) of each row's K/V into its cache row;
        return the logits."""
        raise NotImplementedError

    def _decode_from_cache(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        raise NotImplementedError

    def allocate_kv(self, capacity: int, max_len: int) -> None:
        raise NotImplementedError

    @property
    def kv_capacity(self) -> int:
        raise NotImplementedError

    @property
    def kv_max_len(self) -> int:
        raise NotImplementedError

    def _kv_shape(self, capacity: int, max_len: int) -> tuple[int, int, int, int, int]:
        if capacity < 1 or max_len < 2:
            raise ValueError(f"need capacity >= 1 and max_len >= 2, got {capacity} and {max_len}")
        c = self.config.gpt
        return (c.n_layer, capacity, c.n_head, max_len, c.head_dim)

    # -- adapter bank ----------------------------------------------------------------------------

    def load_slot(self, slot: int, lora: Mapping[str, LoRAWeights]) -> None:
        self.bank.load(slot, lora)
        self._bank_changed(slot)

    def load_adapter(self, slot: int, adapter: Adapter) -> None:
        check_adapter(adapter, self.base_sha256)
        self.load_slot(slot, adapter.lora)

    def clear_slot(self, slot: int) -> None:
        self.bank.clear(slot)
        self._bank_changed(slot)

    def _bank_changed(self, slot: int) -> None:
        """Backends whose bank lives elsewhere (a GPU) copy `slot` there."""

    def _slots(self, slots: np.ndarray, batch: int) -> np.ndarray:
        slots = np.asarray(slots, dtype=np.int64)
        check_batch("slots", slots, batch)
        check_slots(slots, self.bank_size)
        return slots

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
        for name, a in (
            ("phone_lens", phone_lens),
            ("bert", bert),
            ("prompt", prompt),
            ("prompt_lens", prompt_lens),
        ):
            check_batch(name, a, B)
        slots = self._slots(slots, B)
        rows = np.asarray(rows, dtype=np.int64)
        check_batch("rows", rows, B)
        check_rows(rows, self.kv_capacity)
        phone_lens = np.asarray(phone_lens, np.int64)
        prompt_lens = np.asarray(prompt_lens, np.int64)
        if int(phone_lens.min()) < 1 or int(phone_lens.max()) > phones.shape[1]:
            raise ValueError(f"phone_lens must lie in 1..{phones.shape[1]}, got {phone_lens.tolist()}")
        if int(prompt_lens.min()) < 0 or int(prompt_lens.max()) > prompt.shape[1]:
            raise ValueError(f"prompt_lens must lie in 0..{prompt.shape[1]}, got {prompt_lens.tolist()}")
        lengths = phone_lens + prompt_lens
        n = int(lengths.max())
        if n > self.kv_max_len:
            raise ValueError(f"a row needs {n} cache positions; the cache holds {self.kv_max_len}")
        if prompt.shape[1] == 0:  # the graphs take Ty >= 1; one padding position changes nothing
            prompt = np.zeros((B, 1), np.int64)
        data = [
            np.ascontiguousarray(phones, np.int64),
            phone_lens,
            np.ascontiguousarray(bert, np.float32),
            np.ascontiguousarray(prompt, np.int64),
            prompt_lens,
        ]
        return self._prefill_into_cache(data, slots, rows, n), lengths

    def gpt_decode(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        B = tokens.shape[0]
        for name, a in (("audio_pos", audio_pos), ("lengths", lengths), ("rows", rows)):
            check_batch(name, a, B)
        slots = self._slots(slots, B)
        rows = np.asarray(rows, dtype=np.int64)
        check_rows(rows, self.kv_capacity)
        lengths = np.asarray(lengths, np.int64)
        if int(lengths.max()) >= self.kv_max_len or int(lengths.min()) < 1:
            raise ValueError(f"lengths must lie in 1..{self.kv_max_len - 1} (a cache of {self.kv_max_len})")
        return self._decode_from_cache(
            np.asarray(tokens, np.int64), np.asarray(audio_pos, np.int64), lengths, rows, slots
        )

    # -- SoVITS, vocoder, SSL ------------------------------------------------------------------

    def ref_embedding(self, refer_spec: np.ndarray, spec_lens: np.ndarray, slots: np.ndarray) -> np.ndarray:
        B = refer_spec.shape[0]
        check_batch("spec_lens", spec_lens, B)
        if refer_spec.shape[1] < self.config.sovits.ref_spec_channels:
            raise ValueError(
                f"reference spectrogram has {refer_spec.shape[1]} bins, need >= {self.config.sovits.ref_spec_channels}"
            )
        data: list[np.ndarray] = [
            np.ascontiguousarray(refer_spec, np.float32),
            np.asarray(spec_lens, np.int64),
        ]
        return self._run("ref_enc", data, self._slots(slots, B))[0]

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
        B = codes.shape[0]
        for name, a in (
            ("code_lens", code_lens),
            ("phones", phones),
            ("phone_lens", phone_lens),
            ("ge", ge),
            ("noise", noise),
            ("noise_scale", noise_scale),
            ("speed", speed),
        ):
            check_batch(name, np.asarray(a), B)
        code_lens = np.asarray(code_lens, np.int64)
        if int(code_lens.min()) < 1 or int(code_lens.max()) > codes.shape[1]:
            raise ValueError(f"code_lens must lie in 1..{codes.shape[1]}, got {code_lens.tolist()}")
        frames = latent_frames_batch(code_lens, speed)
        if int(frames.max()) > noise.shape[2]:
            raise ValueError(f"noise holds {noise.shape[2]} frames; a row needs {int(frames.max())}")
        data = [
            np.ascontiguousarray(codes, np.int64),
            code_lens,
            np.ascontiguousarray(phones, np.int64),
            np.asarray(phone_lens, np.int64),
            np.ascontiguousarray(ge, np.float32),
            np.ascontiguousarray(noise, np.float32),
            np.asarray(noise_scale, np.float32),
            frames,
        ]
        return self._run("sovits", data, self._slots(slots, B))[0], frames

    def vocoder(
        self, z: np.ndarray, ge: np.ndarray, slots: np.ndarray, lengths: np.ndarray | None = None
    ) -> np.ndarray:
        B = z.shape[0]
        check_batch("ge", ge, B)
        slots = self._slots(slots, B)
        z = np.ascontiguousarray(z, np.float32)
        ge = np.ascontiguousarray(ge, np.float32)
        if lengths is None:
            return self._run("vocoder", [z, ge], slots)[0]
        lengths = np.asarray(lengths, np.int64)
        check_batch("lengths", lengths, B)
        out = np.zeros((B, z.shape[2] * self.hop), np.float32)
        for group in equal_length_groups(lengths):
            n = int(lengths[group[0]])
            if n == 0:
                continue
            audio = self._run("vocoder", [np.ascontiguousarray(z[group, :, :n]), ge[group]], slots[group])[0]
            out[group, : n * self.hop] = audio
        return out

    def semantic_codes(self, wav16k: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lens = np.asarray(lens, np.int64)
        check_batch("lens", lens, wav16k.shape[0])
        stride = self.config.sovits.semantic_stride
        code_lens = np.array(
            [conv_frames(int(n), HUBERT_CONV_KERNELS, HUBERT_CONV_STRIDES) // stride for n in lens], np.int64
        )
        if int(code_lens.min()) < 1:
            raise ValueError("reference audio too short for one semantic token")
        codes = np.zeros((wav16k.shape[0], int(code_lens.max())), np.int64)
        for group in equal_length_groups(lens):
            n, m = int(lens[group[0]]), int(code_lens[group[0]])
            c = self._run("ssl", [np.ascontiguousarray(wav16k[group, :n], np.float32)], None)[0]
            codes[group, :m] = c[:, :m]
        return codes, code_lens
