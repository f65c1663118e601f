"""The gateway's core, shared by the HTTP and gRPC front ends.

`Gateway.prepare` validates a request (text, parameters, voice name, reference audio) without
any I/O; `Gateway.synthesize` admits it against the tenant's limits, resolves the voice to an
immutable version, routes it to a Triton replica and yields watermarked audio as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adapters.errors import InvalidName, VoiceNotFound, VoiceRevoked
from adapters.names import VoiceId, VoiceRef, check_name, parse_voice_ref
from adapters.registry import AdapterRegistry
from gateway.auth import KeyStore, Principal
from gateway.config import GatewaySettings
from gateway.disclosure import disclosure_audio
from gateway.errors import Code, GatewayError, invalid
from gateway.limits import Limiter
from gateway.metrics import Metrics
from gateway.resolver import CatalogEntry, RegistryUnavailable, ResolvedVersion, VoiceResolver
from gateway.routing import TritonPool
from gateway.triton_client import TritonRequest
from gateway.watermark import Embedder, Payload
from tritone.audio import AudioError, decode_audio
from tritone.text import TextFrontend
from tritone.text.errors import TextError

log = logging.getLogger(__name__)

# A request waits on the registry only for a cold resolution; fail fast when it is down (the
# cache keeps serving known voices) rather than retrying for minutes. Operators can override.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

LANGS = ("en", "zh", "auto")
SPLITS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
PARAM_FIELDS = (
    "top_k",
    "top_p",
    "temperature",
    "repetition_penalty",
    "seed",
    "noise_scale",
    "speed",
    "split",
    "fragment_interval",
    "max_new_tokens",
)
REF_MIN_S, REF_MAX_S = 3.0, 10.0  # as tritone.pipeline.REF_MIN_SECONDS / REF_MAX_SECONDS
REF_MIN_SR = 16_000
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def new_request_id() -> str:
    """12 hex digits: the 48 bits the watermark carries in full."""
    return secrets.token_hex(6)


def check_request_id(value: str | None) -> str:
    """A client-supplied request id (X-Request-Id / x-request-id), or a fresh one."""
    if not value:
        return new_request_id()
    if not REQUEST_ID_RE.fullmatch(value):
        raise invalid("request id must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
    return value


@dataclass
class ReferenceInput:
    audio: bytes
    text: str
    lang: str = "en"
    consent_id: str = ""


@dataclass
class SynthesisInput:
    """A synthesis request as both APIs receive it."""

    text: str
    lang: str = "en"
    voice: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # only the fields the caller set
    reference: ReferenceInput | None = None
    stream: bool = False


@dataclass
class Prepared:
    text: str
    lang: str
    voice: VoiceRef | None
    explicit_tenant: bool
    params: dict[str, Any]
    stream: bool
    ref_audio: np.ndarray | None = None
    ref_sample_rate: int = 0
    ref_text: str = ""
    ref_lang: str = ""
    consent_id: str = ""


@dataclass
class StreamStart:
    request_id: str
    sample_rate: int
    seed: int
    voice: str
    voice_version: int


@dataclass
class AudioEvent:
    audio: np.ndarray  # float32 mono, watermarked
    start: StreamStart | None = None  # set on the first event only


def _validate_params(params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(PARAM_FIELDS)
    if unknown:
        raise invalid(f"unknown parameters: {', '.join(sorted(unknown))}")
    if "split" in params and params["split"] not in SPLITS:
        raise invalid(f"split must be one of {', '.join(SPLITS)}, got {params['split']!r}")
    from tritone.pipeline import SynthesisParams  # the reference pipeline's own validation

    try:
        SynthesisParams(**params)
    except (TypeError, ValueError) as exc:
        raise invalid(f"bad parameters: {exc}") from None
    return dict(params)


class Gateway:
    """Auth, limits, voice resolution, routing and watermarking for both APIs."""

    def __init__(self, settings: GatewaySettings, registry: AdapterRegistry | None = None) -> None:
        self.settings = settings
        self.keys = KeyStore(settings.api_keys_file, settings.api_keys_inline)
        self.limiter = Limiter()
        self.metrics = Metrics()
        self.registry = registry or AdapterRegistry(settings.mlflow_uri)
        self.resolver = VoiceResolver(
            self.registry,
            feed_interval_s=settings.feed_interval_s,
            ttl_s=settings.resolve_ttl_s,
            on_lookup=lambda result: self.metrics.resolve.labels(result).inc(),
        )
        self.pool = TritonPool(
            settings.triton_urls,
            settings.model_name,
            resolve_interval_s=settings.resolve_interval_s,
            health_interval_s=settings.health_interval_s,
            bounded_load=settings.bounded_load,
            max_message_bytes=settings.max_response_bytes,
        )
        self.frontend = TextFrontend(max_chars=settings.max_text_chars)
        self.public_tenants = tuple(settings.public_tenants)
        self.draining = False
        self.inflight = 0
        self._last_health_probe = 0.0
        self.started_at = time.time()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(_validate_params, {})  # imports the pipeline's validation once
        self.resolver.start()
        await self.pool.start()
        self._update_gauges()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking requests, let in-flight ones finish (up to ``grace_s``), then close."""
        self.draining = True
        deadline = time.monotonic() + (self.settings.shutdown_grace_s if grace_s is None else grace_s)
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.inflight:
            log.warning("shutting down with %d syntheses still in flight", self.inflight)
        await self.pool.close()
        self.resolver.stop()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        registry_ok = self.resolver.reachable(3 * self.settings.feed_interval_s + 5)
        checks = {
            "triton": self.pool.ready,
            "registry": registry_ok,
            "voice_cache_warm": self.resolver.warm,
            "draining": self.draining,
        }
        ready = self.pool.ready and (registry_ok or self.resolver.warm) and not self.draining
        return ready, checks

    def _update_gauges(self) -> None:
        status = self.pool.status()
        self.metrics.triton_endpoints.labels("healthy").set(status.healthy)
        self.metrics.triton_endpoints.labels("unhealthy").set(len(status.endpoints) - status.healthy)

    # -- auth --------------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        return self.keys.authenticate(authorization)

    # -- voices ------------------------------------------------------------------------------------

    def visible_tenants(self, principal: Principal) -> tuple[str, ...]:
        return (principal.tenant, *(t for t in self.public_tenants if t != principal.tenant))

    def list_voices(self, principal: Principal, tenant: str = "") -> list[tuple[CatalogEntry, bool]]:
        """(voice, public) pairs the caller may use; PERMISSION_DENIED for another tenant."""
        allowed = self.visible_tenants(principal)
        if tenant:
            try:
                check_name(tenant, "tenant")
            except InvalidName as exc:
                raise invalid(str(exc)) from None
            if tenant not in allowed:
                raise GatewayError(
                    Code.PERMISSION_DENIED,
                    f"tenant {principal.tenant!r} may not list tenant {tenant!r}'s voices",
                )
            allowed = (tenant,)
        if not self.resolver.warm:
            raise GatewayError(
                Code.UNAVAILABLE,
                "the voice registry has not been reached yet; retry shortly",
                retry_after=self.settings.retry_after_s,
            )
        return [
            (e, e.voice.tenant in self.public_tenants)
            for e in self.resolver.catalog()
            if e.voice.tenant in allowed
        ]

    def _voice_ref(self, principal: Principal, text: str) -> tuple[VoiceRef, bool]:
        if len(text) > 200:
            raise invalid("voice reference is too long (at most 200 characters)")
        try:
            ref = parse_voice_ref(text, default_tenant=principal.tenant)
        except InvalidName as exc:
            raise invalid(str(exc)) from None
        explicit = "." in re.split(r"[@/]", text, maxsplit=1)[0]
        if ref.voice.tenant not in self.visible_tenants(principal):
            raise GatewayError(
                Code.PERMISSION_DENIED,
                f"voice {ref.voice} belongs to another tenant; tenant {principal.tenant!r} may not use it",
            )
        return ref, explicit

    def _resolve(self, principal: Principal, ref: VoiceRef, explicit: bool) -> ResolvedVersion:
        """Blocking (registry I/O): an own voice, else a public voice of the same name."""
        candidates = [ref]
        if not explicit:
            for tenant in self.public_tenants:
                if tenant != ref.voice.tenant:
                    candidates.append(VoiceRef(VoiceId(tenant, ref.voice.name), ref.alias, ref.version))
            known = [c for c in candidates if self.resolver.known(c.voice)]
            if known:
                candidates = known
        last: Exception | None = None
        for candidate in candidates:
            try:
                return self.resolver.resolve(candidate)
            except VoiceNotFound as exc:
                last = exc
            except VoiceRevoked as exc:
                raise GatewayError(Code.NOT_FOUND, str(exc)) from None
            except InvalidName as exc:
                raise invalid(str(exc)) from None
            except RegistryUnavailable as exc:
                raise GatewayError(
                    Code.UNAVAILABLE, f"{exc}; retry shortly", retry_after=self.settings.retry_after_s
                ) from None
        message = (
            str(last)
            if explicit or len(candidates) == 1
            else f"no voice {ref.voice.name!r} for tenant {principal.tenant!r} or the public tenants"
        )
        raise GatewayError(Code.NOT_FOUND, message)

    # -- validation -------------------------------------------------------------------------------

    def prepare(self, principal: Principal, req: SynthesisInput) -> Prepared:
        """Check everything that can be checked without I/O; raise GatewayError on bad input."""
        lang = req.lang or "en"
        if lang not in LANGS:
            raise invalid(f"unsupported language {lang!r}; expected one of {', '.join(LANGS)}")
        try:
            self.frontend.validate(req.text, lang)  # the model normalises again; only the check matters
        except TextError as exc:
            raise invalid(str(exc)) from None
        params = _validate_params(req.params)
        prepared = Prepared(
            text=req.text, lang=lang, voice=None, explicit_tenant=False, params=params, stream=req.stream
        )
        if req.reference is not None:
            if req.voice:
                raise invalid("give either a voice or reference audio for zero-shot cloning, not both")
            self._prepare_reference(principal, req.reference, prepared)
        else:
            if not req.voice:
                raise invalid("voice is required (or reference audio for zero-shot cloning)")
            prepared.voice, prepared.explicit_tenant = self._voice_ref(principal, req.voice)
        return prepared

    def _prepare_reference(self, principal: Principal, ref: ReferenceInput, prepared: Prepared) -> None:
        if not principal.policy.zero_shot:
            raise GatewayError(
                Code.PERMISSION_DENIED, f"zero-shot cloning is not enabled for tenant {principal.tenant!r}"
            )
        if not ref.consent_id:
            raise invalid("zero-shot cloning needs the speaker's consent record id (reference.consent_id)")
        try:
            check_name(ref.consent_id, "consent record id")
        except InvalidName as exc:
            raise invalid(str(exc)) from None
        ref_lang = ref.lang or "en"
        if ref_lang not in LANGS:
            raise invalid(f"unsupported reference language {ref_lang!r}; expected one of {', '.join(LANGS)}")
        try:
            self.frontend.validate(ref.text, ref_lang)
        except TextError as exc:
            raise invalid(f"reference text: {exc}") from None
        if not ref.audio:
            raise invalid("reference audio is empty")
        try:
            audio, sr = decode_audio(ref.audio)
        except AudioError as exc:
            raise invalid(f"reference audio: {exc} (send WAV, FLAC, OGG or MP3)") from None
        if sr < REF_MIN_SR:
            raise invalid(f"reference audio is sampled at {sr} Hz; at least {REF_MIN_SR} Hz is needed")
        seconds = audio.size / sr
        if not REF_MIN_S <= seconds <= REF_MAX_S:
            raise invalid(f"reference audio must be {REF_MIN_S:g}-{REF_MAX_S:g} s long, got {seconds:.2f} s")
        peak = float(np.abs(audio).max())
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if peak < 1e-3 or rms < 3e-4:
            raise invalid("reference audio is silent")
        prepared.ref_audio = audio
        prepared.ref_sample_rate = sr
        prepared.ref_text = ref.text
        prepared.ref_lang = ref_lang
        prepared.consent_id = ref.consent_id

    # -- synthesis ---------------------------------------------------------------------------------

    def _unavailable(self, message: str) -> GatewayError:
        return GatewayError(Code.UNAVAILABLE, message, retry_after=self.settings.retry_after_s)

    async def synthesize(
        self,
        principal: Principal,
        job: Prepared,
        *,
        request_id: str,
        api: str,
        timeout: float | None = None,
    ) -> AsyncIterator[AudioEvent]:
        """Yield watermarked audio; the first event carries `start`. Raises GatewayError."""
        if self.draining:
            raise self._unavailable("the gateway is shutting down; retry on another replica")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        budget = (
            self.settings.request_timeout_s
            if timeout is None
            else min(timeout, self.settings.request_timeout_s)
        )
        deadline = t0 + budget
        with self.limiter.admit(principal.tenant, principal.policy):
            self.inflight += 1
            self.metrics.inflight.set(self.inflight)
            try:
                if job.voice is not None:
                    resolved = await asyncio.to_thread(
                        self._resolve, principal, job.voice, job.explicit_tenant
                    )
                    voice_name, version = str(resolved.voice), resolved.version
                else:
                    voice_name, version = "", 0
                request = TritonRequest(
                    request_id=request_id,
                    text=job.text,
                    lang=job.lang,
                    voice=voice_name,
                    voice_version=version,
                    params={**job.params, "stream": job.stream},
                    ref_audio=job.ref_audio,
                    ref_sample_rate=job.ref_sample_rate,
                    ref_text=job.ref_text,
                    ref_lang=job.ref_lang,
                )
                payload = Payload.create(principal.tenant, voice_name, request_id)
                try:
                    async for event in self._run(
                        request, payload, principal, voice_name or request_id, deadline, api, t0
                    ):
                        yield event
                except GatewayError as exc:
                    # The model's registry watcher may see a revocation before ours does: agree
                    # with it at once, so the voice list matches the 404 just returned.
                    if job.voice is not None and exc.code is Code.NOT_FOUND and "revoked" in exc.message:
                        self.resolver.note_revoked(resolved.voice)
                    raise
            finally:
                self.inflight -= 1
                self.metrics.inflight.set(self.inflight)

    async def _run(
        self,
        request: TritonRequest,
        payload: Payload,
        principal: Principal,
        route_key: str,
        deadline: float,
        api: str,
        t0: float,
    ) -> AsyncIterator[AudioEvent]:
        loop = asyncio.get_running_loop()
        tried: list[str] = []
        embedder: Embedder | None = None
        while True:
            if not self.pool.ready and loop.time() - self._last_health_probe > 0.5:
                self._last_health_probe = loop.time()
                await self.pool.check_health()  # Triton may be back before the next scheduled check
                self._update_gauges()
            try:
                endpoint = self.pool.pick(route_key, exclude=tried)
            except GatewayError as exc:
                raise self._unavailable(exc.message) from None
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise GatewayError(
                    Code.DEADLINE_EXCEEDED, "the request's deadline passed before synthesis started"
                )
            try:
                with self.pool.lease(endpoint):
                    async for chunk in endpoint.stream(request, remaining):
                        if embedder is None:
                            if chunk.sample_rate <= 0:
                                raise GatewayError(
                                    Code.INTERNAL, "the inference server returned no sample rate"
                                )
                            embedder = Embedder(payload, chunk.sample_rate, self.settings.watermark_key)
                            self.metrics.ttfa.labels(
                                api, str(request.params.get("stream", False)).lower()
                            ).observe(loop.time() - t0)
                            start = StreamStart(
                                request.request_id,
                                chunk.sample_rate,
                                chunk.seed,
                                request.voice,
                                request.voice_version,
                            )
                            head = np.zeros(0, np.float32)
                            if principal.policy.disclosure:
                                head = self._mark(embedder, disclosure_audio(chunk.sample_rate))
                            audio = np.concatenate([head, self._mark(embedder, chunk.audio)])
                            self.metrics.audio_seconds.labels(api).inc(audio.size / chunk.sample_rate)
                            yield AudioEvent(audio, start)
                        else:
                            audio = self._mark(embedder, chunk.audio)
                            if audio.size:
                                self.metrics.audio_seconds.labels(api).inc(audio.size / embedder.sample_rate)
                                yield AudioEvent(audio)
                    if embedder is not None:
                        rest = embedder.flush()
                        if rest.size:
                            yield AudioEvent(rest)
                    return
            except GatewayError as exc:
                if exc.code is Code.UNAVAILABLE:
                    self.pool.mark_failed(endpoint.address, exc.message)
                    self._update_gauges()
                    if embedder is None and not tried:
                        tried.append(endpoint.address)
                        if self.pool.ready:
                            self.metrics.triton_retries.inc()
                            continue
                    exc.retry_after = self.settings.retry_after_s
                raise

    def _mark(self, embedder: Embedder, audio: np.ndarray) -> np.ndarray:
        if not self.settings.watermark:
            return np.asarray(audio, np.float32)
        return embedder.process(audio)
