"""Voice and tenant names, registry model names and `VOICE[@alias|/version]` references.

Names end up in filesystem paths, MLflow filter strings and registered-model names, so they
are checked here, once, against a strict pattern (no dots, slashes or quotes can pass).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.errors import InvalidName

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
VOICE_MODEL_PREFIX = "voice."
BASE_MODEL_NAME = "tritone-base"
DEFAULT_TENANT = "default"
DEFAULT_ALIAS = "production"
ALIASES = ("staging", "production", "previous")


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid voice/tenant name, else raise InvalidName."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidName(
            f"invalid {what} {value!r}: use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return value


def check_sha256(value: str, what: str = "sha256") -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise InvalidName(f"invalid {what} {value!r}: expected 64 lowercase hex digits")
    return value


def voice_model_name(tenant: str, voice: str) -> str:
    """The registered model of a voice: ``voice.<tenant>.<name>``."""
    return f"{VOICE_MODEL_PREFIX}{check_name(tenant, 'tenant')}.{check_name(voice, 'voice')}"


@dataclass(frozen=True)
class VoiceId:
    tenant: str
    name: str

    def __post_init__(self) -> None:
        check_name(self.tenant, "tenant")
        check_name(self.name, "voice")

    @property
    def model_name(self) -> str:
        return voice_model_name(self.tenant, self.name)

    def __str__(self) -> str:
        return f"{self.tenant}.{self.name}"

    @classmethod
    def from_model_name(cls, model_name: str) -> VoiceId:
        if not model_name.startswith(VOICE_MODEL_PREFIX):
            raise InvalidName(f"{model_name!r} is not a voice model name")
        tenant, dot, name = model_name[len(VOICE_MODEL_PREFIX) :].partition(".")
        if not dot:
            raise InvalidName(f"{model_name!r} is not a voice model name")
        return cls(tenant, name)


@dataclass(frozen=True)
class VoiceRef:
    """A voice plus what to pick: an alias or an immutable version number."""

    voice: VoiceId
    alias: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        if (self.alias is None) == (self.version is None):
            raise InvalidName("a voice reference picks exactly one of an alias or a version")
        if self.alias is not None:
            check_name(self.alias, "alias")
        if self.version is not None and self.version < 1:
            raise InvalidName(f"version must be a positive integer, got {self.version}")

    @property
    def selector(self) -> str:
        return f"@{self.alias}" if self.alias is not None else f"/{self.version}"

    def __str__(self) -> str:
        return f"{self.voice}{self.selector}"


def parse_voice_id(text: str, default_tenant: str = DEFAULT_TENANT) -> VoiceId:
    """``[tenant.]name``."""
    tenant, dot, name = text.partition(".")
    if not dot:
        tenant, name = default_tenant, text
    return VoiceId(check_name(tenant, "tenant"), check_name(name, "voice"))


def parse_voice_ref(
    text: str, default_tenant: str = DEFAULT_TENANT, default_alias: str = DEFAULT_ALIAS
) -> VoiceRef:
    """``[tenant.]name[@alias|/version]``; no selector means ``@production``."""
    if not isinstance(text, str) or not text:
        raise InvalidName("empty voice reference")
    try:
        return _parse_voice_ref(text, default_tenant, default_alias)
    except InvalidName as exc:
        raise InvalidName(f"invalid voice reference {text[:80]!r}: {exc}") from None


def _parse_voice_ref(text: str, default_tenant: str, default_alias: str) -> VoiceRef:
    if "@" in text:
        voice, _, alias = text.partition("@")
        return VoiceRef(parse_voice_id(voice, default_tenant), alias=check_name(alias, "alias"))
    if "/" in text:
        voice, _, version = text.partition("/")
        vid = parse_voice_id(voice, default_tenant)  # the voice is checked first: it is what users mistype
        if not re.fullmatch(r"[0-9]{1,9}", version):
            raise InvalidName(f"invalid version {version!r} in {text!r}: expected a positive integer")
        return VoiceRef(vid, version=int(version))
    return VoiceRef(parse_voice_id(text, default_tenant), alias=default_alias)
