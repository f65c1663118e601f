"""`tritone build ...`: render the model repository for a target, and check graphs for TensorRT.

tritone build --model DIR --target cpu|gpu --out model_repository/ [--bank-size N --max-rank R]
tritone build --random tiny --target cpu --out /tmp/repo          (random weights: smoke runs)
tritone build --check-trt model_repository/tts/1                  (operator check only)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "export the serving graphs (ONNX, TensorRT) into the model repository"


def add_commands(subparsers: Any) -> None:
    """Add the `build` command to a `tritone` sub-parser set."""
    p = subparsers.add_parser("build", help=HELP, description=HELP)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="base model bundle directory (BaseModel.save)")
    source.add_argument("--random", metavar="PRESET", help="random weights of a preset (tiny, demo, v2)")
    source.add_argument("--check-trt", type=Path, metavar="DIR", help="only check DIR's graphs for TensorRT")
    p.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository root")
    p.add_argument("--model-name", default="tts", help="Triton model that holds the graphs (default tts)")
    p.add_argument("--model-version", default="1", help="its version folder (default 1)")
    p.add_argument("--bank-size", type=int, default=8, help="adapter slots, slot 0 included (default 8)")
    p.add_argument("--max-rank", type=int, default=16, help="largest LoRA rank a slot holds (default 16)")
    p.add_argument(
        "--lora-targets",
        nargs="+",
        metavar="REGEX",
        help="module-name regexes (default: the project's targets)",
    )
    p.add_argument("--graphs", nargs="+", help="export only these graphs")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    p.add_argument("--no-check", action="store_true", help="skip the PyTorch parity checks")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    if args.check_trt is not None:
        from build.trt_ops import main as trt_main

        return trt_main([str(args.check_trt)])
    from build.repository import build_repository, version_dir
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.serving.runtime import DEFAULT_TARGETS
    from tritone.serving.runtime_graphs import GRAPH_NAMES

    if args.model is not None:
        model = BaseModel.load(args.model)
    elif args.random:
        model = BaseModel.random(BaseModelConfig.preset(args.random))
    else:
        raise ValueError("give --model DIR (or --random PRESET for a smoke build)")
    manifest = build_repository(
        model,
        args.out,
        args.target,
        model_name=args.model_name,
        version=args.model_version,
        targets=args.lora_targets or DEFAULT_TARGETS,
        bank_size=args.bank_size,
        max_rank=args.max_rank,
        graphs=args.graphs or GRAPH_NAMES,
        check=not args.no_check,
        exporter=args.exporter,
        log=True,
    )
    directory = version_dir(args.out, args.model_name, args.model_version)
    ops = manifest["tensorrt_ops"]
    print(f"TensorRT operator check: {'ok' if ops['ok'] else ops['findings']}")
    print(f"wrote {len(manifest['graphs'])} graphs and build_manifest.json to {directory}")
    return 0
