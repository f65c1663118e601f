"""Resynthesis check of a base's acoustic path: held-out sentences decoded from their own tokens.

    python -m training.recipes.resynthesis SOURCE... [--base demo/base] [--corpus DIR]
                                                     [--voices 6] [--per-voice 2] [--json OUT]
                                                     [--noise-scale 0.5] [--posterior]
                                                     [--content KIND ...] [--other-phones]

Each SOURCE is a base bundle (a folder with `manifest.json`), a `tritone train base` run folder
(its `sovits/ckpt-latest.pt`: SoVITS and the generator as training left them, either vocoder
kind; the GPT and SSL encoder come from `--base`), or `recordings`. For `per_voice` English
`eval.list` sentences of 3-10 s of each of the first `voices` training speakers, the clip becomes
a voice prompt exactly as serving builds one (its semantic tokens, phones and reference
spectrogram) and those tokens go through SoVITS and the vocoder, noise scale 0.5, seed i for the
i-th sentence: no GPT, so the number says whether the acoustic path is intelligible, which a
clone cannot be without it. Scored as the decoder probe scores (pocketsphinx WER over all
sentences, mel L1 to the recording, periodicity), one markdown row per source.

`--posterior` adds, for each run folder, a row for its posterior path: the clip's own linear
spectrogram -> posterior mean -> generator (as the decoder probe scores it; bundles carry no
posterior encoder). With a base trained by `--prior-target mean`, the two rows split the acoustic
path's error between the generator and what the prior predicts from tokens and phones.

`--content` (repeatable) says what SoVITS reads for the clip's content: `codebook` (default: the
bundle's own tokens, as serving), `features` (`ssl_proj`'s output, not quantised at all) or
`kmeans:N` (a codebook of N entries fitted by k-means over the training clips' features, as
`tritone train base --codebook-size N` fits one) or `corrupt:S` (the bundle's tokens with a
share S of them, in 160 ms spans, replaced by random codes, seeded: wrong content as a GPT's
wrong tokens are, which only the phones can correct) or `phones-only` (the bundle's tokens, but
MRTE's residual content path cut as `--content-cut` cuts it in training: the prior hears only
what the frames look up in the phones, and the speaker). Each kind other than `codebook` adds a
row per source, so one run tells what the quantisation costs the acoustic path.

`--other-phones` adds a row per source and content kind in which each sentence's content is
decoded with the phones of the next sentence with another text (the last with the first's): if it
scores as the right phones do, SoVITS reads the content from the tokens alone and its text input
(MRTE) is idle.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REF_SECONDS = (3.2, 9.5)  # inside the voice prompt's 3-10 s


def sentences(corpus: Path, voices: int, per_voice: int) -> list[tuple[Any, Any]]:
    """(utterance, 32 kHz audio) pairs: the first `per_voice` usable English clips per voice."""
    from training.data import read_list
    from tritone.audio.io import load_audio

    by_voice: dict[str, list[Any]] = {}
    for u in read_list(corpus / "eval.list").utterances:
        if u.lang == "en":
            by_voice.setdefault(u.speaker, []).append(u)
    chosen = []
    for voice in sorted(by_voice)[:voices]:
        picked = 0
        for u in by_voice[voice]:
            if picked == per_voice:
                break
            audio, _ = load_audio(u.wav_path, 32_000)
            if REF_SECONDS[0] < len(audio) / 32_000 < REF_SECONDS[1]:
                chosen.append((u, audio))
                picked += 1
    if not chosen:
        raise ValueError(f"{corpus}/eval.list has no English clip of {REF_SECONDS[0]}-{REF_SECONDS[1]} s")
    return chosen


@dataclass
class Source:
    """What one SOURCE decodes with."""

    model: Any  # BaseModel
    step: int | None = None  # a run folder's training step
    enc_q: Any = None  # a run folder's posterior encoder


def load_source(source: Path, base: Any) -> Source:
    """A bundle, or a training run folder (its SoVITS lookup is `aligned` when it has an aligner)."""
    import torch

    from training.train_aligner import ALIGNER_FINAL, load_aligner
    from tritone.models.base import BaseModel
    from tritone.models.sovits import SoVITS
    from tritone.models.vocoders import build_vocoder, with_vocoder_kind

    if (source / "manifest.json").is_file():
        return Source(BaseModel.load(source))
    path = source / "sovits" / "ckpt-latest.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{source}: neither a base bundle nor a run folder with {path.name}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["gen"]
    kind = "spectral" if "vocoder.head.weight" in state else "hifigan"
    config = replace(base.config, vocoder=with_vocoder_kind(base.config.vocoder, kind))
    aligner_path = source / "aligner" / ALIGNER_FINAL
    aligner = load_aligner(aligner_path) if aligner_path.is_file() else None
    if aligner is not None:
        config = replace(config, sovits=replace(config.sovits, mrte_lookup="aligned"), aligner=aligner.config)
    sovits, vocoder = SoVITS(config.sovits, posterior=True), build_vocoder(config.vocoder)
    sovits.load_state_dict({k[len("sovits.") :]: v for k, v in state.items() if k.startswith("sovits.")})
    vocoder.load_state_dict({k[len("vocoder.") :]: v for k, v in state.items() if k.startswith("vocoder.")})
    model = BaseModel.from_modules(config, base.gpt, sovits, vocoder, base.ssl, aligner)
    assert sovits.enc_q is not None  # built with posterior=True
    return Source(model, int(checkpoint["step"]), sovits.enc_q.eval())


Quantiser = Callable[[Any], Any]  # ssl_proj features [1, D, T25] -> the content SoVITS reads


CONTENT_KINDS = "codebook, features, kmeans:N (N >= 2), corrupt:S (0 < S < 1) or phones-only"


def kmeans_size(kind: str) -> int | None:
    """N of a valid `kmeans:N`, None for the other kinds (`codebook`, `features`, `corrupt:S`,
    `phones-only`); raises for anything else."""
    if kind in ("codebook", "features", "phones-only"):
        return None
    if kind.startswith("corrupt:"):
        corrupt_share(kind)
        return None
    size = kind.removeprefix("kmeans:")
    if not kind.startswith("kmeans:") or not size.isdigit() or int(size) < 2:
        raise ValueError(f"--content must be {CONTENT_KINDS}, not {kind!r}")
    return int(size)


def corrupt_share(kind: str) -> float:
    """S of a valid `corrupt:S`; raises otherwise."""
    try:
        share = float(kind.removeprefix("corrupt:"))
    except ValueError:
        share = -1.0
    if not kind.startswith("corrupt:") or not 0 < share < 1:
        raise ValueError(f"--content must be {CONTENT_KINDS}, not {kind!r}")
    return share


def content_quantiser(kind: str, model: Any, corpus: Path) -> Quantiser | None:
    """None for `codebook` (the bundle's tokens); else what replaces them (module docstring)."""
    size = kmeans_size(kind)
    if kind == "codebook":
        return None
    if kind.startswith("corrupt:"):
        import torch

        from tritone.models.sovits import corrupt_content

        share, book = corrupt_share(kind), model.sovits.quantizer
        generator = torch.Generator().manual_seed(0x5EED)  # the same spans and codes for every source
        return lambda x: corrupt_content(book.decode(book.encode(x)), book, share, generator=generator)
    if kind == "phones-only":  # the bundle's tokens as content vectors; the caller cuts them
        book = model.sovits.quantizer
        return lambda x: book.decode(book.encode(x))
    if size is None:  # features
        return lambda x: x
    from training.data import read_list
    from training.preprocess import PrepConfig, prepare
    from training.train_ssl import ContentModel, SSLTrainConfig, fit_codebook
    from tritone.models.s2_quantizer import ResidualVectorQuantizer

    s2 = model.config.sovits
    quantizer = ResidualVectorQuantizer(s2.ssl_dim, n_q=1, bins=size)
    items, _ = prepare(read_list(corpus / "train.list").utterances, PrepConfig(), None, progress=False)
    content = ContentModel(model.ssl, model.sovits.ssl_proj, s2.ssl_dim, s2.n_symbols)
    fit_codebook(content, quantizer, items, s2.semantic_stride, SSLTrainConfig(), progress=False)
    model.eval()  # fitting leaves the content modules in training mode
    quantizer.eval()
    return lambda x: quantizer.decode(quantizer.encode(x))


def next_other_sentence(chosen: list[tuple[Any, Any]], i: int) -> Any:
    """The first utterance after the i-th (cyclically) with another text than it."""
    n = len(chosen)
    for k in range(1, n):
        other = chosen[(i + k) % n][0]
        if other.text != chosen[i][0].text:
            return other
    raise ValueError("--other-phones needs at least two different sentences")


def resynthesise(
    model: Any,
    chosen: list[tuple[Any, Any]],
    noise_scale: float = 0.5,
    enc_q: Any = None,
    quantiser: Quantiser | None = None,
    other_phones: bool = False,
    phones_only: bool = False,
) -> list[Any]:
    """The sentences decoded from their own tokens; with `enc_q`, from their own spectrogram's
    posterior mean instead; with `quantiser`, from their content features quantised by it (and
    with `phones_only`, MRTE's residual content path cut); with `other_phones`, with the next
    sentence's phones (not with `enc_q`). With a token aligner (SoVITS's aligned lookup), the
    phones are placed on the frames by aligning the clip's own tokens to them, whatever content
    is then decoded."""
    import torch

    from tritone.pipeline import Pipeline, SynthesisParams, latent_noise

    pipe = Pipeline(model)
    out = []
    for i, (u, audio) in enumerate(chosen):
        voice = pipe.build_voice_prompt(audio, 32_000, u.text, u.lang)
        ge = pipe.reference_embedding(voice)
        phone_ids = voice.phone_ids.tolist()
        if other_phones:
            other = next_other_sentence(chosen, i)
            phone_ids = list(pipe.frontend.process(other.text, other.lang).ids)
        if quantiser is not None:
            sovits, n = model.sovits, int(voice.semantic.shape[0])
            content = quantiser(sovits.ssl_proj(pipe.ssl_features(audio, 32_000)))[:, :, :n]
            noise = latent_noise(i ^ 0x5EED, sovits.config.inter_channels, 2 * n)[None]  # as tokens_to_audio
            phones = torch.tensor(phone_ids, dtype=torch.long)[None]
            phone_index = None
            if model.aligner is not None:
                phone_index = model.aligner.align(voice.semantic.long(), phones[0], frames=2 * n)[None]
            z, _ = sovits.decode_content(
                content,
                torch.tensor([n]),
                phones,
                torch.tensor([phones.shape[1]]),
                ge,
                noise_scale,
                noise=noise,
                keep_content=torch.zeros(1) if phones_only else None,
                phone_index=phone_index,
            )
            wav = model.vocoder(z, ge)[0, 0]
        elif enc_q is None:
            params = SynthesisParams(seed=i, noise_scale=noise_scale)
            wav = torch.from_numpy(pipe.tokens_to_audio(voice.semantic, phone_ids, ge, params, i))
        else:
            spec = voice.refer_spec[None]  # [1, bins, frames]
            _, m_q, _, _ = enc_q(spec, torch.tensor([spec.shape[2]]), g=ge)
            wav = model.vocoder(m_q, ge)[0, 0]
        out.append(wav)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from training.losses import MelLoss
    from training.recipes.decoder_probe import score_clips
    from tritone.audio.features import SpectrogramConfig
    from tritone.config import REPO_ROOT, data_dir
    from tritone.models.base import BaseModel

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("sources", nargs="+", help="base bundles, training run folders, or 'recordings'")
    p.add_argument("--base", type=Path, default=REPO_ROOT / "demo" / "base", help="GPT + SSL for run folders")
    p.add_argument("--corpus", type=Path, default=None, help="demo corpus (default: $TRITONE_HOME/demo)")
    p.add_argument("--voices", type=int, default=6)
    p.add_argument("--per-voice", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--noise-scale", type=float, default=0.5, help="the prior sample's noise scale")
    p.add_argument("--posterior", action="store_true", help="also score each run folder's posterior path")
    p.add_argument(
        "--content",
        action="append",
        default=None,
        metavar="KIND",
        help="codebook (default), features, kmeans:N, corrupt:S or phones-only: what SoVITS reads for "
        "the content (repeatable)",
    )
    p.add_argument(
        "--other-phones",
        action="store_true",
        help="also decode each sentence's content with the next sentence's phones (is the text read?)",
    )
    args = p.parse_args(argv)
    if args.noise_scale < 0:
        p.error("--noise-scale must be >= 0")
    contents = args.content or ["codebook"]
    for kind in contents:
        try:
            kmeans_size(kind)
        except ValueError as exc:
            p.error(str(exc))
    corpus = args.corpus or data_dir() / "demo"
    if not (corpus / "eval.list").is_file():
        p.error(f"{corpus}/eval.list not found: build the corpus with `tritone data demo`")
    torch.set_num_threads(1)
    chosen = sentences(corpus, args.voices, args.per_voice)
    recordings = [torch.from_numpy(a) for _, a in chosen]
    utterances = [u for u, _ in chosen]
    mel = MelLoss((SpectrogramConfig(),))
    base = BaseModel.load(args.base)
    rows: dict[str, Any] = {}
    print("| source | steps | WER | mel L1 | periodicity |\n|---|---|---|---|---|")
    for source in args.sources:
        scored: dict[str, dict[str, Any]] = {}
        if source == "recordings":
            row, step = score_clips(recordings, recordings, utterances, mel), None
            scored[source] = row
        else:
            loaded = load_source(Path(source), base)
            model, step, enc_q = loaded.model, loaded.step, loaded.enc_q
            with torch.no_grad():
                for kind in contents:
                    name = source if kind == "codebook" else f"{source} (content: {kind})"
                    quantiser = content_quantiser(kind, model, corpus)
                    for other in (False, True) if args.other_phones else (False,):
                        if other and kind.startswith("corrupt:"):  # the same spans and codes again
                            quantiser = content_quantiser(kind, model, corpus)
                        audio = resynthesise(
                            model,
                            chosen,
                            args.noise_scale,
                            quantiser=quantiser,
                            other_phones=other,
                            phones_only=kind == "phones-only",
                        )
                        key = f"{name} (another sentence's phones)" if other else name
                        scored[key] = score_clips(audio, recordings, utterances, mel)
                if args.posterior and enc_q is not None:
                    audio = resynthesise(model, chosen, enc_q=enc_q)
                    scored[f"{source} (posterior)"] = score_clips(audio, recordings, utterances, mel)
        for name, row in scored.items():
            rows[name] = {**row, "steps": step}
            print(
                f"| {name} | {step if step is not None else '-'} | {row['wer']:.1%} | "
                f"{row['mel_l1']:.3f} | {row['periodicity']:.3f} |",
                flush=True,
            )
    if args.json:
        report = {
            "sentences": [u.utt_id for u in utterances],
            "noise_scale": args.noise_scale,
            "content": contents,
            "rows": rows,
        }
        report["command"] = "python -m training.recipes.resynthesis " + " ".join(argv or sys.argv[1:])
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
