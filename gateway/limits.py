"""Per-tenant rate limits (token bucket) and concurrency caps.

Both refuse at once with RESOURCE_EXHAUSTED / 429 and a Retry-After rather than queueing:
a TTS client would rather retry than wait blind. Limits are per gateway process; with N
gateway replicas a tenant's effective limits are N times the configured ones.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.auth import TenantPolicy
from gateway.errors import Code, GatewayError


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Take one token; 0.0 on success, else the seconds until one is available."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Limiter:
    """Rate and concurrency limits for every tenant, from each tenant's policy."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._inflight: dict[str, int] = {}

    def _bucket(self, tenant: str, policy: TenantPolicy, now: float) -> TokenBucket:
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = TokenBucket(
                policy.rate_per_s, policy.burst, float(policy.burst), now
            )
        elif bucket.rate != policy.rate_per_s or bucket.burst != policy.burst:  # policy changed on reload
            bucket.rate, bucket.burst = policy.rate_per_s, policy.burst
        return bucket

    @contextmanager
    def admit(self, tenant: str, policy: TenantPolicy) -> Iterator[None]:
        """Hold one of the tenant's concurrency slots for the block; refuse when over a limit."""
        with self._lock:
            now = float(self._clock())
            if self._inflight.get(tenant, 0) >= policy.max_concurrent:
                raise GatewayError(
                    Code.RESOURCE_EXHAUSTED,
                    f"tenant {tenant!r} already has {policy.max_concurrent} syntheses in flight (its limit); retry when one finishes",
                    retry_after=1,
                )
            wait = self._bucket(tenant, policy, now).take(now)
            if wait > 0:
                raise GatewayError(
                    Code.RESOURCE_EXHAUSTED,
                    f"rate limit of tenant {tenant!r} reached ({policy.rate_per_s:g} requests/s, burst {policy.burst})",
                    retry_after=max(1, math.ceil(wait)),
                )
            self._inflight[tenant] = self._inflight.get(tenant, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight[tenant] -= 1

    def inflight(self, tenant: str) -> int:
        return self._inflight.get(tenant, 0)
