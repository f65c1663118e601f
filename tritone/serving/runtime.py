"""The contract between the scheduler and whatever executes the model graphs.

A runtime owns the base weights (as exported graphs, TensorRT engines or PyTorch modules), the
resident adapter bank tensors (slot 0 = no adapter: the base voice) and the GPT's KV cache.
Every call takes a per-row `slots` array, so one call serves a batch in which each row speaks
another voice: every LoRA target computes `y = xW + s[slot] * (x A[slot]) B[slot]` (ranks
zero-padded to the bank's `max_rank`).

All arrays are numpy, batch-first, right-padded with explicit lengths. Implementations:
`TorchRuntime` (`runtime_torch`: reference, CPU or CUDA), `OnnxRuntime` (`runtime_onnx`: the
cpu target, ONNX Runtime over the graphs `tritone build` writes), and on GPUs
`TensorRTRuntime` (`runtime_tensorrt`: engines) or `CudaGraphRuntime` (`runtime_cuda`: PyTorch
CUDA with CUDA graphs, where TensorRT is absent). All of them run the graphs of
`runtime_graphs` and share `runtime_common.RuntimeBase`; docs/EXPORT.md has the details.

Changes from the first draft of this contract (the scheduler is written against this one):

- **The KV cache lives in the runtime.** `allocate_kv(capacity, max_len)` makes it; the
  scheduler addresses it by cache row: `gpt_prefill(..., rows)` writes each row's prefix K/V
  into cache row `rows[b]` and `gpt_decode(tokens, audio_pos, lengths, rows, slots)` appends one
  position per row. Passing the cache through numpy every step would copy the whole cache
  host<->device per token on a GPU (`k`/`v` in and out are gone from both calls).
- `sovits` takes `speed` as float64 (frames are `tritone.pipeline.latent_frames`, computed in
  float64 exactly as the pipeline does); float32 is accepted and widened.
- `vocoder` takes optional per-row `lengths` (z frames); rows of different lengths are then
  vocoded in groups of equal length (a padded frame would leak into its neighbours' samples)
  and each row's audio is zero past `lengths[b] * hop`.
- `semantic_codes` groups rows by length for the same reason (the SSL encoder normalises over
  time).
- `load_adapter(slot, adapter)` loads a verified `adapters.format.Adapter` after checking its
  base pin against `base_sha256` and that the bank holds every module it targets;
  `load_slot(slot, lora)` is the unchecked-pin primitive beneath it. Both refuse, with a
  `AdapterRefused` naming the modules, an adapter whose targets the bank lacks, and leave the
  slot as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tritone.lora import LoRAError, LoRAWeights

if TYPE_CHECKING:
    from adapters.format import Adapter

# The LoRA targets the whole project serves: regular expressions over the base bundle's module
# names (`BaseModel.named_modules()`, e.g. `gpt.layers.0.self_attn.in_proj`), each matched in
# full. GPT: every attention and FFN projection. SoVITS: the modules that carry timbre (the
# reference encoder that turns the voice's reference clip into ge, MRTE, which mixes the reference
# embedding into the content, and the flow's ge conditioning). Vocoder: its input conv and its ge
# conditioning; in the spectral generator also its body, the ConvNeXt blocks' pointwise layers
# and the head that writes the magnitude and phase spectra, which is where the spectral envelope
# of the voice is made (the pattern matches nothing in a HiFi-GAN generator). Each pattern names
# only Linear / Conv1d layers (the reference encoder's `spectral` block is Linear, Mish, Dropout
# twice over: its Linears are 0 and 3). Adapters may target any subset.
GPT_TARGETS = r"gpt\.layers\.\d+\.(self_attn\.in_proj|self_attn\.out_proj|linear1|linear2)"
REF_TARGETS = r"sovits\.ref_enc\.(spectral\.[03]|temporal\.\d+\.conv|slf_attn\.(w_qs|w_ks|w_vs|fc)|fc)"
SOVITS_TARGETS = r"sovits\.enc_p\.mrte\.(c_pre|text_pre|c_post|cross_attention\.conv_[qkvo])"
FLOW_TARGETS = r"sovits\.flow\.flows\.\d+\.enc\.cond_layer"
VOCODER_TARGETS = r"vocoder\.(conv_pre|cond)"
VOCODER_BODY_TARGETS = r"vocoder\.((pre|post)\.\d+\.pwconv[12]|head)"
DEFAULT_TARGETS: tuple[str, ...] = (
    GPT_TARGETS,
    REF_TARGETS,
    SOVITS_TARGETS,
    FLOW_TARGETS,
    VOCODER_TARGETS,
    VOCODER_BODY_TARGETS,
)


class AdapterRefused(LoRAError):
    """An adapter this runtime's bank cannot serve (targets it lacks, shapes, rank, base pin)."""


class AdapterSlots(Protocol):
    """Adapter bank storage inside a runtime."""

    bank_size: int  # number of slots, including slot 0 (base)
    max_rank: int
    targets: tuple[str, ...]  # module names the bank holds factors for, in graph-input order
    base_sha256: str  # the base weights' pin (`BaseModel.weights_sha256`)

    def load_slot(self, slot: int, lora: Mapping[str, LoRAWeights]) -> None:
        """Put LoRA factors (module name -> `LoRAWeights`) into `slot` (1..bank_size-1).

        Modules of the bank the adapter omits get zeros. Raises `AdapterRefused` (and leaves the
        slot untouched) when a target is not in the bank, a shape differs or a rank exceeds
        `max_rank`."""
        ...

    def load_adapter(self, slot: int, adapter: Adapter) -> None:
        """`load_slot` for a verified adapter directory, after checking its base pin
        (`adapters.errors.BasePinMismatch`) and that it carries no fully trained modules."""
        ...

    def clear_slot(self, slot: int) -> None:
        """Zero `slot` so rows pointing at it compute the base voice."""
        ...


class Runtime(AdapterSlots, Protocol):
    def allocate_kv(self, capacity: int, max_len: int) -> None:
        """(Re)allocate the GPT KV cache: `capacity` rows of `max_len` positions each.

        Contents are undefined until a row is prefilled; a row is reused by prefilling it again."""
        ...

    def gpt_prefill(
        self,
        phones: np.ndarray,  # [B, Tx] int64
        phone_lens: np.ndarray,  # [B] int64 (>= 1)
        bert: np.ndarray,  # [B, 1024, Tx] float32
        prompt: np.ndarray,  # [B, Ty] int64 (Ty may be 0)
        prompt_lens: np.ndarray,  # [B] int64
        slots: np.ndarray,  # [B] int64
        rows: np.ndarray,  # [B] int64: the cache row each batch row's prefix K/V goes to
    ) -> tuple[np.ndarray, np.ndarray]:
        """→ (logits [B, V] of each row's last position, lengths [B] = phone_lens + prompt_lens:
        the valid cache positions each row now holds)."""
        ...

    def gpt_decode(
        self,
        tokens: np.ndarray,  # [B] int64: each row's newest token
        audio_pos: np.ndarray,  # [B] int64: its position among the row's audio tokens (prompt included)
        lengths: np.ndarray,  # [B] int64: valid cache positions of the row (the new K/V goes there)
        rows: np.ndarray,  # [B] int64: cache rows
        slots: np.ndarray,  # [B] int64
    ) -> np.ndarray:
        """→ logits [B, V]. Writes each row's new K/V at position `lengths[b]` of cache row
        `rows[b]` (so the row then holds `lengths[b] + 1` positions)."""
        ...

    def ref_embedding(self, refer_spec: np.ndarray, spec_lens: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """[B, bins, T] linear spectrogram of each voice's reference, lengths [B] → ge [B, gin, 1]."""
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
        speed: np.ndarray,  # [B] float64
        slots: np.ndarray,  # [B]
    ) -> tuple[np.ndarray, np.ndarray]:
        """→ (z [B, inter, T'], frames [B]); T' (the noise's width) must hold every row's frames."""
        ...

    def vocoder(
        self, z: np.ndarray, ge: np.ndarray, slots: np.ndarray, lengths: np.ndarray | None = None
    ) -> np.ndarray:
        """z [B, inter, T] + ge [B, gin, 1] → audio [B, T * hop] float32. With `lengths` [B]
        (frames per row) rows are vocoded as if alone and zeroed past `lengths[b] * hop`."""
        ...

    def semantic_codes(self, wav16k: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Zero-shot reference: 16 kHz audio [B, S] (silence already appended, as
        `Pipeline.build_voice_prompt` does) → (codes [B, T25], code lens [B])."""
        ...


def latent_frames_batch(code_lens: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """`tritone.pipeline.latent_frames` per row, in float64: 2n at speed 1, else int(2n / speed) + 1."""
    n = 2 * np.asarray(code_lens, dtype=np.int64)
    s = np.asarray(speed, dtype=np.float64)
    stretched = (n / s).astype(np.int64) + 1
    return np.where(s == 1.0, n, stretched).astype(np.int64)


def equal_length_groups(lengths: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by equal length (for stages whose output depends on padding)."""
    lengths = np.asarray(lengths)
    return [np.flatnonzero(lengths == n) for n in np.unique(lengths)]


def check_batch(name: str, array: np.ndarray, batch: int) -> None:
    if array.shape[0] != batch:
        raise ValueError(f"{name} has {array.shape[0]} rows for a batch of {batch}")


def check_rows(rows: np.ndarray, capacity: int) -> None:
    """Cache rows of one call must exist and be distinct."""
    if capacity == 0:
        raise RuntimeError("no KV cache: call allocate_kv(capacity, max_len) first")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= capacity):
        raise ValueError(f"cache rows must lie in 0..{capacity - 1}, got {rows.tolist()}")
    if np.unique(rows).size != rows.size:
        raise ValueError(f"cache rows of one call must be distinct, got {rows.tolist()}")


def check_slots(slots: np.ndarray, bank_size: int) -> None:
    if slots.size and (int(slots.min()) < 0 or int(slots.max()) >= bank_size):
        raise ValueError(f"slots must lie in 0..{bank_size - 1}, got {slots.tolist()}")


def names_in(targets: Sequence[str], prefix: str) -> list[str]:
    """The targets under module `prefix` (e.g. `gpt.`), in order."""
    return [t for t in targets if t.startswith(prefix)]
