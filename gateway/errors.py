"""One error type for both APIs: a gRPC status code, the HTTP status it maps to, and a message."""

from __future__ import annotations

from enum import Enum

import grpc


class Code(Enum):
    """gRPC status codes the gateway returns, with their HTTP statuses."""

    INVALID_ARGUMENT = (grpc.StatusCode.INVALID_ARGUMENT, 400)
    UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, 401)
    PERMISSION_DENIED = (grpc.StatusCode.PERMISSION_DENIED, 403)
    NOT_FOUND = (grpc.StatusCode.NOT_FOUND, 404)
    PAYLOAD_TOO_LARGE = (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    UNPROCESSABLE = (grpc.StatusCode.INVALID_ARGUMENT, 422)
    RESOURCE_EXHAUSTED = (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
    CANCELLED = (grpc.StatusCode.CANCELLED, 499)
    INTERNAL = (grpc.StatusCode.INTERNAL, 500)
    UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, 503)
    DEADLINE_EXCEEDED = (grpc.StatusCode.DEADLINE_EXCEEDED, 504)

    @property
    def grpc(self) -> grpc.StatusCode:
        return self.value[0]

    @property
    def http(self) -> int:
        return self.value[1]

    @property
    def label(self) -> str:
        """The gRPC code's name, used as the `code` of HTTP error bodies."""
        return str(self.value[0].name)


class GatewayError(Exception):
    """A request the gateway refuses or cannot complete; the message is shown to the caller."""

    def __init__(self, code: Code, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def invalid(message: str) -> GatewayError:
    return GatewayError(Code.INVALID_ARGUMENT, message)
