"""One synthesis request: its parsed, validated parameters and its state while it is served.

`parse_request` turns the raw values of the `tts` model's inputs into a `SynthesisRequest`
(every check that needs no model: names, parameter types and ranges, reference audio), raising
`ServeError` with a message that says what to change. The scheduler then keeps a `Job` per
request and a `SegmentRow` per text segment that is decoding in the GPT batch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from adapters.errors import InvalidName
from adapters.names import DEFAULT_TENANT, VoiceId, parse_voice_id
from tritone.models.sampling import SamplingParams
from tritone.pipeline import REF_MAX_SECONDS, REF_MIN_SECONDS, StreamConfig, SynthesisParams
from tritone.serving.errors import ServeError, invalid
from tritone.serving.streaming import ChunkPlanner
from tritone.text import LANGUAGES, SPLIT_METHODS

if TYPE_CHECKING:
    from tritone.serving.bank import ResidentVoice, Ticket
    from tritone.text import PhoneSequence
    from tritone.voice import VoicePrompt

MIN_REF_SAMPLE_RATE = 8_000
MAX_REF_SAMPLE_RATE = 192_000

_INT_FIELDS = {
    "top_k",
    "max_new_tokens",
    "first_chunk_tokens",
    "chunk_tokens",
    "lookahead_tokens",
    "overlap_frames",
}
_FLOAT_FIELDS = {"top_p", "temperature", "repetition_penalty", "noise_scale", "speed", "fragment_interval"}
SYNTHESIS_FIELDS = tuple(SynthesisParams.field_names())
STREAM_FIELDS = tuple(f.name for f in fields(StreamConfig))
PARAM_FIELDS = (*SYNTHESIS_FIELDS, "stream", *STREAM_FIELDS)


@dataclass(frozen=True)
class VoiceKey:
    """A registered voice and the immutable version to serve (None: its production alias)."""

    voice: VoiceId
    version: int | None

    def __str__(self) -> str:
        return f"{self.voice}/{self.version}" if self.version is not None else f"{self.voice}@production"


@dataclass(frozen=True)
class ZeroShotReference:
    """Reference audio for zero-shot cloning (voice ""), validated."""

    audio: np.ndarray  # float32 mono
    sample_rate: int
    text: str
    lang: str


@dataclass(frozen=True)
class SynthesisRequest:
    request_id: str
    text: str
    lang: str
    voice: VoiceKey | None  # None: zero-shot from `reference`
    reference: ZeroShotReference | None
    params: SynthesisParams  # resolved: the seed is set
    stream: bool
    stream_config: StreamConfig

    @property
    def seed(self) -> int:
        assert self.params.seed is not None
        return self.params.seed

    @property
    def voice_label(self) -> str:
        return str(self.voice) if self.voice is not None else "zero-shot"


# ---------------------------------------------------------------------------------------------
# parsing


def _number(name: str, value: Any, integer: bool) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if integer else "a number"
        raise invalid(f"params.{name} must be {kind}, got {json.dumps(value)}")
    if integer and not isinstance(value, int):
        if not float(value).is_integer():
            raise invalid(f"params.{name} must be an integer, got {value}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"params.{name} must be finite, got {value}")
    return value


def parse_params(raw: str | None) -> tuple[SynthesisParams, bool, StreamConfig]:
    """The `params` JSON object → (resolved SynthesisParams, stream flag, StreamConfig)."""
    if raw is None or not raw.strip():
        data: dict[str, Any] = {}
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise invalid(f"params is not valid JSON: {exc.msg} at position {exc.pos}") from None
        if not isinstance(data, dict):
            raise invalid(f"params must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(PARAM_FIELDS))
    if unknown:
        raise invalid(f"unknown params {', '.join(unknown)}; allowed: {', '.join(PARAM_FIELDS)}")
    synth: dict[str, Any] = {}
    stream_kw: dict[str, Any] = {}
    for name, value in data.items():
        if name == "stream":
            if not isinstance(value, bool):
                raise invalid(f"params.stream must be true or false, got {json.dumps(value)}")
            continue
        if name == "seed":
            if value is not None:
                value = _number("seed", value, integer=True)
        elif name == "split":
            if value not in SPLIT_METHODS:
                raise invalid(
                    f"params.split must be one of {', '.join(SPLIT_METHODS)}, got {json.dumps(value)}"
                )
        elif name in _INT_FIELDS:
            value = _number(name, value, integer=True)
        elif name in _FLOAT_FIELDS:
            value = float(_number(name, value, integer=False))
        (stream_kw if name in STREAM_FIELDS else synth)[name] = value
    try:
        params = SynthesisParams(**synth).resolved()
        stream_config = StreamConfig(**stream_kw)
    except ValueError as exc:
        raise invalid(f"bad params: {exc}") from None
    return params, bool(data.get("stream", False)), stream_config


def parse_reference(
    audio: np.ndarray | None, sample_rate: int | None, text: str | None, lang: str | None
) -> ZeroShotReference:
    if audio is None:
        raise invalid('zero-shot synthesis (voice "") needs ref_audio: 3-10 s of the voice to clone')
    if sample_rate is None:
        raise invalid("ref_audio needs ref_sample_rate")
    if not MIN_REF_SAMPLE_RATE <= sample_rate <= MAX_REF_SAMPLE_RATE:
        raise invalid(
            f"ref_sample_rate must be in [{MIN_REF_SAMPLE_RATE}, {MAX_REF_SAMPLE_RATE}] Hz, got {sample_rate}"
        )
    wav = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(wav)):
        raise invalid("ref_audio contains NaN or infinite samples")
    seconds = wav.size / sample_rate
    if not REF_MIN_SECONDS <= seconds <= REF_MAX_SECONDS:
        raise invalid(
            f"ref_audio must be {REF_MIN_SECONDS:g}-{REF_MAX_SECONDS:g} s long, got {seconds:.2f} s "
            f"({wav.size} samples at {sample_rate} Hz)"
        )
    if float(np.abs(wav).max()) < 1e-4:
        raise invalid("ref_audio is silent")
    if not text or not text.strip():
        raise invalid("ref_text (the transcript of ref_audio) is required for zero-shot synthesis")
    ref_lang = lang or "auto"
    if ref_lang not in LANGUAGES:
        raise invalid(f"unsupported ref_lang {ref_lang!r}; expected one of {', '.join(LANGUAGES)}")
    return ZeroShotReference(wav, int(sample_rate), text, ref_lang)


def parse_voice(voice: str, version: int | None, default_tenant: str = DEFAULT_TENANT) -> VoiceKey:
    try:
        vid = parse_voice_id(voice, default_tenant)
    except InvalidName as exc:
        raise invalid(f"bad voice {voice[:80]!r}: {exc}") from None
    if version is not None and version < 1:
        raise invalid(f"voice_version must be a positive integer, got {version}")
    return VoiceKey(vid, version)


def parse_request(
    *,
    request_id: str,
    text: str | None,
    lang: str | None,
    voice: str | None,
    voice_version: int | None = None,
    params: str | None = None,
    ref_audio: np.ndarray | None = None,
    ref_sample_rate: int | None = None,
    ref_text: str | None = None,
    ref_lang: str | None = None,
    default_tenant: str = DEFAULT_TENANT,
) -> SynthesisRequest:
    """Validate everything about a request that needs no model (the frontend runs after this)."""
    if text is None or not text.strip():
        raise invalid("text is empty")
    if not lang:
        raise invalid(f"lang is required: one of {', '.join(LANGUAGES)}")
    if lang not in LANGUAGES:
        raise invalid(f"unsupported lang {lang!r}; expected one of {', '.join(LANGUAGES)}")
    synthesis, stream, stream_config = parse_params(params)
    key: VoiceKey | None = None
    reference: ZeroShotReference | None = None
    if voice:
        if ref_audio is not None:
            raise invalid("give either a voice or ref_audio (zero-shot), not both")
        key = parse_voice(voice, voice_version, default_tenant)
    else:
        if voice_version is not None:
            raise invalid("voice_version given without a voice")
        reference = parse_reference(ref_audio, ref_sample_rate, ref_text, ref_lang)
    return SynthesisRequest(request_id, text, lang, key, reference, synthesis, stream, stream_config)


# ---------------------------------------------------------------------------------------------
# serving state


class ResponseSink(Protocol):
    """Where a request's audio goes (a Triton response sender, or a test's list)."""

    def send(self, audio: np.ndarray, final: bool) -> None:
        """One response: an audio chunk (the whole utterance when not streaming)."""
        ...

    def fail(self, error: ServeError) -> None:
        """End the request with an error (no more responses follow)."""
        ...

    def cancelled(self) -> bool:
        """Whether the client cancelled or went away."""
        ...


@dataclass
class PreparedReference:
    """Zero-shot reference after the CPU-side steps of `Pipeline.build_voice_prompt`."""

    text: str
    lang: str
    phone_ids: torch.Tensor  # [Nx]
    bert: torch.Tensor  # [1024, Nx]
    wav16k: np.ndarray  # 16 kHz, silence appended
    refer_spec: np.ndarray  # [bins, frames]


@dataclass(eq=False)
class Job:
    """A request in the scheduler: waiting for its voice, decoding, or emitting audio."""

    request: SynthesisRequest
    sink: ResponseSink
    segments: list[PhoneSequence]
    reference: PreparedReference | None = None
    ticket: Ticket | None = None
    voice: ResidentVoice | None = None  # pinned while the job holds it
    prompt: VoicePrompt | None = None
    ge: np.ndarray | None = None  # [gin, 1]
    slot: int = 0
    next_segment: int = 0  # segments handed to the GPT batch so far
    live: int = 0  # segments in the batch or in the acoustic stage
    done_segments: int = 0
    pieces: dict[int, np.ndarray] = field(default_factory=dict)  # non-streaming audio per segment
    closed: bool = False
    submitted: float = field(default_factory=time.monotonic)
    first_audio: float | None = None

    @property
    def ready(self) -> bool:
        return self.prompt is not None and self.ge is not None

    @property
    def max_live(self) -> int:
        """Segments decoding at once: all (offline) or one at a time (streaming, in order)."""
        return 1 if self.request.stream else len(self.segments)

    def wants_rows(self) -> int:
        return max(0, min(self.max_live - self.live, len(self.segments) - self.next_segment))


@dataclass(eq=False)
class SegmentRow:
    """One text segment decoding in the GPT batch (one KV-cache row)."""

    job: Job
    index: int  # segment index within the request
    phone_ids: list[int]  # the segment's own phones (SoVITS input)
    sampling: SamplingParams
    generator: torch.Generator
    text_len: int
    prompt_len: int
    cache_row: int
    length: int = 0  # valid cache positions
    tokens: list[int] = field(default_factory=list)
    planner: ChunkPlanner | None = None
    finished: bool = False

    @property
    def seed(self) -> int:
        assert self.sampling.seed is not None
        return self.sampling.seed
