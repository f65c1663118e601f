"""`CudaGraphRuntime`: the gpu target where TensorRT is absent: PyTorch on CUDA (half precision
by default) with a static KV cache and CUDA graphs for the GPT decode step.

A decode step of the 24-layer GPT launches a few hundred small kernels; at serving batch sizes
their launch overhead, not arithmetic, bounds the step time (docs/EXPORT.md). A CUDA graph
replays the whole step as one launch. Graphs need fixed shapes and addresses, so:

- the KV cache is allocated once (`allocate_kv`) with one extra *scratch* row at the end;
- a graph is captured per (batch bucket, attention-length bucket), lazily on first use: it reads
  cache rows `[0, batch)` and positions `[0, length)` through fixed views, and writes each row's
  new K/V at `(write_row, write_pos)` taken from static index buffers;
- a call whose rows are `0..n-1` in order (the scheduler keeps active rows packed) runs the
  smallest graph with batch >= n and length >= its longest row: rows `n..` of the bucket are
  padding, whose writes go to the scratch row; any other call runs eagerly (same math).

Everything else (prefill, SoVITS, vocoder, SSL) runs eagerly, as in `TorchRuntime`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from tritone.models.base import BaseModel
from tritone.serving.runtime import DEFAULT_TARGETS
from tritone.serving.runtime_torch import TorchRuntime

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LENGTH_BUCKETS = (128, 256, 512, 1024, 2048, 4096)


def bucket(n: int, buckets: Sequence[int], limit: int) -> int | None:
    """The smallest bucket >= n that does not exceed `limit` (`limit` itself when n fits only
    there); None when n > limit."""
    if n > limit:
        return None
    for b in buckets:
        if n <= b <= limit:
            return b
    return limit


def packed_rows(rows: np.ndarray) -> bool:
    """True when `rows` are 0..n-1 in order (the CUDA-graph fast path)."""
    return bool(np.array_equal(rows, np.arange(rows.size)))


def graph_feed(
    tokens: np.ndarray,
    audio_pos: np.ndarray,
    lengths: np.ndarray,
    slots: np.ndarray,
    batch: int,
    scratch_row: int,
) -> np.ndarray:
    """The static int64 inputs of one graph replay, padded to `batch` rows, as one [6, batch]
    array (one host-to-device copy): tokens, audio_pos, lengths, slots, write_row, write_pos.

    Padding rows attend to one position, use slot 0 and write into the scratch row."""
    n = tokens.size
    feed = np.zeros((6, batch), np.int64)
    feed[0, :n], feed[1, :n], feed[2, :n], feed[3, :n] = tokens, audio_pos, lengths, slots
    feed[2, n:] = 1
    feed[4, :n], feed[4, n:] = np.arange(n), scratch_row
    feed[5, :n] = lengths
    return feed


class DecodeGraph:
    """One captured decode step for `batch` packed rows attending to `length` positions."""

    def __init__(self, rt: CudaGraphRuntime, batch: int, length: int) -> None:
        self.batch, self.length = batch, length
        self.feed = torch.zeros(6, batch, dtype=torch.long, device=rt.device)
        self.feed[2] = 1
        self.feed[4] = rt.scratch_row
        step = rt.decode_step_fn(self.feed, batch, length)
        stream = torch.cuda.Stream(device=rt.device)
        stream.wait_stream(torch.cuda.current_stream(rt.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):  # warm up kernels and allocator outside the capture
                step()
        torch.cuda.current_stream(rt.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=rt.graph_pool), torch.no_grad():
            self.logits: Tensor = step()

    def run(self, feed: np.ndarray) -> Tensor:
        self.feed.copy_(torch.from_numpy(feed))
        self.graph.replay()
        return self.logits


class CudaGraphRuntime(TorchRuntime):
    """`TorchRuntime` on CUDA with CUDA-graph decode steps (see the module docstring)."""

    def __init__(
        self,
        model: BaseModel,
        *,
        targets: Sequence[str] = DEFAULT_TARGETS,
        bank_size: int = 8,
        max_rank: int = 16,
        device: str | torch.device = "cuda",
        dtype: torch.dtype = torch.float16,
        cuda_graphs: bool = True,
        batch_buckets: Sequence[int] = BATCH_BUCKETS,
        length_buckets: Sequence[int] = LENGTH_BUCKETS,
    ) -> None:
        on_cuda = torch.device(device).type == "cuda"
        if on_cuda and not torch.cuda.is_available():
            raise RuntimeError("CudaGraphRuntime needs a CUDA device (no CUDA here)")
        super().__init__(
            model, targets=targets, bank_size=bank_size, max_rank=max_rank, device=device, dtype=dtype
        )
        # Off CUDA (tests) everything runs eagerly; `decode_step_fn` is still the captured step.
        self.cuda_graphs = cuda_graphs and on_cuda
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.length_buckets = tuple(sorted(length_buckets))
        self.graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._decode_graphs: dict[tuple[int, int], DecodeGraph] = {}
        self._capacity = 0

    # -- KV cache with a scratch row -------------------------------------------------------------

    @property
    def kv_capacity(self) -> int:
        return self._capacity

    @property
    def scratch_row(self) -> int:
        return self._capacity

    def allocate_kv(self, capacity: int, max_len: int) -> None:
        shape = self._kv_shape(capacity + 1, max_len)
        self._decode_graphs.clear()  # captured graphs point into the old cache
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self._capacity = capacity

    # -- decode ------------------------------------------------------------------------------------

    def decode_step_fn(self, feed: Tensor, batch: int, length: int) -> Callable[[], Tensor]:
        """The step a graph captures: reads the fixed cache views, writes through `feed`'s indices."""
        graph = self.graphs["gpt_decode"]
        bank = self.bank.inputs(graph.bank_names)
        k_view, v_view = self.k[:, :batch, :, :length], self.v[:, :batch, :, :length]
        tokens, audio_pos, lengths, slots, write_row, write_pos = feed.unbind(0)

        def step() -> Tensor:
            extra = [slots, *bank] if graph.bank_names else []
            logits, k_new, v_new = graph(tokens, audio_pos, k_view, v_view, lengths, *extra)
            self.k[:, write_row, :, write_pos] = k_new.transpose(0, 1)
            self.v[:, write_row, :, write_pos] = v_new.transpose(0, 1)
            return logits

        return step

    def _decode_from_cache(
        self,
        tokens: np.ndarray,
        audio_pos: np.ndarray,
        lengths: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
    ) -> np.ndarray:
        if self.cuda_graphs and packed_rows(rows):
            batch = bucket(rows.size, self.batch_buckets, self._capacity)
            length = bucket(int(lengths.max()), self.length_buckets, self.kv_max_len)
            if batch is not None and length is not None:
                graph = self._decode_graphs.get((batch, length))
                if graph is None:
                    graph = self._decode_graphs[(batch, length)] = DecodeGraph(self, batch, length)
                feed = graph_feed(tokens, audio_pos, lengths, slots, batch, self.scratch_row)
                return self._numpy(graph.run(feed)[: rows.size])
        return super()._decode_from_cache(tokens, audio_pos, lengths, rows, slots)
