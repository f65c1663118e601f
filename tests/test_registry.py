"""The MLflow adapter registry, against real MLflow: embedded sqlite and an `mlflow server`.

Every test using the `backend` fixture runs on both; the server is started once, on loopback,
by the fixture (about 12 s) and stopped by its process group id.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mlflow import MlflowClient

from adapters.errors import (
    BasePinMismatch,
    ConsentMissing,
    IntegrityError,
    PromotionRefused,
    UnsupportedFormatVersion,
    VoiceNotFound,
    VoiceRevoked,
)
from adapters.feed import ChangeFeed, forget_revoked
from adapters.format import ADAPTER_FILE, MANIFEST_FILE, BasePin, read_adapter
from adapters.gate import PromotionGate
from adapters.registry import AdapterRegistry
from adapters.store import AdapterStore
from adapters.synthetic import demo_consent, make_adapter, make_standin, save_standin
from tritone.checkpoints import weights_hash


@dataclass
class Backend:
    kind: str
    uri: str
    artifact_root: Path  # where the artifacts of this backend live on local disk
    pin: BasePin
    base_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in teardown
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # own process group: teardown stops exactly what it started
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not become healthy in 120 s")
            time.sleep(0.5)
        yield uri, root / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)  # a graceful stop takes long under load; nothing here needs it
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module", params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp(f"backend-{request.param}")
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setenv("TRITONE_HOME", str(root / "home"))
        if request.param == "sqlite":
            uri, artifacts = f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"
        else:
            uri, artifacts = request.getfixturevalue("mlflow_server")
        registry = AdapterRegistry(uri, store=AdapterStore(root / "setup-store"))
        base_dir = save_standin(make_standin(0), root / "base")
        pin = registry.register_base(base_dir)
        yield Backend(request.param, uri, artifacts, pin, base_dir)


def _unique(prefix: str = "v") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _registry(backend: Backend, tmp_path: Path, **kwargs: Any) -> AdapterRegistry:
    kwargs.setdefault("store", AdapterStore(tmp_path / "store"))
    kwargs.setdefault("gate", PromotionGate({"speaker_similarity": 0.8}, {"wer": 0.1}))
    return AdapterRegistry(backend.uri, **kwargs)


def _artifact_dir(backend: Backend, source: str) -> Path:
    """Local directory holding a version's artifacts (file store or the server's destination)."""
    if source.startswith("file:"):
        return Path(urlparse(source).path)
    assert source.startswith("mlflow-artifacts:/")
    return backend.artifact_root / source[len("mlflow-artifacts:/") :]


def _new_voice(
    backend: Backend, reg: AdapterRegistry, tmp_path: Path, *, voice: str | None = None, tenant: str = "acme",
    seed: int = 0, metrics: dict[str, float] | None = None, consent: bool = True,
) -> tuple[str, Any]:  # fmt: skip
    name = voice or _unique()
    adapter = make_adapter(
        tmp_path / f"{name}-{seed}",
        make_standin(0),
        backend.pin,
        voice=name,
        tenant=tenant,
        seed=seed,
        metrics=metrics,
    )
    info = reg.register(adapter, consent=demo_consent() if consent else None)
    return f"{tenant}.{name}", info


# --------------------------------------------------------------------------------------------


def test_register_resolve_promote_rollback_revoke(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    voice, v1 = _new_voice(backend, reg, tmp_path, seed=1)
    assert (v1.version, v1.aliases, v1.state) == (1, ("staging",), "active")
    assert v1.base == backend.pin and v1.run_id and v1.metrics["speaker_similarity"] == pytest.approx(0.91)

    staged = reg.resolve(f"{voice}@staging")
    assert staged.version == 1 and staged.content_sha256 == v1.content_sha256
    adapter = read_adapter(staged.path, expect_base=backend.pin, expect_content_sha256=v1.content_sha256)
    assert adapter.manifest.voice == voice.split(".")[1]
    with pytest.raises(VoiceNotFound, match="no 'production' alias"):
        reg.resolve(voice)

    assert reg.promote(voice).version == 1
    assert reg.resolve(voice).version == 1
    _, v2 = _new_voice(backend, reg, tmp_path, voice=voice.split(".")[1], seed=2)
    assert v2.version == 2
    promo = reg.promote(voice)
    assert (promo.version, promo.replaced) == (2, 1)
    summary = reg.show(voice).summary
    assert summary.aliases == {"staging": 2, "production": 2, "previous": 1}
    assert reg.resolve(voice).version == 2
    assert reg.resolve(f"{voice}/1").version == 1

    back = reg.rollback(voice)
    assert (back.version, back.replaced) == (1, 2)
    details = reg.show(voice)
    assert details.summary.aliases == {"staging": 2, "production": 1}
    assert [v.aliases for v in details.versions] == [("production",), ("staging",)]
    assert [v.state for v in details.versions] == ["active", "rolled_back"]
    assert reg.resolve(voice).version == 1
    with pytest.raises(VoiceNotFound, match="no previous"):
        reg.rollback(voice)

    sources = [_artifact_dir(backend, v.source) for v in details.versions]
    assert all((s / ADAPTER_FILE).is_file() for s in sources)
    local = reg.resolve(voice).path
    revocation = reg.revoke(voice)
    assert revocation.versions == [1, 2] and sorted(revocation.aliases_removed) == ["production", "staging"]
    for ref in (voice, f"{voice}@staging", f"{voice}/2"):
        with pytest.raises(VoiceRevoked, match="revoked"):
            reg.resolve(ref)
    assert not local.exists() and reg.store.list() == []
    assert all(not s.exists() or not any(s.iterdir()) for s in sources), "artifacts must be deleted"
    details = reg.show(voice)
    assert details.summary.state == "revoked" and details.summary.aliases == {}
    assert {v.state for v in details.versions} == {"revoked"}
    with pytest.raises(VoiceRevoked):
        reg.promote(voice, version=1)
    with pytest.raises(VoiceRevoked, match="never reused"):
        _new_voice(backend, reg, tmp_path, voice=voice.split(".")[1], seed=3)
    # A fresh process (empty caches) is refused just the same.
    with pytest.raises(VoiceRevoked):
        _registry(backend, tmp_path / "other").resolve(f"{voice}/1")


def test_aliases_move_atomically_under_concurrent_reads(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    voice, _ = _new_voice(backend, reg, tmp_path, seed=1)
    reg.promote(voice)
    _new_voice(backend, reg, tmp_path, voice=voice.split(".")[1], seed=2)
    model_name = f"voice.{voice}"
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        client = MlflowClient(tracking_uri=backend.uri, registry_uri=backend.uri)
        while not stop.is_set():
            try:
                seen.append(int(client.get_model_version_by_alias(model_name, "production").version))
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(4):
            reg.promote(voice, version=2)
            reg.rollback(voice)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[0]
    assert seen and set(seen) <= {1, 2}


def test_promotion_gate_and_consent(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    voice, _ = _new_voice(backend, reg, tmp_path, seed=1)
    reg.promote(voice)
    name = voice.split(".")[1]
    _new_voice(backend, reg, tmp_path, voice=name, seed=2, metrics={"speaker_similarity": 0.5, "wer": 0.3})
    with pytest.raises(PromotionRefused) as refused:
        reg.promote(voice)
    assert refused.value.reasons == ["speaker_similarity 0.5 < 0.8", "wer 0.3 > 0.1"]
    assert reg.show(voice).summary.aliases["production"] == 1

    _, unevaluated = _new_voice(backend, reg, tmp_path, voice=name, seed=3, metrics={})
    with pytest.raises(PromotionRefused, match="speaker_similarity is missing"):
        reg.promote(voice, version=unevaluated.version)
    reg.record_metrics(voice, unevaluated.version, {"speaker_similarity": 0.85, "wer": 0.05})
    assert reg.promote(voice, version=unevaluated.version).replaced == 1

    # A voice whose consent record went missing cannot be promoted, not even to staging.
    client = MlflowClient(tracking_uri=backend.uri, registry_uri=backend.uri)
    client.delete_registered_model_tag(f"voice.{voice}", "consent")
    with pytest.raises(PromotionRefused, match="no consent record"):
        reg.promote(voice, version=1)
    with pytest.raises(PromotionRefused, match="no consent record"):
        reg.promote(voice, to="staging", version=1)
    assert reg.show(voice).summary.aliases == {"staging": 3, "production": 3, "previous": 1}


def test_registration_requires_matching_consent(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    with pytest.raises(ConsentMissing, match="no consent record"):
        _new_voice(backend, reg, tmp_path, consent=False)
    other = demo_consent("consent-9999", "Someone Else")
    adapter = make_adapter(tmp_path / "x", make_standin(0), backend.pin, voice=_unique(), tenant="acme")
    with pytest.raises(ConsentMissing, match="consent-0001"):
        reg.register(adapter, consent=other)
    voice, _ = _new_voice(backend, reg, tmp_path)
    listed = {str(v.voice): v for v in reg.list_voices("acme")}
    assert listed[voice].consent == demo_consent()
    assert listed[voice].aliases == {"staging": 1}


def test_refuses_wrong_base_pin(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    fake = BasePin("tritone-base", backend.pin.version, "f" * 64)
    adapter = make_adapter(tmp_path / "a", make_standin(0), fake, voice=_unique(), tenant="acme")
    with pytest.raises(BasePinMismatch, match="pinned to base"):
        reg.register(adapter, consent=demo_consent())
    missing = BasePin("tritone-base", 999, backend.pin.weights_sha256)
    adapter = make_adapter(tmp_path / "b", make_standin(0), missing, voice=_unique(), tenant="acme")
    with pytest.raises(BasePinMismatch, match="no version 999"):
        reg.register(adapter, consent=demo_consent())
    # A server running another base refuses the voice before serving it.
    voice, _ = _new_voice(backend, reg, tmp_path)
    other_base = weights_hash(make_standin(7).state_dict())
    serving = _registry(backend, tmp_path / "srv", serving_base=other_base)
    with pytest.raises(BasePinMismatch):
        serving.resolve(f"{voice}@staging")
    assert serving.store.list() == []


def test_corrupted_artifact_is_refused_and_nothing_served(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    voice, info = _new_voice(backend, reg, tmp_path)
    target = _artifact_dir(backend, info.source) / ADAPTER_FILE
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"adapter\.safetensors"):
        reg.resolve(f"{voice}@staging")
    assert reg.store.list() == [] and list((reg.store.root / "tmp").iterdir()) == []


def test_unknown_format_version_is_refused_at_registration(backend: Backend, tmp_path: Path) -> None:
    import json

    reg = _registry(backend, tmp_path)
    adapter = make_adapter(tmp_path / "a", make_standin(0), backend.pin, voice=_unique(), tenant="acme")
    manifest = json.loads((adapter / MANIFEST_FILE).read_text())
    manifest["format_version"] = 2
    (adapter / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedFormatVersion, match="format version 2"):
        reg.register(adapter, consent=demo_consent())


def test_local_copy_corrupted_on_disk_is_replaced(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path, cache_ttl_s=0.0)
    voice, _ = _new_voice(backend, reg, tmp_path)
    path = reg.resolve(f"{voice}@staging").path
    target = path / ADAPTER_FILE
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    again = reg.resolve(f"{voice}@staging")  # cache expired: the cold path re-verifies and re-fetches
    read_adapter(again.path, expect_content_sha256=again.content_sha256)


class CountingClient:
    """Counts calls to MlflowClient methods (each is one registry round trip)."""

    def __init__(self, inner: MlflowClient) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_cold_resolve_is_one_round_trip_and_warm_is_none(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    voice, _ = _new_voice(backend, reg, tmp_path)
    reg.promote(voice)
    client = CountingClient(MlflowClient(tracking_uri=backend.uri, registry_uri=backend.uri))
    fresh = _registry(backend, tmp_path, client=client)  # shares the store, not the cache
    first = fresh.resolve(voice)
    assert client.calls == ["get_model_version_by_alias"]
    for _ in range(100):
        assert fresh.resolve(voice) is first
    assert client.calls == ["get_model_version_by_alias"]
    client.calls.clear()
    cold_store = _registry(backend, tmp_path / "cold", client=client)  # nothing on disk either
    assert cold_store.resolve(f"{voice}/1").version == 1
    assert client.calls == ["get_model_version"]  # the download goes to the artifact store
    fresh.invalidate(voice)
    fresh.resolve(voice)
    assert client.calls == ["get_model_version", "get_model_version_by_alias"]


def _resolve_in_child(
    uri: str, store_root: str, ref: str, markers: str, barrier: Any, results: Any
) -> None:  # runs in a spawned process
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    reg = AdapterRegistry(uri, store=AdapterStore(store_root))
    plain = reg._download

    def slow_download(source: str) -> Any:
        fetch = plain(source)

        def run(dst: Path) -> None:
            Path(markers, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
            time.sleep(1.0)  # hold the lock long enough that the other process must wait on it
            fetch(dst)

        return run

    reg._download = slow_download  # type: ignore[method-assign]
    barrier.wait(60)
    resolved = reg.resolve(ref)
    results.put(str(resolved.path))


def test_two_processes_download_one_intact_copy(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    voice, info = _new_voice(backend, reg, tmp_path)
    store_root, markers = tmp_path / "shared-store", tmp_path / "markers"
    markers.mkdir()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(
            target=_resolve_in_child,
            args=(backend.uri, str(store_root), f"{voice}@staging", str(markers), barrier, results),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    paths = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert paths[0] == paths[1]
    assert len(list(markers.iterdir())) == 1, "exactly one process downloads"
    store = AdapterStore(store_root)
    assert store.list() == [info.content_sha256] and store.verify(info.content_sha256)
    assert list((store_root / "tmp").iterdir()) == []


def test_change_feed_reports_changes_and_revocations(backend: Backend, tmp_path: Path) -> None:
    reg = _registry(backend, tmp_path)
    tenant = _unique("t")
    feed = ChangeFeed(reg, interval_s=0.2, tenant=tenant)
    assert feed.poll() == []
    voice, _ = _new_voice(backend, reg, tmp_path, tenant=tenant)
    [added] = feed.poll()
    assert (str(added.voice), added.kind, added.aliases, added.latest_version) == (
        voice,
        "added",
        {"staging": 1},
        1,
    )
    assert feed.poll() == []
    reg.promote(voice)
    [changed] = feed.poll()
    assert changed.kind == "changed" and changed.aliases == {"staging": 1, "production": 1}
    _new_voice(backend, reg, tmp_path, tenant=tenant, voice=voice.split(".")[1], seed=4)
    [new_version] = feed.poll()
    assert new_version.kind == "changed" and new_version.latest_version == 2

    # A server elsewhere: its watcher drops the revoked voice from its cache and disk.
    server = _registry(backend, tmp_path / "server", cache_ttl_s=3600)
    local = server.resolve(voice).path
    seen: list[Any] = []
    watcher = ChangeFeed(server, interval_s=0.2, tenant=tenant).watch(forget_revoked(server), seen.extend)
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c.kind for c in seen] == ["added"]  # the first poll primes the watcher
        reg.revoke(voice)
        while not any(c.kind == "revoked" for c in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop()
    assert [c.kind for c in seen] == ["added", "revoked"]
    assert not local.exists()
    with pytest.raises(VoiceRevoked):
        server.resolve(voice)  # the long-lived cache entry was dropped, not served
    assert watcher.errors == 0


def test_register_base_bundle_and_single_weights(backend: Backend, tmp_path: Path) -> None:
    base_mod = pytest.importorskip("tritone.models.base")
    reg = _registry(backend, tmp_path)
    assert reg.register_base(backend.base_dir) == backend.pin  # same weights: same version
    assert backend.pin.weights_sha256 == weights_hash(make_standin(0).state_dict())
    model = base_mod.BaseModel.random(base_mod.BaseModelConfig.tiny(), seed=1)
    pin = reg.register_base(model.save(tmp_path / "bundle"))
    assert pin.weights_sha256 == model.weights_sha256 and pin.version > backend.pin.version
    assert reg.find_base(model.weights_sha256) == pin == reg.base_pin(pin.version)
    assert reg.find_base("0" * 64) is None


# --------------------------------------------------------------------------------------------
# no MLflow needed


def test_gate_from_env_and_file(tmp_path: Path) -> None:
    gate = PromotionGate.from_env(
        {"TRITONE_GATE_MIN_SPEAKER_SIMILARITY": "0.9", "TRITONE_GATE_MAX_RTF": "0.5"}
    )
    assert gate.minimums == {"speaker_similarity": 0.9} and gate.maximums == {"wer": 0.25, "rtf": 0.5}
    assert gate.failures({"speaker_similarity": 0.95, "wer": 0.1, "rtf": 0.2}) == []
    assert gate.failures({"speaker_similarity": 0.95, "wer": 0.1}) == ["rtf is missing (gate needs <= 0.5)"]
    (tmp_path / "gate.json").write_text('{"min": {"speaker_similarity": 0.7}}')
    assert PromotionGate.load(tmp_path / "gate.json").maximums == {}
    (tmp_path / "bad.json").write_text('{"min": {"speaker_similarity": "high"}}')
    with pytest.raises(ValueError, match="finite number"):
        PromotionGate.load(tmp_path / "bad.json")


def test_store_put_remove_and_refuse_bad_content(tmp_path: Path) -> None:
    model = make_standin(0)
    pin = BasePin("tritone-base", 1, weights_hash(model.state_dict()))
    adapter = make_adapter(tmp_path / "a", model, pin, voice="alice")
    store = AdapterStore(tmp_path / "store")
    content, path = store.put(adapter)
    assert store.list() == [content] and store.verify(content)
    with pytest.raises(IntegrityError):  # fetched bytes that are not the promised content
        store.ensure("0" * 64, lambda dst: [shutil.copy2(f, dst / f.name) for f in adapter.iterdir()])  # type: ignore[func-returns-value]
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.path_for("../../etc")
    assert store.remove(content) and not path.exists() and not store.remove(content)


def test_gateway_resolver_lists_a_voice_as_revoked_once_a_resolution_finds_it_revoked(
    backend: Backend, tmp_path: Path
) -> None:
    """A cold resolution can learn of a revocation before the change feed's next poll; the
    voice list must agree with the 404 the caller just got, not wait for the feed."""
    from adapters.names import parse_voice_ref
    from gateway.resolver import VoiceResolver

    reg = _registry(backend, tmp_path)
    voice, _ = _new_voice(backend, reg, tmp_path)
    reg.promote(voice)
    resolver = VoiceResolver(_registry(backend, tmp_path / "gw"), feed_interval_s=3600, ttl_s=0.0)
    resolver.poll_once()  # warm catalog; the feed thread is never started, so it cannot help
    ref = parse_voice_ref(voice, default_tenant="acme")
    assert resolver.resolve(ref).version == 1
    assert voice in {str(e.voice) for e in resolver.catalog()} and resolver.known(ref.voice)

    reg.revoke(voice)
    with pytest.raises(VoiceRevoked):
        resolver.resolve(ref)  # ttl 0: a cold resolution, which reads the version's state
    assert voice not in {str(e.voice) for e in resolver.catalog()}
    assert resolver.known(ref.voice) is False
    with pytest.raises(VoiceRevoked):
        resolver.resolve(parse_voice_ref(f"{voice}/1", default_tenant="acme"))


def test_a_resolution_overlapping_a_change_is_not_cached(backend: Backend, tmp_path: Path) -> None:
    """A cold resolution that read the aliases just before a rollback and returned after the
    change feed (or `invalidate`) dropped the cache must not put the old answer back into the
    cache: it would be served until its TTL instead of within one feed interval."""
    from adapters.names import parse_voice_ref
    from gateway.resolver import VoiceResolver

    reg = _registry(backend, tmp_path)
    voice, _ = _new_voice(backend, reg, tmp_path, seed=1)
    reg.promote(voice)
    _new_voice(backend, reg, tmp_path, voice=voice.split(".")[1], seed=2)
    reg.promote(voice)  # production -> 2, previous -> 1
    ref = parse_voice_ref(voice, default_tenant="acme")

    def overlapped(resolver_cold: Any, change: Any) -> Any:
        """Wrap a cold-resolve function: read the registry, then let `change` happen, then return."""

        def cold(r: Any) -> Any:
            answer = resolver_cold(r)
            change()
            return answer

        return cold

    # the gateway's resolver (feed-driven)
    resolver = VoiceResolver(_registry(backend, tmp_path / "gw"), feed_interval_s=3600, ttl_s=3600)
    resolver.poll_once()

    def rollback_and_poll() -> None:
        reg.rollback(voice)
        assert any(c.kind == "changed" for c in resolver.poll_once())

    cold = resolver._resolve_cold
    resolver._resolve_cold = overlapped(cold, rollback_and_poll)  # type: ignore[method-assign]
    assert resolver.resolve(ref).version == 2  # what it read before the rollback
    resolver._resolve_cold = cold  # type: ignore[method-assign]
    assert resolver.resolve(ref).version == 1  # not the stale cached 2

    # the registry's own resolution cache (the tts model's), dropped by `invalidate`
    reg.promote(voice, version=2)  # production -> 2 again
    served = _registry(backend, tmp_path / "serve")
    registry_cold = served._resolve_cold

    def rollback_and_invalidate() -> None:
        reg.rollback(voice)
        served.invalidate(ref.voice)

    served._resolve_cold = overlapped(registry_cold, rollback_and_invalidate)  # type: ignore[method-assign]
    assert served.resolve(voice).version == 2
    served._resolve_cold = registry_cold  # type: ignore[method-assign]
    assert served.resolve(voice).version == 1
