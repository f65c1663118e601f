from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_FORMAT_UNSPECIFIED: _ClassVar[AudioFormat]
    AUDIO_FORMAT_WAV: _ClassVar[AudioFormat]
    AUDIO_FORMAT_PCM_S16LE: _ClassVar[AudioFormat]
    AUDIO_FORMAT_PCM_F32LE: _ClassVar[AudioFormat]
AUDIO_FORMAT_UNSPECIFIED: AudioFormat
AUDIO_FORMAT_WAV: AudioFormat
AUDIO_FORMAT_PCM_S16LE: AudioFormat
AUDIO_FORMAT_PCM_F32LE: AudioFormat

class SamplingParams(_message.Message):
    __slots__ = ("top_k", "top_p", "temperature", "repetition_penalty", "seed", "noise_scale", "speed", "split", "fragment_interval", "max_new_tokens")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    top_p: float
    temperature: float
    repetition_penalty: float
    seed: int
    noise_scale: float
    speed: float
    split: str
    fragment_interval: float
    max_new_tokens: int
    def __init__(self, top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., temperature: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., seed: _Optional[int] = ..., noise_scale: _Optional[float] = ..., speed: _Optional[float] = ..., split: _Optional[str] = ..., fragment_interval: _Optional[float] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class ReferenceAudio(_message.Message):
    __slots__ = ("audio", "text", "lang", "consent_id")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    text: str
    lang: str
    consent_id: str
    def __init__(self, audio: _Optional[bytes] = ..., text: _Optional[str] = ..., lang: _Optional[str] = ..., consent_id: _Optional[str] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("text", "lang", "voice", "params", "format", "reference")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    lang: str
    voice: str
    params: SamplingParams
    format: AudioFormat
    reference: ReferenceAudio
    def __init__(self, text: _Optional[str] = ..., lang: _Optional[str] = ..., voice: _Optional[str] = ..., params: _Optional[_Union[SamplingParams, _Mapping]] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., reference: _Optional[_Union[ReferenceAudio, _Mapping]] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "format", "sample_rate", "seed", "voice", "voice_version", "request_id", "duration_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    VOICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    format: AudioFormat
    sample_rate: int
    seed: int
    voice: str
    voice_version: int
    request_id: str
    duration_seconds: float
    def __init__(self, audio: _Optional[bytes] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., sample_rate: _Optional[int] = ..., seed: _Optional[int] = ..., voice: _Optional[str] = ..., voice_version: _Optional[int] = ..., request_id: _Optional[str] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("request_id", "sample_rate", "format", "seed", "voice", "voice_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    VOICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sample_rate: int
    format: AudioFormat
    seed: int
    voice: str
    voice_version: int
    def __init__(self, request_id: _Optional[str] = ..., sample_rate: _Optional[int] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., seed: _Optional[int] = ..., voice: _Optional[str] = ..., voice_version: _Optional[int] = ...) -> None: ...

class SynthesizeStreamResponse(_message.Message):
    __slots__ = ("audio", "info")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    info: StreamInfo
    def __init__(self, audio: _Optional[bytes] = ..., info: _Optional[_Union[StreamInfo, _Mapping]] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class Voice(_message.Message):
    __slots__ = ("name", "tenant", "aliases", "latest_version", "public")
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    aliases: _containers.ScalarMap[str, int]
    latest_version: int
    public: bool
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., aliases: _Optional[_Mapping[str, int]] = ..., latest_version: _Optional[int] = ..., public: bool = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...
