"""The gRPC API (`tritone.v1.TextToSpeech`), health (`grpc.health.v1`) and reflection.

Handlers take raw bytes and parse them themselves, so a malformed message gets
INVALID_ARGUMENT with a message instead of grpcio's generic INTERNAL. Message size limits:
requests up to ``max_request_bytes`` (RESOURCE_EXHAUSTED beyond, from grpcio), responses up
to ``max_response_bytes``. The caller's deadline is passed on to Triton.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gateway.auth import Principal
from gateway.encoding import encode
from gateway.errors import Code, GatewayError, invalid
from gateway.proto.gen import tts_pb2
from gateway.service import Gateway, ReferenceInput, SynthesisInput, check_request_id

log = logging.getLogger(__name__)

SERVICE = "tritone.v1.TextToSpeech"
_FORMATS = {
    tts_pb2.AUDIO_FORMAT_WAV: "wav",
    tts_pb2.AUDIO_FORMAT_PCM_S16LE: "pcm_s16le",
    tts_pb2.AUDIO_FORMAT_PCM_F32LE: "pcm_f32le",
}
_FORMAT_ENUM = {v: k for k, v in _FORMATS.items()}
_FLOAT_FIELDS = ("top_p", "temperature", "repetition_penalty", "noise_scale", "speed", "fragment_interval")


def _float32(value: float) -> float:
    """A float field as the caller wrote it (0.7, not 0.699999988), so gRPC and JSON agree."""
    return float(f"{value:.7g}")


def request_to_input(msg: tts_pb2.SynthesizeRequest, stream: bool) -> SynthesisInput:
    params: dict[str, Any] = {}
    p = msg.params
    for name in ("top_k", "seed", "split", "max_new_tokens", *_FLOAT_FIELDS):
        if p.HasField(name):
            value = getattr(p, name)
            params[name] = _float32(value) if name in _FLOAT_FIELDS else value
    reference = None
    if msg.HasField("reference"):
        r = msg.reference
        reference = ReferenceInput(r.audio, r.text, r.lang or "en", r.consent_id)
    return SynthesisInput(msg.text, msg.lang or "en", msg.voice, params, reference, stream)


class TextToSpeechServicer:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- plumbing --------------------------------------------------------------------------------

    def _begin(self, context: grpc.aio.ServicerContext) -> tuple[str, Principal]:
        md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        rid = check_request_id(str(md["x-request-id"])) if md.get("x-request-id") else check_request_id(None)
        context.set_trailing_metadata((("x-request-id", rid),))
        try:
            caller = self.gateway.authenticate(str(md.get("authorization", "")) or None)
        except GatewayError as exc:
            exc.request_id = rid  # type: ignore[attr-defined]
            raise
        return rid, caller

    async def _abort(
        self, context: grpc.aio.ServicerContext, exc: GatewayError, rid: str, method: str
    ) -> None:
        trailing = [("x-request-id", rid)] if rid else []
        if exc.retry_after is not None:
            trailing.append(("retry-after", str(exc.retry_after)))
        context.set_trailing_metadata(tuple(trailing))
        self._count(method, exc.code.grpc.name)
        if exc.code is Code.INTERNAL:
            log.error("request %s failed: %s", rid, exc.message)
        await context.abort(exc.code.grpc, exc.message)

    def _count(self, method: str, status: str) -> None:
        self.gateway.metrics.requests.labels("grpc", method, status).inc()

    def _timeout(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else max(0.001, float(remaining))

    @staticmethod
    def _parse(cls: Any, data: bytes) -> Any:
        msg = cls()
        try:
            msg.ParseFromString(data)
        except (DecodeError, ValueError) as exc:
            raise invalid(f"malformed {cls.DESCRIPTOR.name} message: {exc}") from None
        return msg

    # -- methods -----------------------------------------------------------------------------

    async def Synthesize(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        t0 = time.perf_counter()
        rid = ""
        try:
            rid, caller = self._begin(context)
            msg = self._parse(tts_pb2.SynthesizeRequest, data)
            fmt = _FORMATS.get(msg.format or tts_pb2.AUDIO_FORMAT_WAV)
            if fmt is None:
                raise invalid(f"unknown audio format {msg.format}")
            job = self.gateway.prepare(caller, request_to_input(msg, stream=False))
            pieces, start = [], None
            async for event in self.gateway.synthesize(
                caller, job, request_id=rid, api="grpc", timeout=self._timeout(context)
            ):
                if event.start is not None:
                    start = event.start
                pieces.append(event.audio)
            if start is None:
                raise GatewayError(Code.INTERNAL, "the inference server returned no audio")
            audio = np.concatenate(pieces)
            out = tts_pb2.SynthesizeResponse(
                audio=encode(audio, start.sample_rate, fmt),
                format=_FORMAT_ENUM[fmt],
                sample_rate=start.sample_rate,
                seed=start.seed,
                voice=start.voice,
                voice_version=start.voice_version,
                request_id=rid,
                duration_seconds=audio.size / start.sample_rate,
            )
            self._count("Synthesize", "OK")
            self.gateway.metrics.latency.labels("grpc", "Synthesize").observe(time.perf_counter() - t0)
            return bytes(out.SerializeToString())
        except GatewayError as exc:
            await self._abort(context, exc, rid, "Synthesize")
            raise AssertionError("unreachable") from None

    async def SynthesizeStream(self, data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        t0 = time.perf_counter()
        rid = ""
        try:
            rid, caller = self._begin(context)
            msg = self._parse(tts_pb2.SynthesizeRequest, data)
            fmt = _FORMATS.get(msg.format or tts_pb2.AUDIO_FORMAT_PCM_S16LE)
            if fmt is None or fmt == "wav":
                raise invalid("a stream is raw PCM: use AUDIO_FORMAT_PCM_S16LE or AUDIO_FORMAT_PCM_F32LE")
            job = self.gateway.prepare(caller, request_to_input(msg, stream=True))
            events = self.gateway.synthesize(
                caller, job, request_id=rid, api="grpc", timeout=self._timeout(context)
            )
            sample_rate = 0
            try:
                async for event in events:
                    out = tts_pb2.SynthesizeStreamResponse()
                    if event.start is not None:
                        s = event.start
                        sample_rate = s.sample_rate
                        out.info.CopyFrom(
                            tts_pb2.StreamInfo(
                                request_id=rid,
                                sample_rate=s.sample_rate,
                                format=_FORMAT_ENUM[fmt],
                                seed=s.seed,
                                voice=s.voice,
                                voice_version=s.voice_version,
                            )
                        )
                    elif not event.audio.size:
                        continue
                    out.audio = encode(event.audio, sample_rate, fmt)
                    yield bytes(out.SerializeToString())
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            self._count("SynthesizeStream", "OK")
            self.gateway.metrics.latency.labels("grpc", "SynthesizeStream").observe(time.perf_counter() - t0)
        except GatewayError as exc:
            await self._abort(context, exc, rid, "SynthesizeStream")

    async def ListVoices(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        rid = ""
        try:
            rid, caller = self._begin(context)
            msg = self._parse(tts_pb2.ListVoicesRequest, data)
            entries = self.gateway.list_voices(caller, msg.tenant)
            out = tts_pb2.ListVoicesResponse(
                voices=[
                    tts_pb2.Voice(
                        name=str(e.voice),
                        tenant=e.voice.tenant,
                        aliases=e.aliases,
                        latest_version=e.latest_version or 0,
                        public=public,
                    )
                    for e, public in entries
                ]
            )
            self._count("ListVoices", "OK")
            return bytes(out.SerializeToString())
        except GatewayError as exc:
            await self._abort(context, exc, rid, "ListVoices")
            raise AssertionError("unreachable") from None


def _identity(data: bytes) -> bytes:
    return data


def handlers(servicer: TextToSpeechServicer) -> grpc.GenericRpcHandler:
    methods = {
        "Synthesize": grpc.unary_unary_rpc_method_handler(
            servicer.Synthesize, request_deserializer=_identity, response_serializer=_identity
        ),
        "SynthesizeStream": grpc.unary_stream_rpc_method_handler(
            servicer.SynthesizeStream, request_deserializer=_identity, response_serializer=_identity
        ),
        "ListVoices": grpc.unary_unary_rpc_method_handler(
            servicer.ListVoices, request_deserializer=_identity, response_serializer=_identity
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


class GrpcServer:
    """The gRPC server of a gateway, with health and reflection."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        s = gateway.settings
        self.gateway = gateway
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", s.max_request_bytes),
                ("grpc.max_send_message_length", s.max_response_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.server.add_generic_rpc_handlers((handlers(TextToSpeechServicer(gateway)),))
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(False)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(SERVICE, status)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
