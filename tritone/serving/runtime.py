"""The contract between the scheduler and whatever executes the model graphs.

A runtime owns the base weights (as exported graphs, TensorRT engines or PyTorch modules) and
the resident adapter bank tensors (slot 0 = no adapter: the base voice). Every call takes a
per-row `slots` array, so one call serves a batch in which each row speaks another voice:
every LoRA target computes `y = xW + s[slot] * (x A[slot]) B[slot]` (ranks zero-padded).

All arrays are numpy, batch-first, right-padded with explicit lengths. Implementations:
`TorchRuntime` (reference, CPU or CUDA), `OnnxRuntime` (cpu target: ONNX Runtime over the
graphs `build` writes), and on GPUs `TensorRTRuntime` (engines) or the CUDA-graph PyTorch path.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class AdapterSlots(Protocol):
    """Adapter bank storage inside a runtime."""

    bank_size: int  # number of slots, including slot 0 (base)
    max_rank: int

    def load_slot(self, slot: int, lora: dict[str, object]) -> None:
        """Put an adapter's LoRA factors (name → `tritone.lora.LoRAWeights`) into `slot` (1..bank_size-1)."""

    def clear_slot(self, slot: int) -> None:
        """Zero `slot` so rows pointing at it compute the base voice."""


class Runtime(AdapterSlots, Protocol):
    def gpt_prefill(
        self,
        phones: np.ndarray,  # [B, Tx] int64
        phone_lens: np.ndarray,  # [B] int64
        bert: np.ndarray,  # [B, 1024, Tx] float32
        prompt: np.ndarray,  # [B, Ty] int64 (Ty may be 0)
        prompt_lens: np.ndarray,  # [B] int64
        slots: np.ndarray,  # [B] int64
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """→ (logits [B, V] of each row's last position, k, v [L, B, H, Tx+Ty, hd], lengths [B])."""
        ...

    def gpt_decode(
        self,
        tokens: np.ndarray,  # [B] int64: each row's newest token
        audio_pos: np.ndarray,  # [B] int64: its position among the row's audio tokens
        k: np.ndarray,  # [L, B, H, T, hd] float32: the rows' caches
        v: np.ndarray,
        lengths: np.ndarray,  # [B] int64: valid cache positions per row (the new token goes there)
        slots: np.ndarray,  # [B] int64
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """→ (logits [B, V], k_new, v_new [L, B, H, hd]: the new position's keys/values per row)."""
        ...

    def ref_embedding(
        self, refer_spec: np.ndarray, spec_lens: np.ndarray, slots: np.ndarray
    ) -> np.ndarray:
        """[B, bins, T] linear spectrogram of each voice's reference → ge [B, gin, 1]."""
        ...

    def sovits(
        self,
        codes: np.ndarray,  # [B, T25] int64
        code_lens: np.ndarray,  # [B]
        phones: np.ndarray,  # [B, N] int64
        phone_lens: np.ndarray,  # [B]
        ge: np.ndarray,  # [B, gin, 1]
        noise: np.ndarray,  # [B, inter, T'] standard normal (see tritone.pipeline.latent_noise)
        noise_scale: np.ndarray,  # [B] float32
        speed: np.ndarray,  # [B] float32
        slots: np.ndarray,  # [B]
    ) -> tuple[np.ndarray, np.ndarray]:
        """→ (z [B, inter, T'], frames [B])."""
        ...

    def vocoder(self, z: np.ndarray, ge: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """z [B, inter, T] + ge [B, gin, 1] → audio [B, T * hop] float32 (rows vocoded alone when lengths differ)."""
        ...

    def semantic_codes(self, wav16k: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Zero-shot reference: 16 kHz audio [B, S] → (codes [B, T25], code lens [B])."""
        ...
