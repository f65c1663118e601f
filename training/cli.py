"""`tritone data ...`: build the demo corpus, validate a corpus, report clip quality."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_commands(subparsers: Any) -> None:
    """Register the `data` command group on the top-level `tritone` parser."""
    data = subparsers.add_parser(
        "data",
        help="corpora: build the demo corpus, validate .list files or folders, report clip quality",
        description="Corpus tools. See docs/DATA.md.",
    )
    data.set_defaults(func=lambda args: _print_help(data))
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    demo = sub.add_parser(
        "demo",
        help="build the bundled multi-speaker demo corpus from Debian speech synthesisers",
        description="Build the demo corpus offline and deterministically (same bytes on re-run).",
    )
    demo.add_argument("--out", type=Path, default=None, help="output folder (default: $TRITONE_HOME/demo)")
    demo.add_argument(
        "--extra-voices",
        action="store_true",
        help="also use RHVoice alan/bdl/clb (Debian non-free: needs apt sources changed, see docs/DATA.md)",
    )
    demo.add_argument(
        "--sentences", type=int, default=None, metavar="N", help="at most N sentences per language"
    )
    demo.add_argument(
        "--voices",
        default=None,
        metavar="A,B",
        help="comma-separated voice ids (default: all default voices)",
    )
    demo.add_argument(
        "--seed", type=int, default=None, help="sentence-split seed (default: the fixed project seed)"
    )
    demo.add_argument("--workers", type=int, default=None, help="parallel jobs (default: CPU count)")
    demo.add_argument("--force", action="store_true", help="rebuild even if an identical build is present")
    demo.add_argument("--list-voices", action="store_true", help="print the voice catalogue and exit")
    demo.set_defaults(func=_cmd_demo)

    validate = sub.add_parser(
        "validate",
        help="check a .list file or a folder of clips + transcripts; every problem with its line",
        description="Validate a corpus. Exit status 1 when any error is found.",
    )
    validate.add_argument("path", type=Path, help="a .list file or a folder (see docs/DATA.md for layouts)")
    validate.add_argument("--speaker", default=None, help="folders: speaker name (default: the folder name)")
    validate.add_argument(
        "--lang", default=None, help="folders: language of every clip (default: detected per clip)"
    )
    validate.add_argument("--no-audio", action="store_true", help="do not open the audio files")
    validate.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="also write the issues as JSON"
    )
    validate.add_argument(
        "--write-list",
        type=Path,
        default=None,
        metavar="OUT",
        help="write the valid utterances as a .list file",
    )
    validate.set_defaults(func=_cmd_validate)

    report = sub.add_parser(
        "report",
        help="per-clip quality report (clipping, silence, SNR, duration) with exclude decisions",
        description="Measure every clip of a corpus and decide which to exclude.",
    )
    report.add_argument("path", type=Path, help="a .list file or a folder")
    report.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON"
    )
    report.add_argument("--csv", type=Path, default=None, metavar="OUT", help="write the full report as CSV")
    report.add_argument(
        "--filtered-list",
        type=Path,
        default=None,
        metavar="OUT",
        help="write a .list of the clips that are kept",
    )
    report.add_argument("--min-duration", type=float, default=None, metavar="S")
    report.add_argument("--max-duration", type=float, default=None, metavar="S")
    report.add_argument("--min-snr", type=float, default=None, metavar="DB")
    report.add_argument(
        "--max-clipping", type=float, default=None, metavar="RATIO", help="fraction of clipped samples"
    )
    report.add_argument(
        "--max-silence", type=float, default=None, metavar="RATIO", help="fraction of silent frames"
    )
    report.add_argument("--workers", type=int, default=2)
    report.add_argument("--all", action="store_true", help="print every clip, not only excluded ones")
    report.set_defaults(func=_cmd_report)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from training.demo import DEFAULT_SEED, build_demo_corpus
    from training.demo.voices import ALL_VOICES

    if args.list_voices:
        for v in ALL_VOICES:
            tag = " [extra: Debian non-free]" if v.extra else ""
            pitch = f" pitch {v.pitch_cents:+d}c" if v.pitch_cents else ""
            print(
                f"{v.voice_id:24s} {v.lang} {v.split:8s} person={v.person:7s} {v.engine}:{v.engine_voice}{pitch}{tag}"
            )
        return 0
    voices = [v.strip() for v in args.voices.split(",") if v.strip()] if args.voices else None
    start = time.perf_counter()
    corpus = build_demo_corpus(
        args.out,
        sentences=args.sentences,
        voices=voices,
        extra_voices=args.extra_voices,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        workers=args.workers,
        force=args.force,
    )
    m = corpus.manifest
    print(
        f"demo corpus: {corpus.root} — {len(m['voices'])} voices, {m['utterances']} clips, "
        f"{m['seconds'] / 3600:.2f} h ({time.perf_counter() - start:.0f} s)"
    )
    for name, split in m["splits"].items():
        print(
            f"  {name:14s} {split['utterances']:5d} clips {split['seconds'] / 60:7.1f} min  {corpus.root / split['list']}"
        )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from training.data import load_dataset, summarize_issues, write_issues_json, write_list

    dataset = load_dataset(args.path, speaker=args.speaker, lang=args.lang, check_files=not args.no_audio)
    if dataset.issues:
        print(summarize_issues(dataset.issues), file=sys.stderr)
    speakers = dataset.speakers()
    print(
        f"{args.path}: {len(dataset.utterances)} valid utterances, {len(speakers)} speakers, "
        f"{len(dataset.errors)} errors, {len(dataset.warnings)} warnings"
    )
    if args.json:
        write_issues_json(dataset, args.json)
    if args.write_list:
        write_list(dataset.utterances, args.write_list)
        print(f"wrote {args.write_list}")
    return 0 if dataset.ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from training.data import load_dataset, summarize_issues
    from training.quality import QualityThresholds, quality_report, write_filtered_list

    dataset = load_dataset(args.path)
    if dataset.issues:
        print(summarize_issues(dataset.issues, limit=20), file=sys.stderr)
    overrides: dict[str, float] = {}
    for arg, name in (
        ("min_duration", "min_duration_s"),
        ("max_duration", "max_duration_s"),
        ("min_snr", "min_snr_db"),
        ("max_clipping", "max_clipping_ratio"),
        ("max_silence", "max_silence_ratio"),
    ):
        value = getattr(args, arg)
        if value is not None:
            overrides[name] = value
    thresholds = replace(QualityThresholds(), **overrides)
    report = quality_report(dataset, thresholds, workers=args.workers)
    for clip in report.clips if args.all else report.excluded():
        print(clip.describe())
    summary: dict[str, Any] = report.summary()
    print(json.dumps(summary, indent=2))
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.to_csv(args.csv)
    if args.filtered_list:
        write_filtered_list(report, dataset.utterances, args.filtered_list)
        print(f"wrote {args.filtered_list} ({len(report.kept())} clips)")
    return 0
