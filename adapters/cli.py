"""``tritone adapters ...``: the adapter registry from the command line.

Wired into ``tritone`` through ``add_commands``; also runs alone as ``python -m adapters.cli``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

HELP = "Per-voice LoRA adapters: format, MLflow registry, promotion, revocation."

VOICE_HELP = "voice as [TENANT.]NAME (tenant defaults to --tenant)"
REF_HELP = "voice reference [TENANT.]NAME[@ALIAS|/VERSION] (default alias: production)"


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $TRITONE_MLFLOW_URI, $MLFLOW_TRACKING_URI, or sqlite under $TRITONE_HOME)",
    )
    common.add_argument(
        "--tenant", default="default", help="tenant of voices named without one (default: default)"
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return common


def _metric_pairs(values: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values or []:
        name, eq, raw = item.partition("=")
        try:
            if not eq:
                raise ValueError
            out[name.strip()] = float(raw)
        except ValueError:
            raise ValueError(f"expected NAME=NUMBER, got {item!r}") from None
    return out


def add_commands(subparsers: Any) -> None:
    """Add the ``adapters`` command group to a ``tritone`` sub-parser set."""
    group = subparsers.add_parser(
        "adapters",
        help=HELP,
        description=HELP
        + " Voices are named [TENANT.]NAME; a reference adds @ALIAS (staging, production, previous) or /VERSION.",
    )
    sub = group.add_subparsers(dest="adapters_command", metavar="ACTION")
    group.set_defaults(func=lambda args: _usage(group))
    common = _common()

    p = sub.add_parser("register-base", parents=[common], help="register base weights as tritone-base")
    p.add_argument("weights_dir", type=Path, help="directory with model.safetensors + config.json")
    p.set_defaults(func=_guarded(cmd_register_base))

    p = sub.add_parser(
        "register", parents=[common], help="register an adapter directory as a new voice version"
    )
    p.add_argument("adapter_dir", type=Path)
    p.add_argument("--consent", type=Path, help="consent record JSON (required for a new voice)")
    p.add_argument("--run-id", help="the training run that produced the adapter (lineage)")
    p.add_argument(
        "--no-stage", action="store_true", help="do not point the staging alias at the new version"
    )
    p.set_defaults(func=_guarded(cmd_register))

    p = sub.add_parser("list", parents=[common], help="list voices, their aliases and consent")
    p.add_argument("--all-tenants", action="store_true", help="list every tenant's voices")
    p.set_defaults(func=_guarded(cmd_list))

    p = sub.add_parser("show", parents=[common], help="a voice's consent record and every version")
    p.add_argument("voice", help=VOICE_HELP)
    p.set_defaults(func=_guarded(cmd_show))

    p = sub.add_parser(
        "resolve", parents=[common], help="resolve to an immutable version and a local verified copy"
    )
    p.add_argument("ref", help=REF_HELP)
    p.set_defaults(func=_guarded(cmd_resolve))

    p = sub.add_parser("promote", parents=[common], help="move staging/production to a version (gated)")
    p.add_argument("voice", help=VOICE_HELP)
    p.add_argument("--to", default="production", choices=["staging", "production"])
    p.add_argument("--version", type=int, help="version to promote (default: the staging version)")
    p.add_argument(
        "--gate", type=Path, help='gate JSON {"min": {...}, "max": {...}} (default: built-in + env)'
    )
    p.add_argument("--min", action="append", metavar="METRIC=VALUE", help="require METRIC >= VALUE")
    p.add_argument("--max", action="append", metavar="METRIC=VALUE", help="require METRIC <= VALUE")
    p.set_defaults(func=_guarded(cmd_promote))

    p = sub.add_parser("rollback", parents=[common], help="point production back at the previous version")
    p.add_argument("voice", help=VOICE_HELP)
    p.set_defaults(func=_guarded(cmd_rollback))

    p = sub.add_parser(
        "revoke", parents=[common], help="irreversibly withdraw a voice and delete its artifacts"
    )
    p.add_argument("voice", help=VOICE_HELP)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_guarded(cmd_revoke))

    p = sub.add_parser("metrics", parents=[common], help="record evaluation metrics on a version")
    p.add_argument("ref", help="[TENANT.]NAME/VERSION")
    p.add_argument("metrics", nargs="+", metavar="NAME=VALUE")
    p.set_defaults(func=_guarded(cmd_metrics))

    p = sub.add_parser("verify", parents=[common], help="verify an adapter directory's hashes and format")
    p.add_argument("adapter_dir", type=Path)
    p.add_argument("--base-sha256", help="also require this base weights hash")
    p.set_defaults(func=_guarded(cmd_verify))

    for name, helptext in (
        ("import-peft", "convert a peft save_pretrained LoRA directory into an adapter"),
        ("import-finetune", "turn a full fine-tune of the base into an adapter (per-matrix SVD)"),
    ):
        p = sub.add_parser(name, parents=[common], help=helptext)
        if name == "import-peft":
            p.add_argument("peft_dir", type=Path)
            p.add_argument(
                "--base-version", type=int, required=True, help="tritone-base version it was trained on"
            )
        else:
            p.add_argument(
                "--base",
                type=Path,
                required=True,
                help="the registered base: bundle dir, weights dir or .safetensors",
            )
            ft = p.add_mutually_exclusive_group(required=True)
            ft.add_argument("--finetuned", type=Path, help="fine-tuned weights in the same layout as --base")
            ft.add_argument(
                "--finetuned-upstream",
                nargs=2,
                type=Path,
                metavar=("S1_CKPT", "S2_PTH"),
                help="an upstream GPT-SoVITS fine-tune (s1 .ckpt and s2 .pth) of a bundle --base",
            )
            p.add_argument("--rank", type=int, required=True)
            p.add_argument("--targets", help="regex of module names to adapt (default: every 2-D/3-D weight)")
            p.add_argument(
                "--keep-other", action="store_true", help="keep changed non-matrix tensors as full tensors"
            )
        p.add_argument("-o", "--output", type=Path, required=True, help="adapter directory to write")
        p.add_argument("--voice", required=True, help=VOICE_HELP)
        p.add_argument("--prompt", type=Path, required=True, help="voice_prompt.safetensors of the voice")
        p.add_argument("--consent-id", required=True, help="id of the consent record it is made under")
        data = p.add_mutually_exclusive_group(required=True)
        data.add_argument("--training-data", type=Path, help="training data file or directory (hashed)")
        data.add_argument("--training-data-sha256", help="hash of the training data")
        p.add_argument("--metric", action="append", metavar="NAME=VALUE", help="evaluation metric")
        p.set_defaults(func=_guarded(cmd_import_peft if name == "import-peft" else cmd_import_finetune))

    p = sub.add_parser("watch", parents=[common], help="print voice changes as the change feed sees them")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    p.add_argument(
        "--polls", type=int, default=0, help="stop after this many polls (default: run until Ctrl-C)"
    )
    p.set_defaults(func=_guarded(cmd_watch))


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Registry failures (server down, bad URI) become one readable error line, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from mlflow.exceptions import MlflowException

        from adapters.errors import AdapterError

        try:
            return func(args)
        except MlflowException as exc:
            raise AdapterError(f"registry error: {exc.message}") from exc
        except FileExistsError as exc:
            raise AdapterError(str(exc)) from exc

    run.__name__ = func.__name__
    return run


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _registry(args: argparse.Namespace, **kwargs: Any) -> Any:
    from adapters.registry import AdapterRegistry

    return AdapterRegistry(args.tracking_uri, default_tenant=args.tenant, **kwargs)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else text)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M") if ms else "-"


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def cmd_register_base(args: argparse.Namespace) -> int:
    pin = _registry(args).register_base(args.weights_dir)
    _emit(args, pin.to_dict(), f"registered base {pin}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from adapters.consent import ConsentRecord

    consent = ConsentRecord.load(args.consent) if args.consent else None
    info = _registry(args).register(
        args.adapter_dir, consent=consent, run_id=args.run_id, stage=not args.no_stage
    )
    staged = " (staging)" if "staging" in info.aliases else ""
    _emit(
        args,
        {
            "voice": str(info.voice),
            "version": info.version,
            "content_sha256": info.content_sha256,
            "run_id": info.run_id,
        },
        f"registered {info.voice} version {info.version}{staged}\n"
        f"  content  {info.content_sha256}\n  run      {info.run_id}\n  base     {info.base}",
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    voices = _registry(args).list_voices(None if args.all_tenants else args.tenant)
    rows = [
        [
            str(v.voice),
            v.state,
            str(v.aliases.get("production", "-")),
            str(v.aliases.get("staging", "-")),
            str(v.aliases.get("previous", "-")),
            str(v.latest_version or "-"),
            f"{v.consent.id} ({v.consent.speaker}, {v.consent.date})" if v.consent else "MISSING",
        ]
        for v in voices
    ]
    data = [
        {
            "voice": str(v.voice),
            "state": v.state,
            "aliases": v.aliases,
            "latest_version": v.latest_version,
            "consent": v.consent.to_dict() if v.consent else None,
        }
        for v in voices
    ]
    text = _table(rows, ["VOICE", "STATE", "PRODUCTION", "STAGING", "PREVIOUS", "LATEST", "CONSENT"])
    _emit(args, data, text if voices else "no voices registered")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    details = _registry(args).show(args.voice)
    s = details.summary
    lines = [f"voice    {s.voice}", f"state    {s.state}"]
    lines.append("aliases  " + (", ".join(f"{k} -> {v}" for k, v in sorted(s.aliases.items())) or "none"))
    if s.consent:
        c = s.consent
        lines.append(
            f"consent  {c.id}: speaker {c.speaker!r}, granted by {c.granted_by!r}, scope {c.scope!r}, {c.date}"
        )
        lines.append(f"         evidence sha256 {c.evidence_sha256}")
    else:
        lines.append("consent  MISSING")
    rows = [
        [
            str(v.version),
            v.state,
            ",".join(v.aliases) or "-",
            " ".join(f"{k}={m:.3g}" for k, m in sorted(v.metrics.items())) or "-",
            f"v{v.base.version}",
            v.content_sha256[:12],
            v.run_id[:12],
            _when(v.created_ms),
        ]
        for v in details.versions
    ]
    lines += [
        "",
        _table(rows, ["VERSION", "STATE", "ALIASES", "METRICS", "BASE", "CONTENT", "RUN", "CREATED"]),
    ]
    data = {
        "voice": str(s.voice),
        "state": s.state,
        "aliases": s.aliases,
        "consent": s.consent.to_dict() if s.consent else None,
        "versions": [
            {**{k: v for k, v in asdict(v).items() if k not in ("voice", "tags")}, "voice": str(v.voice)}
            for v in details.versions
        ],
    }
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    r = _registry(args).resolve(args.ref)
    data = {
        "voice": str(r.voice),
        "version": r.version,
        "alias": r.alias,
        "content_sha256": r.content_sha256,
        "path": str(r.path),
        "base": r.base.to_dict(),
    }
    via = f" (via @{r.alias})" if r.alias else ""
    _emit(
        args,
        data,
        f"{r.voice}/{r.version}{via}\n  path     {r.path}\n  content  {r.content_sha256}\n  base     {r.base}",
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from adapters.gate import PromotionGate

    gate = PromotionGate.load(args.gate) if args.gate else PromotionGate.from_env()
    if args.min or args.max:
        gate = PromotionGate(
            {**gate.minimums, **_metric_pairs(args.min)}, {**gate.maximums, **_metric_pairs(args.max)}
        )
    p = _registry(args, gate=gate).promote(args.voice, to=args.to, version=args.version)
    moved = (
        f" (was {p.replaced}" + (", now previous)" if p.alias == "production" else ")") if p.replaced else ""
    )
    _emit(args, asdict(p) | {"voice": str(p.voice)}, f"{p.voice}: {p.alias} -> version {p.version}{moved}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    p = _registry(args).rollback(args.voice)
    _emit(
        args,
        asdict(p) | {"voice": str(p.voice)},
        f"{p.voice}: production -> version {p.version} (rolled back from {p.replaced or '-'})",
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from adapters.names import parse_voice_id

    vid = parse_voice_id(args.voice, args.tenant)
    if not args.yes:
        print(
            f"Revoking {vid} removes its aliases, marks every version revoked and deletes its artifacts.\n"
            f"This cannot be undone. Type the voice name ({vid}) to confirm: ",
            end="",
            flush=True,
        )
        answer = sys.stdin.readline().strip()
        if answer != str(vid):
            print("\nnot confirmed; nothing was changed", file=sys.stderr)
            return 1
    r = _registry(args).revoke(vid)
    _emit(
        args,
        asdict(r) | {"voice": str(r.voice)},
        f"revoked {r.voice}: versions {', '.join(map(str, r.versions)) or '-'}; "
        f"aliases removed: {', '.join(r.aliases_removed) or '-'}; artifacts deleted for "
        f"{len(r.artifacts_deleted)} version(s); local copies removed: {r.local_copies_removed}",
    )
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from adapters.names import parse_voice_ref

    ref = parse_voice_ref(args.ref, args.tenant)
    if ref.version is None:
        raise ValueError("name a version: [TENANT.]NAME/VERSION")
    metrics = _metric_pairs(args.metrics)
    _registry(args).record_metrics(ref.voice, ref.version, metrics)
    _emit(
        args,
        metrics,
        f"{ref.voice}/{ref.version}: recorded " + ", ".join(f"{k}={v:g}" for k, v in metrics.items()),
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from adapters.format import read_adapter

    adapter = read_adapter(args.adapter_dir, expect_base=args.base_sha256)
    m = adapter.manifest
    text = (
        f"ok: {m.tenant}.{m.voice}, {len(m.targets)} LoRA target(s) rank {m.rank}, "
        f"{len(m.modules_to_save)} full module(s), base {m.base}\n  content  {adapter.content_sha256}"
    )
    _emit(args, {"ok": True, "content_sha256": adapter.content_sha256, **m.to_dict()}, text)
    return 0


def _import_common(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.names import parse_voice_id
    from adapters.util import sha256_tree
    from tritone.voice import VoicePrompt

    vid = parse_voice_id(args.voice, args.tenant)
    return {
        "voice": vid.name,
        "tenant": vid.tenant,
        "prompt": VoicePrompt.load(args.prompt),
        "consent_id": args.consent_id,
        "training_data_sha256": args.training_data_sha256 or sha256_tree(args.training_data),
        "metrics": _metric_pairs(args.metric),
    }


def cmd_import_peft(args: argparse.Namespace) -> int:
    from adapters.peft_import import convert_peft

    common = _import_common(args)
    base = _registry(args).base_pin(args.base_version)
    out = convert_peft(args.peft_dir, args.output, base=base, **common)
    _emit(args, {"path": str(out)}, f"wrote {out} (base {base})")
    return 0


def cmd_import_finetune(args: argparse.Namespace) -> int:
    from adapters.base import load_base, load_state, load_upstream_finetune
    from adapters.errors import BasePinMismatch
    from adapters.svd_import import import_finetune

    common = _import_common(args)
    base_state, base_sha = load_base(args.base)
    if args.finetuned_upstream:
        s1, s2 = args.finetuned_upstream
        ft_state = load_upstream_finetune(s1, s2, base_state)
    else:
        ft_state = load_state(args.finetuned)
    pin = _registry(args).find_base(base_sha)
    if pin is None:
        raise BasePinMismatch(
            f"{args.base} is not a registered tritone-base; register it first (register-base)"
        )
    out, result = import_finetune(
        base_state,
        ft_state,
        args.rank,
        args.output,
        base_pin=pin,
        base_sha256=base_sha,
        targets=args.targets,
        keep_other=args.keep_other,
        **common,
    )
    r = result.report
    text = (
        f"wrote {out}: {len(result.lora)} matrices at rank <= {args.rank} over base {pin}\n"
        f"  relative reconstruction error  max {r['max_rel_error']:.3g}, mean {r['mean_rel_error']:.3g}\n"
        f"  layer output difference        max {r['max_output_rel_diff']:.3g}\n"
        f"  kept full: {len(r['kept_full'])}, dropped changed tensors: {len(r['dropped'])}"
    )
    _emit(args, {"path": str(out), **r}, text)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from adapters.feed import ChangeFeed

    feed = ChangeFeed(_registry(args), interval_s=args.interval)
    polls = 0
    while True:
        for c in feed.poll():
            aliases = ", ".join(f"{k}->{v}" for k, v in sorted(c.aliases.items())) or "-"
            stamp = time.strftime("%H:%M:%S")
            print(
                f"{stamp} {c.kind:8} {c.voice}  aliases {aliases}  latest {c.latest_version or '-'}",
                flush=True,
            )
        polls += 1
        if args.polls and polls >= args.polls:
            return 0
        time.sleep(args.interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritone")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``adapters`` alone: ``python -m adapters.cli list`` == ``tritone adapters list``."""
    parser = build_parser()
    args = parser.parse_args(["adapters", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, PermissionError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
