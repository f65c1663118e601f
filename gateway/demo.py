"""`make serve`: prepare the demo voice, start Triton and the gateway on loopback, print how to use them.

    python -m gateway.demo [--http-port 8080] [--grpc-port 50051] [--triton-ports 8000,8001,8002]

Everything lives under ``$TRITONE_HOME`` (default ``data/``): the embedded MLflow registry
(``mlflow/mlflow.db``, sqlite, no server process), the adapter store, ``serve/api-keys`` (the
hashed keys file) and ``serve/api-key`` (the demo tenant's key, for `tritone say`).

The demo voice is ``public.demo`` (usable by every tenant as ``demo``). It comes from the
shipped demo bundle when the repository has one (``demo/base`` = base model bundle,
``demo/voice`` = adapter directory, ``demo/consent.json``); otherwise a tiny RANDOM base
model and a synthetic adapter are made, which sound like noise, and a warning says so.
Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "demo"
DEMO_VOICE = "public.demo"
DEMO_TENANT = "demo"
FALLBACK_TARGETS = (
    r"gpt\.layers\.\d+\.(self_attn\.in_proj|linear1)|sovits\.enc_p\.mrte\.c_pre|vocoder\.conv_pre"
)
REFERENCE_TEXT = "This is the demo voice of tritone, speaking for the reference clip."


def banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "!" * width, file=sys.stderr)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !", file=sys.stderr)
    print("!" * width + "\n", file=sys.stderr, flush=True)


def _reference_clip() -> tuple[Any, int]:
    import numpy as np

    from tritone.audio import load_audio

    if shutil.which("flite"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ref.wav"
            subprocess.run(
                ["flite", "-voice", "slt", "-t", REFERENCE_TEXT, "-o", str(path)], check=True, timeout=60
            )
            audio, sr = load_audio(path, target_sr=32_000)
            return audio[: int(9.5 * sr)], sr
    sr = 32_000
    t = np.arange(5 * sr) / sr
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), sr


def _fallback_demo(root: Path, registry: Any) -> tuple[Path, Path, Any]:
    """A tiny random base and a synthetic adapter for it (with a real voice prompt)."""
    import torch

    from adapters.format import write_adapter
    from adapters.synthetic import GOOD_METRICS, demo_consent, random_lora
    from adapters.util import sha256_bytes
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.pipeline import Pipeline

    base_dir = root / "base"
    if not (base_dir / "bundle.json").exists() and not any(base_dir.glob("*")):
        model = BaseModel.random(BaseModelConfig.tiny(), seed=0)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # random init leaves the tiny vocoder deaf to its input; rescale
            for mod in model.vocoder.modules():
                if isinstance(mod, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
                    mod.weight.copy_(
                        torch.randn(mod.weight.shape, generator=gen) * mod.weight[0].numel() ** -0.5
                    )
        model.eval().save(base_dir)
    model = BaseModel.load(base_dir)
    voice_dir = root / "voice"
    pin = registry.register_base(base_dir)
    if not (voice_dir / "manifest.json").exists():
        clip, sr = _reference_clip()
        prompt = Pipeline(model).build_voice_prompt(clip, sr, REFERENCE_TEXT, "en")
        write_adapter(
            voice_dir,
            voice="demo",
            tenant="public",
            base=pin,
            lora=random_lora(model, FALLBACK_TARGETS, 4, seed=7, scale=0.3),
            prompt=prompt,
            consent_id="consent-demo",
            training_data_sha256=sha256_bytes(b"synthetic demo voice"),
            metrics=GOOD_METRICS,
            source={"kind": "synthetic", "note": "make serve fallback"},
        )
    return base_dir, voice_dir, demo_consent("consent-demo", "tritone demo voice (synthetic)")


def shipped_demo(demo_dir: Path = DEMO_DIR) -> tuple[Path, Path, Path] | None:
    """(base bundle, voice adapter, consent record) of the shipped demo, or None when it is absent.

    A partial demo folder is reported (and not used) rather than half-used."""
    paths = (demo_dir / "base", demo_dir / "voice", demo_dir / "consent.json")
    present = [
        (paths[0] / "manifest.json").is_file(),
        (paths[1] / "manifest.json").is_file(),
        paths[2].is_file(),
    ]
    if all(present):
        return paths
    if any(present) or demo_dir.is_dir():
        missing = [
            f"{p.relative_to(demo_dir.parent)}" for p, ok in zip(paths, present, strict=True) if not ok
        ]
        print(f"==> {demo_dir} is incomplete (missing {', '.join(missing)}); not using it", file=sys.stderr)
    return None


def _pinned_for(voice_dir: Path, pin: Any, work: Path) -> Path:
    """The adapter as this registry can register it.

    An adapter pins its base by registry name, version and weights hash, and the version is the
    one of the registry it was trained against; here the same weights may have another version.
    Then a copy whose manifest names this registry's version is registered: the tensors, the
    voice prompt and their hashes are unchanged (a different weights hash is refused).
    """
    import json

    from adapters.format import MANIFEST_FILE, read_manifest
    from adapters.util import write_json

    manifest, _ = read_manifest(voice_dir)
    if manifest.base.weights_sha256 != pin.weights_sha256:
        raise SystemExit(
            f"{voice_dir} was trained on base {manifest.base.weights_sha256[:12]}, "
            f"but the demo base is {pin.weights_sha256[:12]}: the demo folder is inconsistent"
        )
    if manifest.base == pin:
        return voice_dir
    out = work / "voice"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(voice_dir, out)
    data = json.loads((out / MANIFEST_FILE).read_text())
    data["base"] = pin.to_dict()
    write_json(out / MANIFEST_FILE, data)
    return out


def _register_demo_voice(registry: Any, voice_dir: Path, consent: Any) -> int:
    """Register the demo voice (idempotent: the same files are the same version) and point
    production at it, so a home that served another demo voice before switches to this one."""
    from adapters.errors import PromotionRefused
    from adapters.gate import PromotionGate

    info = registry.register(voice_dir, consent=consent)
    if registry.show(DEMO_VOICE).summary.aliases.get("production") != info.version:
        try:
            registry.promote(DEMO_VOICE, version=info.version)
        except PromotionRefused as exc:
            print(f"==> warning: {exc}; serving the demo voice anyway", file=sys.stderr, flush=True)
            registry.gate = PromotionGate(minimums={}, maximums={})
            registry.promote(DEMO_VOICE, version=info.version)
    return int(info.version)


def prepare(home: Path, demo_dir: Path = DEMO_DIR) -> dict[str, Any]:
    """Register the demo base and voice (idempotent) and make the API keys. Returns paths and the key."""
    from adapters.consent import ConsentRecord
    from adapters.registry import AdapterRegistry
    from gateway.auth import add_key, read_keys_file

    serve_dir = home / "serve"
    serve_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    registry = AdapterRegistry(uri)
    shipped = shipped_demo(demo_dir)
    if shipped is not None:
        base_dir, voice_dir, consent_file = shipped
        print(f"==> demo voice: the shipped demo in {demo_dir}", flush=True)
        consent = ConsentRecord.load(consent_file)
        pin = registry.register_base(base_dir)
        voice_dir = _pinned_for(voice_dir, pin, serve_dir / "shipped")
    else:
        banner(
            [
                f"NO SHIPPED DEMO MODEL FOUND ({demo_dir}/base, voice/, consent.json).",
                "Falling back to a tiny RANDOM base model and a SYNTHETIC adapter:",
                "everything works end to end, but the audio is noise, not speech.",
            ]
        )
        base_dir, voice_dir, consent = _fallback_demo(serve_dir / "fallback", registry)
    version = _register_demo_voice(registry, voice_dir, consent)
    keys_file, key_file = serve_dir / "api-keys", serve_dir / "api-key"
    if not key_file.exists() or not read_keys_file(keys_file).keys:
        _, key = add_key(keys_file, DEMO_TENANT, "make serve", {"zero_shot": True})
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    return {
        "uri": uri,
        "base": base_dir,
        "voice": voice_dir,
        "version": version,
        "shipped": shipped is not None,
        "keys_file": keys_file,
        "key": key_file.read_text().strip(),
    }


async def _run(args: argparse.Namespace, home: Path, ready: dict[str, Any]) -> None:
    from gateway.config import GatewaySettings
    from gateway.server import GatewayServer
    from tritone.serving.server import TritonServer

    http_p, grpc_p, metrics_p = args.triton_ports
    env = {
        "TRITONE_HOME": str(home),
        "TRITONE_BASE_MODEL": str(Path(ready["base"]).resolve()),
        "TRITONE_MLFLOW_URI": ready["uri"],
        "TRITONE_TARGET": "cpu",
    }
    triton = TritonServer(
        host="127.0.0.1",
        http_port=http_p,
        grpc_port=grpc_p,
        metrics_port=metrics_p,
        env=env,
        startup_timeout_s=600,
    )
    print(f"==> starting Triton (cpu target; log {triton.log_file}) ...", flush=True)
    await asyncio.to_thread(triton.start)
    settings = GatewaySettings.from_env(
        host="127.0.0.1", http_port=args.http_port, grpc_port=args.grpc_port,
        triton_urls=[f"127.0.0.1:{grpc_p}"], mlflow_uri=ready["uri"], api_keys_file=ready["keys_file"],
    )  # fmt: skip
    server = GatewayServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        while not server.gateway.readiness()[0] and not stop.is_set():
            await asyncio.sleep(0.2)
        url = f"http://127.0.0.1:{server.http_port}"
        key = ready["key"]
        print(
            f"""
==> tritone is ready: gateway HTTP {url}, gRPC 127.0.0.1:{server.grpc_port}, Triton 127.0.0.1:{grpc_p}
    web page:  {url}/   (API key: {key})

    curl -s {url}/v1/tts -H "Authorization: Bearer {key}" -H 'Content-Type: application/json' \\
      -d '{{"text": "Hello from tritone.", "voice": "demo"}}' -o hello.wav

    .venv/bin/tritone say "Hello from tritone." --voice demo -o out.wav --url {url}

Ctrl-C stops everything.""",
            flush=True,
        )
        await stop.wait()
        print("\n==> stopping ...", flush=True)
    finally:
        await server.stop()
        await asyncio.to_thread(triton.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("TRITONE_HTTP_PORT", "8080")))
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("TRITONE_GRPC_PORT", "50051")))
    parser.add_argument(
        "--triton-ports",
        default="8000,8001,8002",
        type=lambda s: tuple(int(p) for p in s.split(",")),
        help="Triton HTTP, gRPC and metrics ports (default 8000,8001,8002)",
    )
    args = parser.parse_args(argv)
    if len(args.triton_ports) != 3:
        parser.error("--triton-ports needs three ports")
    from tritone.config import data_dir

    home = data_dir()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"==> preparing the demo voice in {home}", flush=True)
    ready = prepare(home)
    asyncio.run(_run(args, home, ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
