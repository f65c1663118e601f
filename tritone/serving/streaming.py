"""Streaming schedule of one segment, without the model: when a chunk is due, which latent frames
it vocodes, and the crossfade at its seams.

This is `tritone.pipeline.SegmentStreamer`'s algorithm split in two halves so a scheduler can
batch the model calls of many rows in between:

1. `ChunkPlanner.due(n)` after the n-th token: whether a chunk is due (every `chunk_tokens`, the
   first after `first_chunk_tokens` + `lookahead_tokens`) and up to which token it may emit;
   `ChunkPlanner.plan(n, upto)` picks the frames: the audio at least `lookahead_tokens` behind
   the newest token, minus `overlap_frames` held back for the next crossfade (`upto=None`: the
   segment's last chunk, all remaining frames). The caller then decodes the n tokens with SoVITS
   and vocodes the plan's `Window` of the latent (only the vocoder's receptive field around it).
2. `ChunkPlanner.apply(plan, audio)` crossfades the held-back tail into the new audio and
   returns the chunk.

Plans are made and applied in order per segment; `plan` advances the emitted position at once,
so a row can plan a chunk and its final chunk in the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritone.pipeline import StreamConfig, latent_frames


def clip_audio(audio: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1] as float32, as the reference pipeline finishes every piece of audio."""
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Window:
    """Vocode latent frames [start, end) from z[lo:hi] (the receptive field, clipped to z).

    The vocoder is convolutional, so this reproduces the same samples of vocoding all of z.
    """

    start: int
    end: int
    lo: int
    hi: int

    @classmethod
    def around(cls, start: int, end: int, total: int, receptive: tuple[int, int]) -> Window:
        left, right = receptive
        return cls(start, end, max(0, start - left), min(total, end + right))

    @property
    def width(self) -> int:
        """Frames of z the vocoder reads."""
        return self.hi - self.lo

    def cut(self, audio: np.ndarray, hop: int) -> np.ndarray:
        """The samples of frames [start, end) out of the vocoded window's audio."""
        off = (self.start - self.lo) * hop
        return audio[off : off + (self.end - self.start) * hop]


@dataclass(frozen=True)
class ChunkPlan:
    window: Window
    keep: int  # samples of the window's audio that are final; the rest is the next crossfade's tail
    n_tokens: int  # the token prefix SoVITS decodes for this chunk


class ChunkPlanner:
    """Streaming state of one segment (see the module docstring)."""

    def __init__(self, stream: StreamConfig, speed: float, hop: int, receptive: tuple[int, int]) -> None:
        self.stream, self.speed, self.hop, self.receptive = stream, speed, hop, receptive
        self.emitted = 0  # latent frames planned so far (their audio is, or will be, final)
        self.tail = np.zeros(0, np.float32)  # audio after `emitted`, held back for the crossfade
        self.next_at = stream.first_chunk_tokens + stream.lookahead_tokens

    def due(self, n_tokens: int) -> int | None:
        """Call after each new token; returns the token count a due chunk may emit up to."""
        if n_tokens < self.next_at:
            return None
        self.next_at = n_tokens + self.stream.chunk_tokens
        return n_tokens - self.stream.lookahead_tokens

    def plan(self, n_tokens: int, upto: int | None) -> ChunkPlan | None:
        """Frames of the next chunk of a segment with `n_tokens` tokens (None: nothing new yet)."""
        if n_tokens == 0:
            return None
        total = latent_frames(n_tokens, self.speed)
        end = total if upto is None else min(total, latent_frames(upto, self.speed))
        hold = 0 if upto is None else min(self.stream.overlap_frames, max(0, end - self.emitted))
        stable_end = end - hold
        if upto is not None and stable_end <= self.emitted:
            return None
        window = Window.around(self.emitted, end, total, self.receptive)
        plan = ChunkPlan(window, (stable_end - self.emitted) * self.hop, n_tokens)
        self.emitted = stable_end
        return plan

    def apply(self, plan: ChunkPlan, audio: np.ndarray) -> np.ndarray:
        """`audio`: the window's frames [start, end) as vocoded → this chunk's final samples."""
        audio = np.array(audio, dtype=np.float32, copy=True)
        if self.tail.size:
            n = min(self.tail.size, audio.size)
            fade_in = np.arange(n, dtype=np.float32) / max(n, 1)
            audio[:n] = self.tail[:n] * (1.0 - fade_in) + audio[:n] * fade_in
        out, self.tail = audio[: plan.keep], audio[plan.keep :]
        return clip_audio(out)
