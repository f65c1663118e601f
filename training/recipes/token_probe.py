"""Token probe: how much of the text a stream of semantic tokens carries, with no SoVITS and no
speech recogniser in the way.

    python -m training.recipes.token_probe BASE... [--corpus data/demo] [--speaker flite_rms]
                                                   [--steps 3000] [--seed 1234] [--json OUT]
                                                   [--top-k 15 --temperature 1] [--candidates N]

A small CTC phone recogniser over tokens (the codebook's vector of each token -> two
convolutions -> phones + blank) is trained on the training clips' true tokens, as the `encode`
stage wrote them with the first BASE's SSL encoder and codebook (every BASE must share them: the
probe reads one kind of token). Then it reads, greedy, and is scored by phone error rate against
the text's phones:

- `training speakers, true tokens`: `eval.list` clips of the training voices (the probe's own
  held-out set: what tokens of seen voices carry);
- `SPEAKER, true tokens`: the held-out speaker's recordings of `heldout_eval.list`;
- two rows per BASE, both from the voice prompt `tritone eval` builds for its zero-shot row
  (the reference clip it picks from `heldout_train.list`):
  - `teacher-forced first choices`: at every step of the held-out recordings' true tokens, the
    token the GPT ranks first given the prompt and the true tokens before it (its predictions
    with a right history);
  - `zero-shot tokens`: the tokens it generates for the same sentences, with `tritone eval`'s
    seed and sampling (`--top-k`, `--temperature` change them), so by default the tokens behind
    that command's zero-shot row.

`--candidates N` draws N zero-shot token streams per segment (the first is the row above, the
others with other seeds) and adds two rows per BASE: the candidate a second reader (the same
probe trained with the next seed) reads with the fewest phone errors, which is what reranking
samples by their content would serve; and the candidate the probe itself scores best, a
ceiling of what any choice among those N could reach. Both scored by the probe as the rows above.

A clone's WER mixes the GPT's errors with the acoustic path's (QUALITY.md §4: about 70 % WER
from true tokens on the demo) and with a recogniser's erratic reading of unintelligible audio.
The probe scores the GPT's half alone: the gap between a BASE's row and the true tokens' row is
what its GPT loses of the text.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TokenPhoneProbe(nn.Module):
    """Semantic tokens -> per-token phone log-probabilities (CTC, blank = the last class).

    The tokens' codebook vectors are fixed inputs (the probe reads what SoVITS reads); two
    convolutions of 5 tokens (200 ms each at 25 Hz) give each position the context a phone spans.
    """

    codebook: Tensor  # [K, dim]

    def __init__(self, codebook: Tensor, n_phones: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("codebook", codebook.detach().float().clone(), persistent=False)
        dim = codebook.shape[1]
        self.norm = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, hidden, 5, padding=2)
        self.conv2 = nn.Conv1d(hidden, hidden, 5, padding=2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_phones + 1)
        self.blank = n_phones

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """tokens [B, T] (indices into the codebook), lengths [B] (default: all T)
        -> log-probabilities [T, B, n_phones + 1]

        Positions past a row's length are zeroed before each convolution, so a row reads the same
        whatever it is batched with."""
        keep = torch.ones_like(tokens, dtype=torch.bool)
        if lengths is not None:
            keep = torch.arange(tokens.shape[1])[None] < lengths[:, None]  # [B, T]
        mask = keep[:, None].float()  # [B, 1, T]
        x = self.norm(self.codebook[tokens]).transpose(1, 2) * mask  # [B, dim, T]
        x = self.dropout(F.relu(self.conv1(x))) * mask
        x = self.dropout(F.relu(self.conv2(x))).transpose(1, 2)  # [B, T, hidden]
        return F.log_softmax(self.head(x), dim=-1).transpose(0, 1)


@dataclass
class ProbeExample:
    tokens: Tensor  # [T] long
    phones: Tensor  # [N] long
    bert: Tensor | None = None  # [bert_dim, N] where the corpus has BERT features (zh), else zeros


def _pad(seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def train_probe(
    probe: TokenPhoneProbe,
    examples: Sequence[ProbeExample],
    steps: int,
    seed: int,
    batch: int = 32,
    lr: float = 2e-3,
    progress: bool = True,
) -> list[float]:
    """CTC on (tokens, phones) pairs; -> the loss every 100 steps. Examples with fewer tokens
    than phones cannot be aligned by CTC and are left out."""
    from tqdm import tqdm

    usable = [e for e in examples if len(e.tokens) >= len(e.phones) > 0]
    if not usable:
        raise ValueError("no example has at least as many tokens as phones")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
    losses, running = [], 0.0
    probe.train()
    for step in tqdm(range(1, steps + 1), desc="token probe", disable=not progress, mininterval=2.0):
        chosen = rng.sample(usable, min(batch, len(usable)))
        tokens, token_lens = _pad([e.tokens for e in chosen])
        phones, phone_lens = _pad([e.phones for e in chosen])
        log_probs = probe(tokens, token_lens)
        loss = F.ctc_loss(log_probs, phones, token_lens, phone_lens, blank=probe.blank, zero_infinity=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
        for group in opt.param_groups:  # linear decay to a tenth
            group["lr"] = lr * (1.0 - 0.9 * step / steps)
        running += float(loss.detach())
        if step % 100 == 0 or step == steps:
            losses.append(running / (100 if step % 100 == 0 else step % 100))
            running = 0.0
    probe.eval()
    return losses


@torch.no_grad()
def phone_errors(probe: TokenPhoneProbe, examples: Sequence[ProbeExample]) -> list[int]:
    """Per example, the edit distance of the greedy CTC reading of its tokens to its phones
    (an example without tokens reads as nothing)."""
    from training.train_ssl import edit_distance, greedy_phones

    probe.eval()
    errors = []
    for start in range(0, len(examples), 32):
        chunk = examples[start : start + 32]
        tokens, token_lens = _pad(
            [e.tokens if len(e.tokens) else torch.zeros(1, dtype=torch.long) for e in chunk]
        )
        hypotheses = greedy_phones(probe(tokens, token_lens), token_lens, probe.blank)
        for example, hyp in zip(chunk, hypotheses):
            errors.append(edit_distance(example.phones.tolist(), hyp if len(example.tokens) else []))
    return errors


def phone_error_rate(probe: TokenPhoneProbe, examples: Sequence[ProbeExample]) -> float:
    """Greedy CTC reading of every example's tokens against its phones, over all examples."""
    return sum(phone_errors(probe, examples)) / max(1, sum(len(e.phones) for e in examples))


def best_of(candidates: Sequence[Sequence[ProbeExample]], reader: TokenPhoneProbe) -> list[ProbeExample]:
    """candidates[n][i]: candidate n of segment i -> per segment, the candidate `reader` reads with
    the fewest phone errors (the first of equals)."""
    errors = [phone_errors(reader, c) for c in candidates]  # [N][segments]
    return [
        candidates[min(range(len(candidates)), key=lambda n: errors[n][i])][i]
        for i in range(len(candidates[0]))
    ]


def _encoded_examples(base: Path, train_list: Path, eval_list: Path, work: Path) -> tuple[list[Any], ...]:
    """(train examples, eval examples, eval items) from the `encode` stage over `base`'s encoder."""
    from training.preprocess import load_item
    from training.train_base import BaseRecipe, BaseTrainer

    recipe = BaseRecipe(train_list=train_list, eval_list=eval_list, run_dir=work, init=base, progress=False)
    trainer = BaseTrainer(recipe)
    train_items, eval_items = trainer.items()
    encoded = trainer.encoded()

    def examples(items: Sequence[Any]) -> list[ProbeExample]:
        return [
            ProbeExample(
                load_item(encoded[it.key])["codes"].long().flatten(), data["phones"].long(), data.get("bert")
            )
            for it in items
            for data in [it.load()]
        ]

    return examples(train_items), examples(eval_items), eval_items


def _same_tokens(bases: Sequence[Any]) -> None:
    first = bases[0]
    for other in bases[1:]:
        same_ssl = all(torch.equal(v, other.ssl.state_dict()[k]) for k, v in first.ssl.state_dict().items())
        same_codebook = torch.equal(
            first.sovits.quantizer.codebooks[0].embed, other.sovits.quantizer.codebooks[0].embed
        ) and torch.equal(first.sovits.ssl_proj.weight, other.sovits.ssl_proj.weight)
        if not (same_ssl and same_codebook):
            raise ValueError("the bases differ in SSL encoder or codebook: the probe reads one kind of token")


def voice_prompt(base: Any, reference: Any) -> Any:
    """The zero-shot voice prompt `tritone eval` builds from its reference clip."""
    import numpy as np

    from tritone.audio.io import load_audio
    from tritone.pipeline import Pipeline

    audio, sr = load_audio(reference.wav_path)
    return Pipeline(base).build_voice_prompt(audio.astype(np.float32), sr, reference.text, reference.lang)


def candidate_seed(seed: int, n: int) -> int:
    """The request seed of zero-shot candidate n; candidate 0 is `tritone eval`'s own."""
    return seed if n == 0 else (seed * 1_000_003 + 104_729 * n) % 2**63


def generated_candidates(
    base: Any,
    sentences: Sequence[Any],
    reference: Any,
    seed: int,
    candidates: int = 1,
    top_k: int = 15,
    temperature: float = 1.0,
) -> list[list[ProbeExample]]:
    """[candidate][segment]: the zero-shot tokens of every segment of `sentences`, candidate n
    drawn with request seed `candidate_seed(seed, n)`, so candidate 0 is what `tritone eval`'s
    zero-shot row is made of (with its sampling settings by default). Each with its segment's
    phones: segments are generated apart and read apart."""
    from tritone.pipeline import Pipeline, SynthesisParams

    pipe = Pipeline(base)
    voice = voice_prompt(base, reference)
    out: list[list[ProbeExample]] = [[] for _ in range(candidates)]
    for utt in sentences:
        params = [
            SynthesisParams(
                seed=candidate_seed(seed, n), max_new_tokens=600, top_k=top_k, temperature=temperature
            )
            for n in range(candidates)
        ]
        segments = pipe.frontend.segments(utt.text, utt.lang, params[0].split)
        requests = [r for p in params for r in pipe.generation_requests(segments, voice, p)]
        tokens = pipe.model.gpt.generate(requests)  # every row has its own seed: batching changes nothing
        for n in range(candidates):
            for i, seg in enumerate(segments):
                phones = torch.tensor(seg.ids, dtype=torch.long)
                out[n].append(ProbeExample(tokens[n * len(segments) + i].long(), phones))
    return out


@torch.no_grad()
def teacher_forced_examples(base: Any, voice: Any, truths: Sequence[ProbeExample]) -> list[ProbeExample]:
    """For each true token sequence, the token the GPT ranks first at every step given the voice
    prompt and the true tokens before it: what its predictions carry when its history is right."""
    gpt = base.gpt.eval()
    out = []
    for truth in truths:
        bert = truth.bert if truth.bert is not None else torch.zeros(voice.bert.shape[0], len(truth.phones))
        phones = torch.cat([voice.phone_ids, truth.phones])[None]
        semantic = torch.cat([voice.semantic, truth.tokens])[None]
        logits, _ = gpt(
            phones,
            torch.tensor([phones.shape[1]]),
            torch.cat([voice.bert, bert.to(voice.bert.dtype)], dim=1)[None].float(),
            semantic,
            torch.tensor([semantic.shape[1]]),
        )
        start = voice.semantic.shape[0] - 1  # this position predicts the first true token
        predicted = logits[0, start:-1, : gpt.config.eos].argmax(-1)  # [T], EOS left out
        out.append(ProbeExample(predicted, truth.phones))
    return out


def run(
    bases: Sequence[Path],
    corpus: Path,
    speaker: str,
    steps: int,
    seed: int,
    progress: bool = True,
    top_k: int = 15,
    temperature: float = 1.0,
    candidates: int = 1,
) -> dict[str, Any]:
    from training.evaluate import pick_reference
    from training.train_adapter import speaker_utterances
    from tritone.models.base import BaseModel

    models = [BaseModel.load(b) for b in bases]
    _same_tokens(models)
    with tempfile.TemporaryDirectory(prefix="token-probe-") as tmp:
        train, seen_eval, _ = _encoded_examples(
            bases[0], corpus / "train.list", corpus / "eval.list", Path(tmp) / "a"
        )
        _, held_out, held_items = _encoded_examples(
            bases[0], corpus / "train.list", corpus / "heldout_eval.list", Path(tmp) / "b"
        )
    speaker_rows = [i for i, it in enumerate(held_items) if it.speaker == speaker]
    if not speaker_rows:
        raise ValueError(f"{corpus / 'heldout_eval.list'} has no clip of {speaker}")
    first = models[0]
    probe = TokenPhoneProbe(first.sovits.quantizer.codebooks[0].embed, first.config.gpt.phoneme_vocab_size)
    losses = train_probe(probe, train, steps, seed, progress=progress)
    reader = None
    if candidates > 1:  # the reranker: the same probe with the next seed, so it is not the judge
        reader = TokenPhoneProbe(
            first.sovits.quantizer.codebooks[0].embed, first.config.gpt.phoneme_vocab_size
        )
        train_probe(reader, train, steps, seed + 1, progress=progress)
    sentences = speaker_utterances(corpus / "heldout_eval.list", speaker, None)
    reference = pick_reference(speaker_utterances(corpus / "heldout_train.list", speaker, None))
    rows = [
        {
            "source": "training speakers, true tokens",
            "n": len(seen_eval),
            "per": phone_error_rate(probe, seen_eval),
        },
        {
            "source": f"{speaker}, true tokens",
            "n": len(speaker_rows),
            "per": phone_error_rate(probe, [held_out[i] for i in speaker_rows]),
        },
    ]
    truths = [held_out[i] for i in speaker_rows]
    for path, model in zip(bases, models):
        forced = teacher_forced_examples(model, voice_prompt(model, reference), truths)
        rows.append(
            {
                "source": f"{speaker}, teacher-forced first choices of {path}",
                "n": len(forced),
                "per": phone_error_rate(probe, forced),
            }
        )
        drawn = generated_candidates(model, sentences, reference, seed, candidates, top_k, temperature)
        chosen = [("", drawn[0])]
        if reader is not None:
            chosen.append((f", best of {candidates} by a second reader", best_of(drawn, reader)))
            chosen.append((f", best of {candidates} by this probe (a ceiling)", best_of(drawn, probe)))
        for suffix, generated in chosen:
            rows.append(
                {
                    "source": f"{speaker}, zero-shot tokens of {path}{suffix}",
                    "n": len(sentences),
                    "per": phone_error_rate(probe, generated),
                    "tokens_per_phone": sum(len(e.tokens) for e in generated)
                    / sum(len(e.phones) for e in generated),
                }
            )
    return {
        "bases": [str(b) for b in bases],
        "speaker": speaker,
        "reference": reference.utt_id,
        "steps": steps,
        "seed": seed,
        "sampling": {"top_k": top_k, "temperature": temperature},
        "candidates": candidates,
        "train_examples": len(train),
        "loss_every_100_steps": [round(v, 4) for v in losses],
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["| tokens | n | phone error rate |", "|---|---|---|"]
    lines += [f"| {r['source']} | {r['n']} | {r['per']:.3f} |" for r in report["rows"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "bases", nargs="+", type=Path, help="base bundles sharing one SSL encoder and codebook"
    )
    parser.add_argument("--corpus", type=Path, default=Path("data/demo"))
    parser.add_argument("--speaker", default="flite_rms", help="the held-out speaker")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--top-k", type=int, default=15, help="sampling of the zero-shot tokens (eval's: 15)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (eval's: 1.0)")
    parser.add_argument(
        "--candidates",
        type=int,
        default=1,
        help="zero-shot token streams drawn per segment; above 1, adds the best of them by a second "
        "reader and by the probe itself (default 1)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if not 1 <= args.candidates <= 64:
        parser.error("--candidates must be in [1, 64]")
    try:
        report = run(
            args.bases,
            args.corpus,
            args.speaker,
            args.steps,
            args.seed,
            not args.no_progress,
            args.top_k,
            args.temperature,
            args.candidates,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
