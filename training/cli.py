"""`tritone data ...` (corpora), `tritone train ...` (base model, voice adapters, the demo) and
`tritone eval` (clone quality)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
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
        "--sentences", type=int, default=None, metavar="N", help="at most N written sentences per language"
    )
    demo.add_argument(
        "--generated",
        type=int,
        default=0,
        metavar="N",
        help="generated English sentences for train_generated.list (default 0; the demo's text stage: 6000)",
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

    add_train_commands(subparsers)
    add_eval_command(subparsers)


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
        generated=args.generated,
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
            f"  {name:16s} {split['utterances']:5d} clips {split['seconds'] / 60:7.1f} min  {corpus.root / split['list']}"
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


# ---------------------------------------------------------------------------------------------
# tritone train ...


def add_train_commands(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the base model, a voice adapter, or the bundled demo",
        description="Training. See docs/TRAINING.md.",
    )
    train.set_defaults(func=lambda args: _print_help(train))
    sub = train.add_subparsers(dest="train_command", metavar="SUBCOMMAND")

    base = sub.add_parser(
        "base",
        help="train the base model (SSL/quantizer, GPT, SoVITS + vocoder), export and register it",
        description=(
            "Train a base model stage by stage (prep, ssl, encode, gpt, aligner, sovits, export, register). "
            "Every stage resumes from its checkpoint. Works under torchrun for multi-process DDP."
        ),
    )
    base.add_argument(
        "--train-list",
        type=Path,
        action="append",
        required=True,
        help="training .list file; repeat it to train on several lists as one",
    )
    base.add_argument("--eval-list", type=Path, required=True, help="held-out .list file (same speakers)")
    base.add_argument("--run-dir", type=Path, required=True, help="where checkpoints and the result go")
    base.add_argument(
        "--preset",
        default="demo",
        help="model size: tiny, demo or v2 (default demo); tiny-spectral, demo-spectral with the spectral generator",
    )
    base.add_argument(
        "--vocoder",
        default=None,
        metavar="KIND",
        help="generator kind (hifigan, spectral) instead of the preset's or --init's (its weights then start fresh)",
    )
    base.add_argument(
        "--codebook-size",
        type=int,
        default=None,
        metavar="N",
        help="semantic codebook entries (default: the preset's or --init's, 1024); with --init, a new "
        "codebook is fitted by k-means over its SSL features and the GPT trains from scratch",
    )
    base.add_argument(
        "--ssl-blocks",
        type=int,
        default=None,
        metavar="N",
        help="residual blocks of the built-in SSL encoder (default: the preset's or --init's); with "
        "--init, a fresh encoder is trained, a codebook fitted over it, the GPT trained from scratch",
    )
    base.add_argument(
        "--ssl-dilation-cycle",
        type=int,
        default=None,
        metavar="C",
        help="dilate the SSL encoder's block i by 2^(i mod C) (default: the preset's or --init's, 1 = none)",
    )
    base.add_argument("--stage", default="all", help="one stage, or all (default)")
    base.add_argument("--seed", type=int, default=1234)
    base.add_argument(
        "--init", type=Path, default=None, help="base bundle to fine-tune from (e.g. an upstream import)"
    )
    base.add_argument(
        "--init-s1", type=Path, default=None, help="upstream s1 .ckpt to fine-tune from (with --init-s2)"
    )
    base.add_argument(
        "--init-s2", type=Path, default=None, help="upstream s2 .pth to fine-tune from (with --init-s1)"
    )
    base.add_argument(
        "--hubert-dir", type=Path, default=None, help="HuBERT directory for --init-s1/--init-s2"
    )
    base.add_argument("--bert-dir", default=None, help="Chinese BERT directory (zh BERT features)")
    base.add_argument("--ssl-steps", type=int, default=None)
    base.add_argument("--gpt-steps", type=int, default=None)
    base.add_argument(
        "--gpt-from-scratch",
        action="store_true",
        help="with --init: train the GPT from random weights over the init's tokens (SoVITS still continues)",
    )
    base.add_argument(
        "--gpt-align-weight",
        type=float,
        default=None,
        help="weight of the GPT's guided-attention loss (text attention pulled to the diagonal; default 0 = off)",
    )
    base.add_argument(
        "--gpt-align-heads",
        type=int,
        default=None,
        help="how many heads of every GPT layer the guided-attention loss guides (default 1)",
    )
    base.add_argument("--sovits-steps", type=int, default=None)
    base.add_argument(
        "--gan-start", type=int, default=None, help="SoVITS steps before the discriminators join"
    )
    base.add_argument(
        "--prior-mel-weight",
        type=float,
        default=None,
        help="weight of the prior mean's linear log-mel read-out loss (SoVITS, training only)",
    )
    base.add_argument(
        "--sovits-batch", type=int, default=None, help="SoVITS clips per batch and process (default 8)"
    )
    base.add_argument(
        "--kl-weight", type=float, default=None, help="weight of the SoVITS KL term (default 1, as upstream)"
    )
    base.add_argument(
        "--stft-weight",
        type=float,
        default=None,
        help="weight of the SoVITS generator's multi-resolution STFT loss (default 0: off, as upstream)",
    )
    base.add_argument(
        "--magnitude-weight",
        type=float,
        default=None,
        help="weight of the spectral generator's direct log-magnitude L1 (default 0: off)",
    )
    base.add_argument(
        "--mrte-align-weight",
        type=float,
        default=None,
        help="weight of the guided-attention cost of SoVITS's MRTE attention over the phones (default 0: off)",
    )
    base.add_argument(
        "--mrte-lookup",
        choices=("content", "content+place", "place", "aligned"),  # s2_modules.MRTE_LOOKUPS (lazily)
        default=None,
        help="how SoVITS's MRTE frames find their phones: by what they sound like (content, upstream's), "
        "also by their place in the sentence (content+place), by place alone (place), or each given its "
        "phone by a token aligner the aligner stage trains (aligned; not exportable yet); a model "
        "change, over --init the place prior starts mild (default: the preset's or init's)",
    )
    base.add_argument(
        "--aligner-steps",
        type=int,
        default=None,
        help="training steps of the token aligner (the aligned lookup's; default 2000)",
    )
    base.add_argument(
        "--content-corruption",
        type=float,
        default=None,
        help="share of the semantic frames SoVITS's prior reads replaced by random codes in training, "
        "so it learns to read the phones (default 0: off)",
    )
    base.add_argument(
        "--content-cut",
        type=float,
        default=None,
        help="share of the training rows whose SoVITS prior gets its content only through the phones "
        "MRTE looks up (default 0: off)",
    )
    base.add_argument(
        "--posterior-mean-steps",
        type=int,
        default=None,
        help="first SoVITS steps in which the generator vocodes the posterior's mean, not a sample",
    )
    base.add_argument(
        "--prior-target",
        choices=("sample", "mean"),  # training.train_sovits.PRIOR_TARGETS (imported lazily)
        default=None,
        help="what the SoVITS prior is fitted to: a posterior sample (KL, as upstream; default) or "
        "the posterior's mean, detached (pair with --posterior-mean-steps)",
    )
    base.add_argument(
        "--prior-start",
        type=int,
        default=None,
        help="SoVITS step from which the generator trains on the inference path",
    )
    base.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    base.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: one GPU per process where CUDA is available (torchrun: GPU LOCAL_RANK), else CPU",
    )
    base.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the registry's)")
    base.add_argument("--no-progress", action="store_true", help="no progress bars")
    base.set_defaults(func=_cmd_train_base)

    adapter = sub.add_parser(
        "adapter",
        help="train a voice's LoRA adapter from 1-5 minutes of audio, evaluate and register it (staging)",
        description=(
            "Train a per-speaker LoRA adapter over a base model, build its voice prompt, evaluate it "
            "against the speaker's real recordings and the base's zero-shot clone, write the adapter "
            "directory and register it as voice.<tenant>.<name> at alias staging."
        ),
    )
    adapter.add_argument("--voice", required=True, help="voice name")
    adapter.add_argument("--tenant", default="default", help="tenant (default: default)")
    adapter.add_argument(
        "--audio", required=True, type=Path, help="folder of clips + transcripts, or a .list"
    )
    adapter.add_argument("--consent", required=True, type=Path, help="consent record (JSON)")
    adapter.add_argument("--base", type=Path, default=None, help="base bundle (default: demo/base)")
    adapter.add_argument(
        "--out",
        type=Path,
        default=None,
        help="adapter directory (default: $TRITONE_HOME/adapters/<tenant>.<voice>)",
    )
    adapter.add_argument("--speaker", default=None, help="speaker to take from a multi-speaker .list")
    adapter.add_argument("--lang", default=None, help="language of a folder's transcripts")
    adapter.add_argument(
        "--ref", type=Path, default=None, help="reference clip for the voice prompt (3-10 s)"
    )
    adapter.add_argument("--ref-text", default=None, help="transcript of --ref")
    adapter.add_argument(
        "--eval-list", type=Path, default=None, help="held-out sentences of the speaker (.list)"
    )
    adapter.add_argument("--eval-sentences", type=int, default=None, help="evaluate on at most N sentences")
    adapter.add_argument("--steps", type=int, default=None)
    adapter.add_argument("--rank", type=int, default=None)
    adapter.add_argument("--alpha", type=float, default=None)
    adapter.add_argument("--lr", type=float, default=None)
    adapter.add_argument(
        "--magnitude-weight",
        type=float,
        default=None,
        help="weight of the spectral generator's direct log-magnitude L1 (default 0: off)",
    )
    adapter.add_argument(
        "--targets",
        default=None,
        help="comma-separated groups (default: all): gpt,ref,mrte,flow,vocoder,vocoder_body",
    )
    adapter.add_argument(
        "--max-minutes", type=float, default=None, help="use at most this much audio (default 5)"
    )
    adapter.add_argument("--seed", type=int, default=1234)
    adapter.add_argument("--threads", type=int, default=None)
    adapter.add_argument(
        "--no-register", action="store_true", help="write the adapter but do not register it"
    )
    adapter.add_argument("--tracking-uri", default=None)
    adapter.add_argument("--no-progress", action="store_true")
    adapter.set_defaults(func=_cmd_train_adapter)

    demo = sub.add_parser(
        "demo",
        help="reproduce the shipped demo: base model + demo voice(s) under demo/, with the quality report",
        description="Run the demo recipe (training/recipes/demo.py). See docs/TRAINING.md.",
    )
    demo.add_argument(
        "--corpus", type=Path, default=None, help="demo corpus folder (default: $TRITONE_HOME/demo)"
    )
    demo.add_argument(
        "--run-dir", type=Path, default=None, help="work folder (default: $TRITONE_HOME/runs/demo)"
    )
    demo.add_argument(
        "--out", type=Path, default=None, help="where the shipped artifacts go (default: <repo>/demo)"
    )
    demo.add_argument(
        "--voices", default="flite_rms", help="held-out voices to make adapters for; the first is shipped"
    )
    demo.add_argument("--seed", type=int, default=1234)
    demo.add_argument(
        "--stage",
        default="all",
        choices=("all", "base", "spectral", "refine", "text", "adapters", "eval", "ship"),
        help="one stage, or all (default)",
    )
    demo.add_argument("--threads", type=int, default=None)
    demo.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="base training on one GPU where CUDA is available (auto), or on the CPU cores",
    )
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_train_demo)


def _cmd_train_base(args: argparse.Namespace) -> int:
    from training.train_base import BaseRecipe, BaseTrainer

    init = args.init
    if (args.init_s1 is None) != (args.init_s2 is None):
        raise ValueError("--init-s1 and --init-s2 go together")
    if args.init_s1 is not None:
        from tritone.models.base import BaseModel

        init = args.run_dir / "init"
        if not (init / "manifest.json").is_file():
            BaseModel.from_upstream(args.init_s1, args.init_s2, args.hubert_dir).save(init)
    recipe = BaseRecipe(
        train_list=args.train_list,
        eval_list=args.eval_list,
        run_dir=args.run_dir,
        preset=args.preset,
        seed=args.seed,
        init=init,
        vocoder=args.vocoder,
        codebook_size=args.codebook_size,
        ssl_blocks=args.ssl_blocks,
        ssl_dilation_cycle=args.ssl_dilation_cycle,
        gpt_from_scratch=args.gpt_from_scratch,
        mrte_lookup=args.mrte_lookup,
        bert_dir=args.bert_dir,
        tracking_uri=args.tracking_uri,
        progress=not args.no_progress,
        threads=args.threads,
        device=args.device,
    )
    if args.ssl_steps is not None:
        recipe.ssl.steps = args.ssl_steps
    if args.gpt_steps is not None:
        recipe.gpt.steps = args.gpt_steps
    if args.gpt_align_weight is not None:
        recipe.gpt = replace(recipe.gpt, align_weight=args.gpt_align_weight)  # replace() validates
    if args.gpt_align_heads is not None:
        recipe.gpt = replace(recipe.gpt, align_heads=args.gpt_align_heads)
    if args.sovits_steps is not None:
        recipe.sovits.steps = args.sovits_steps
    if args.aligner_steps is not None:
        recipe.aligner.steps = args.aligner_steps
    if args.gan_start is not None:
        recipe.sovits.gan_start = args.gan_start
    if args.prior_start is not None:
        recipe.sovits.prior_start = args.prior_start
    if args.prior_mel_weight is not None:
        recipe.sovits.prior_mel_weight = args.prior_mel_weight
    if args.kl_weight is not None:
        recipe.sovits.kl_weight = args.kl_weight
    if args.stft_weight is not None:
        recipe.sovits.stft_weight = args.stft_weight
    if args.magnitude_weight is not None:
        recipe.sovits.magnitude_weight = args.magnitude_weight
    if args.mrte_align_weight is not None:
        recipe.sovits.mrte_align_weight = args.mrte_align_weight
    if args.content_corruption is not None:
        recipe.sovits.content_corruption = args.content_corruption
    if args.content_cut is not None:
        recipe.sovits.content_cut = args.content_cut
    if args.posterior_mean_steps is not None:
        recipe.sovits.posterior_mean_steps = args.posterior_mean_steps
    if args.prior_target is not None:
        recipe.sovits.prior_target = args.prior_target
    if args.sovits_batch is not None:
        recipe.sovits.max_batch = args.sovits_batch
        recipe.sovits.max_frames = 200 * args.sovits_batch
    trainer = BaseTrainer(recipe)
    start = time.perf_counter()
    result = trainer.run(args.stage)
    if trainer.info.is_main:
        print(
            json.dumps(
                {"stage": args.stage, "result": result, "seconds": round(time.perf_counter() - start, 1)},
                default=str,
            )
        )
    from training import ddp

    ddp.cleanup(trainer.info)
    return 0


def _default_base() -> Path:
    from tritone.config import REPO_ROOT

    return REPO_ROOT / "demo" / "base"


def _cmd_train_adapter(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from training.train_adapter import AdapterJob, AdapterTrainConfig, train_adapter
    from tritone.config import data_dir

    cfg = AdapterTrainConfig(seed=args.seed, threads=args.threads)
    overrides: dict[str, Any] = {}
    for name in ("steps", "rank", "alpha", "lr", "magnitude_weight"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.targets:
        overrides["targets"] = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    if args.max_minutes is not None:
        overrides["max_seconds"] = 60.0 * args.max_minutes
    cfg = replace(cfg, **overrides)
    job = AdapterJob(
        voice=args.voice,
        tenant=args.tenant,
        base=args.base or _default_base(),
        audio=args.audio,
        consent=args.consent,
        out=args.out or data_dir() / "adapters" / f"{args.tenant}.{args.voice}",
        speaker=args.speaker,
        lang=args.lang,
        reference=args.ref,
        reference_text=args.ref_text,
        eval_list=args.eval_list,
        eval_sentences=args.eval_sentences,
        register=not args.no_register,
        tracking_uri=args.tracking_uri,
        progress=not args.no_progress,
        config=cfg,
    )
    result = train_adapter(job)
    print(
        json.dumps(
            {
                "adapter": str(result.path),
                "version": result.version,
                "alias": "staging" if result.version is not None else None,
                "metrics": result.metrics,
                "run_id": result.run_id,
                "seconds": round(result.seconds, 1),
            }
        )
    )
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from training.recipes.demo import DemoRecipe, run_demo

    recipe = DemoRecipe(
        corpus=args.corpus,
        run_dir=args.run_dir,
        out=args.out,
        voices=tuple(v.strip() for v in args.voices.split(",") if v.strip()),
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        progress=not args.no_progress,
    )
    print(json.dumps(run_demo(recipe, args.stage), indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------------
# tritone eval


def add_eval_command(subparsers: Any) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="clone quality on held-out sentences: similarity, WER, RTF vs real recordings and zero-shot",
        description=(
            "Evaluate cloning of one speaker on held-out sentences. Always reports, side by side, the "
            "speaker's own recordings of the same sentences and the base model's zero-shot clone from "
            "one reference clip, plus one row per --adapter. See docs/QUALITY.md."
        ),
    )
    ev.add_argument("--base", type=Path, default=None, help="base bundle (default: demo/base)")
    ev.add_argument(
        "--adapter", type=Path, action="append", default=[], help="adapter directory (repeatable)"
    )
    ev.add_argument(
        "--list", type=Path, required=True, help=".list of held-out sentences with real recordings"
    )
    ev.add_argument(
        "--speaker", default=None, help="the speaker to evaluate (required for multi-speaker lists)"
    )
    ev.add_argument(
        "--enrol-list", type=Path, required=True, help=".list with the speaker's enrolment clips (~60 s used)"
    )
    ev.add_argument(
        "--ref", type=Path, default=None, help="zero-shot reference clip (default: picked from --enrol-list)"
    )
    ev.add_argument("--ref-text", default=None, help="transcript of --ref")
    ev.add_argument("--sentences", type=int, default=None, help="evaluate at most N sentences")
    ev.add_argument("--seed", type=int, default=1234)
    ev.add_argument("--no-zero-shot", action="store_true")
    ev.add_argument("--top-k", type=int, default=15, help="GPT sampling: top-k (default 15, as served)")
    ev.add_argument("--temperature", type=float, default=1.0, help="GPT sampling temperature (default 1.0)")
    ev.add_argument(
        "--own-tokens",
        action="store_true",
        help="after each synthesised row, the same voice speaking the recordings' own semantic tokens "
        "(no GPT): splits the WER between the GPT and the acoustic path",
    )
    ev.add_argument("--json", type=Path, default=None, help="write the full report (per utterance) as JSON")
    ev.add_argument("--save-audio", type=Path, default=None, help="write the generated clips here")
    ev.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from training.data import Utterance
    from training.evaluate import evaluate_speaker
    from training.train_adapter import speaker_utterances
    from tritone.pipeline import SynthesisParams

    SynthesisParams(top_k=args.top_k, temperature=args.temperature)  # refuses bad settings before any work
    sentences = speaker_utterances(args.list, args.speaker, None)
    speaker = args.speaker or sentences[0].speaker
    if len({u.speaker for u in sentences}) > 1:
        raise ValueError(f"{args.list} holds several speakers; pick one with --speaker")
    enrol = speaker_utterances(args.enrol_list, speaker, None)
    if args.sentences is not None:
        sentences = sentences[: args.sentences]
    ref = None
    if args.ref is not None:
        if not args.ref_text:
            raise ValueError("--ref needs --ref-text")
        ref = Utterance(args.ref.stem, args.ref, speaker, sentences[0].lang, args.ref_text)
    report = evaluate_speaker(
        args.base or _default_base(),
        sentences,
        enrol,
        adapters=[(f"adapter {p.name}", p) for p in args.adapter],
        reference=ref,
        seed=args.seed,
        zero_shot=not args.no_zero_shot,
        save_dir=args.save_audio,
        command="tritone " + " ".join(sys.argv[1:]),
        top_k=args.top_k,
        temperature=args.temperature,
        own_tokens=args.own_tokens,
    )
    print(
        f"speaker {report.speaker}: {report.sentences} held-out sentences, enrolment {report.enrol_seconds:.0f} s"
    )
    print(report.markdown())
    if args.json:
        report.write(args.json)
    return 0
