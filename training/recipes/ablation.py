"""Which modules should a voice adapter adapt? Train the same voice with different target groups
and compare them on the same held-out sentences (docs/QUALITY.md, "adapter targets").

    python -m training.recipes.ablation [--voice flite_rms] [--variants gpt gpt+mrte+flow ...] [--jobs 3]
                                        [--steps N] [--lr X] [--magnitude-weight W] [--report NAME]

Each variant is an adapter trained exactly like the demo voice (same base, clips, steps, seed,
rank), unregistered, under `<run-dir>/ablation/<variant>`; the report (`<report>.json` / `.md`,
default `ablation`) has one row per variant next to the speaker's own recordings and the base's
zero-shot clone. `--steps` / `--lr` train every variant with other settings than the demo voice's,
under `<variant>-<steps>steps-lr<lr>`, and `--magnitude-weight` (the spectral generator's direct
magnitude loss) under `<variant>-mag<W>`, so runs with different settings never share a folder.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from training.recipes.demo import ADAPTER_STEPS, DEMO_SEED, DemoRecipe, demo_consent, shipped_base_dir
from training.train_adapter import AdapterTrainConfig

VARIANTS = (
    "gpt",
    "gpt+mrte+flow",
    "gpt+mrte+flow+vocoder",
    "gpt+ref+mrte+flow+vocoder",
    "gpt+ref+mrte+flow+vocoder+vocoder_body",
)


def _train(
    variant: str,
    voice_id: str,
    base: Path,
    corpus: Path,
    out: Path,
    consent: Path,
    seed: int,
    steps: int = ADAPTER_STEPS,
    lr: float = AdapterTrainConfig.lr,
    magnitude_weight: float = AdapterTrainConfig.magnitude_weight,
) -> None:
    if (out / "manifest.json").is_file():
        return
    cmd = [
        sys.executable, "-m", "tritone.cli", "train", "adapter",
        "--voice", "ablation", "--tenant", "ablation", "--base", str(base),
        "--audio", str(corpus / "heldout_train.list"), "--speaker", voice_id,
        "--consent", str(consent), "--out", str(out), "--targets", variant.replace("+", ","),
        "--steps", str(steps), "--lr", str(lr), "--magnitude-weight", str(magnitude_weight),
        "--seed", str(seed), "--threads", "1",
        "--eval-list", str(corpus / "heldout_eval.list"), "--eval-sentences", "1",
        "--no-register", "--no-progress",
    ]  # fmt: skip
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    from training.evaluate import evaluate_speaker
    from training.train_adapter import speaker_utterances

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voice", default="flite_rms")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--sentences", type=int, default=10)
    p.add_argument("--jobs", type=int, default=3, help="adapters trained at once")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument(
        "--steps", type=int, default=ADAPTER_STEPS, help="adapter steps (default: the demo voice's)"
    )
    p.add_argument("--lr", type=float, default=AdapterTrainConfig.lr, help="adapter learning rate")
    p.add_argument(
        "--magnitude-weight",
        type=float,
        default=AdapterTrainConfig.magnitude_weight,
        help="weight of the spectral generator's direct magnitude loss (default: the demo voice's)",
    )
    p.add_argument("--report", default="ablation", help="report file name under <run-dir>/ablation")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.report):
        p.error("--report must be a plain file name (letters, digits, '_', '.', '-')")
    suffix = (
        ""
        if (args.steps, args.lr) == (ADAPTER_STEPS, AdapterTrainConfig.lr)
        else f"-{args.steps}steps-lr{args.lr:g}"
    )
    if args.magnitude_weight != AdapterTrainConfig.magnitude_weight:
        suffix += f"-mag{args.magnitude_weight:g}"

    corpus, run_dir, _ = DemoRecipe().paths()
    base = shipped_base_dir(run_dir)  # the demo voice's own base, not the first (HiFi-GAN) one
    root = run_dir / "ablation"
    consent = demo_consent(args.voice, root / "consent.json")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(
                _train,
                v,
                args.voice,
                base,
                corpus,
                root / f"{v}{suffix}",
                consent,
                args.seed,
                args.steps,
                args.lr,
                args.magnitude_weight,
            )
            for v in args.variants
        ]
        for f in futures:
            f.result()
    sentences = speaker_utterances(corpus / "heldout_eval.list", args.voice, None)[: args.sentences]
    enrol = speaker_utterances(corpus / "heldout_train.list", args.voice, None)
    report = evaluate_speaker(
        base,
        sentences,
        enrol,
        adapters=[(f"adapter [{v}{suffix}]", root / f"{v}{suffix}") for v in args.variants],
        seed=args.seed,
        command="python -m training.recipes.ablation " + " ".join(argv or sys.argv[1:]),
    )
    report.write(root / f"{args.report}.json")
    (root / f"{args.report}.md").write_text(report.markdown() + "\n")
    print(report.markdown())
    print(json.dumps({"report": str(root / f"{args.report}.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
