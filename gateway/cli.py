"""`tritone gateway serve`, `tritone say`, `tritone watermark detect|embed`, `tritone keys ...`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


def add_commands(sub: Any) -> None:
    gw = sub.add_parser("gateway", help="the HTTP + gRPC gateway in front of Triton")
    gw_sub = gw.add_subparsers(dest="gateway_command", metavar="COMMAND")
    serve = gw_sub.add_parser(
        "serve",
        help="run the gateway (configured by TRITONE_* environment variables; flags override)",
        description="Run the gateway: HTTP (FastAPI) and gRPC on one process. See docs/GATEWAY.md.",
    )
    serve.add_argument("--host", help="listen address (TRITONE_HOST, default 0.0.0.0)")
    serve.add_argument("--http-port", type=int, help="HTTP port (TRITONE_HTTP_PORT, default 8080)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port (TRITONE_GRPC_PORT, default 50051)")
    serve.add_argument("--triton-urls", help="comma-separated Triton gRPC host:port (TRITONE_TRITON_URLS)")
    serve.add_argument("--mlflow-uri", help="adapter registry (TRITONE_MLFLOW_URI)")
    serve.add_argument("--api-keys-file", type=Path, help="API keys file (TRITONE_API_KEYS_FILE)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="TRITONE_LOG_LEVEL")
    serve.set_defaults(func=_serve)
    gw.set_defaults(func=lambda args: gw.print_help() or 2)

    say = sub.add_parser(
        "say",
        help="synthesise text through a running gateway and write a WAV",
        description="Send TEXT to a tritone gateway (HTTP) and write the audio to a WAV file.",
    )
    say.add_argument("text", help="text to speak")
    say.add_argument("--voice", default="demo", help="voice, e.g. demo, acme.alice@staging (default demo)")
    say.add_argument("--lang", default="en", help="en, zh or auto (default en)")
    say.add_argument("-o", "--out", type=Path, default=Path("out.wav"), help="output WAV (default out.wav)")
    say.add_argument(
        "--url",
        default=os.environ.get("TRITONE_GATEWAY_URL", DEFAULT_URL),
        help=f"gateway URL (TRITONE_GATEWAY_URL, default {DEFAULT_URL})",
    )
    say.add_argument(
        "--key", help="API key (default: $TRITONE_API_KEY, else data/serve/api-key from `make serve`)"
    )
    say.add_argument("--seed", type=int, help="random seed for reproducible audio")
    say.add_argument("--stream", action="store_true", help="stream and report the time to first audio")
    say.set_defaults(func=_say)

    wm = sub.add_parser("watermark", help="detect or embed the gateway's audio watermark")
    wm_sub = wm.add_subparsers(dest="watermark_command", metavar="COMMAND")
    det = wm_sub.add_parser("detect", help="recover (tenant, voice, request id) from an audio file")
    det.add_argument("file", type=Path, help="audio file (WAV, FLAC, OGG, MP3)")
    det.add_argument(
        "--key",
        default=os.environ.get("TRITONE_WATERMARK_KEY", "tritone-watermark-v1"),
        help="watermark key (TRITONE_WATERMARK_KEY)",
    )
    det.add_argument(
        "--mlflow-uri", help="registry to name the voice tag (default TRITONE_MLFLOW_URI; 'none' to skip)"
    )
    det.add_argument(
        "--api-keys-file",
        type=Path,
        default=Path(p) if (p := os.environ.get("TRITONE_API_KEYS_FILE")) else None,
        help="keys file to name the tenant tag",
    )
    det.add_argument("--json", action="store_true", help="print JSON")
    det.set_defaults(func=_detect)
    emb = wm_sub.add_parser("embed", help="watermark an audio file (for testing detection)")
    emb.add_argument("file", type=Path)
    emb.add_argument("-o", "--out", type=Path, required=True)
    emb.add_argument("--tenant", required=True)
    emb.add_argument("--voice", default="", help="tenant.name")
    emb.add_argument("--request-id", required=True, help="12 hex digits")
    emb.add_argument("--key", default=os.environ.get("TRITONE_WATERMARK_KEY", "tritone-watermark-v1"))
    emb.set_defaults(func=_embed)
    wm.set_defaults(func=lambda args: wm.print_help() or 2)

    keys = sub.add_parser("keys", help="manage the gateway's API keys file (keys hashed at rest)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND")
    default_file = os.environ.get("TRITONE_API_KEYS_FILE")

    def file_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--file",
            type=Path,
            default=Path(default_file) if default_file else None,
            required=default_file is None,
            help="the keys file (TRITONE_API_KEYS_FILE)",
        )

    def policy_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--zero-shot",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="allow zero-shot cloning from uploads",
        )
        p.add_argument(
            "--disclosure",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="prepend the spoken AI disclosure",
        )
        p.add_argument("--rate", type=float, help="requests per second")
        p.add_argument("--burst", type=int, help="burst size")
        p.add_argument("--concurrency", type=int, help="syntheses in flight at once")

    add = keys_sub.add_parser("add", help="create a key for a tenant; prints the key once")
    add.add_argument("--tenant", required=True)
    add.add_argument("--name", default="", help="a label for the key")
    file_arg(add)
    policy_args(add)
    add.set_defaults(func=_keys_add)
    lst = keys_sub.add_parser("list", help="list keys (ids, tenants) and tenant policies")
    file_arg(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_keys_list)
    rev = keys_sub.add_parser("revoke", help="remove a key by id")
    rev.add_argument("key_id")
    file_arg(rev)
    rev.set_defaults(func=_keys_revoke)
    pol = keys_sub.add_parser("policy", help="change a tenant's policy")
    pol.add_argument("tenant")
    file_arg(pol)
    policy_args(pol)
    pol.set_defaults(func=_keys_policy)
    keys.set_defaults(func=lambda args: keys.print_help() or 2)


# -- gateway serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.config import GatewaySettings
    from gateway.server import serve

    overrides: dict[str, Any] = {}
    for name in ("host", "http_port", "grpc_port", "mlflow_uri", "api_keys_file", "log_level"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.triton_urls:
        overrides["triton_urls"] = [u.strip() for u in args.triton_urls.split(",") if u.strip()]
    settings = GatewaySettings.from_env(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.api_keys_file is None and settings.api_keys_inline is None:
        print(
            "warning: no API keys configured (TRITONE_API_KEYS_FILE); every request will be refused",
            file=sys.stderr,
        )
    asyncio.run(serve(settings))
    return 0


# -- say -----------------------------------------------------------------------------------------


def _api_key(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("TRITONE_API_KEY"):
        return os.environ["TRITONE_API_KEY"]
    from tritone.config import data_dir

    path = data_dir() / "serve" / "api-key"
    if path.is_file():
        return path.read_text().strip()
    raise ValueError("no API key: pass --key or set TRITONE_API_KEY")


def _say(args: argparse.Namespace) -> int:
    import time

    body: dict[str, Any] = {"text": args.text, "voice": args.voice, "lang": args.lang}
    if args.seed is not None:
        body["params"] = {"seed": args.seed}
    if args.stream:
        body["stream"] = True
    request = urllib.request.Request(
        args.url.rstrip("/") + "/v1/tts",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {_api_key(args.key)}", "Content-Type": "application/json"},
        method="POST",
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            headers = resp.headers
            if args.stream:
                first = resp.read1(65536)
                ttfa = time.perf_counter() - t0
                data = first + resp.read()
            else:
                data = resp.read()
                ttfa = None
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]["message"]
        raise ValueError(f"gateway refused ({exc.code}): {detail}") from None
    except urllib.error.URLError as exc:
        raise ValueError(f"cannot reach the gateway at {args.url}: {exc.reason}") from None
    sr = int(headers["X-Sample-Rate"])
    if args.stream:
        import numpy as np

        from tritone.audio import write_wav

        pcm = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32767.0
        write_wav(args.out, pcm, sr)
        seconds = pcm.size / sr
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(data)
        seconds = float(headers.get("X-Audio-Seconds", "0") or 0)
    total = time.perf_counter() - t0
    extra = f", first audio after {ttfa * 1000:.0f} ms" if ttfa is not None else ""
    print(
        f"wrote {args.out} ({seconds:.2f} s at {sr} Hz) voice {headers['X-Voice']}/{headers['X-Voice-Version']} "
        f"seed {headers['X-Seed']} request {headers['X-Request-Id']} in {total:.2f} s{extra}"
    )
    return 0


# -- watermark -----------------------------------------------------------------------------------


def _names_for_tags(args: argparse.Namespace) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    from gateway.watermark import tag

    tenants: dict[int, list[str]] = {}
    voices: dict[int, list[str]] = {}
    if args.api_keys_file and Path(args.api_keys_file).is_file():
        from gateway.auth import read_keys_file

        kf = read_keys_file(Path(args.api_keys_file))
        for name in {k.tenant for k in kf.keys} | set(kf.tenants):
            tenants.setdefault(tag(name), []).append(name)
    uri = args.mlflow_uri or os.environ.get("TRITONE_MLFLOW_URI")
    if uri != "none":
        try:
            from adapters.registry import AdapterRegistry, voice_summary

            for rm in AdapterRegistry(uri).iter_voices():
                vid = voice_summary(rm).voice
                voices.setdefault(tag(str(vid)), []).append(str(vid))
                tenants.setdefault(tag(vid.tenant), [])
                if vid.tenant not in tenants[tag(vid.tenant)]:
                    tenants[tag(vid.tenant)].append(vid.tenant)
        except Exception as exc:  # naming is a convenience; the tags are the evidence
            print(f"note: cannot read the registry to name the tags: {exc}", file=sys.stderr)
    return tenants, voices


def _detect(args: argparse.Namespace) -> int:
    from gateway.watermark import detect
    from tritone.audio import load_audio

    audio, sr = load_audio(args.file)
    result = detect(audio, sr, args.key)
    if not result.found or result.payload is None:
        miss = {"found": False, "confidence": round(result.confidence, 3), "blocks": result.blocks}
        print(
            json.dumps(miss)
            if args.json
            else f"no watermark found in {args.file} (confidence {result.confidence:.2f})"
        )
        return 1
    p = result.payload
    tenants, voices = _names_for_tags(args)
    out: dict[str, Any] = {
        "found": True,
        "request_id": p.request_id_hex,
        "tenant_tag": f"{p.tenant_tag:04x}",
        "tenant": tenants.get(p.tenant_tag, []),
        "voice_tag": f"{p.voice_tag:04x}",
        "voice": voices.get(p.voice_tag, []) if p.voice_tag else ["(zero-shot)"],
        "confidence": round(result.confidence, 3),
        "blocks": result.blocks,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"watermark found in {args.file} (confidence {result.confidence:.2f})")
        print(f"  request id: {out['request_id']}")
        print(f"  tenant:     {', '.join(out['tenant']) or '?'} (tag {out['tenant_tag']})")
        print(f"  voice:      {', '.join(out['voice']) or '?'} (tag {out['voice_tag']})")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from gateway.watermark import Payload, embed
    from tritone.audio import load_audio, write_wav

    audio, sr = load_audio(args.file)
    marked = embed(audio, sr, Payload.create(args.tenant, args.voice, args.request_id), args.key)
    write_wav(args.out, marked, sr)
    print(f"wrote {args.out}")
    return 0


# -- keys ----------------------------------------------------------------------------------------


def _policy_changes(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "zero_shot": args.zero_shot,
        "disclosure": args.disclosure,
        "rate_per_s": args.rate,
        "burst": args.burst,
        "max_concurrent": args.concurrency,
    }


def _keys_add(args: argparse.Namespace) -> int:
    from gateway.auth import add_key

    record, key = add_key(args.file, args.tenant, args.name, _policy_changes(args))
    print(key)
    print(
        f"key {record.id} for tenant {record.tenant} added to {args.file}; it is not shown again",
        file=sys.stderr,
    )
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from gateway.auth import read_keys_file

    kf = read_keys_file(args.file)
    if args.json:
        print(
            json.dumps(
                {
                    "keys": [{k: v for k, v in asdict(r).items() if k != "sha256"} for r in kf.keys],
                    "tenants": {t: asdict(p) for t, p in kf.tenants.items()},
                },
                indent=2,
            )
        )
        return 0
    for r in kf.keys:
        print(f"{r.id}  tenant={r.tenant}  name={r.name or '-'}  created={r.created}")
    for t, p in sorted(kf.tenants.items()):
        print(
            f"tenant {t}: zero_shot={p.zero_shot} disclosure={p.disclosure} rate={p.rate_per_s:g}/s burst={p.burst} concurrency={p.max_concurrent}"
        )
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from gateway.auth import revoke_key

    rec = revoke_key(args.file, args.key_id)
    print(f"revoked key {rec.id} of tenant {rec.tenant}")
    return 0


def _keys_policy(args: argparse.Namespace) -> int:
    from gateway.auth import read_keys_file, set_policy, write_keys_file

    kf = read_keys_file(args.file)
    policy = set_policy(kf, args.tenant, _policy_changes(args))
    write_keys_file(args.file, kf)
    print(f"tenant {args.tenant}: {policy}")
    return 0
