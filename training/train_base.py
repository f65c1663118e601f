"""`tritone train base`: the whole base-model recipe, stage by stage, resumable.

Stages (each skips what is already done; `--stage all` runs them in order):

    prep     stage-1 preprocessing of the train and eval lists (training/preprocess.py)
    ssl      content encoder + quantizer codebook (training/train_ssl.py); with `init`, the
             initial base's SSL encoder, ssl_proj and codebook are kept instead, or, with
             `codebook_size`, its encoder and ssl_proj are kept and a new codebook of that size is
             fitted by k-means, or, with `ssl_blocks` / `ssl_dilation_cycle`, a fresh built-in
             encoder of that shape is trained (in both, the GPT then starts from scratch: the
             tokens mean something else)
    encode   SSL features + semantic tokens for both lists (stage-2 cache)
    gpt      s1 (training/train_gpt.py)
    aligner  only for SoVITS's `aligned` MRTE lookup: the token aligner that places each clip's
             phones on its frames (training/train_aligner.py); one process, minutes
    sovits   s2 + vocoder + discriminators (training/train_sovits.py)
    export   bundle the trained modules as a `BaseModel` (`<run>/base`), write samples to MLflow
    register register the bundle as a `tritone-base` version (adapters registry)

`gpt` and `sovits` depend only on `encode`, so they can run as two processes at once. Every
stage works under `torchrun --nproc-per-node N` (gloo on CPU): preprocessing and k-means run
on rank 0 while the others wait, the training loops shard batches across ranks.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from training import ddp
from training.data import read_list
from training.preprocess import PrepConfig, PrepItem, encode, prepare
from training.train_aligner import ALIGNER_FINAL, AlignerTrainConfig, load_aligner, train_aligner
from training.train_gpt import GPT_FINAL, GPTTrainConfig, train_gpt
from training.train_sovits import S2_FINAL, S2TrainConfig, train_sovits
from training.train_ssl import SSL_FINAL, SSLTrainConfig, load_ssl_stage, train_ssl
from tritone.models.aligner import TokenAligner
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.models.gpt import GPT
from tritone.models.sovits import SoVITS
from tritone.models.ssl import SSLEncoder
from tritone.models.vocoders import build_vocoder, with_vocoder_kind

STAGES = ("prep", "ssl", "encode", "gpt", "aligner", "sovits", "export", "register")
BASE_DIR = "base"
SAMPLE_MAX_TOKENS = 500  # 20 s: an undertrained GPT may never emit EOS


def _item_audio(item: PrepItem) -> tuple[Any, int]:
    """The stage-1 (normalised, 32 kHz) audio of a cached item as float32."""
    data = item.load()
    return data["wav"].float().numpy() / 32767.0, 32_000


@dataclass
class BaseRecipe:
    train_list: Path | list[Path]  # one .list file, or several read as one (e.g. written + generated)
    eval_list: Path
    run_dir: Path
    preset: str = "demo"
    name: str = "tritone-base"
    seed: int = 1234
    init: Path | None = None  # a base bundle to fine-tune from (e.g. an upstream import)
    vocoder: str | None = None  # another generator kind than the preset's / init's (a fresh one)
    codebook_size: int | None = None  # a semantic codebook of this size instead of the preset's / init's
    ssl_blocks: int | None = None  # a built-in SSL encoder this deep instead of the preset's / init's
    ssl_dilation_cycle: int | None = None  # ... with its blocks dilated in cycles of this length
    gpt_from_scratch: bool = False  # over `init`, train the GPT from random weights, not on from init's
    mrte_lookup: str | None = None  # SoVITS's MRTE lookup instead of the preset's / init's (SoVITSConfig)
    bert_dir: str | None = None
    cache_dir: Path | None = None
    tracking_uri: str | None = None
    progress: bool = True
    threads: int | None = None  # torch CPU threads per process (default: torch's choice)
    device: str = "auto"  # auto (a GPU per process where CUDA is available) | cpu | cuda
    ssl: SSLTrainConfig = field(default_factory=SSLTrainConfig)
    gpt: GPTTrainConfig = field(default_factory=GPTTrainConfig)
    sovits: S2TrainConfig = field(default_factory=S2TrainConfig)
    aligner: AlignerTrainConfig = field(default_factory=AlignerTrainConfig)

    def __post_init__(self) -> None:
        for cfg in (self.ssl, self.gpt, self.sovits, self.aligner):
            cfg.seed = self.seed
            cfg.threads = self.threads
            cfg.device = self.device

    @property
    def train_lists(self) -> list[Path]:
        return list(self.train_list) if isinstance(self.train_list, list) else [self.train_list]

    def model_config(self) -> BaseModelConfig:
        if self.init is not None:
            config = BaseModel.load(self.init).config
        else:
            config = BaseModelConfig.preset(self.preset)
            config.name = self.name
        if self.vocoder is not None:
            config = replace(config, vocoder=with_vocoder_kind(config.vocoder, self.vocoder))
        if self.codebook_size is not None:
            config = config.with_codebook_size(self.codebook_size)
        if self.reshapes_ssl:
            config = config.with_ssl_shape(self.ssl_blocks, self.ssl_dilation_cycle)
        if self.mrte_lookup is not None:
            config = config.with_mrte_lookup(self.mrte_lookup)
        return config

    @property
    def reshapes_ssl(self) -> bool:
        return self.ssl_blocks is not None or self.ssl_dilation_cycle is not None

    @property
    def retrains_ssl(self) -> bool:
        """Over `init`, a fresh SSL encoder is trained (new content, so a new codebook and GPT)."""
        return self.init is not None and self.reshapes_ssl

    @property
    def refits_codebook(self) -> bool:
        """Over `init`, a new codebook is fitted over its SSL encoder (and the GPT trained from scratch)."""
        return self.init is not None and self.codebook_size is not None and not self.reshapes_ssl

    @property
    def new_tokens(self) -> bool:
        """Over `init`, the semantic tokens change meaning: the init's GPT cannot be continued."""
        return self.refits_codebook or self.retrains_ssl


class BaseTrainer:
    """Runs the stages of one recipe; holds what stages hand each other."""

    def __init__(self, recipe: BaseRecipe) -> None:
        self.recipe = recipe
        self.info = ddp.setup(recipe.threads, recipe.device)
        self.config = recipe.model_config()
        self.init_model = BaseModel.load(recipe.init) if recipe.init is not None else None
        self.run_dir = recipe.run_dir
        self._items: tuple[list[PrepItem], list[PrepItem]] | None = None
        self._encoded: dict[str, Path] | None = None
        self._ssl_state: dict[str, Any] | None = None

    # -- stages ------------------------------------------------------------------------------

    def items(self) -> tuple[list[PrepItem], list[PrepItem]]:
        if self._items is None:
            r = self.recipe
            result: Any = None
            if self.info.is_main:
                train_utts = []
                for path in r.train_lists:
                    train = read_list(path)
                    train.raise_if_errors()
                    train_utts += train.utterances
                evals = read_list(r.eval_list)
                evals.raise_if_errors()
                prep = PrepConfig(bert_dir=r.bert_dir)
                tr, st1 = prepare(train_utts, prep, r.cache_dir, r.progress)
                ev, st2 = prepare(evals.utterances, prep, r.cache_dir, r.progress)
                for st in (st1, st2):
                    for utt, why in st.failed:
                        print(f"skipped {utt}: {why}")
                result = (tr, ev)
            result = ddp.broadcast_object(result, self.info)
            self._items = result
        assert self._items is not None
        return self._items

    def ssl_stage(self) -> dict[str, Any]:
        """The SSL stage's result (trained or taken from `init`). Collective: call on every rank."""
        if self._ssl_state is not None:
            return self._ssl_state
        path = self.run_dir / "ssl" / SSL_FINAL
        # decided on rank 0 alone: the others must not see the file appear half-way through
        init = None if self.recipe.retrains_ssl else self.init_model
        if init is not None and not ddp.broadcast_object(path.is_file(), self.info):
            if self.info.is_main:
                from training.common import save_checkpoint

                state = {
                    "ssl": init.ssl.state_dict() if self.config.ssl.kind == "tiny" else {},
                    "ssl_proj": init.sovits.ssl_proj.state_dict(),
                    "quantizer": init.sovits.quantizer.state_dict(),
                    "stats": {"from": str(self.recipe.init)},
                }
                if self.recipe.refits_codebook:
                    state["quantizer"], stats = self._refit_codebook(state)
                    state["stats"].update(stats)
                save_checkpoint(path, state)
            ddp.barrier(self.info)
        if not ddp.broadcast_object(path.is_file(), self.info):
            tr, ev = self.items()
            train_ssl(
                self.config,
                tr,
                ev,
                self.run_dir / "ssl",
                self.recipe.ssl,
                self.recipe.tracking_uri,
                self.recipe.progress,
            )
        self._ssl_state = load_ssl_stage(path)
        return self._ssl_state

    def _refit_codebook(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """A codebook of `config.sovits.codebook_size` entries, k-means over the init's content
        features (its SSL encoder and ssl_proj, as the SSL stage fits one): (quantizer state, stats)."""
        from training.train_ssl import ContentModel, fit_codebook

        ssl, sovits = self._content_modules_from(state, with_quantizer=False)
        s2 = self.config.sovits
        content = ContentModel(ssl, sovits.ssl_proj, s2.ssl_dim, s2.n_symbols)
        tr, _ = self.items()
        stats = fit_codebook(
            content, sovits.quantizer, tr, s2.semantic_stride, self.recipe.ssl, self.recipe.progress
        )
        print(
            f"codebook refitted over {self.recipe.init}: {s2.codebook_size} entries, "
            f"{int(stats['codebook_used'])} used, perplexity {stats['codebook_perplexity']:.0f}"
        )
        return sovits.quantizer.state_dict(), stats

    def content_modules(self) -> tuple[SSLEncoder, SoVITS]:
        """The trained SSL encoder and a SoVITS holding the trained ssl_proj + codebook."""
        return self._content_modules_from(self.ssl_stage())

    def _content_modules_from(
        self, st: dict[str, Any], with_quantizer: bool = True
    ) -> tuple[SSLEncoder, SoVITS]:
        ssl = self.config.ssl.build()
        if self.config.ssl.kind == "tiny":
            ssl.load_state_dict(st["ssl"])
        sovits = SoVITS(self.config.sovits, posterior=False)
        sovits.ssl_proj.load_state_dict(st["ssl_proj"])
        if with_quantizer:
            sovits.quantizer.load_state_dict(st["quantizer"])
        return ssl.eval(), sovits.eval()

    def encoded(self) -> dict[str, Path]:
        if self._encoded is None:
            tr, ev = self.items()
            self.ssl_stage()  # on every rank: it may synchronise
            result: Any = None
            if self.info.is_main:
                ssl, sovits = self.content_modules()
                prep = PrepConfig(bert_dir=self.recipe.bert_dir)
                result, _ = encode(
                    tr + ev,
                    ssl,
                    sovits.ssl_proj,
                    sovits.quantizer,
                    self.recipe.cache_dir,
                    prep.digest(),
                    progress=self.recipe.progress,
                )
            self._encoded = ddp.broadcast_object(result, self.info)  # type: ignore[assignment]
        assert self._encoded is not None
        return self._encoded

    def gpt_stage(self) -> Path:
        path = self.run_dir / "gpt" / GPT_FINAL
        if ddp.broadcast_object(path.is_file(), self.info):
            return path
        tr, ev = self.items()
        enc = self.encoded()
        init = None
        if self.init_model is not None and not (self.recipe.new_tokens or self.recipe.gpt_from_scratch):
            init = self.init_model.gpt.state_dict()
        return train_gpt(
            self.config.gpt,
            tr,
            enc,
            ev,
            enc,
            self.run_dir / "gpt",
            self.recipe.gpt,
            init,
            self.recipe.tracking_uri,
            self.recipe.progress,
        )

    @property
    def uses_aligner(self) -> bool:
        return self.config.sovits.mrte_lookup == "aligned"

    def aligner_stage(self) -> Path | None:
        """The token aligner (trained on rank 0), or None when SoVITS's lookup needs none."""
        if not self.uses_aligner:
            return None
        path = self.run_dir / "aligner" / ALIGNER_FINAL
        if ddp.broadcast_object(path.is_file(), self.info):
            return path
        init = self.init_model
        if init is not None and init.aligner is not None and not self.recipe.new_tokens:
            # the init's tokens are kept, so is the aligner that reads them (as the ssl stage keeps
            # the init's encoder)
            if self.info.is_main:
                from training.common import save_checkpoint

                save_checkpoint(path, {**init.aligner.checkpoint(), "stats": {"from": str(self.recipe.init)}})
            ddp.barrier(self.info)
            return path
        tr, ev = self.items()
        enc = self.encoded()
        if self.info.is_main:
            assert self.config.aligner is not None  # the config's aligned lookup has one
            train_aligner(
                self.config.aligner,
                tr,
                enc,
                ev,
                path.parent,
                self.recipe.aligner,
                self.recipe.tracking_uri,
                self.recipe.progress,
            )
        ddp.barrier(self.info)
        return path

    def aligner(self) -> TokenAligner | None:
        path = self.aligner_stage()
        return load_aligner(path) if path is not None else None

    def sovits_stage(self) -> Path:
        path = self.run_dir / "sovits" / S2_FINAL
        if ddp.broadcast_object(path.is_file(), self.info):
            return path
        aligner = self.aligner()
        tr, ev = self.items()
        enc = self.encoded()
        init_s2 = init_voc = None
        if self.init_model is not None:
            # ssl_proj and the codebook come from the SSL stage (the init's, a refitted codebook, or
            # a newly trained encoder's); the rest learns to read the new content from here
            init_s2 = {
                k: v for k, v in self.init_model.sovits.state_dict().items() if not k.startswith("quantizer.")
            }
            if self.init_model.config.vocoder.kind == self.config.vocoder.kind:
                init_voc = self.init_model.vocoder.state_dict()  # else a fresh generator of the new kind
        return train_sovits(
            self.config.sovits,
            self.config.vocoder,
            self.ssl_stage(),
            tr,
            enc,
            ev,
            enc,
            self.run_dir / "sovits",
            self.recipe.sovits,
            init_s2,
            init_voc,
            self.recipe.tracking_uri,
            self.recipe.progress,
            aligner,
        )

    def assemble(self) -> BaseModel:
        """The trained stages as one inference bundle."""
        from training.common import load_checkpoint

        gpt_state = load_checkpoint(self.run_dir / "gpt" / GPT_FINAL)
        s2_state = load_checkpoint(self.run_dir / "sovits" / S2_FINAL)
        if gpt_state is None or s2_state is None:
            raise FileNotFoundError(f"{self.run_dir}: the gpt and sovits stages must finish before export")
        ssl, _ = self.content_modules()
        gpt = GPT(self.config.gpt)
        gpt.load_state_dict(gpt_state["model"])
        sovits = SoVITS(self.config.sovits, posterior=False)
        sovits.load_state_dict(s2_state["sovits"])
        vocoder = build_vocoder(self.config.vocoder)
        vocoder.load_state_dict(s2_state["vocoder"])
        return BaseModel.from_modules(self.config, gpt, sovits, vocoder, ssl, self.aligner())

    def export(self) -> Path:
        out = self.run_dir / BASE_DIR
        if ddp.broadcast_object((out / "manifest.json").is_file(), self.info):
            return out
        self.ssl_stage()  # on every rank: these may synchronise
        self.items()
        if self.info.is_main:
            model = self.assemble()
            model.save(out)
            self._log_export(model, out)
        ddp.barrier(self.info)
        return out

    def _log_export(self, model: BaseModel, out: Path) -> None:
        from training.tracking import Tracker
        from tritone.pipeline import Pipeline, SynthesisParams

        r = self.recipe
        params = {
            "preset": r.preset,
            "seed": r.seed,
            "train_list": ",".join(str(p) for p in r.train_lists),
            "eval_list": str(r.eval_list),
            "init": str(r.init) if r.init else "",
            "weights_sha256": model.weights_sha256,
            "config": json.dumps(asdict(model.config), sort_keys=True),
        }
        for name in ("gpt", "sovits", "vocoder", "ssl"):
            params[f"params_{name}"] = sum(t.numel() for t in getattr(model, name).state_dict().values())
        tracker = Tracker("tritone-train-base", f"export-{self.run_dir.name}", params, uri=r.tracking_uri)
        tracker.set_tags({"weights_sha256": model.weights_sha256})
        tracker.log_artifacts(out, "base")
        # a few held-out sentences, each cloned from another clip of the same speaker
        _, ev = self.items()
        pipe = Pipeline(model)
        by_speaker: dict[str, list[PrepItem]] = {}
        for it in ev:
            by_speaker.setdefault(it.speaker, []).append(it)
        t0 = time.time()
        for speaker, its in sorted(by_speaker.items())[:4]:
            if len(its) < 2:
                continue
            ref_item, target = its[0], its[1]
            audio, sr = _item_audio(ref_item)
            try:
                voice = pipe.build_voice_prompt(audio, sr, ref_item.text, ref_item.lang)
            except ValueError:  # reference outside 3-10 s
                continue
            sampling = SynthesisParams(seed=r.seed, max_new_tokens=SAMPLE_MAX_TOKENS)
            wav = pipe.synthesize(target.text, target.lang, voice, sampling)
            tracker.log_audio(wav, pipe.sample_rate, f"{speaker}_{target.utt_id}", "samples")
        tracker.log_metrics({"sample_seconds": time.time() - t0}, 0)
        tracker.finish()

    def register(self) -> dict[str, Any]:
        from adapters.registry import AdapterRegistry

        base = self.export()
        pin = AdapterRegistry(self.recipe.tracking_uri).register_base(
            base, description=f"{self.recipe.preset} recipe, seed {self.recipe.seed}, run {self.run_dir}"
        )
        return {
            "name": pin.name,
            "version": pin.version,
            "weights_sha256": pin.weights_sha256,
            "path": str(base),
        }

    def run(self, stage: str) -> Any:
        if stage not in (*STAGES, "all"):
            raise ValueError(f"unknown stage {stage!r}; choose from {', '.join((*STAGES, 'all'))}")
        steps = STAGES if stage == "all" else (stage,)
        result: Any = None
        for s in steps:
            if s == "prep":
                tr, ev = self.items()
                result = {"train": len(tr), "eval": len(ev)}
            elif s == "ssl":
                result = self.ssl_stage().get("stats", {})
            elif s == "encode":
                result = {"encoded": len(self.encoded())}
            elif s == "gpt":
                result = str(self.gpt_stage())
            elif s == "aligner":
                path = self.aligner_stage()
                result = str(path) if path is not None else "not needed (MRTE lookup is not aligned)"
            elif s == "sovits":
                result = str(self.sovits_stage())
            elif s == "export":
                result = str(self.export())
            elif s == "register":
                self.export()  # on every rank: it may synchronise
                result = self.register() if self.info.is_main else None
                ddp.barrier(self.info)
        return result
