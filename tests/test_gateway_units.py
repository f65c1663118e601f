"""Gateway pieces without servers: stubs vs .proto, API keys, routing, limits, request validation."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.auth import KeyStore, TenantPolicy, add_key, hash_key, read_keys_file, revoke_key
from gateway.config import GatewaySettings
from gateway.errors import Code, GatewayError
from gateway.limits import Limiter
from gateway.proto import build
from gateway.routing import HashRing, parse_url


def test_checked_in_stubs_match_the_proto() -> None:
    assert build.differences() == [], "run: python -m gateway.proto.build"


# -- API keys ------------------------------------------------------------------------------------


def test_keys_are_hashed_at_rest_and_authenticate(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    record, key = add_key(path, "acme", "ci", {"zero_shot": True, "rate_per_s": 3.0})
    text = path.read_text()
    assert key not in text and key.split("_")[-1] not in text and hash_key(key) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = KeyStore(path)
    caller = store.authenticate(f"Bearer {key}")
    assert caller.tenant == "acme" and caller.key_id == record.id
    assert caller.policy == TenantPolicy(zero_shot=True, rate_per_s=3.0)
    for header, message in [
        (None, "missing API key"),
        ("Basic abc", "malformed"),
        ("Bearer ", "malformed"),
        ("Bearer tt_x_y", "invalid API key"),
    ]:
        with pytest.raises(GatewayError) as err:
            store.authenticate(header)
        assert err.value.code is Code.UNAUTHENTICATED and message in err.value.message


def test_empty_keys_file_refuses_everything_and_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    path.write_text("")
    store = KeyStore(path, recheck_s=0.0)
    with pytest.raises(GatewayError):
        store.authenticate("Bearer anything")
    _, key = add_key(path, "beta")
    assert store.authenticate(f"Bearer {key}").tenant == "beta"
    rec = read_keys_file(path).keys[0]
    revoke_key(path, rec.id)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    with pytest.raises(GatewayError):
        store.authenticate(f"Bearer {key}")
    path.write_text("{not json")  # a broken edit keeps the previous keys
    assert store.keys_file.keys == []
    with pytest.raises(ValueError, match="not valid JSON"):
        KeyStore(path)


def test_keys_file_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "k"
    for bad in [
        {"keys": [{"id": "a", "tenant": "../x", "sha256": "0" * 64}]},
        {"keys": [{"id": "a", "tenant": "acme", "sha256": "short"}]},
        {"tenants": {"acme": {"zero_shot": "yes"}}},
        {"tenants": {"acme": {"unknown": 1}}},
        {"version": 2},
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            KeyStore(path)


# -- routing -------------------------------------------------------------------------------------


def test_consistent_hash_is_stable_and_moves_few_keys() -> None:
    nodes = [f"10.0.0.{i}:8001" for i in range(4)]
    ring = HashRing(nodes)
    keys = [f"acme.voice{i}" for i in range(2000)]
    first = {k: ring.pick(k, {}) for k in keys}
    assert first == {k: HashRing(list(reversed(nodes))).pick(k, {}) for k in keys}  # order-independent
    spread = Counter(first.values())
    assert min(spread.values()) > 300  # roughly even
    bigger = HashRing([*nodes, "10.0.0.9:8001"])
    moved = sum(1 for k in keys if bigger.pick(k, {}) != first[k])
    assert moved < 0.3 * len(keys)  # about 1/5 move, all to the new node
    assert all(bigger.pick(k, {}) in (first[k], "10.0.0.9:8001") for k in keys)


def test_bounded_load_and_health() -> None:
    ring = HashRing(["a:1", "b:1", "c:1"])
    home = ring.pick("hot", {})
    assert home is not None
    # the home replica is saturated: the request walks on, to the same next replica every time
    load = {home: 10}
    spill = ring.pick("hot", load, c=1.25)
    assert spill != home and spill == ring.pick("hot", load, c=1.25)
    # under the bound it stays home
    assert ring.pick("hot", {home: 1, "a:1": 1, "b:1": 1, "c:1": 1}, c=1.25) == home
    # unhealthy replicas are skipped; none usable -> None
    assert ring.pick("hot", {}, usable={n for n in ring.nodes if n != home}) != home
    assert ring.pick("hot", {}, usable=set()) is None
    assert ring.pick("hot", {}, exclude=[home]) != home


def test_parse_url() -> None:
    assert parse_url("triton-headless.ns.svc:8001") == ("triton-headless.ns.svc", 8001)
    assert parse_url("grpc://127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_url("[::1]:8001") == ("::1", 8001)
    for bad in ["nohost", "host:", "host:99999", ":8001"]:
        with pytest.raises(ValueError):
            parse_url(bad)


# -- limits --------------------------------------------------------------------------------------


def test_rate_limit_and_concurrency_cap() -> None:
    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    policy = TenantPolicy(rate_per_s=2.0, burst=2, max_concurrent=1)
    with limiter.admit("t", policy):
        with pytest.raises(GatewayError) as err, limiter.admit("t", policy):
            pass
        assert err.value.code is Code.RESOURCE_EXHAUSTED and "in flight" in err.value.message
        with limiter.admit("other", policy):  # tenants are independent
            pass
    with limiter.admit("t", policy):
        pass
    with pytest.raises(GatewayError) as err, limiter.admit("t", policy):
        pass
    assert "rate limit" in err.value.message and err.value.retry_after == 1
    now[0] += 0.5  # one token back at 2/s
    with limiter.admit("t", policy):
        pass
    assert limiter.inflight("t") == 0


# -- settings ------------------------------------------------------------------------------------


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITONE_TRITON_URLS", "a:8001, b:8001")
    monkeypatch.setenv("TRITONE_HTTP_PORT", "9090")
    monkeypatch.setenv("TRITONE_PUBLIC_TENANTS", "public,shared")
    s = GatewaySettings.from_env()
    assert (
        s.triton_urls == ["a:8001", "b:8001"]
        and s.http_port == 9090
        and s.public_tenants == ["public", "shared"]
    )
    assert s.feed_interval_s <= 5
    monkeypatch.setenv("TRITONE_LOG_LEVEL", "loud")
    with pytest.raises(ValueError):
        GatewaySettings.from_env()
