"""API keys → tenants, with per-tenant policies. Keys are stored hashed, never in clear.

The keys file (``TRITONE_API_KEYS_FILE``; in Kubernetes the Secret key ``api-keys``) is JSON:

    {
      "version": 1,
      "tenants": {
        "acme": {"zero_shot": false, "rate_per_s": 5, "burst": 10, "max_concurrent": 4,
                 "disclosure": false}
      },
      "keys": [
        {"id": "3f9c2a1b", "tenant": "acme", "sha256": "<64 hex>", "name": "ci",
         "created": "2026-01-15T10:00:00+00:00"}
      ]
    }

A key looks like ``tt_<id>_<secret>`` (the id is public, the secret is 256 random bits) and is
shown once, by ``tritone keys add``. Only ``sha256(key)`` is stored: keys are random, so a
fast hash is as strong as a slow one, and a lookup costs one hash. An empty file (or
``{}``) holds no key, so every request is refused. The file is re-read when it changes, so
rotating the Secret needs no restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from adapters.names import check_name
from gateway.errors import Code, GatewayError

log = logging.getLogger(__name__)

KEY_PREFIX = "tt_"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TenantPolicy:
    """What a tenant may do, and how much."""

    zero_shot: bool = False  # may clone from uploaded reference audio (with a consent record id)
    rate_per_s: float = 10.0  # sustained synthesis requests per second (token bucket)
    burst: int = 20  # bucket size
    max_concurrent: int = 8  # syntheses in flight at once
    disclosure: bool = False  # prepend the spoken "this voice is AI-generated" notice to every output

    def __post_init__(self) -> None:
        if not isinstance(self.zero_shot, bool) or not isinstance(self.disclosure, bool):
            raise ValueError("zero_shot and disclosure must be true or false")
        if not self.rate_per_s > 0 or self.burst < 1 or self.max_concurrent < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_concurrent >= 1")

    @classmethod
    def from_dict(cls, data: Any) -> TenantPolicy:
        if not isinstance(data, dict):
            raise ValueError("a tenant policy must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown tenant policy fields: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    sha256: str
    name: str = ""
    created: str = ""


@dataclass(frozen=True)
class Principal:
    """The caller of a request, once authenticated."""

    tenant: str
    key_id: str
    policy: TenantPolicy


@dataclass
class KeysFile:
    """The parsed keys file."""

    tenants: dict[str, TenantPolicy] = field(default_factory=dict)
    keys: list[KeyRecord] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> KeysFile:
        if not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"API keys file is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("API keys file must hold a JSON object")
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"API keys file version {data.get('version')!r} is not {FORMAT_VERSION}")
        tenants = {}
        for name, policy in (data.get("tenants") or {}).items():
            tenants[check_name(name, "tenant")] = TenantPolicy.from_dict(policy)
        keys = []
        seen: set[str] = set()
        for entry in data.get("keys") or []:
            if not isinstance(entry, dict):
                raise ValueError("each key must be a JSON object")
            rec = KeyRecord(
                id=str(entry["id"]),
                tenant=check_name(str(entry["tenant"]), "tenant"),
                sha256=str(entry["sha256"]).lower(),
                name=str(entry.get("name", "")),
                created=str(entry.get("created", "")),
            )
            if len(rec.sha256) != 64 or any(c not in "0123456789abcdef" for c in rec.sha256):
                raise ValueError(f"key {rec.id!r}: sha256 must be 64 hex digits")
            if rec.id in seen:
                raise ValueError(f"duplicate key id {rec.id!r}")
            seen.add(rec.id)
            keys.append(rec)
        return cls(tenants, keys)

    def to_json(self) -> str:
        data = {
            "version": FORMAT_VERSION,
            "tenants": {k: asdict(v) for k, v in sorted(self.tenants.items())},
            "keys": [asdict(k) for k in self.keys],
        }
        return json.dumps(data, indent=2) + "\n"

    def policy(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, TenantPolicy())


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``."""
    key_id = secrets.token_hex(4)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


class KeyStore:
    """Authenticates keys against a keys file (re-read when it changes) or inline content."""

    def __init__(self, path: Path | None = None, inline: str | None = None, recheck_s: float = 1.0) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._by_hash: dict[str, KeyRecord] = {}
        self._file = KeysFile()
        if path is not None:
            self._load(strict=True)
        elif inline is not None:
            self._install(KeysFile.parse(inline))

    def _install(self, parsed: KeysFile) -> None:
        self._file = parsed
        self._by_hash = {k.sha256: k for k in parsed.keys}

    def _load(self, strict: bool) -> None:
        assert self.path is not None
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            parsed = KeysFile.parse(self.path.read_text())
        except (OSError, ValueError, KeyError) as exc:
            if strict:
                raise ValueError(f"cannot load API keys from {self.path}: {exc}") from exc
            log.error("keeping the previous API keys: cannot reload %s: %s", self.path, exc)
            return
        self._install(parsed)
        self._stamp = stamp
        log.info(
            "loaded %d API keys for %d tenants from %s",
            len(parsed.keys),
            len({k.tenant for k in parsed.keys}),
            self.path,
        )

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._checked < self.recheck_s:
            return
        with self._lock:
            self._checked = now
            self._load(strict=False)

    @property
    def keys_file(self) -> KeysFile:
        self._maybe_reload()
        return self._file

    def authenticate(self, authorization: str | None) -> Principal:
        """``Authorization`` header (``Bearer <key>``) → the caller, or UNAUTHENTICATED."""
        self._maybe_reload()
        if not authorization:
            raise GatewayError(Code.UNAUTHENTICATED, "missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise GatewayError(
                Code.UNAUTHENTICATED, "malformed Authorization header: expected 'Bearer <key>'"
            )
        digest = hash_key(key)
        record = self._by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.sha256, digest):
            raise GatewayError(Code.UNAUTHENTICATED, "invalid API key")
        return Principal(record.tenant, record.id, self._file.policy(record.tenant))


# -- editing the file (the `tritone keys` commands) ---------------------------------------------


def read_keys_file(path: Path) -> KeysFile:
    return KeysFile.parse(path.read_text()) if path.exists() else KeysFile()


def write_keys_file(path: Path, keys: KeysFile) -> None:
    """Atomic replace, owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".api-keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(keys.to_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_key(
    path: Path, tenant: str, name: str = "", policy: dict[str, Any] | None = None
) -> tuple[KeyRecord, str]:
    """Add a key for ``tenant`` (and update its policy); returns the record and the clear key."""
    check_name(tenant, "tenant")
    keys = read_keys_file(path)
    key_id, key = new_key()
    while any(k.id == key_id for k in keys.keys):
        key_id, key = new_key()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    record = KeyRecord(key_id, tenant, hash_key(key), name, created)
    keys.keys.append(record)
    set_policy(keys, tenant, policy or {})
    write_keys_file(path, keys)
    return record, key


def set_policy(keys: KeysFile, tenant: str, changes: dict[str, Any]) -> TenantPolicy:
    current = keys.tenants.get(tenant, TenantPolicy())
    updated = replace(current, **{k: v for k, v in changes.items() if v is not None})
    keys.tenants[tenant] = updated
    return updated


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    keys = read_keys_file(path)
    for i, rec in enumerate(keys.keys):
        if rec.id == key_id:
            del keys.keys[i]
            write_keys_file(path, keys)
            return rec
    raise ValueError(f"no key with id {key_id!r} in {path}")
