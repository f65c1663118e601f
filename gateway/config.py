"""Gateway settings, read from the environment (the Helm chart sets these) or given directly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


@dataclass
class GatewaySettings:
    """Everything `tritone gateway serve` can be told. Env names are given per field."""

    # TRITONE_TRITON_URLS: comma-separated host:port gRPC endpoints of Triton replicas. A host
    # name that resolves to several addresses (a headless Service) counts as one endpoint per address.
    triton_urls: list[str] = field(default_factory=lambda: ["127.0.0.1:8001"])
    # TRITONE_MLFLOW_URI: the adapter registry (default: the embedded sqlite store).
    mlflow_uri: str | None = None
    # TRITONE_API_KEYS_FILE: the API keys file (hashed keys -> tenants, tenant policies).
    api_keys_file: Path | None = None
    # TRITONE_API_KEYS: the same content inline (used when no file is named).
    api_keys_inline: str | None = None
    host: str = "0.0.0.0"  # TRITONE_HOST
    http_port: int = 8080  # TRITONE_HTTP_PORT
    grpc_port: int = 50051  # TRITONE_GRPC_PORT
    log_level: str = "info"  # TRITONE_LOG_LEVEL
    model_name: str = "tts"  # TRITONE_TRITON_MODEL
    # TRITONE_FEED_INTERVAL_S: how often the registry is polled for promotions, rollbacks and
    # revocations; a change takes effect within this interval.
    feed_interval_s: float = 2.0
    # TRITONE_RESOLVE_TTL_S: a resolved alias is re-checked at least this often even without a feed event.
    resolve_ttl_s: float = 60.0
    resolve_interval_s: float = 5.0  # TRITONE_RESOLVE_INTERVAL_S: DNS re-resolution of Triton hosts
    health_interval_s: float = 2.0  # TRITONE_HEALTH_INTERVAL_S: Triton health checks
    # TRITONE_PUBLIC_TENANTS: tenants whose voices every tenant may use.
    public_tenants: list[str] = field(default_factory=lambda: ["public"])
    max_text_chars: int = 1000  # TRITONE_MAX_TEXT_CHARS
    max_request_bytes: int = 8 * 1024 * 1024  # TRITONE_MAX_REQUEST_BYTES (HTTP body, gRPC message)
    max_response_bytes: int = 64 * 1024 * 1024  # gRPC responses
    request_timeout_s: float = 120.0  # TRITONE_REQUEST_TIMEOUT_S: server-side cap per request
    retry_after_s: int = 2  # TRITONE_RETRY_AFTER_S: advertised when Triton is unavailable
    shutdown_grace_s: float = 25.0  # TRITONE_SHUTDOWN_GRACE_S: drain time for in-flight streams
    bounded_load: float = 1.25  # TRITONE_BOUNDED_LOAD: consistent-hash load bound (>= 1)
    watermark_key: str = "tritone-watermark-v1"  # TRITONE_WATERMARK_KEY
    watermark: bool = True  # TRITONE_WATERMARK (0 only for experiments; never in production)

    @classmethod
    def from_env(cls, **overrides: object) -> GatewaySettings:
        s = cls(
            triton_urls=[
                u.strip() for u in _env("TRITONE_TRITON_URLS", "127.0.0.1:8001").split(",") if u.strip()
            ],
            mlflow_uri=os.environ.get("TRITONE_MLFLOW_URI") or None,
            api_keys_file=Path(p) if (p := os.environ.get("TRITONE_API_KEYS_FILE")) else None,
            api_keys_inline=os.environ.get("TRITONE_API_KEYS") or None,
            host=_env("TRITONE_HOST", "0.0.0.0"),
            http_port=int(_env("TRITONE_HTTP_PORT", "8080")),
            grpc_port=int(_env("TRITONE_GRPC_PORT", "50051")),
            log_level=_env("TRITONE_LOG_LEVEL", "info").lower(),
            model_name=_env("TRITONE_TRITON_MODEL", "tts"),
            feed_interval_s=float(_env("TRITONE_FEED_INTERVAL_S", "2")),
            resolve_ttl_s=float(_env("TRITONE_RESOLVE_TTL_S", "60")),
            resolve_interval_s=float(_env("TRITONE_RESOLVE_INTERVAL_S", "5")),
            health_interval_s=float(_env("TRITONE_HEALTH_INTERVAL_S", "2")),
            public_tenants=[
                t.strip() for t in _env("TRITONE_PUBLIC_TENANTS", "public").split(",") if t.strip()
            ],
            max_text_chars=int(_env("TRITONE_MAX_TEXT_CHARS", "1000")),
            max_request_bytes=int(_env("TRITONE_MAX_REQUEST_BYTES", str(8 * 1024 * 1024))),
            request_timeout_s=float(_env("TRITONE_REQUEST_TIMEOUT_S", "120")),
            retry_after_s=int(_env("TRITONE_RETRY_AFTER_S", "2")),
            shutdown_grace_s=float(_env("TRITONE_SHUTDOWN_GRACE_S", "25")),
            bounded_load=float(_env("TRITONE_BOUNDED_LOAD", "1.25")),
            watermark_key=_env("TRITONE_WATERMARK_KEY", "tritone-watermark-v1"),
            watermark=_env("TRITONE_WATERMARK", "1").lower() in _TRUE,
        )
        names = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in names:
                raise TypeError(f"unknown gateway setting {key!r}")
            setattr(s, key, value)
        s.check()
        return s

    def check(self) -> None:
        if not self.triton_urls:
            raise ValueError("TRITONE_TRITON_URLS names no Triton endpoint")
        if self.feed_interval_s <= 0 or self.resolve_ttl_s <= 0:
            raise ValueError("feed and resolve intervals must be positive")
        if self.bounded_load < 1.0:
            raise ValueError("TRITONE_BOUNDED_LOAD must be >= 1")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError(
                f"TRITONE_LOG_LEVEL must be debug, info, warning or error, not {self.log_level!r}"
            )
