"""In-process reference synthesis: text + voice prompt → 32 kHz audio, whole or streamed.

This is the path every other runtime is checked against (the Triton model repository and the
upstream-style benchmark path): one process, plain PyTorch, no batching across requests.

Per request:
1. The frontend splits the text into segments (`cut5` by default) and turns each into phones.
2. GPT continues the voice's reference semantic tokens for each segment, prefixed by the
   reference transcript's phones + the segment's phones (all segments decoded as one batch;
   every row has its own seed, so a segment's tokens do not depend on the others).
3. SoVITS turns each segment's tokens + phones + the reference embedding into a latent `z`;
   the vocoder turns `z` into audio. Segments are joined with `fragment_interval` of silence.

Streaming (`synthesize_stream`) runs the same steps per segment while GPT decodes: every
`chunk_tokens` new tokens it decodes the tokens so far, emits the audio that is at least
`lookahead_tokens` behind the newest token, and crossfades `overlap_frames` at each seam. The
last chunk of a segment comes from the full token sequence, exactly as offline. Earlier chunks
differ from the offline audio only where SoVITS's attention would have seen tokens that did
not exist yet; `docs/STREAMING.md` states the measured tolerance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from tritone.audio import resample, spectrogram
from tritone.config import SAMPLE_RATE, SSL_SAMPLE_RATE
from tritone.models.base import BaseModel
from tritone.models.gpt import GenerationRequest
from tritone.models.sampling import SamplingParams
from tritone.text import PhoneSequence, TextFrontend
from tritone.voice import VoicePrompt

REF_MIN_SECONDS = 3.0
REF_MAX_SECONDS = 10.0
REF_PAD_SECONDS = 0.3  # silence appended before SSL, as upstream, so the last word is not cut
NOISE_BLOCK_FRAMES = 64  # latent noise is drawn in blocks so a prefix's noise equals the whole's


@dataclass(frozen=True)
class SynthesisParams:
    """Per-request knobs. Sampling defaults are upstream api_v2's."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    seed: int | None = None  # None: a fresh random seed per request
    noise_scale: float = 0.5
    speed: float = 1.0
    split: str = "cut5"
    fragment_interval: float = 0.3  # seconds of silence between segments
    max_new_tokens: int = 1500  # per segment (60 s at 25 Hz)

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_scale <= 2.0:
            raise ValueError(f"noise_scale must be in [0, 2], got {self.noise_scale}")
        if not 0.25 <= self.speed <= 4.0:
            raise ValueError(f"speed must be in [0.25, 4], got {self.speed}")
        if not 0.0 <= self.fragment_interval <= 5.0:
            raise ValueError(f"fragment_interval must be in [0, 5] seconds, got {self.fragment_interval}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        self.sampling(0)  # validates the sampling fields with SamplingParams' own messages

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(
            top_k=self.top_k,
            top_p=self.top_p,
            temperature=self.temperature,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
            max_new_tokens=self.max_new_tokens,
        )

    def resolved(self) -> SynthesisParams:
        """The same params with a concrete seed (a request is reproducible from its resolved params)."""
        if self.seed is not None:
            return self
        return replace(self, seed=int.from_bytes(os.urandom(8), "little") >> 1)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class StreamConfig:
    """How `synthesize_stream` cuts audio. Token counts are at 25 Hz (1 token = 40 ms)."""

    first_chunk_tokens: int = 12  # emit the first audio once this many tokens exist (+ lookahead)
    chunk_tokens: int = 24  # then every this many new tokens
    lookahead_tokens: int = 4  # audio this close to the newest token waits for more context
    overlap_frames: int = 4  # 50 Hz latent frames crossfaded at each seam (4 = 80 ms)

    def __post_init__(self) -> None:
        if min(self.first_chunk_tokens, self.chunk_tokens) < 1 or self.lookahead_tokens < 0:
            raise ValueError("chunk sizes must be >= 1 and lookahead >= 0")
        if self.overlap_frames < 0 or self.overlap_frames > 2 * self.chunk_tokens:
            raise ValueError("overlap_frames must be in [0, 2 * chunk_tokens]")


def segment_seed(seed: int, index: int) -> int:
    """A distinct, reproducible seed for segment `index` of a request."""
    return (seed * 1_000_003 + index * 7_919 + 1) % 2**63


def latent_frames(n_tokens: int, speed: float) -> int:
    """Latent (50 Hz) frames SoVITS produces for `n_tokens` semantic tokens at `speed`."""
    n = 2 * n_tokens
    return n if speed == 1.0 else int(n / speed) + 1


def latent_noise(seed: int, channels: int, frames: int) -> Tensor:
    """Standard normal noise [channels, frames]; frame t's values depend only on (seed, t).

    Drawn in fixed blocks from one generator, so the noise of a prefix equals the start of the
    noise of the whole sequence (streamed chunks and offline audio share it).
    """
    gen = torch.Generator().manual_seed(seed)
    blocks = -(-frames // NOISE_BLOCK_FRAMES)
    noise = torch.randn(blocks * NOISE_BLOCK_FRAMES, channels, generator=gen)  # frames-major
    return noise[:frames].T.contiguous()


class Pipeline:
    """Synthesis with one base model (adapters merged in beforehand, or none)."""

    def __init__(self, model: BaseModel, frontend: TextFrontend | None = None) -> None:
        self.model = model.eval()
        self.frontend = frontend or TextFrontend(version=model.config.version)
        self.sample_rate = SAMPLE_RATE
        self.hop = model.vocoder.hop_length

    # -- voice prompt ----------------------------------------------------------------------------

    @torch.no_grad()
    def build_voice_prompt(self, audio: np.ndarray, sr: int, text: str, lang: str) -> VoicePrompt:
        """3–10 s of reference audio + its transcript → the voice's prompt."""
        if audio.ndim != 1:
            raise ValueError(f"reference audio must be mono [samples], got shape {audio.shape}")
        seconds = len(audio) / sr
        if not REF_MIN_SECONDS <= seconds <= REF_MAX_SECONDS:
            raise ValueError(
                f"reference audio must be {REF_MIN_SECONDS:g}-{REF_MAX_SECONDS:g} s long, got {seconds:.2f} s"
            )
        peak = float(np.abs(audio).max())
        if peak < 1e-4:
            raise ValueError("reference audio is silent")
        phones = self.frontend.process(text, lang)
        semantic = self.semantic_tokens(audio, sr)
        wav32 = torch.from_numpy(resample(audio, sr, SAMPLE_RATE))
        if peak > 1.0:  # as upstream: tame clipping-range input before the spectrogram
            wav32 = wav32 / min(2.0, peak)
        spec = spectrogram(wav32)[0]  # [bins, frames]
        return VoicePrompt(
            text=phones.norm_text,
            lang=lang,
            phone_ids=torch.tensor(phones.ids, dtype=torch.long),
            bert=torch.from_numpy(phones.bert),
            semantic=semantic.long(),
            refer_spec=spec,
        )

    @torch.no_grad()
    def ssl_features(self, audio: np.ndarray, sr: int) -> Tensor:
        """Reference audio -> SSL features [1, dim, T50], as the voice prompt's tokens are read
        from them (16 kHz, 0.3 s of silence appended)."""
        wav16 = resample(audio, sr, SSL_SAMPLE_RATE)
        wav16 = np.concatenate([wav16, np.zeros(int(REF_PAD_SECONDS * SSL_SAMPLE_RATE), np.float32)])
        feats: Tensor = self.model.ssl(torch.from_numpy(wav16)[None])
        return feats

    @torch.no_grad()
    def semantic_tokens(self, audio: np.ndarray, sr: int) -> Tensor:
        """Recorded speech -> its semantic tokens [T25] long, as a voice prompt's are read."""
        return self.model.sovits.extract_latent(self.ssl_features(audio, sr))[0].long()

    # -- synthesis -------------------------------------------------------------------------------

    def generation_requests(
        self, segments: list[PhoneSequence], voice: VoicePrompt, params: SynthesisParams
    ) -> list[GenerationRequest]:
        """One GPT row per segment, each seeded from `params.seed` and its index."""
        assert params.seed is not None
        out = []
        for i, seg in enumerate(segments):
            phones = torch.cat([voice.phone_ids, torch.tensor(seg.ids, dtype=torch.long)])
            bert = torch.cat([voice.bert, torch.from_numpy(seg.bert)], dim=1)
            sampling = params.sampling(segment_seed(params.seed, i))
            out.append(GenerationRequest(phones=phones, bert=bert, prompt=voice.semantic, params=sampling))
        return out

    @torch.no_grad()
    def reference_embedding(self, voice: VoicePrompt) -> Tensor:
        """The global embedding `ge` [1, gin, 1] of a voice."""
        return self.model.sovits.ref_embedding(voice.refer_spec[None])

    @torch.no_grad()
    def tokens_to_audio(
        self, tokens: Tensor, phone_ids: list[int], ge: Tensor, params: SynthesisParams, seed: int
    ) -> np.ndarray:
        """One segment's semantic tokens [n] → audio [n * 2 * hop / speed] (float32)."""
        z = self._latent(tokens, phone_ids, ge, params, seed)
        return self.model.vocoder(z, ge)[0, 0].numpy()

    def _latent(
        self,
        tokens: Tensor,
        phone_ids: list[int],
        ge: Tensor,
        params: SynthesisParams,
        seed: int,
        complete: bool = True,
    ) -> Tensor:
        """`complete` False: `tokens` are the start of the segment (streaming), which only a
        bundle with a token aligner needs to know: it places the phones said so far."""
        sovits = self.model.sovits
        frames = latent_frames(int(tokens.shape[0]), params.speed)
        noise = latent_noise(seed ^ 0x5EED, sovits.config.inter_channels, frames)[None]
        phones = torch.tensor([phone_ids], dtype=torch.long)
        phone_index = None
        if self.model.aligner is not None:
            phone_index = self.model.aligner.align(tokens.long(), phones[0], complete=complete)[None]
        z, _ = sovits.decode_latent(
            tokens[None].long(),
            torch.tensor([tokens.shape[0]]),
            phones,
            torch.tensor([len(phone_ids)]),
            ge,
            noise_scale=params.noise_scale,
            speed=params.speed,
            noise=noise,
            phone_index=phone_index,
        )
        return z  # [1, inter, frames]

    @torch.no_grad()
    def generate_tokens(
        self, text: str, lang: str, voice: VoicePrompt, params: SynthesisParams | None = None
    ) -> tuple[list[PhoneSequence], list[Tensor]]:
        """The GPT half of `synthesize`: text -> its segments and each one's semantic tokens [n]."""
        params = (params or SynthesisParams()).resolved()
        segments = self.frontend.segments(text, lang, params.split)
        return segments, self.model.gpt.generate(self.generation_requests(segments, voice, params))

    @torch.no_grad()
    def synthesize(
        self, text: str, lang: str, voice: VoicePrompt, params: SynthesisParams | None = None
    ) -> np.ndarray:
        """Text → 32 kHz float32 audio in the voice of `voice`."""
        params = (params or SynthesisParams()).resolved()
        assert params.seed is not None
        segments, token_lists = self.generate_tokens(text, lang, voice, params)
        ge = self.reference_embedding(voice)
        pieces = []
        for i, (seg, tokens) in enumerate(zip(segments, token_lists)):
            if i:
                pieces.append(self._silence(params))
            pieces.append(self.tokens_to_audio(tokens, seg.ids, ge, params, segment_seed(params.seed, i)))
        return _finish(np.concatenate(pieces))

    @torch.no_grad()
    def synthesize_stream(
        self,
        text: str,
        lang: str,
        voice: VoicePrompt,
        params: SynthesisParams | None = None,
        stream: StreamConfig | None = None,
    ) -> Iterator[np.ndarray]:
        """Like `synthesize`, yielding audio chunks as soon as they are stable."""
        params = (params or SynthesisParams()).resolved()
        stream = stream or StreamConfig()
        assert params.seed is not None
        segments = self.frontend.segments(text, lang, params.split)
        ge = self.reference_embedding(voice)
        requests = self.generation_requests(segments, voice, params)
        for i, (seg, request) in enumerate(zip(segments, requests)):
            if i:
                yield self._silence(params)
            seed = segment_seed(params.seed, i)
            yield from self._stream_segment(request, seg.ids, ge, params, seed, stream)

    def _stream_segment(
        self,
        request: GenerationRequest,
        phone_ids: list[int],
        ge: Tensor,
        params: SynthesisParams,
        seed: int,
        stream: StreamConfig,
    ) -> Iterator[np.ndarray]:
        streamer = SegmentStreamer(self, phone_ids, ge, params, seed, stream)
        for events in self.model.gpt.generate_stream([request]):
            event = events[0]
            if event.token is not None:
                chunk = streamer.push(event.token)
                if chunk is not None:
                    yield chunk
            if event.finished:
                break
        last = streamer.finish()
        if last.size:
            yield last

    def _silence(self, params: SynthesisParams) -> np.ndarray:
        return np.zeros(int(params.fragment_interval * self.sample_rate), np.float32)


class SegmentStreamer:
    """Turns one segment's semantic tokens, pushed as GPT emits them, into audio chunks.

    Every `chunk_tokens` tokens (the first time after `first_chunk_tokens`) it decodes the tokens
    so far and returns the audio of the latent frames that are at least `lookahead_tokens` behind
    the newest token, holding back `overlap_frames` to crossfade with the next chunk. `finish()`
    decodes the whole sequence and returns the rest, so the last chunk equals offline audio.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        phone_ids: list[int],
        ge: Tensor,
        params: SynthesisParams,
        seed: int,
        stream: StreamConfig,
    ) -> None:
        self.pipeline, self.phone_ids, self.ge = pipeline, phone_ids, ge
        self.params, self.seed, self.stream = params, seed, stream
        self.tokens: list[int] = []
        self.emitted = 0  # latent frames already returned (their audio is final)
        self.tail = np.zeros(0, np.float32)  # audio after `emitted`, held back for the crossfade
        self.next_at = stream.first_chunk_tokens + stream.lookahead_tokens

    def push(self, token: int) -> np.ndarray | None:
        self.tokens.append(token)
        if len(self.tokens) < self.next_at:
            return None
        self.next_at = len(self.tokens) + self.stream.chunk_tokens
        out = self._chunk(len(self.tokens) - self.stream.lookahead_tokens)
        return out if out.size else None

    def finish(self) -> np.ndarray:
        return self._chunk(None) if self.tokens else np.zeros(0, np.float32)

    def _chunk(self, upto_tokens: int | None) -> np.ndarray:
        p, hop = self.pipeline, self.pipeline.hop
        seq = torch.tensor(self.tokens, dtype=torch.long)
        with torch.no_grad():
            z = p._latent(seq, self.phone_ids, self.ge, self.params, self.seed, complete=upto_tokens is None)
            total = z.shape[2]
            end = total if upto_tokens is None else min(total, latent_frames(upto_tokens, self.params.speed))
            hold = 0 if upto_tokens is None else min(self.stream.overlap_frames, max(0, end - self.emitted))
            stable_end = end - hold
            if stable_end <= self.emitted and upto_tokens is not None:
                return np.zeros(0, np.float32)
            audio = p.model.vocoder.vocode_window(z, self.ge, self.emitted, end)[0, 0].numpy().copy()
        if self.tail.size:
            n = min(self.tail.size, audio.size)
            fade_in = np.arange(n, dtype=np.float32) / max(n, 1)
            audio[:n] = self.tail[:n] * (1.0 - fade_in) + audio[:n] * fade_in
        cut = (stable_end - self.emitted) * hop
        out, self.tail = audio[:cut], audio[cut:]
        self.emitted = stable_end
        return _finish(out)


def _finish(audio: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1] as float32 (the vocoder ends in tanh; this guards crossfades and sums)."""
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
