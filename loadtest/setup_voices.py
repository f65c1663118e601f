"""Register many voices, tenants and API keys for a load test against `make serve`'s stack.

    python -m loadtest.setup_voices --count 64 [--tenants 4] [--home DIR] [--scenario FILE]

Works on the same `$TRITONE_HOME` (default `data/`) as `make serve`: it prepares the demo base
exactly as `make serve` does (idempotent; the shipped `demo/base` when present, else the tiny
random fallback base), registers `--count` voices `lt<t>.voice<i>` spread over `--tenants`
tenants through the adapters registry API (real adapters: a random LoRA over the serving
runtime's targets and a voice prompt built from a spoken reference clip), promotes them to
production, adds one API key per tenant to the gateway's keys file (`serve/api-keys`, re-read
by a running gateway within a second) with limits that do not throttle the test, and writes
the scenario file the Locust users read (default `$TRITONE_HOME/loadtest/scenario.json`).

Running it again reuses what exists: only missing voices are registered, keys are kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loadtest.scenario import DEFAULT_GRPC, DEFAULT_HTTP, Scenario, Voice

# Limits of the load-test tenants: high enough that the test measures the service, not the quota.
LOADTEST_POLICY = {"max_concurrent": 512, "rate_per_s": 1000.0, "burst": 1000}


def tenant_names(count: int) -> list[str]:
    return [f"lt{i}" for i in range(count)]


def ensure_keys(keys_file: Path, tenants: list[str], previous: dict[str, str]) -> dict[str, str]:
    """One working key per tenant (reusing `previous` keys still in the file), policies set."""
    from gateway.auth import add_key, hash_key, read_keys_file, set_policy, write_keys_file

    known = {(k.tenant, k.sha256) for k in read_keys_file(keys_file).keys}
    out: dict[str, str] = {}
    for tenant in tenants:
        key = previous.get(tenant)
        if key and (tenant, hash_key(key)) in known:
            out[tenant] = key
        else:
            _, out[tenant] = add_key(keys_file, tenant, "loadtest", dict(LOADTEST_POLICY))
    keys = read_keys_file(keys_file)
    for tenant in tenants:
        set_policy(keys, tenant, dict(LOADTEST_POLICY))
    write_keys_file(keys_file, keys)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.setup_voices",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--count", type=int, default=64, help="voices to register (default 64)")
    parser.add_argument(
        "--tenants", type=int, default=4, help="tenants the voices are spread over (default 4)"
    )
    parser.add_argument(
        "--home", type=Path, help="TRITONE_HOME of the stack (default: $TRITONE_HOME or data/)"
    )
    parser.add_argument("--scenario", type=Path, help="scenario file (default HOME/loadtest/scenario.json)")
    parser.add_argument("--http", default=DEFAULT_HTTP, help=f"gateway HTTP URL (default {DEFAULT_HTTP})")
    parser.add_argument("--grpc", default=DEFAULT_GRPC, help=f"gateway gRPC address (default {DEFAULT_GRPC})")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of the voices (default 8)")
    parser.add_argument("--bulk", action="store_true", help="register with fewer registry round trips")
    args = parser.parse_args(argv)
    if args.count < 1 or args.tenants < 1:
        parser.error("--count and --tenants must be >= 1")

    if args.home is not None:
        os.environ["TRITONE_HOME"] = str(args.home.resolve())
    from adapters.registry import AdapterRegistry
    from adapters.store import AdapterStore
    from gateway.demo import prepare
    from loadtest.voices import VoiceFactory, register_voices, register_voices_bulk, registered, voice_specs
    from tritone.config import data_dir

    home = data_dir()
    scenario_path = args.scenario or home / "loadtest" / "scenario.json"
    t0 = time.monotonic()
    ready = prepare(home)  # what `make serve` registers: the serving base, the demo voice, the keys file
    base_dir = Path(ready["base"]).resolve()
    registry = AdapterRegistry(ready["uri"], store=AdapterStore(home / "loadtest" / "store"))
    pin = registry.register_base(base_dir)
    tenants = tenant_names(min(args.tenants, args.count))
    specs = voice_specs(args.count, tenants, clips=16)
    missing = [s for s in specs if not registered(registry, s.ref)]
    print(f"==> {len(specs) - len(missing)} of {len(specs)} voices already registered", flush=True)
    if missing:
        factory = VoiceFactory(base_dir, pin, rank=args.rank)
        root = home / "loadtest" / "adapters" / pin.weights_sha256[:12]
        dirs = [factory.write(root, s) for s in missing]
        bulk = args.bulk or len(dirs) > 200
        (register_voices_bulk if bulk else register_voices)(registry, dirs)
        print(f"==> registered {len(dirs)} voices{' (bulk)' if bulk else ''}", flush=True)
    previous: dict[str, str] = {}
    if scenario_path.is_file():
        try:
            previous = Scenario.load(scenario_path).keys
        except (ValueError, KeyError, TypeError):
            previous = {}
    keys = ensure_keys(Path(ready["keys_file"]), tenants, previous)
    scenario = Scenario(
        voices=[Voice(s.ref, s.tenant) for s in specs],
        keys=keys,
        http=args.http,
        grpc=args.grpc,
        base=str(base_dir),
        meta={"base_sha256": pin.weights_sha256, "rank": args.rank, "home": str(home)},
    )
    scenario.save(scenario_path)
    print(
        f"==> scenario: {scenario_path} ({len(specs)} voices, {len(tenants)} tenants, base {base_dir}; "
        f"{time.monotonic() - t0:.0f} s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
