"""The HTTP API (FastAPI): `create_app(gateway)`."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import Code, GatewayError
from gateway.routers import ops, tts, voices
from gateway.service import Gateway

log = logging.getLogger(__name__)

ROUTES = {"/v1/tts", "/v1/voices", "/healthz", "/readyz", "/metrics", "/"}

DESCRIPTION = """
Text to speech in many voices. Authenticate with `Authorization: Bearer <API key>`; the key
decides your tenant. Errors are JSON: `{"error": {"code": "<gRPC status name>", "message": "...",
"request_id": "..."}}`. The same API is served over gRPC (`tritone.v1.TextToSpeech`).
"""


_HTTP_CODES = {c.http: c for c in Code}


def error_response(exc: GatewayError, request_id: str = "") -> JSONResponse:
    headers = {"X-Request-Id": request_id} if request_id else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.code is Code.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"code": exc.code.label, "message": exc.message, "request_id": request_id}}
    return JSONResponse(body, status_code=exc.code.http, headers=headers)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = GatewayError(Code.PAYLOAD_TOO_LARGE, f"request body is larger than {self.limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await error_response(too_large)(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, too_large.message)
            return message

        await self.app(scope, limited, send)


class RequestMetrics:
    """Requests by route and status, and their duration to the last body byte."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        t0 = time.perf_counter()
        status = 500
        recorded = False
        m = self.gateway.metrics

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                m.requests.labels("http", route, str(status)).inc()
                m.latency.labels("http", route).observe(time.perf_counter() - t0)

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, wrapped)
        finally:
            if not recorded:
                status = status if status != 500 else 499
                record()


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="tritone gateway",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "synthesis", "description": "text to speech"},
            {"name": "voices", "description": "the voices a tenant may use"},
            {"name": "operations", "description": "health, readiness, metrics"},
        ],
    )
    app.state.gateway = gateway
    app.include_router(tts.router)
    app.include_router(voices.router)
    app.include_router(ops.router)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        if exc.code is Code.INTERNAL:
            log.error("request %s failed: %s", getattr(request.state, "request_id", ""), exc.message)
        return error_response(exc, getattr(request.state, "request_id", ""))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(
            exc.status_code, Code.INVALID_ARGUMENT if exc.status_code < 500 else Code.INTERNAL
        )
        error = GatewayError(code, str(exc.detail))
        response = error_response(error, getattr(request.state, "request_id", ""))
        response.status_code = exc.status_code
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[Any] = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(GatewayError(Code.INVALID_ARGUMENT, "request body is not valid JSON"))
        parts = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
        return error_response(GatewayError(Code.UNPROCESSABLE, "; ".join(parts)))

    app.add_middleware(BodyLimit, limit=gateway.settings.max_request_bytes)
    app.add_middleware(RequestMetrics, gateway=gateway)
    return app
