"""Voice references → immutable adapter versions, cached, kept fresh by the registry's change feed.

`resolve("acme.alice@production")` costs one registry round trip when cold and a dict lookup
when warm. A background thread polls the registry's change feed every ``feed_interval_s``
(default 2 s): a promoted, rolled back, re-registered or revoked voice has its cached
resolutions dropped, so new requests see the change within one interval, without a restart.

If the registry cannot be reached, cached resolutions keep being served (stale beyond their
TTL if need be), except for voices the feed has seen revoked; cold resolutions then fail with
UNAVAILABLE. Resolution never downloads adapter weights: Triton does that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException

from adapters.errors import AdapterError, InvalidName, VoiceNotFound, VoiceRevoked
from adapters.feed import ChangeFeed, VoiceChange
from adapters.names import VoiceId, VoiceRef
from adapters.registry import STATE_REVOKED, AdapterRegistry, voice_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedVersion:
    voice: VoiceId
    version: int
    alias: str | None


@dataclass
class CatalogEntry:
    voice: VoiceId
    aliases: dict[str, int]
    latest_version: int | None
    revoked: bool = False


@dataclass
class _Cached:
    value: ResolvedVersion
    stamp: float


@dataclass
class ResolverStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    polls: int = 0
    poll_errors: int = 0
    last_poll_ok: float | None = None  # monotonic time of the last successful poll
    last_error: str = ""
    events: list[str] = field(default_factory=list)


class RegistryUnavailable(Exception):
    """The registry could not be asked and nothing usable was cached."""


def _is_not_found(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()


class VoiceResolver:
    def __init__(
        self,
        registry: AdapterRegistry,
        *,
        feed_interval_s: float = 2.0,
        ttl_s: float = 60.0,
        on_lookup: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.feed = ChangeFeed(registry, interval_s=feed_interval_s)
        self.ttl_s = ttl_s
        self.stats = ResolverStats()
        self._on_lookup = on_lookup or (lambda result: None)
        self._cache: dict[str, _Cached] = {}
        self._catalog: dict[VoiceId, CatalogEntry] = {}
        self._revoked: set[VoiceId] = set()
        # per voice, bumped whenever the feed (or a revocation) drops its cached resolutions: a
        # cold resolve that overlapped such a change may have read the old aliases, so its
        # answer is returned but not cached (else it would be served until its TTL)
        self._changes: dict[VoiceId, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warm = threading.Event()

    # -- change feed ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-voice-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_warm(self, timeout: float) -> bool:
        return self._warm.wait(timeout)

    def poll_once(self) -> list[VoiceChange]:
        try:
            changes = self.feed.poll()
        except Exception as exc:  # the registry is down or misbehaving: keep serving the cache
            self.stats.poll_errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        self.stats.polls += 1
        self.stats.last_poll_ok = time.monotonic()
        self._apply(changes)
        self._warm.set()
        return changes

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.warning("registry change feed poll failed: %s", self.stats.last_error)
            self._stop.wait(self.feed.interval_s)

    def _apply(self, changes: list[VoiceChange]) -> None:
        with self._lock:
            for change in changes:
                vid = change.voice
                if change.kind == "removed":
                    self._catalog.pop(vid, None)
                    self._revoked.add(vid)
                elif change.kind == "revoked" or vid in self._revoked:
                    self._revoked.add(vid)
                    self._catalog[vid] = CatalogEntry(vid, {}, change.latest_version, revoked=True)
                else:
                    self._catalog[vid] = CatalogEntry(vid, dict(change.aliases), change.latest_version)
                self._drop_cached(vid)
                if change.kind != "added" or self.stats.polls > 1:
                    log.info("voice %s %s (aliases %s)", vid, change.kind, change.aliases)

    # -- reads -----------------------------------------------------------------------------------

    @property
    def warm(self) -> bool:
        return self._warm.is_set()

    def reachable(self, within_s: float) -> bool:
        last = self.stats.last_poll_ok
        return last is not None and time.monotonic() - last <= within_s

    def catalog(self) -> list[CatalogEntry]:
        with self._lock:
            return sorted((e for e in self._catalog.values() if not e.revoked), key=lambda e: str(e.voice))

    def known(self, voice: VoiceId) -> bool | None:
        """Whether the voice exists and is not revoked; None while the catalog is cold."""
        if not self.warm:
            return None
        with self._lock:
            entry = self._catalog.get(voice)
        return entry is not None and not entry.revoked

    def resolve(self, ref: VoiceRef) -> ResolvedVersion:
        """Blocking; call from a worker thread. Raises VoiceNotFound, VoiceRevoked,
        InvalidName or RegistryUnavailable."""
        key = str(ref)
        if ref.voice in self._revoked:
            raise VoiceRevoked(f"voice {ref.voice} is revoked; it can no longer be served")
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached.stamp < self.ttl_s:
            self.stats.hits += 1
            self._on_lookup("hit")
            return cached.value
        self.stats.misses += 1
        self._on_lookup("miss")
        with self._lock:
            changes = self._changes.get(ref.voice, 0)
        try:
            value = self._resolve_cold(ref)
        except VoiceRevoked:
            # The registry said so before the feed did: list and serve it as revoked from now on.
            self.note_revoked(ref.voice)
            raise
        except (AdapterError, InvalidName):
            raise
        except Exception as exc:
            if cached is not None:
                self.stats.stale += 1
                self._on_lookup("stale")
                log.warning(
                    "registry unreachable (%s); serving cached %s -> %d", exc, key, cached.value.version
                )
                return cached.value
            raise RegistryUnavailable(f"the voice registry is unreachable: {type(exc).__name__}") from exc
        with self._lock:
            if ref.voice not in self._revoked and self._changes.get(ref.voice, 0) == changes:
                self._cache[key] = _Cached(value, now)
        return value

    def note_revoked(self, voice: VoiceId) -> None:
        """Treat the voice as revoked now (revocation is irreversible): it leaves the catalog and
        its cached resolutions, without waiting for the feed's next poll."""
        with self._lock:
            self._revoked.add(voice)
            entry = self._catalog.get(voice)
            latest = entry.latest_version if entry is not None else None
            self._catalog[voice] = CatalogEntry(voice, {}, latest, revoked=True)
            self._drop_cached(voice)

    def _drop_cached(self, voice: VoiceId) -> None:
        """Forget the voice's cached resolutions (the caller holds the lock)."""
        self._changes[voice] = self._changes.get(voice, 0) + 1
        for key in [k for k, c in self._cache.items() if c.value.voice == voice]:
            del self._cache[key]

    def _resolve_cold(self, ref: VoiceRef) -> ResolvedVersion:
        client = self.registry.client
        name = ref.voice.model_name
        try:
            if ref.alias is not None:
                mv = client.get_model_version_by_alias(name, ref.alias)
            else:
                mv = client.get_model_version(name, str(ref.version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise self._explain_missing(ref) from None
            raise
        if (mv.tags or {}).get("state") == STATE_REVOKED:
            raise VoiceRevoked(f"voice {ref.voice} is revoked; it can no longer be served")
        return ResolvedVersion(ref.voice, int(mv.version), ref.alias)

    def _explain_missing(self, ref: VoiceRef) -> AdapterError:
        try:
            summary = voice_summary(self.registry.client.get_registered_model(ref.voice.model_name))
        except MlflowException as exc:
            if _is_not_found(exc):
                return VoiceNotFound(f"no voice {ref.voice}")
            raise
        if summary.state == STATE_REVOKED:
            return VoiceRevoked(f"voice {ref.voice} is revoked; it can no longer be served")
        if ref.alias is not None:
            return VoiceNotFound(f"voice {ref.voice} has no {ref.alias!r} version")
        return VoiceNotFound(f"voice {ref.voice} has no version {ref.version}")
