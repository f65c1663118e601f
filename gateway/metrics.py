"""Prometheus metrics of the gateway (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
TTFA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)


class Metrics:
    """One set of collectors per gateway (its own registry, so several gateways can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tritone_gateway_requests_total",
            "Requests by API, route and status (HTTP status, or gRPC code name).",
            ["api", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tritone_gateway_request_duration_seconds",
            "Time from request to its last byte of audio, by API and route.",
            ["api", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfa = Histogram(
            "tritone_gateway_time_to_first_audio_seconds",
            "Time from request to the first audio the gateway had from Triton.",
            ["api", "stream"],
            buckets=TTFA_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            "tritone_gateway_audio_seconds_total", "Seconds of audio produced.", ["api"], registry=r
        )
        self.resolve = Counter(
            "tritone_gateway_voice_resolutions_total",
            "Voice resolutions by cache result: hit, miss (a registry call) or stale (registry down, cache used).",
            ["result"],
            registry=r,
        )
        self.inflight = Gauge("tritone_gateway_inflight_syntheses", "Syntheses in flight.", registry=r)
        self.triton_endpoints = Gauge(
            "tritone_gateway_triton_endpoints", "Triton endpoints by health.", ["state"], registry=r
        )
        self.triton_retries = Counter(
            "tritone_gateway_triton_retries_total", "Requests retried on another Triton endpoint.", registry=r
        )
