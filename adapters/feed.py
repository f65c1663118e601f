"""A change feed for servers: which voices were added, changed or revoked since the last look.

Gateways and Triton replicas cannot afford a registry call per request, and MLflow has no
push notifications, so they poll: one paged ``search_registered_models`` over the voice
models (1,000 per page) returns every voice's aliases, tags and latest version. A
fingerprint of those per voice, compared with the previous poll, yields the changes.
Alias moves, new versions, consent updates and revocations all change the fingerprint.

    feed = ChangeFeed(registry, interval_s=5)
    watcher = feed.watch(on_change)   # background thread; watcher.stop() to end
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from adapters.names import VoiceId
from adapters.registry import STATE_REVOKED, AdapterRegistry, voice_summary

log = logging.getLogger(__name__)

ChangeKind = Literal["added", "changed", "revoked", "removed"]
Callback = Callable[[list["VoiceChange"]], None]


@dataclass(frozen=True)
class VoiceChange:
    voice: VoiceId
    kind: ChangeKind
    aliases: dict[str, int]
    latest_version: int | None
    fingerprint: str


@dataclass(frozen=True)
class _Seen:
    fingerprint: str
    revoked: bool


class ChangeFeed:
    """Polls the registry and reports per-voice changes since the previous poll.

    The first poll reports every existing voice as ``added`` (a server starting up learns
    the full set); later polls report only differences. Not thread-safe: one poller.
    """

    def __init__(self, registry: AdapterRegistry, interval_s: float = 5.0, tenant: str | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.registry = registry
        self.interval_s = interval_s
        self.tenant = tenant
        self._seen: dict[VoiceId, _Seen] = {}

    def poll(self) -> list[VoiceChange]:
        current: dict[VoiceId, tuple[VoiceChange, bool]] = {}
        for rm in self.registry.iter_voices(self.tenant):
            summary = voice_summary(rm)
            payload = json.dumps(
                [sorted(summary.aliases.items()), sorted((rm.tags or {}).items()), summary.latest_version],
                separators=(",", ":"),
            )
            fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:16]
            change = VoiceChange(summary.voice, "added", summary.aliases, summary.latest_version, fingerprint)
            current[summary.voice] = (change, summary.state == STATE_REVOKED)
        changes: list[VoiceChange] = []
        for vid, (now, revoked) in current.items():
            before = self._seen.get(vid)
            if before is None or before.fingerprint != now.fingerprint:
                kind: ChangeKind
                if revoked and (before is None or not before.revoked):
                    kind = "revoked"
                elif before is None:
                    kind = "added"
                else:
                    kind = "changed"
                changes.append(VoiceChange(vid, kind, now.aliases, now.latest_version, now.fingerprint))
            self._seen[vid] = _Seen(now.fingerprint, revoked)
        for vid in sorted(set(self._seen) - set(current), key=str):
            changes.append(VoiceChange(vid, "removed", {}, None, ""))
            del self._seen[vid]
        return changes

    def watch(self, *callbacks: Callback) -> Watcher:
        """Start a background thread polling every ``interval_s`` and calling ``callbacks``."""
        watcher = Watcher(self, callbacks)
        watcher.start()
        return watcher


class Watcher:
    """The polling thread of a ChangeFeed; callbacks run on it, errors are logged and polling goes on."""

    def __init__(self, feed: ChangeFeed, callbacks: Sequence[Callback]) -> None:
        self.feed = feed
        self.callbacks = list(callbacks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritone-adapter-feed", daemon=True)
        self.polls = 0
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                changes = self.feed.poll()
                self.polls += 1
                if changes:
                    for callback in self.callbacks:
                        callback(changes)
            except Exception:  # a registry outage must not kill the watcher
                self.errors += 1
                log.exception("adapter change feed poll failed")
            self._stop.wait(self.feed.interval_s)


def forget_revoked(registry: AdapterRegistry) -> Callback:
    """A callback that keeps ``registry``'s caches honest: changed voices are re-resolved on
    next use, revoked (or removed) voices are dropped from the cache and the local store."""

    def handle(changes: list[VoiceChange]) -> None:
        for change in changes:
            if change.kind in ("revoked", "removed"):
                registry.forget(change.voice)
            else:
                registry.invalidate(change.voice)

    return handle
