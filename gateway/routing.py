"""Routing requests to Triton replicas: consistent hashing on the voice, with bounded load.

Each voice should stay hot in the adapter banks of as few replicas as possible, so requests
for one voice go to the same replica (the first one clockwise from the voice's hash on a ring
of virtual nodes). To stop one popular voice from overloading its replica, a replica takes a
request only while its in-flight count is below ``ceil(c * (total + 1) / n)`` (consistent
hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018); otherwise the request
walks on to the next replica on the ring. Unhealthy replicas are skipped; adding or removing
one moves only the voices that hash next to it.

Endpoints come from ``TRITONE_TRITON_URLS``: ``host:port`` entries, each resolved to all its
addresses (a Kubernetes headless Service lists one address per ready Triton pod) and
re-resolved every few seconds; every address is health-checked (server and model ready).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import math
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from gateway.errors import Code, GatewayError
from gateway.triton_client import TritonEndpoint

log = logging.getLogger(__name__)

VNODES = 128


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring of named nodes with virtual nodes."""

    def __init__(self, nodes: Iterable[str] = (), vnodes: int = VNODES) -> None:
        self.vnodes = vnodes
        self.nodes: tuple[str, ...] = tuple(sorted(set(nodes)))
        points = sorted((_hash(f"{node}#{i}"), node) for node in self.nodes for i in range(vnodes))
        self._keys = [p[0] for p in points]
        self._owners = [p[1] for p in points]

    def walk(self, key: str) -> Iterator[str]:
        """Distinct nodes in ring order, starting at ``key``'s position."""
        if not self._keys:
            return
        start = bisect.bisect(self._keys, _hash(key))
        seen: set[str] = set()
        n = len(self._keys)
        for i in range(n):
            owner = self._owners[(start + i) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self.nodes):
                    return

    def pick(
        self,
        key: str,
        load: Mapping[str, int],
        usable: set[str] | None = None,
        c: float = 1.25,
        exclude: Iterable[str] = (),
    ) -> str | None:
        """The node for ``key``: the first usable node on the ring under the load bound."""
        excluded = set(exclude)
        candidates = [n for n in self.nodes if (usable is None or n in usable) and n not in excluded]
        if not candidates:
            return None
        total = sum(load.get(n, 0) for n in candidates)
        bound = math.ceil(c * (total + 1) / len(candidates))
        first = None
        for node in self.walk(key):
            if node not in candidates:
                continue
            if first is None:
                first = node
            if load.get(node, 0) < bound:
                return node
        return first  # unreachable in theory (the bound always leaves room); be safe


def parse_url(url: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; a ``grpc://`` prefix is tolerated) → (host, port)."""
    text = url.strip()
    for prefix in ("grpc://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Triton URL {url!r} must be host:port")
    return host, int(port_text)


@dataclass
class _Member:
    endpoint: TritonEndpoint
    source: str  # the configured host:port it came from
    healthy: bool = False
    inflight: int = 0
    last_error: str = ""
    checked_at: float = 0.0


@dataclass
class PoolStatus:
    endpoints: list[dict[str, object]] = field(default_factory=list)

    @property
    def healthy(self) -> int:
        return sum(1 for e in self.endpoints if e["healthy"])


class TritonPool:
    """The set of Triton replicas: discovery, health, and consistent-hash routing."""

    def __init__(
        self,
        urls: list[str],
        model: str = "tts",
        *,
        resolve_interval_s: float = 5.0,
        health_interval_s: float = 2.0,
        bounded_load: float = 1.25,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.sources = [parse_url(u) for u in urls]
        self.model = model
        self.resolve_interval_s = resolve_interval_s
        self.health_interval_s = health_interval_s
        self.bounded_load = bounded_load
        self.max_message_bytes = max_message_bytes
        self._members: dict[str, _Member] = {}
        self._ring = HashRing()
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy_event = asyncio.Event()
        self._last_resolve = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh_addresses()
        await self.check_health()
        self._tasks = [
            asyncio.create_task(
                self._loop(self.refresh_addresses, self.resolve_interval_s), name="triton-dns"
            ),
            asyncio.create_task(self._loop(self.check_health, self.health_interval_s), name="triton-health"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for member in list(self._members.values()):
            await member.endpoint.close()
        self._members.clear()

    async def _loop(self, step: object, interval: float) -> None:
        assert callable(step)
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Triton pool maintenance failed")

    # -- discovery and health ------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, OSError) as exc:
            log.warning("cannot resolve Triton host %s: %s", host, exc)
            return []
        out = []
        for family, _, _, _, sockaddr in infos:
            ip = str(sockaddr[0])
            out.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
        return sorted(set(out))

    async def refresh_addresses(self) -> None:
        """Re-resolve every configured host; add new addresses, drop vanished ones."""
        wanted: dict[str, str] = {}
        for host, port in self.sources:
            for address in await self._resolve(host, port):
                wanted.setdefault(address, f"{host}:{port}")
        if not wanted and self._members:
            return  # a DNS outage must not empty the pool: keep what we had
        for address in set(self._members) - set(wanted):
            member = self._members.pop(address)
            if member.inflight == 0:
                await member.endpoint.close()
            log.info("Triton endpoint %s left the pool", address)
        for address, source in wanted.items():
            if address not in self._members:
                endpoint = TritonEndpoint(address, self.model, max_message_bytes=self.max_message_bytes)
                self._members[address] = _Member(endpoint, source)
                log.info("Triton endpoint %s (%s) joined the pool", address, source)
        if set(self._ring.nodes) != set(self._members):
            self._ring = HashRing(self._members)
        self._last_resolve = time.monotonic()

    async def check_health(self) -> None:
        members = list(self._members.values())
        results = await asyncio.gather(*(m.endpoint.ready() for m in members), return_exceptions=True)
        for member, result in zip(members, results):
            ok = result is True
            if ok != member.healthy:
                if ok:
                    log.info("Triton endpoint %s is ready", member.endpoint.address)
                else:
                    log.warning("Triton endpoint %s is not ready: %s", member.endpoint.address, result)
            member.healthy = ok
            member.last_error = "" if ok else str(result)
            member.checked_at = time.monotonic()
        if any(m.healthy for m in self._members.values()):
            self._healthy_event.set()
        else:
            self._healthy_event.clear()

    def mark_failed(self, address: str, error: str) -> None:
        """A request saw the endpoint fail: stop routing to it until a health check passes."""
        member = self._members.get(address)
        if member is not None and member.healthy:
            member.healthy = False
            member.last_error = error
            log.warning("Triton endpoint %s marked unhealthy: %s", address, error)
            if not any(m.healthy for m in self._members.values()):
                self._healthy_event.clear()

    @property
    def ready(self) -> bool:
        return any(m.healthy for m in self._members.values())

    def status(self) -> PoolStatus:
        return PoolStatus(
            [
                {
                    "address": a,
                    "source": m.source,
                    "healthy": m.healthy,
                    "inflight": m.inflight,
                    "error": m.last_error,
                }
                for a, m in sorted(self._members.items())
            ]
        )

    # -- routing -----------------------------------------------------------------------------

    def pick(self, key: str, exclude: Iterable[str] = ()) -> TritonEndpoint:
        usable = {a for a, m in self._members.items() if m.healthy}
        load = {a: m.inflight for a, m in self._members.items()}
        address = self._ring.pick(key, load, usable, self.bounded_load, exclude)
        if address is None:
            raise GatewayError(Code.UNAVAILABLE, "no inference server is available; retry shortly")
        return self._members[address].endpoint

    @contextmanager
    def lease(self, endpoint: TritonEndpoint) -> Iterator[TritonEndpoint]:
        member = self._members.get(endpoint.address)
        if member is not None:
            member.inflight += 1
        try:
            yield endpoint
        finally:
            if member is not None:
                member.inflight -= 1
