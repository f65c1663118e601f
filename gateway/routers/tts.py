"""POST /v1/tts."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from gateway.dependencies import GatewayDep, PrincipalDep, RequestIdDep
from gateway.encoding import encode, media_type
from gateway.errors import Code, GatewayError, invalid
from gateway.schemas import ErrorResponse, TTSRequestModel
from gateway.service import AudioEvent, ReferenceInput, SynthesisInput

router = APIRouter(tags=["synthesis"])

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {
        "model": ErrorResponse,
        "description": "bad input: text, parameters, voice name, reference audio, malformed JSON",
    },
    401: {"model": ErrorResponse, "description": "no or invalid API key"},
    403: {"model": ErrorResponse, "description": "another tenant's voice, or zero-shot cloning not enabled"},
    404: {"model": ErrorResponse, "description": "no such voice / alias / version, or the voice is revoked"},
    413: {"model": ErrorResponse, "description": "request body larger than the limit (8 MiB)"},
    422: {"model": ErrorResponse, "description": "a field of the wrong type or an unknown field"},
    429: {"model": ErrorResponse, "description": "tenant rate limit or concurrency cap (see Retry-After)"},
    503: {"model": ErrorResponse, "description": "no inference server available (see Retry-After)"},
    504: {"model": ErrorResponse, "description": "the request's deadline passed"},
}


def _to_input(body: TTSRequestModel) -> SynthesisInput:
    reference = None
    if body.reference is not None:
        try:
            audio = base64.b64decode(body.reference.audio_base64, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("reference.audio_base64 is not valid base64") from None
        reference = ReferenceInput(audio, body.reference.text, body.reference.lang, body.reference.consent_id)
    params = body.params.model_dump(exclude_none=True)
    return SynthesisInput(body.text, body.lang, body.voice, params, reference, body.stream)


def _timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise invalid("X-Request-Timeout must be a number of seconds") from None
    if not 0 < seconds <= 3600:
        raise invalid("X-Request-Timeout must be in (0, 3600] seconds")
    return seconds


async def _watch_disconnect(request: Request, task: asyncio.Future[Any]) -> None:
    while not task.done():
        if await request.is_disconnected():
            task.cancel()
            return
        await asyncio.sleep(0.1)


@router.post(
    "/v1/tts",
    summary="Synthesise speech",
    response_class=Response,
    responses={
        200: {
            "description": "WAV (default), or raw PCM; streamed with chunked encoding when `stream` is true. "
            "Headers: X-Request-Id, X-Seed, X-Voice, X-Voice-Version, X-Sample-Rate.",
            "content": {"audio/wav": {}, "audio/L16": {}, "application/octet-stream": {}},
        },
        **_ERRORS,
    },
)
async def synthesize(
    body: TTSRequestModel,
    request: Request,
    gateway: GatewayDep,
    caller: PrincipalDep,
    request_id: RequestIdDep,
    x_request_timeout: Annotated[str | None, Header(description="deadline in seconds")] = None,
) -> Response:
    fmt = body.format or ("pcm_s16le" if body.stream else "wav")
    if body.stream and fmt == "wav":
        raise invalid("a stream is raw PCM: use format pcm_s16le or pcm_f32le")
    timeout = _timeout(x_request_timeout)
    job = gateway.prepare(caller, _to_input(body))
    events = gateway.synthesize(caller, job, request_id=request_id, api="http", timeout=timeout)
    first = await _first(events, request)
    start = first.start
    assert start is not None
    headers = {
        "X-Request-Id": request_id,
        "X-Seed": str(start.seed),
        "X-Voice": start.voice,
        "X-Voice-Version": str(start.voice_version),
        "X-Sample-Rate": str(start.sample_rate),
    }
    if body.stream:
        return StreamingResponse(
            _stream(first, events, start.sample_rate, fmt),
            media_type=media_type(fmt, start.sample_rate),
            headers={**headers, "Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    task = asyncio.ensure_future(_collect(first, events))
    watcher = asyncio.ensure_future(_watch_disconnect(request, task))
    try:
        audio = await task
    except asyncio.CancelledError:
        raise GatewayError(Code.CANCELLED, "the client went away") from None
    finally:
        watcher.cancel()
    headers["X-Audio-Seconds"] = f"{audio.size / start.sample_rate:.3f}"
    return Response(
        encode(audio, start.sample_rate, fmt), media_type=media_type(fmt, start.sample_rate), headers=headers
    )


async def _first(events: AsyncIterator[AudioEvent], request: Request) -> AudioEvent:
    task = asyncio.ensure_future(events.__anext__())
    watcher = asyncio.ensure_future(_watch_disconnect(request, task))
    try:
        return await task
    except StopAsyncIteration:
        raise GatewayError(Code.INTERNAL, "the inference server returned no audio") from None
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
        raise GatewayError(Code.CANCELLED, "the client went away") from None
    finally:
        watcher.cancel()


async def _collect(first: AudioEvent, events: AsyncIterator[AudioEvent]) -> np.ndarray:
    pieces = [first.audio]
    try:
        async for event in events:
            pieces.append(event.audio)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return np.concatenate(pieces).astype(np.float32, copy=False)


async def _stream(
    first: AudioEvent, events: AsyncIterator[AudioEvent], sr: int, fmt: str
) -> AsyncIterator[bytes]:
    try:
        if first.audio.size:
            yield encode(first.audio, sr, fmt)
        async for event in events:
            if event.audio.size:
                yield encode(event.audio, sr, fmt)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
