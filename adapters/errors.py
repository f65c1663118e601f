"""Typed errors of the adapter format and registry.

All derive from ValueError so the `tritone` CLI prints them as one readable line; callers
that must react differently (the gateway maps them to NOT_FOUND, PERMISSION_DENIED, ...) catch
the specific type.
"""

from __future__ import annotations


class AdapterError(ValueError):
    """Base class: an adapter or registry operation that was refused."""


class InvalidName(AdapterError):
    """A voice, tenant, alias or version string that is not allowed."""


class AdapterFormatError(AdapterError):
    """An adapter directory whose manifest or tensors are malformed."""


class UnsupportedFormatVersion(AdapterFormatError):
    """A manifest written in a format version this code does not know."""


class IntegrityError(AdapterFormatError):
    """A file whose sha256 differs from the one its manifest (or the registry) records."""


class BasePinMismatch(AdapterError):
    """An adapter pinned to a different base model than the one it is applied to."""


class ConsentMissing(AdapterError):
    """No (or a non-matching) consent record for the voice."""


class VoiceNotFound(AdapterError):
    """No such voice, version or alias in the registry."""


class VoiceRevoked(AdapterError):
    """The voice was revoked: it is never served again."""


class PromotionRefused(AdapterError):
    """The promotion gate refused a version; the alias did not move."""

    def __init__(self, message: str, reasons: list[str]) -> None:
        super().__init__(message)
        self.reasons = reasons
