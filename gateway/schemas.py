"""Pydantic schemas of the HTTP API (they mirror `tritone/v1/tts.proto`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SamplingParamsModel(BaseModel):
    """Every field is optional; unset fields take the defaults. Ranges are checked by the
    reference pipeline's own validation; a value out of range is a 400 with the reason."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(
        default=None, description="keep the k most likely tokens, k >= 1 (default 15)", examples=[15]
    )
    top_p: float | None = Field(
        default=None, description="nucleus sampling, 0 < p <= 1 (default 1.0)", examples=[1.0]
    )
    temperature: float | None = Field(
        default=None, description="softmax temperature > 0 (default 1.0)", examples=[1.0]
    )
    repetition_penalty: float | None = Field(
        default=None, description="> 0; 1 disables it (default 1.35)", examples=[1.35]
    )
    seed: int | None = Field(
        default=None,
        description="0 <= seed < 2^63; the same request and seed give the same audio (default: random)",
        examples=[42],
    )
    noise_scale: float | None = Field(default=None, description="0 to 2 (default 0.5)", examples=[0.5])
    speed: float | None = Field(
        default=None, description="speaking rate, 0.25 to 4 (default 1.0)", examples=[1.0]
    )
    split: str | None = Field(
        default=None, description="text cutting: cut0 .. cut5 (default cut5)", examples=["cut5"]
    )
    fragment_interval: float | None = Field(
        default=None, description="seconds of silence between segments, 0 to 5 (default 0.3)"
    )
    max_new_tokens: int | None = Field(
        default=None,
        description="most semantic tokens per text segment, 25 per second of audio (default 1500)",
    )


class ReferenceModel(BaseModel):
    """Zero-shot cloning: needs the tenant's permission and a consent record id."""

    model_config = ConfigDict(extra="forbid")

    audio_base64: str = Field(..., description="an audio file (WAV/FLAC/OGG/MP3), 3-10 s, >= 16 kHz, base64")
    text: str = Field(..., description="what the reference audio says")
    lang: str = Field("en", description="en, zh or auto")
    consent_id: str = Field(
        "", description="id of the speaker's consent record (required)", examples=["consent-0001"]
    )


class TTSRequestModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "Hello from tritone.", "voice": "demo"},
                {
                    "text": "Streaming, chunk by chunk.",
                    "voice": "acme.alice@staging",
                    "stream": True,
                    "params": {"seed": 7},
                },
            ]
        },
    )

    text: str = Field(
        ...,
        description="text to speak: 1-1000 characters of Chinese and/or English",
        examples=["Hello from tritone."],
    )
    lang: str = Field("en", description="language of the text: en, zh or auto (mixed)")
    voice: str = Field(
        "",
        description=(
            "'name' (your own voice, else the public one), or 'tenant.name', optionally with '@alias' "
            "(default @production) or '/version'; empty with `reference` for zero-shot cloning"
        ),
        examples=["demo"],
    )
    params: SamplingParamsModel = Field(default_factory=lambda: SamplingParamsModel())
    stream: bool = Field(False, description="stream raw PCM as it is produced (chunked transfer encoding)")
    format: Literal["wav", "pcm_s16le", "pcm_f32le"] | None = Field(
        default=None,
        description="wav (default; not with stream), pcm_s16le (default when streaming) or pcm_f32le",
    )
    reference: ReferenceModel | None = None


class VoiceModel(BaseModel):
    name: str = Field(..., examples=["acme.alice"])
    tenant: str = Field(..., examples=["acme"])
    aliases: dict[str, int] = Field(default_factory=dict, examples=[{"production": 3, "previous": 2}])
    latest_version: int | None = Field(default=None, examples=[4])
    public: bool = False


class VoicesResponse(BaseModel):
    voices: list[VoiceModel]


class ErrorBody(BaseModel):
    code: str = Field(..., description="the gRPC status name of the error", examples=["INVALID_ARGUMENT"])
    message: str = Field(..., examples=["text is empty"])
    request_id: str = Field("", examples=["3f9c2a1b7d0e"])


class ErrorResponse(BaseModel):
    error: ErrorBody


class ReadyResponse(BaseModel):
    ready: bool
    checks: dict[str, bool]
    triton: list[dict[str, object]] = Field(default_factory=list)
