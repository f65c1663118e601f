"""Errors a synthesis request can end with, each carrying the Triton error code it maps to.

The `tts` model answers every refused or failed request with one `pb_utils.TritonError` whose
code is `ServeError.code` and whose message is `ServeError.message`. Streamed responses carry
only the message, so messages are worded for clients to classify: bad input starts with
"invalid request:", an unknown voice or version says "unknown voice", a revoked one "revoked",
overload and shutdown "unavailable". Adapter and text errors are translated here, in one place.
"""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal["INVALID_ARG", "NOT_FOUND", "UNAVAILABLE", "CANCELLED", "INTERNAL"]


class ServeError(Exception):
    """A request that cannot be served. `code` is a `pb_utils.TritonError` code name."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def invalid(message: str) -> ServeError:
    """A bad request. The message starts "invalid request:", which clients can rely on."""
    return ServeError("INVALID_ARG", f"invalid request: {message}")


def from_exception(exc: BaseException, context: str = "") -> ServeError:
    """Map an error raised while serving a request to a `ServeError` with a clear message."""
    from adapters.errors import (
        AdapterError,
        AdapterFormatError,
        BasePinMismatch,
        InvalidName,
        VoiceNotFound,
        VoiceRevoked,
    )
    from tritone.lora import LoRAError
    from tritone.text import TextError

    if isinstance(exc, ServeError):
        return exc
    prefix = f"{context}: " if context else ""
    if isinstance(exc, VoiceRevoked):
        return ServeError("NOT_FOUND", f"{prefix}{exc}")  # the message says "revoked"
    if isinstance(exc, VoiceNotFound):
        return ServeError("NOT_FOUND", f"{prefix}unknown voice version: {exc}")
    if isinstance(exc, InvalidName | TextError):
        return invalid(f"{prefix}{exc}")
    if isinstance(exc, BasePinMismatch | AdapterFormatError | LoRAError | AdapterError):
        # The stored adapter is bad or does not fit the served base: a server-side problem that
        # retrying will not fix; the voice is refused, nothing of it is served.
        return ServeError("INTERNAL", f"{prefix}adapter refused: {exc}")
    return ServeError("INTERNAL", f"{prefix}{type(exc).__name__}: {exc}")
