"""Benchmark: resolving voices among 1,000 registered ones.

    python -m adapters.bench_resolve [--voices 1000] [--tracking-uri URI]

Measures, in-process:
- a cached resolve (the resolver cache hit every request after the first takes);
- a cold resolve whose content is already on local disk (registry round trips counted);
- a cold resolve that also downloads the adapter into the local store.

Setup registers the voices with a few direct registry calls each (model, version, alias;
all adapters uploaded in one artifact batch), which is faster than the full ``register``
path; the figures measured are about resolving. Prints markdown rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tritone.benchmarking import machine, print_table

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class CountingClient:
    """Wraps an MlflowClient and counts method calls: each is one registry round trip."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attr(*args, **kwargs)

        return call


def _populate(registry: Any, root: Path, voices: int, tenant: str) -> list[str]:
    from adapters.consent import ConsentRecord
    from adapters.format import read_manifest
    from adapters.registry import ADAPTER_EXPERIMENT
    from adapters.synthetic import StandInConfig, demo_consent, make_adapter, make_standin, save_standin

    client = registry.client
    model = make_standin(0, StandInConfig(d_model=8, n_layer=1))
    pin = registry.register_base(save_standin(model, root / "base"))
    consent: ConsentRecord = demo_consent()
    staged = root / "staged"
    names = [f"v{i:05d}" for i in range(voices)]
    contents = {}
    for i, name in enumerate(names):
        out = make_adapter(staged / name, model, pin, voice=name, tenant=tenant, rank=1, seed=i)
        contents[name] = read_manifest(out)[1]
    run = client.create_run(registry._experiment_id(ADAPTER_EXPERIMENT), run_name="bench-populate")
    client.log_artifacts(run.info.run_id, str(staged), "adapters")
    client.set_terminated(run.info.run_id)
    for name in names:
        model_name = f"voice.{tenant}.{name}"
        client.create_registered_model(
            model_name,
            tags={
                "kind": "voice",
                "tenant": tenant,
                "voice": name,
                "state": "active",
                "consent": consent.to_json(),
            },
        )
        mv = client.create_model_version(
            model_name,
            source=f"{run.info.artifact_uri}/adapters/{name}",
            run_id=run.info.run_id,
            tags={
                "content_sha256": contents[name],
                "base_name": pin.name,
                "base_version": str(pin.version),
                "base_sha256": pin.weights_sha256,
                "consent_id": consent.id,
                "state": "active",
            },
        )
        client.set_registered_model_alias(model_name, "production", str(mv.version))
    return [f"{tenant}.{name}" for name in names]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voices", type=int, default=1000)
    parser.add_argument("--tracking-uri", help="default: a fresh embedded sqlite registry in a temp dir")
    parser.add_argument("--rounds", type=int, default=20, help="cached resolves per voice")
    parser.add_argument("--downloads", type=int, default=100, help="cold resolves that download")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tritone-bench-") as tmp:
        root = Path(tmp)
        os.environ["TRITONE_HOME"] = str(root / "home")
        from mlflow import MlflowClient

        from adapters.registry import AdapterRegistry
        from adapters.store import AdapterStore

        uri = args.tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
        tenant = f"bench{int(time.time())}"
        t0 = time.perf_counter()
        setup = AdapterRegistry(uri, store=AdapterStore(root / "store-setup"))
        refs = _populate(setup, root, args.voices, tenant)
        setup_s = time.perf_counter() - t0
        print(f"setup: {len(refs)} voices registered in {setup_s:.1f} s", file=sys.stderr)

        # Cold resolves that download into an empty store.
        sample = refs[: min(args.downloads, len(refs))]
        store = AdapterStore(root / "store")
        client = CountingClient(MlflowClient(tracking_uri=uri, registry_uri=uri))
        downloader = AdapterRegistry(uri, store=store, client=client)  # type: ignore[arg-type]
        download_ms = []
        for ref in sample:
            t = time.perf_counter()
            downloader.resolve(ref)
            download_ms.append((time.perf_counter() - t) * 1e3)
        # Fill the rest of the store so the next phase measures registry latency only.
        for ref in refs[len(sample) :]:
            downloader.resolve(ref)

        # Cold resolves, content already on disk: a fresh registry object, empty cache.
        client = CountingClient(MlflowClient(tracking_uri=uri, registry_uri=uri))
        registry = AdapterRegistry(uri, store=store, client=client, cache_ttl_s=3600)  # type: ignore[arg-type]
        cold_ms = []
        for ref in refs:
            t = time.perf_counter()
            registry.resolve(ref)
            cold_ms.append((time.perf_counter() - t) * 1e3)
        trips = client.calls / len(refs)

        # Cached resolves.
        cached_us = []
        for _ in range(args.rounds):
            for ref in refs:
                t = time.perf_counter_ns()
                registry.resolve(ref)
                cached_us.append((time.perf_counter_ns() - t) / 1e3)
        assert client.calls == len(refs), "cached resolves must not touch the registry"

    backend = "embedded sqlite" if args.tracking_uri is None else "mlflow server"
    command = "python -m adapters.bench_resolve" + (f" --voices {args.voices}" if args.voices != 1000 else "")
    where = machine()
    rows = [
        (
            f"resolve, cached ({len(refs)} voices, {backend})",
            f"median {statistics.median(cached_us):.1f} µs, p99 {_percentile(cached_us, 0.99):.1f} µs",
        ),
        (
            f"resolve, cold, adapter on local disk ({backend})",
            f"median {statistics.median(cold_ms):.1f} ms, p99 {_percentile(cold_ms, 0.99):.1f} ms, "
            f"{trips:.2f} registry round trips each",
        ),
        (
            f"resolve, cold, with download into the local store ({backend})",
            f"median {statistics.median(download_ms):.1f} ms, p99 {_percentile(download_ms, 0.99):.1f} ms",
        ),
    ]
    print_table(rows, command, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
