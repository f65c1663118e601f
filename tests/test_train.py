"""Training end to end at the tiny size on a tiny real corpus (flite voices): base model stages,
resumption, MLflow tracking and registration, multi-process DDP, and a voice adapter that loads
and changes the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.train_adapter import AdapterJob, AdapterTrainConfig, target_modules, train_adapter
from training.train_base import BaseRecipe, BaseTrainer
from training.train_gpt import GPTTrainConfig
from training.train_sovits import S2TrainConfig
from training.train_ssl import SSLTrainConfig
from tritone.models.base import BaseModel

pytestmark = pytest.mark.slow


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = root / "corpus"
        self.uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        self.cache = root / "cache"
        self.run = root / "run"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from training.demo import build_demo_corpus

    root = tmp_path_factory.mktemp("train")
    e = Env(root)
    saved = {k: os.environ.get(k) for k in ("TRITONE_HOME", "TRITONE_MLFLOW_URI")}
    os.environ["TRITONE_HOME"] = str(root / "home")
    os.environ["TRITONE_MLFLOW_URI"] = e.uri
    build_demo_corpus(e.corpus, sentences=8, voices=["flite_awb", "flite_slt", "flite_rms"], progress=False)
    yield e
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _recipe(env: Env) -> BaseRecipe:
    return BaseRecipe(
        train_list=env.corpus / "train.list",
        eval_list=env.corpus / "eval.list",
        run_dir=env.run,
        preset="tiny",
        seed=7,
        cache_dir=env.cache,
        tracking_uri=env.uri,
        progress=False,
        threads=1,
        ssl=SSLTrainConfig(steps=40, warmup=5, log_every=5, ckpt_every=20, eval_utts=4, max_frames=2000),
        gpt=GPTTrainConfig(
            steps=40, warmup=5, lr=3e-3, log_every=5, eval_every=20, ckpt_every=20, max_tokens=1500
        ),
        sovits=S2TrainConfig(
            steps=16, warmup=2, gan_start=8, log_every=4, eval_every=8, ckpt_every=8, eval_utts=2, max_batch=4
        ),
    )


def _history(uri: str, experiment: str, key: str) -> list[float]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, experiment
    runs = client.search_runs([exp.experiment_id], order_by=["start_time DESC"], max_results=1)
    assert runs, experiment
    return [
        m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)
    ]


@pytest.fixture(scope="module")
def base_dir(env: Env) -> Path:
    trainer = BaseTrainer(_recipe(env))
    pin = trainer.run("all")
    assert pin["name"] == "tritone-base" and pin["version"] == 1
    return Path(pin["path"])


def test_base_training_learns_and_logs_to_mlflow(env: Env, base_dir: Path) -> None:
    ctc = _history(env.uri, "tritone-train-ssl", "ctc_loss")
    assert len(ctc) >= 4 and ctc[-1] < ctc[0]
    gpt = _history(env.uri, "tritone-train-gpt", "loss")
    assert len(gpt) >= 4 and gpt[-1] < gpt[0] - 0.5
    mel = _history(env.uri, "tritone-train-sovits", "loss_mel")
    assert len(mel) == 4 and min(mel[1:]) < mel[0]
    assert _history(env.uri, "tritone-train-sovits", "loss_d")  # the discriminators trained
    assert _history(env.uri, "tritone-train-sovits", "eval_mel_l1")
    lr = _history(env.uri, "tritone-train-gpt", "lr")
    assert lr[0] == pytest.approx(3e-3) and lr[-1] < lr[0]  # warm-up done by step 5, then cosine decay

    from mlflow import MlflowClient

    client = MlflowClient(env.uri)
    run = client.search_runs([client.get_experiment_by_name("tritone-train-sovits").experiment_id])[0]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert any(p.endswith(".wav") for p in artifacts) and any(p.endswith(".png") for p in artifacts)

    model = BaseModel.load(base_dir)
    versions = client.search_model_versions("name='tritone-base'")
    assert [v.tags["weights_sha256"] for v in versions] == [model.weights_sha256]
    assert model.sovits.quantizer.codebooks[0].is_initialised


def test_stages_resume_instead_of_redoing(env: Env, base_dir: Path) -> None:
    before = (env.run / "gpt" / "gpt-final.pt").stat().st_mtime_ns
    trainer = BaseTrainer(_recipe(env))
    assert trainer.run("gpt") == str(env.run / "gpt" / "gpt-final.pt")
    assert (env.run / "gpt" / "gpt-final.pt").stat().st_mtime_ns == before
    # an interrupted loop continues from its checkpoint: more steps pick up at the saved step
    recipe = _recipe(env)
    recipe.run_dir = env.root / "resume"
    recipe.gpt.steps = 20
    BaseTrainer(recipe).run("gpt")
    state = torch.load(recipe.run_dir / "gpt" / "ckpt-latest.pt", weights_only=False)
    assert state["step"] == 20
    (recipe.run_dir / "gpt" / "gpt-final.pt").unlink()
    recipe.gpt.steps = 30
    BaseTrainer(recipe).run("gpt")
    assert torch.load(recipe.run_dir / "gpt" / "ckpt-latest.pt", weights_only=False)["step"] == 30


def test_several_train_lists_are_read_as_one(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`--train-list` repeated: the demo's text stage trains on the written and generated lists."""
    import json

    from training.data import read_list
    from tritone.cli import main

    first, second = env.corpus / "train.list", env.corpus / "heldout_train.list"
    args = ["train", "base", "--eval-list", str(env.corpus / "eval.list"), "--preset", "tiny"]
    args += ["--run-dir", str(env.root / "lists"), "--stage", "prep", "--no-progress"]
    assert main([*args, "--train-list", str(first), "--train-list", str(second)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["result"]
    n_first, n_second = len(read_list(first).utterances), len(read_list(second).utterances)
    assert n_first and n_second and result["train"] == n_first + n_second
    assert main([*args, "--train-list", str(first)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["result"]["train"] == n_first


def test_ddp_two_processes_gloo(env: Env, base_dir: Path) -> None:
    run_dir = env.root / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
        "-m", "tritone.cli", "train", "base",
        "--train-list", str(env.corpus / "train.list"), "--eval-list", str(env.corpus / "eval.list"),
        "--run-dir", str(run_dir), "--preset", "tiny", "--init", str(base_dir), "--stage", "gpt",
        "--gpt-steps", "4", "--threads", "1", "--no-progress", "--tracking-uri", env.uri,
    ]  # fmt: skip
    envs = {**os.environ, "OMP_NUM_THREADS": "1", "TRITONE_HOME": str(env.root / "home")}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envs, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    state = torch.load(run_dir / "gpt" / "gpt-final.pt", weights_only=False)
    assert state["steps"] == 4
    assert _history(env.uri, "tritone-train-gpt", "eval_loss")  # rank 0 evaluated and logged
    from mlflow import MlflowClient

    client = MlflowClient(env.uri)
    exp = client.get_experiment_by_name("tritone-train-gpt")
    run = client.search_runs([exp.experiment_id], order_by=["start_time DESC"], max_results=1)[0]
    assert run.data.params["world"] == "2"


def _consent(env: Env) -> Path:
    from adapters.consent import ConsentRecord

    consent = env.root / "consent.json"
    consent.write_text(
        ConsentRecord(
            id="consent-rms",
            speaker="flite rms",
            granted_by="test",
            scope="tests",
            date="2026-01-01",
            evidence_sha256="0" * 64,
        ).to_json()
    )
    return consent


def test_adapter_trains_registers_and_changes_the_voice(env: Env, base_dir: Path) -> None:
    from adapters.apply import apply_adapter
    from adapters.format import read_adapter
    from adapters.registry import AdapterRegistry
    from tritone.pipeline import Pipeline, SynthesisParams

    consent = _consent(env)
    out = env.root / "adapters" / "rms"
    job = AdapterJob(
        voice="rms",
        tenant="demo",
        base=base_dir,
        audio=env.corpus / "heldout_train.list",
        speaker="flite_rms",
        consent=consent,
        out=out,
        eval_list=env.corpus / "heldout_eval.list",
        eval_sentences=1,
        eval_max_tokens=40,
        tracking_uri=env.uri,
        cache_dir=env.cache,
        progress=False,
        config=AdapterTrainConfig(
            steps=30, lr=3e-3, log_every=5, targets=("gpt", "ref", "mrte", "flow", "vocoder")
        ),
    )
    result = train_adapter(job)
    gpt_ce = _history(env.uri, "tritone-train-adapter", "gpt_ce")
    mel = _history(env.uri, "tritone-train-adapter", "mel_l1")
    assert gpt_ce[-1] < gpt_ce[0] and mel[-1] < mel[0]

    # the directory is a valid adapter pinned to the base, with its metrics
    model = BaseModel.load(base_dir)
    adapter = read_adapter(out, expect_base=model.weights_sha256)
    assert set(adapter.lora) == set(target_modules(model, ("gpt", "ref", "mrte", "flow", "vocoder")))
    assert "gpt.layers.0.self_attn.in_proj" in adapter.lora and "vocoder.conv_pre" in adapter.lora
    assert {"speaker_similarity", "wer", "zero_shot_similarity", "ground_truth_wer"} <= set(
        adapter.manifest.metrics
    )
    assert adapter.manifest.consent_id == "consent-rms"

    # registered at staging, with the metrics and the training run as lineage
    info = AdapterRegistry(env.uri).show("demo.rms")
    version = info.versions[-1]
    assert version.version == result.version and "staging" in version.aliases
    assert version.run_id == result.run_id
    assert version.metrics["speaker_similarity"] == pytest.approx(result.metrics["speaker_similarity"])

    # merged in, it changes what the base says for the same text, voice and seed
    params = SynthesisParams(seed=3, max_new_tokens=30)
    plain = Pipeline(BaseModel.load(base_dir)).synthesize(
        "Bring the green umbrella.", "en", adapter.prompt, params
    )
    tuned_model = apply_adapter(BaseModel.load(base_dir), adapter)
    tuned = Pipeline(tuned_model).synthesize("Bring the green umbrella.", "en", adapter.prompt, params)
    n = min(len(plain), len(tuned))
    assert n > 0
    # the served target groups sit before the vocoder's output stage, and this barely trained tiny
    # vocoder is almost deaf to its input (peak ~1e-3), so the audio barely moves; the latent the
    # SoVITS part hands the vocoder, for the same tokens, noise and voice, must
    plain_pipe, tuned_pipe = Pipeline(BaseModel.load(base_dir)), Pipeline(tuned_model)
    tokens, phones = adapter.prompt.semantic[:40], adapter.prompt.phone_ids.tolist()
    z_plain = plain_pipe._latent(tokens, phones, plain_pipe.reference_embedding(adapter.prompt), params, 3)
    z_tuned = tuned_pipe._latent(tokens, phones, tuned_pipe.reference_embedding(adapter.prompt), params, 3)
    assert z_plain.shape == z_tuned.shape
    assert float((z_plain - z_tuned).abs().mean()) > 1e-3 * float(z_plain.abs().mean())
    # and it does exactly what the trained peft model did: the LoRA delta is in the weights
    base_w = model.gpt.layers[0].self_attn.in_proj.weight  # type: ignore[union-attr]
    tuned_w = tuned_model.gpt.layers[0].self_attn.in_proj.weight  # type: ignore[union-attr]
    assert not torch.allclose(base_w, tuned_w)


def test_kl_weight_zero_leaves_the_prior_untrained(env: Env, base_dir: Path) -> None:
    """`kl_weight` reaches the SoVITS loss: the text encoder (prior) learns only through the KL
    term, so one step with weight 0 leaves it where it was (but for weight decay) and one with
    weight 1 moves it."""
    import shutil

    from training.common import load_checkpoint, seed_everything
    from tritone.models.sovits import SoVITS

    moved = {}
    for weight in (0.0, 1.0):
        recipe = _recipe(env)
        recipe.run_dir = env.root / f"kl-{weight}"
        (recipe.run_dir / "ssl").mkdir(parents=True)
        shutil.copy(env.run / "ssl" / "ssl-final.pt", recipe.run_dir / "ssl" / "ssl-final.pt")
        recipe.sovits.steps, recipe.sovits.kl_weight = 1, weight
        trainer = BaseTrainer(recipe)
        state = load_checkpoint(Path(trainer.run("sovits")))
        assert state is not None
        seed_everything(recipe.seed)  # the trainer's own initialisation, rebuilt
        init = SoVITS(trainer.config.sovits, posterior=True).state_dict()
        enc_p = [k for k in init if k.startswith("enc_p.") and init[k].is_floating_point()]
        moved[weight] = max(float((state["sovits"][k] - init[k]).abs().max()) for k in enc_p)
    # weight 0: AdamW's decoupled weight decay alone (lr 1.5e-4 x 0.01 x |w|); weight 1: a full step
    assert moved[1.0] > 5e-5 and moved[0.0] < moved[1.0] / 10, moved


def test_stft_loss_and_posterior_mean_options_reach_the_sovits_trainer(env: Env, base_dir: Path) -> None:
    """`--stft-weight`, `--posterior-mean-steps` and `--prior-target mean` (S2TrainConfig) are
    honoured by the trainer: the STFT loss is computed, added and logged; the prior's loss is the
    mean's likelihood; the run completes with all three; an unknown prior target is refused."""
    import shutil

    recipe = _recipe(env)
    recipe.run_dir = env.root / "stft"
    (recipe.run_dir / "ssl").mkdir(parents=True)
    shutil.copy(env.run / "ssl" / "ssl-final.pt", recipe.run_dir / "ssl" / "ssl-final.pt")
    recipe.sovits.steps, recipe.sovits.log_every = 2, 1
    recipe.sovits.stft_weight, recipe.sovits.posterior_mean_steps = 2.5, 1
    recipe.sovits.prior_target = "mean"
    BaseTrainer(recipe).run("sovits")
    stft = _history(env.uri, "tritone-train-sovits", "loss_stft")
    assert len(stft) == 2 and all(v > 0 for v in stft), stft
    from mlflow import MlflowClient

    client = MlflowClient(env.uri)
    experiment = client.get_experiment_by_name("tritone-train-sovits")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "params.prior_target = 'mean'")
    assert len(runs) == 1 and "loss_kl" in runs[0].data.metrics
    recipe.sovits.prior_target = "posterior"
    recipe.run_dir = env.root / "bad-target"
    (recipe.run_dir / "ssl").mkdir(parents=True)
    shutil.copy(env.run / "ssl" / "ssl-final.pt", recipe.run_dir / "ssl" / "ssl-final.pt")
    with pytest.raises(ValueError, match="prior_target"):
        BaseTrainer(recipe).run("sovits")
    recipe.sovits.prior_target = "sample"
    # the magnitude loss needs a spectrum to score: a HiFi-GAN base is refused before any step
    recipe.run_dir = env.root / "magnitude"
    (recipe.run_dir / "ssl").mkdir(parents=True)
    shutil.copy(env.run / "ssl" / "ssl-final.pt", recipe.run_dir / "ssl" / "ssl-final.pt")
    recipe.sovits.magnitude_weight = 1.0
    with pytest.raises(ValueError, match="--vocoder spectral"):
        BaseTrainer(recipe).run("sovits")


def test_mrte_align_weight_reaches_the_sovits_trainer(env: Env, base_dir: Path) -> None:
    """`--mrte-align-weight` (S2TrainConfig.mrte_align_weight): the trainer logs MRTE's
    guided-attention cost, records the weight, and refuses a negative one before any step; the
    same for `--content-corruption` and `--content-cut` (a share of 1 or more is refused)."""
    import shutil

    from mlflow import MlflowClient

    recipe = _recipe(env)
    recipe.run_dir = env.root / "mrte-align"
    (recipe.run_dir / "ssl").mkdir(parents=True)
    shutil.copy(env.run / "ssl" / "ssl-final.pt", recipe.run_dir / "ssl" / "ssl-final.pt")
    recipe.sovits.steps, recipe.sovits.log_every = 2, 1
    recipe.sovits.mrte_align_weight = 5.0
    recipe.sovits.content_corruption = 0.3  # (`--content-corruption`) recorded alike
    recipe.sovits.content_cut = 0.5  # (`--content-cut`)
    BaseTrainer(recipe).run("sovits")
    cost = _history(env.uri, "tritone-train-sovits", "mrte_align_cost")
    assert len(cost) == 2 and all(0.0 < v < 1.0 for v in cost), cost
    client = MlflowClient(env.uri)
    experiment = client.get_experiment_by_name("tritone-train-sovits")
    assert experiment is not None
    assert client.search_runs(
        [experiment.experiment_id],
        "params.mrte_align_weight = '5.0' and params.content_corruption = '0.3' "
        "and params.content_cut = '0.5'",
    )

    recipe.run_dir = env.root / "mrte-align-bad"
    (recipe.run_dir / "ssl").mkdir(parents=True)
    shutil.copy(env.run / "ssl" / "ssl-final.pt", recipe.run_dir / "ssl" / "ssl-final.pt")
    recipe.sovits.mrte_align_weight = -1.0
    with pytest.raises(ValueError, match="mrte_align_weight"):
        BaseTrainer(recipe).run("sovits")
    recipe.sovits.mrte_align_weight = 0.0
    recipe.sovits.content_corruption = 1.0  # nothing left to read
    with pytest.raises(ValueError, match="content_corruption"):
        BaseTrainer(recipe).run("sovits")
    recipe.sovits.content_corruption, recipe.sovits.content_cut = 0.0, 1.0
    with pytest.raises(ValueError, match="content_cut"):
        BaseTrainer(recipe).run("sovits")


def test_mrte_place_lookup_over_a_base_without_it_trains_and_exports(env: Env, base_dir: Path) -> None:
    """`--init BASE --mrte-lookup content+place`: SoVITS continues from a base whose MRTE has no place prior
    (every other weight must still fit), the prior starts at its fixed value and trains, and the
    exported bundle records it and loads with it."""
    import math

    from tritone.models.sovits import SoVITS

    recipe = _recipe(env)
    recipe.run_dir = env.root / "mrte-position"
    recipe.init, recipe.mrte_lookup = base_dir, "content+place"
    recipe.gpt.steps = 0
    recipe.sovits.steps, recipe.sovits.gan_start, recipe.sovits.prior_start = 4, 2, 0
    trainer = BaseTrainer(recipe)
    assert trainer.config.sovits.mrte_lookup == "content+place"
    for stage in ("gpt", "sovits", "export"):
        trainer.run(stage)
    base, moved = BaseModel.load(base_dir), BaseModel.load(recipe.run_dir / "base")
    assert (
        base.config.sovits.mrte_lookup == "content" and base.sovits.enc_p.mrte.position_log_strength is None
    )
    assert moved.config.sovits.mrte_lookup == "content+place"
    strength = moved.sovits.enc_p.mrte.position_log_strength
    assert strength is not None and strength.shape == (moved.config.sovits.mrte_heads,)
    assert not torch.allclose(strength, torch.full_like(strength, math.log(0.1)))  # it trained
    # the other weights continued from the base (a random restart would not correlate with it)
    w0, w1 = base.sovits.enc_p.mrte.c_pre.weight, moved.sovits.enc_p.mrte.c_pre.weight
    assert torch.corrcoef(torch.stack([w0.flatten(), w1.flatten()]))[0, 1] > 0.99
    # a bundle trained with it refuses to load into a model without it: the flag travels with it
    with pytest.raises(RuntimeError, match="position_log_strength"):
        SoVITS(base.config.sovits, posterior=False).load_state_dict(moved.sovits.state_dict())


def test_mrte_aligned_lookup_trains_its_aligner_and_bundles_it(
    env: Env, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--init BASE --mrte-lookup aligned`: the aligner stage trains the token aligner on the
    encoded tokens (logged with its held-out phone error rate), SoVITS then trains with each
    clip's phones placed on its frames by it (every frame a phone of its own sentence, in order),
    and the export bundles the aligner: the offline pipeline places the phones of whatever tokens
    it decodes, the resynthesis check reads the bundle, and the served graphs refuse it. A run
    without the aligned lookup has no aligner stage to do."""
    import json

    import numpy as np

    from training.recipes.resynthesis import main as resynthesis
    from tritone.models.sovits import SoVITS
    from tritone.pipeline import Pipeline, SynthesisParams
    from tritone.serving.runtime_graphs import BankContext, build_graphs

    assert BaseTrainer(_recipe(env)).run("aligner").startswith("not needed")
    recipe = _recipe(env)
    recipe.run_dir = env.root / "mrte-aligned"
    recipe.init, recipe.mrte_lookup = base_dir, "aligned"
    recipe.gpt.steps = 0
    recipe.aligner.steps, recipe.aligner.warmup, recipe.aligner.log_every = 30, 3, 10
    recipe.aligner.eval_every, recipe.aligner.eval_utts = 15, 4
    recipe.sovits.steps, recipe.sovits.gan_start, recipe.sovits.prior_start = 4, 2, 0
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    forward_train = SoVITS.forward_train

    def spy(self: SoVITS, *args: object, **kwargs: object) -> object:
        index = kwargs.get("phone_index")
        assert isinstance(index, torch.Tensor)
        phone_lens, spec_lens = args[4], args[2]
        assert isinstance(phone_lens, torch.Tensor) and isinstance(spec_lens, torch.Tensor)
        seen.append((index.clone(), phone_lens.clone(), spec_lens.clone()))
        return forward_train(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SoVITS, "forward_train", spy)
    trainer = BaseTrainer(recipe)
    for stage in ("gpt", "sovits"):  # the sovits stage trains the aligner first
        trainer.run(stage)
    assert (recipe.run_dir / "aligner" / "aligner-final.pt").is_file()
    per = _history(env.uri, "tritone-train-aligner", "eval_phone_error_rate")
    assert len(per) == 2 and all(0.0 <= v <= 2.0 for v in per), per
    loss = _history(env.uri, "tritone-train-aligner", "loss")
    assert len(loss) == 3 and loss[-1] < loss[0], loss
    assert len(seen) == 4
    for index, phone_lens, spec_lens in seen:
        assert index.shape[0] == phone_lens.shape[0] and index.shape[1] >= int(spec_lens.max())
        for row, n, t in zip(index, phone_lens.tolist(), spec_lens.tolist()):
            frames = row[:t]
            assert frames[0] == 0 and (frames.diff() >= 0).all() and int(frames.max()) <= n - 1
            assert len(frames.unique()) >= min(n, t) - 1  # every phone gets a frame (but a cut last one)

    # the bundle carries the aligner, under its hash
    trainer.run("export")
    bundle = BaseModel.load(recipe.run_dir / "base")
    assert bundle.aligner is not None and bundle.config.aligner == bundle.aligner.config
    assert bundle.config.sovits.mrte_lookup == "aligned" and "aligner" in bundle.component_hashes()
    assert BaseModel.load(base_dir).aligner is None  # other bundles are as they were
    # a run over the aligned bundle keeps its aligner (the tokens are the same), training none
    from training.train_aligner import load_aligner

    again = _recipe(env)
    again.run_dir, again.init = env.root / "mrte-aligned-again", recipe.run_dir / "base"
    kept = Path(BaseTrainer(again).run("aligner"))
    for name, tensor in load_aligner(kept).state_dict().items():
        assert torch.equal(tensor, bundle.aligner.state_dict()[name]), name
    assert len(_history(env.uri, "tritone-train-aligner", "loss")) == 3  # still the first run's
    placed: list[torch.Tensor] = []
    decode_content = SoVITS.decode_content

    def spy_decode(self: SoVITS, *args: object, **kwargs: object) -> object:
        index = kwargs.get("phone_index")
        assert isinstance(index, torch.Tensor)
        placed.append(index.clone())
        return decode_content(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SoVITS, "decode_content", spy_decode)
    pipe = Pipeline(bundle)
    ge = torch.randn(1, bundle.config.sovits.gin_channels, 1)
    audio = pipe.tokens_to_audio(torch.arange(20), list(range(10, 16)), ge, SynthesisParams(seed=1), 0)
    assert audio.shape == (40 * pipe.hop,) and np.isfinite(audio).all()
    assert placed[-1].shape == (1, 40) and placed[-1][0, -1] == 5  # all six phones, to the end
    # a stream's start places only the phones said so far: the path may stop before the last
    prefix = pipe._latent(
        torch.arange(20)[:2], list(range(10, 30)), ge, SynthesisParams(seed=1), 0, complete=False
    )
    assert prefix.shape[2] == 4 and int(placed[-1].max()) < 19
    with pytest.raises(ValueError, match="aligned MRTE lookup"):
        build_graphs(bundle, BankContext(), [])

    placed.clear()
    report = env.root / "resynthesis-aligned.json"
    argv = [str(recipe.run_dir / "base"), "--base", str(base_dir), "--corpus", str(env.corpus)]
    argv += ["--voices", "2", "--per-voice", "1", "--content", "codebook", "--content", "corrupt:0.5"]
    assert resynthesis([*argv, "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    assert set(rows) == {str(recipe.run_dir / "base"), f"{recipe.run_dir / 'base'} (content: corrupt:0.5)"}
    assert len(placed) == 4 and all(i[0, 0] == 0 and (i.diff() >= 0).all() for i in placed)
    # the corrupted content is decoded with the phones its clean tokens placed
    assert torch.equal(placed[0], placed[2]) and torch.equal(placed[1], placed[3])

    # a voice adapter trains over it (its serving-path loss places the phones as the pipeline does)
    from adapters.format import read_adapter

    placed.clear()
    out = env.root / "adapters" / "rms-aligned"
    job = AdapterJob(
        voice="rms-aligned",
        tenant="demo",
        base=recipe.run_dir / "base",
        audio=env.corpus / "heldout_train.list",
        speaker="flite_rms",
        consent=_consent(env),
        out=out,
        eval_list=env.corpus / "heldout_eval.list",
        eval_sentences=1,
        eval_max_tokens=20,
        tracking_uri=env.uri,
        cache_dir=env.cache,
        progress=False,
        config=AdapterTrainConfig(steps=2, log_every=1, targets=("gpt", "mrte")),
    )
    train_adapter(job)
    assert read_adapter(out, expect_base=bundle.weights_sha256).manifest.metrics["wer"] >= 0.0
    assert placed  # its evaluation synthesised through the aligner


def test_decoder_probe_trains_variants_and_reports_them(env: Env, tmp_path: Path) -> None:
    """`python -m training.recipes.decoder_probe`: each variant trains in its own process, the
    report scores every variant next to the recordings, finished variants are reused."""
    import json

    from training.recipes import decoder_probe

    out = tmp_path / "probe"
    common = ["--corpus", str(env.corpus), "--out", str(out), "--preset", "tiny", "--max-steps", "3"]
    common += ["--voices", "1", "--per-voice", "1"]
    trained = ("sample", "mean+stft", "mean+spec", "mean+spec+mag")
    assert decoder_probe.main([*common, "--variants", *trained]) == 0
    report = json.loads((out / "probe.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["recordings", decoder_probe.RANDOM_PHASE_ROW, *trained]
    assert len(report["sentences"]) == 1
    assert rows["recordings"]["mel_l1"] == 0.0 and rows["recordings"]["periodicity"] > 0.5
    # the recordings' magnitudes survive the scrambled phases better than 3 steps of training make them
    scrambled = rows[decoder_probe.RANDOM_PHASE_ROW]["mel_l1"]
    assert 0.0 < scrambled < min(rows[name]["mel_l1"] for name in trained)
    for name in ("mean+spec", "mean+spec+mag"):
        spectral = torch.load(out / name / decoder_probe.PROBE_FILE)["voc"]
        assert spectral["head.weight"].shape[0] == 2 * 641  # the spectral generator's head, not HiFi-GAN's
    for name in trained:
        assert rows[name]["steps"] == 3 and rows[name]["mel_l1"] > 0.1, rows[name]
        assert 0.0 <= rows[name]["periodicity"] <= 1.1 and rows[name]["wer"] >= 0.0
    # a source-filter variant: scored with its head's pitch and, as a second row, the true pitch
    assert decoder_probe.main([*common, "--variants", "mean+nsf"]) == 0
    rows = json.loads((out / "probe.json").read_text())["rows"]
    assert list(rows) == ["recordings", decoder_probe.RANDOM_PHASE_ROW, "mean+nsf", "mean+nsf, true pitch"]
    assert rows["mean+nsf"]["steps"] == rows["mean+nsf, true pitch"]["steps"] == 3
    assert rows["mean+nsf"]["mel_l1"] != rows["mean+nsf, true pitch"]["mel_l1"]
    assert 0.0 <= rows["mean+nsf"]["pitch_voicing_agreement"] <= 1.0
    assert "pitch_voicing_agreement" not in rows["mean+nsf, true pitch"]
    assert "mean+nsf, true pitch" in (out / "probe.md").read_text()
    weights = out / "sample" / decoder_probe.PROBE_FILE
    before = weights.stat().st_mtime_ns
    assert decoder_probe.main([*common, "--variants", "sample"]) == 0
    assert weights.stat().st_mtime_ns == before  # reused, not retrained
    with pytest.raises(SystemExit):
        decoder_probe.main(["--corpus", str(env.corpus), "--variants", "posterior"])


def test_vocoder_kind_switch_trains_a_spectral_generator_over_a_base(
    env: Env, base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--init BASE --vocoder spectral --gpt-steps 0`: the base's SSL, codebook and GPT are kept,
    SoVITS continues from the base and a fresh spectral generator trains with it; the export is
    a bundle of the spectral kind that loads and speaks."""
    import json

    import numpy as np

    from tritone.models.spectral_vocoder import SpectralVocoder
    from tritone.pipeline import Pipeline, SynthesisParams

    recipe = _recipe(env)
    recipe.run_dir = env.root / "spectral"
    recipe.init, recipe.vocoder = base_dir, "spectral"
    recipe.gpt.steps = 0
    recipe.sovits.steps, recipe.sovits.gan_start, recipe.sovits.prior_start = 8, 4, 0
    recipe.sovits.magnitude_weight = 45.0  # --magnitude-weight: the spectrum is scored directly
    trainer = BaseTrainer(recipe)
    for stage in ("gpt", "sovits", "export"):
        trainer.run(stage)
    mel = _history(env.uri, "tritone-train-sovits", "loss_mel")
    assert len(mel) == 2 and mel[-1] < mel[0]
    magnitude = _history(env.uri, "tritone-train-sovits", "loss_magnitude")
    assert len(magnitude) == 2 and 0 < magnitude[-1] < magnitude[0], magnitude

    base, spectral = BaseModel.load(base_dir), BaseModel.load(recipe.run_dir / "base")
    assert base.config.vocoder.kind == "hifigan" and spectral.config.vocoder.kind == "spectral"
    assert isinstance(spectral.vocoder, SpectralVocoder)
    for name, tensor in base.gpt.state_dict().items():
        assert torch.equal(tensor, spectral.gpt.state_dict()[name]), name
    assert torch.equal(base.sovits.quantizer.codebooks[0].embed, spectral.sovits.quantizer.codebooks[0].embed)
    assert not torch.equal(base.sovits.enc_p.proj.weight, spectral.sovits.enc_p.proj.weight)  # trained on

    pipe = Pipeline(spectral)
    ge = torch.randn(1, spectral.config.sovits.gin_channels, 1)
    audio = pipe.tokens_to_audio(torch.arange(20), list(range(10, 30)), ge, SynthesisParams(seed=1), 0)
    assert audio.shape == (20 * 2 * pipe.hop,) and np.isfinite(audio).all() and np.abs(audio).max() > 0

    # the resynthesis check scores a bundle, a run folder's checkpoint and the recordings alike
    from training.recipes.resynthesis import main as resynthesis

    report = env.root / "resynthesis.json"
    sources = [str(base_dir), str(recipe.run_dir), "recordings"]
    argv = [
        "--posterior",
        "--noise-scale",
        "0.3",
        *sources,
        "--base",
        str(base_dir),
        "--corpus",
        str(env.corpus),
        "--voices",
        "2",
        "--per-voice",
        "1",
    ]
    assert resynthesis([*argv, "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    rows = written["rows"]
    assert written["noise_scale"] == 0.3
    # the posterior path is scored for the run folder only: a bundle has no posterior encoder
    assert set(rows) == {*sources, f"{recipe.run_dir} (posterior)"}
    assert rows[f"{recipe.run_dir} (posterior)"]["mel_l1"] != rows[str(recipe.run_dir)]["mel_l1"]
    assert rows[str(recipe.run_dir)]["steps"] == 8 and rows[str(base_dir)]["steps"] is None
    assert rows["recordings"]["mel_l1"] == 0.0 and rows[str(base_dir)]["mel_l1"] > 0.0
    assert all(r["wer"] >= 0.0 and 0.0 <= r["periodicity"] <= 1.0 for r in rows.values())

    # --content: the same sentences from the unquantised features and from a k-means codebook.
    # (The tiny generator's output hardly depends on its input, so what SoVITS reads is checked.)
    from tritone.models.sovits import SoVITS

    seen: list[torch.Tensor] = []
    seen_phones: list[list[int]] = []
    seen_keep: list[object] = []
    decode_content = SoVITS.decode_content

    def spy(self: SoVITS, content: torch.Tensor, *args: object, **kwargs: object) -> object:
        seen.append(content[0].T.clone())  # [T25, ssl_dim]
        seen_keep.append(kwargs.get("keep_content"))
        phones = args[1]
        assert isinstance(phones, torch.Tensor)
        seen_phones.append(phones[0].tolist())
        return decode_content(self, content, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SoVITS, "decode_content", spy)
    argv = [str(base_dir), "--base", str(base_dir), "--corpus", str(env.corpus), "--voices", "2"]
    argv += ["--per-voice", "1", "--content", "codebook", "--content", "features", "--content", "kmeans:8"]
    argv_content = [*argv, "--content", "corrupt:0.5", "--content", "phones-only"]
    assert resynthesis([*argv_content, "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    kinds = ("features", "kmeans:8", "corrupt:0.5", "phones-only")
    assert set(rows) == {str(base_dir), *(f"{base_dir} (content: {kind})" for kind in kinds)}
    assert len(seen) == 10  # 2 sentences x 5 kinds, in that order
    codebook = BaseModel.load(base_dir).sovits.quantizer.codebooks[0].embed

    def in_codebook(vectors: torch.Tensor) -> bool:
        return bool((vectors[:, None, :] == codebook[None]).all(dim=2).any(dim=1).all())  # exact rows

    assert all(in_codebook(v) for v in seen[:2])  # the bundle's tokens
    assert not any(in_codebook(v) for v in seen[2:4])  # the features themselves
    assert all(len(torch.unique(v, dim=0)) > 8 for v in seen[2:4])
    assert all(len(torch.unique(v, dim=0)) <= 8 and not in_codebook(v) for v in seen[4:6])  # 8 new entries
    # corrupt:0.5: the bundle's tokens, some frames (not all) swapped for other codebook entries
    for tokens, corrupted in zip(seen[:2], seen[6:8]):
        assert in_codebook(corrupted) and tokens.shape == corrupted.shape
        changed = (tokens != corrupted).any(dim=1).float().mean()
        assert 0.0 < changed < 1.0, changed
    # phones-only: the bundle's own tokens, with MRTE's content path cut; no other kind cuts it
    for tokens, cut in zip(seen[:2], seen[8:]):
        assert torch.equal(tokens, cut)
    assert all(keep is None for keep in seen_keep[:8])
    assert all(isinstance(keep, torch.Tensor) and not keep.any() for keep in seen_keep[8:])
    for bad in ("kmeans:1", "corrupt:1", "corrupt:x", "phones"):
        with pytest.raises(SystemExit):  # refused before any model is loaded
            resynthesis([*argv[:9], "--content", bad])
        assert "kmeans:N (N >= 2), corrupt:S (0 < S < 1) or phones-only" in capsys.readouterr().err

    # --other-phones: the same tokens, each sentence with the next one's phones
    from tritone.pipeline import Pipeline

    calls: list[tuple[torch.Tensor, list[int]]] = []
    tokens_to_audio = Pipeline.tokens_to_audio

    def spy_audio(self: Pipeline, tokens: torch.Tensor, phone_ids: list[int], *args: object) -> object:
        calls.append((tokens.clone(), list(phone_ids)))
        return tokens_to_audio(self, tokens, phone_ids, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "tokens_to_audio", spy_audio)
    varied = env.root / "varied-corpus"  # the tiny eval.list has one text: read the training clips
    varied.mkdir(exist_ok=True)
    lines = [ln for ln in (env.corpus / "train.list").read_text().splitlines() if "|en|" in ln]
    (varied / "eval.list").write_text("".join(f"{env.corpus / ln}\n" for ln in lines))
    argv = [
        str(base_dir),
        "--base",
        str(base_dir),
        "--corpus",
        str(varied),
        "--voices",
        "2",
        "--per-voice",
        "2",
    ]
    seen.clear()
    seen_phones.clear()
    argv += ["--content", "codebook", "--content", "corrupt:0.4"]
    assert resynthesis([*argv, "--other-phones", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["rows"]
    corrupt = f"{base_dir} (content: corrupt:0.4)"
    other_phones = " (another sentence's phones)"
    assert set(rows) == {str(base_dir), str(base_dir) + other_phones, corrupt, corrupt + other_phones}
    n = len(calls) // 2
    own, other = calls[:n], calls[n:]
    assert n == 4 and len(calls) == 2 * n
    for i in range(n):
        assert torch.equal(own[i][0], other[i][0])  # the same tokens,
        assert other[i][1] != own[i][1] and other[i][1] in [o[1] for o in own]  # another's phones
    # and the corrupted content (after the tokens' own two passes, which decode content too): the
    # same spans and codes with either phones
    assert len(seen) == 4 * n
    for i in range(n):
        corrupted, again = seen[2 * n + i], seen[3 * n + i]
        assert torch.equal(corrupted, again) and not torch.equal(corrupted, seen[i])
        assert seen_phones[2 * n + i] == own[i][1] and seen_phones[3 * n + i] == other[i][1]


def test_codebook_refit_over_a_base_trains_a_fresh_gpt_on_the_new_tokens(
    env: Env, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--init BASE --codebook-size 16`: the base's SSL encoder and ssl_proj are kept, a 16-entry
    codebook is fitted over their features, every cached token is one of its 16, the GPT (17-way
    vocabulary) trains from scratch while SoVITS and the HiFi-GAN generator continue from the
    base (weight-normed layers included), and the export speaks."""
    from training.preprocess import load_item
    from tritone.cli import main as tritone_main
    from tritone.pipeline import Pipeline, SynthesisParams

    recipe = _recipe(env)
    recipe.run_dir = env.root / "codebook"
    recipe.init, recipe.codebook_size = base_dir, 16
    # another seed than the base's: a layer left at its random initialisation would differ
    recipe.seed = recipe.ssl.seed = recipe.gpt.seed = recipe.sovits.seed = 8
    recipe.gpt.steps = 10
    recipe.sovits.steps, recipe.sovits.gan_start = 4, 2
    trainer = BaseTrainer(recipe)
    for stage in ("gpt", "sovits", "export"):
        trainer.run(stage)
    assert "codebook refitted" in capsys.readouterr().out

    base, refit = BaseModel.load(base_dir), BaseModel.load(recipe.run_dir / "base")
    assert base.config.sovits.codebook_size == 64
    assert refit.config.sovits.codebook_size == 16
    assert (refit.config.gpt.vocab_size, refit.config.gpt.eos) == (17, 16)
    codebook = refit.sovits.quantizer.codebooks[0]
    assert codebook.is_initialised and codebook.embed.shape == (16, base.config.sovits.ssl_dim)
    assert torch.unique(codebook.embed, dim=0).shape[0] == 16  # k-means centroids, all distinct
    for name, tensor in base.ssl.state_dict().items():
        assert torch.equal(tensor, refit.ssl.state_dict()[name]), name
    assert torch.equal(base.sovits.ssl_proj.weight, refit.sovits.ssl_proj.weight)
    tokens = torch.cat([load_item(path)["codes"].flatten() for path in trainer.encoded().values()])
    assert int(tokens.max()) < 16 and len(torch.unique(tokens)) > 8
    # the GPT started fresh: it is nearer a seeded new GPT than the base's (trained 4x as long)
    from training.common import seed_everything
    from tritone.models.gpt import GPT

    seed_everything(recipe.seed)
    fresh = GPT(refit.config.gpt).state_dict()
    gpt_after, gpt_before = refit.gpt.state_dict(), base.gpt.state_dict()
    shared = [k for k in gpt_after if gpt_before[k].shape == gpt_after[k].shape]
    to_fresh = sum(float((gpt_after[k] - fresh[k]).abs().sum()) for k in shared)
    to_base = sum(float((gpt_after[k] - gpt_before[k]).abs().sum()) for k in shared)
    assert to_fresh < to_base / 2, (to_fresh, to_base)
    # every SoVITS and generator layer continued from the base, the weight-normed ones included
    # (the bundle stores them folded; they were once left random without a word)
    s2_before, s2_after = base.sovits.state_dict(), refit.sovits.state_dict()
    for name in (
        "enc_p.proj.weight",
        "flow.flows.0.enc.in_layers.0.weight",
        "flow.flows.0.enc.cond_layer.weight",
    ):
        s2_drift = (s2_after[name] - s2_before[name]).abs().mean()
        assert s2_drift < 0.1 * s2_before[name].abs().mean(), (name, float(s2_drift))
    voc_before, voc_after = base.vocoder.state_dict(), refit.vocoder.state_dict()
    for name in ("ups.0.weight", "resblocks.0.convs1.0.weight", "conv_post.weight"):
        voc_drift = (voc_after[name] - voc_before[name]).abs().mean()
        assert voc_drift < 0.1 * voc_before[name].abs().mean(), (name, float(voc_drift))

    pipe = Pipeline(refit)
    ge = torch.randn(1, refit.config.sovits.gin_channels, 1)
    audio = pipe.tokens_to_audio(torch.arange(16), list(range(10, 26)), ge, SynthesisParams(seed=1), 0)
    assert audio.shape == (16 * 2 * pipe.hop,) and float(abs(audio).max()) > 0

    # the command line takes the option to the recipe and refuses a codebook that cannot hold tokens
    argv = ["train", "base", "--train-list", str(env.corpus / "train.list"), "--eval-list"]
    argv += [str(env.corpus / "eval.list"), "--run-dir", str(env.root / "codebook-1"), "--preset", "tiny"]
    assert tritone_main([*argv, "--codebook-size", "1", "--stage", "prep", "--no-progress"]) == 1
    assert "at least 2 entries" in capsys.readouterr().err


def test_ssl_reshape_over_a_base_trains_a_fresh_encoder_codebook_and_gpt(
    env: Env, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--init BASE --ssl-blocks 3 --ssl-dilation-cycle 2`: a fresh built-in SSL encoder of that
    shape is trained with the CTC objective (ssl_proj with it), a codebook is fitted over it, the
    GPT trains from scratch, SoVITS continues from the base reading the new content, and the
    export records the shape and builds voice prompts with it."""
    import numpy as np

    from training.common import seed_everything
    from training.train_ssl import SSL_FINAL, load_ssl_stage
    from tritone.cli import main as tritone_main
    from tritone.models.gpt import GPT
    from tritone.pipeline import Pipeline

    recipe = _recipe(env)
    recipe.run_dir = env.root / "ssl-reshape"
    recipe.init, recipe.ssl_blocks, recipe.ssl_dilation_cycle = base_dir, 3, 2
    recipe.seed = recipe.ssl.seed = recipe.gpt.seed = recipe.sovits.seed = 9
    recipe.ssl.steps, recipe.gpt.steps = 20, 10
    recipe.sovits.steps, recipe.sovits.gan_start = 4, 2
    trainer = BaseTrainer(recipe)
    for stage in ("gpt", "sovits", "export"):
        trainer.run(stage)

    stage = load_ssl_stage(recipe.run_dir / "ssl" / SSL_FINAL)
    assert stage["steps"] == 20 and "eval_per" in stage["stats"]  # trained here, not taken over
    base, reshaped = BaseModel.load(base_dir), BaseModel.load(recipe.run_dir / "base")
    assert (base.config.ssl.n_blocks, base.config.ssl.dilation_cycle) == (1, 1)
    assert (reshaped.config.ssl.n_blocks, reshaped.config.ssl.dilation_cycle) == (3, 2)
    assert [b.dilation[0] for b in reshaped.ssl.blocks] == [1, 2, 1]  # type: ignore[union-attr]
    assert torch.equal(reshaped.sovits.ssl_proj.weight, stage["ssl_proj"]["weight"])
    assert not torch.equal(reshaped.sovits.ssl_proj.weight, base.sovits.ssl_proj.weight)
    codebook = reshaped.sovits.quantizer.codebooks[0].embed
    assert torch.equal(codebook, stage["quantizer"]["layers.0.embed"])
    assert not torch.allclose(codebook, base.sovits.quantizer.codebooks[0].embed)
    # the GPT started fresh (nearer a seeded new GPT than the base's), SoVITS continued from the base
    seed_everything(recipe.seed)
    fresh = GPT(reshaped.config.gpt).state_dict()
    gpt_after, gpt_before = reshaped.gpt.state_dict(), base.gpt.state_dict()
    to_fresh = sum(float((gpt_after[k] - fresh[k]).abs().sum()) for k in gpt_after)
    to_base = sum(float((gpt_after[k] - gpt_before[k]).abs().sum()) for k in gpt_after)
    assert to_fresh < to_base / 2, (to_fresh, to_base)
    s2_before, s2_after = base.sovits.state_dict(), reshaped.sovits.state_dict()
    for name in ("enc_p.proj.weight", "flow.flows.0.enc.in_layers.0.weight"):
        drift = (s2_after[name] - s2_before[name]).abs().mean()
        assert drift < 0.1 * s2_before[name].abs().mean(), (name, float(drift))

    # a voice prompt reads its tokens through the new encoder and codebook
    audio = np.random.default_rng(0).standard_normal(4 * 16000).astype(np.float32) * 0.1
    pipe = Pipeline(reshaped)
    prompt = pipe.build_voice_prompt(audio, 16000, "hello world", "en")
    with torch.no_grad():
        feats = reshaped.ssl(torch.from_numpy(np.concatenate([audio, np.zeros(4800, np.float32)]))[None])
        expected = reshaped.sovits.extract_latent(feats)[0].long()
    assert torch.equal(prompt.semantic, expected)
    base_prompt = Pipeline(base).build_voice_prompt(audio, 16000, "hello world", "en")
    assert not torch.equal(prompt.semantic, base_prompt.semantic)

    argv = ["train", "base", "--train-list", str(env.corpus / "train.list"), "--eval-list"]
    argv += [str(env.corpus / "eval.list"), "--run-dir", str(env.root / "ssl-0"), "--preset", "tiny"]
    assert tritone_main([*argv, "--ssl-dilation-cycle", "0", "--stage", "prep", "--no-progress"]) == 1
    assert "dilation cycle >= 1" in capsys.readouterr().err


def test_gpt_from_scratch_over_a_base_with_the_guided_attention_loss(
    env: Env, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--init BASE --gpt-from-scratch --gpt-align-weight 1`: the GPT trains from random weights
    over the base's own tokens, with the guided-attention loss, and MLflow tracks its alignment."""
    from training.common import load_checkpoint, seed_everything
    from training.train_gpt import GPT_FINAL
    from tritone.cli import main as tritone_main
    from tritone.models.gpt import GPT

    recipe = _recipe(env)
    recipe.run_dir = env.root / "gpt-scratch"
    recipe.init, recipe.gpt_from_scratch = base_dir, True
    recipe.seed = recipe.gpt.seed = 11
    recipe.gpt.steps, recipe.gpt.align_weight = 10, 1.0
    BaseTrainer(recipe).run("gpt")

    result = load_checkpoint(recipe.run_dir / "gpt" / GPT_FINAL)
    assert result is not None
    base = BaseModel.load(base_dir)
    seed_everything(recipe.seed)
    fresh = GPT(base.config.gpt).state_dict()
    after, before = result["model"], base.gpt.state_dict()
    to_fresh = sum(float((after[k] - fresh[k]).abs().sum()) for k in after)
    to_base = sum(float((after[k] - before[k]).abs().sum()) for k in after)
    assert to_fresh < to_base / 2, (to_fresh, to_base)
    stats = result["stats"]
    assert 0 < stats["eval_align_best"] <= stats["eval_align_cost"] < 1
    assert len(_history(env.uri, "tritone-train-gpt", "align_cost")) == 2  # logged every 5 of 10 steps
    assert _history(env.uri, "tritone-train-gpt", "eval_align_best")

    argv = ["train", "base", "--train-list", str(env.corpus / "train.list"), "--eval-list"]
    argv += [str(env.corpus / "eval.list"), "--run-dir", str(env.root / "gpt-bad"), "--preset", "tiny"]
    assert tritone_main([*argv, "--gpt-align-weight", "-1", "--stage", "prep", "--no-progress"]) == 1
    assert "align_weight must be >= 0" in capsys.readouterr().err


def test_token_probe_scores_true_and_generated_tokens(
    env: Env, base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m training.recipes.token_probe BASE...`: trains the probe on the corpus's tokens,
    scores true and zero-shot tokens per base, and refuses bases whose tokens differ."""
    import json

    from training.recipes.token_probe import main as probe_main

    out = tmp_path / "probe.json"
    argv = [str(base_dir), str(base_dir), "--corpus", str(env.corpus), "--steps", "20", "--no-progress"]
    assert probe_main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    sources = [r["source"] for r in report["rows"]]
    assert sources[:2] == ["training speakers, true tokens", "flite_rms, true tokens"]
    assert len(sources) == 6 and all(str(base_dir) in s for s in sources[2:])
    assert "teacher-forced" in sources[2] and "zero-shot" in sources[3]
    assert all(r["n"] > 0 and r["per"] >= 0 for r in report["rows"])
    assert report["rows"][3]["per"] == report["rows"][5]["per"]  # same base, same seed, same tokens
    assert len(report["loss_every_100_steps"]) == 1
    assert "| flite_rms, true tokens |" in capsys.readouterr().out

    # best of several zero-shot candidates: the first is the row above, the choice never worse
    # by the probe's own count than it, and the choice by a second reader in between
    assert probe_main([*argv[1:], "--candidates", "3", "--json", str(out)]) == 0
    reranked = json.loads(out.read_text())
    assert reranked["candidates"] == 3
    suffixes = [r["source"].split(str(base_dir))[-1] for r in reranked["rows"][2:]]
    assert suffixes == ["", "", ", best of 3 by a second reader", ", best of 3 by this probe (a ceiling)"]
    zero_shot, by_reader, ceiling = (r["per"] for r in reranked["rows"][3:])
    assert ceiling <= min(zero_shot, by_reader)
    with pytest.raises(SystemExit):
        probe_main([*argv, "--candidates", "0"])

    other = BaseModel.load(base_dir)
    other.sovits.quantizer.codebooks[0].embed.add_(0.1)
    other.save(tmp_path / "other")
    assert probe_main([str(base_dir), str(tmp_path / "other"), "--corpus", str(env.corpus)]) == 1
    assert "differ in SSL encoder or codebook" in capsys.readouterr().err


def test_eval_sampling_settings_reach_the_gpt(
    env: Env, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tritone eval --top-k/--temperature`: the clones are synthesised with those GPT settings,
    and bad settings are refused before any work."""
    import numpy as np

    from training.evaluate import load_model, pipeline_synth
    from tritone.cli import main as tritone_main

    pipe, _ = load_model(base_dir)
    audio = np.random.default_rng(0).standard_normal(4 * 32000).astype(np.float32) * 0.1
    voice = pipe.build_voice_prompt(audio, 32000, "hello world", "en")
    served = pipeline_synth(pipe, voice, seed=3, max_new_tokens=40)("the blue door", "en")
    again = pipeline_synth(pipe, voice, seed=3, max_new_tokens=40)("the blue door", "en")
    greedy = pipeline_synth(pipe, voice, seed=3, max_new_tokens=40, top_k=1)("the blue door", "en")
    assert np.array_equal(served, again)
    assert served.shape != greedy.shape or not np.allclose(served, greedy)

    argv = ["eval", "--base", str(base_dir), "--list", str(env.corpus / "heldout_eval.list")]
    argv += ["--enrol-list", str(env.corpus / "heldout_train.list"), "--speaker", "flite_rms"]
    assert tritone_main([*argv, "--temperature", "0"]) == 1
    assert "temperature" in capsys.readouterr().err


def test_eval_own_tokens_rows_speak_the_recordings_tokens(env: Env, base_dir: Path, tmp_path: Path) -> None:
    """`tritone eval --own-tokens`: after each synthesised row, the same voice speaks each
    recording's own semantic tokens (no GPT), so the report splits the WER between the halves."""
    import json

    import numpy as np

    from training.data import load_audio
    from training.evaluate import OWN_TOKENS_SUFFIX, load_model, pick_reference
    from training.train_adapter import speaker_utterances
    from tritone.cli import main as tritone_main
    from tritone.pipeline import SynthesisParams, segment_seed

    report_path, audio_dir = tmp_path / "eval.json", tmp_path / "audio"
    argv = ["eval", "--base", str(base_dir), "--list", str(env.corpus / "heldout_eval.list")]
    argv += ["--enrol-list", str(env.corpus / "heldout_train.list"), "--speaker", "flite_rms"]
    argv += ["--sentences", "2", "--seed", "5", "--own-tokens", "--json", str(report_path)]
    assert tritone_main([*argv, "--save-audio", str(audio_dir)]) == 0
    report = json.loads(report_path.read_text())
    names = [s["system"] for s in report["summary"]]
    own = "base zero-shot" + OWN_TOKENS_SUFFIX
    assert names == ["ground truth (own recordings)", "base zero-shot (1 reference clip)", own]
    rows = report["utterances"][own]
    assert rows and all(r["hypothesis"] is not None for r in rows)

    # each clip is the zero-shot voice decoding the recording's tokens (the length tells them from
    # the GPT's; the tiny vocoder is nearly deaf to its latent noise, so the seed is not checked)
    pipe, _ = load_model(base_dir)
    enrol = speaker_utterances(env.corpus / "heldout_train.list", "flite_rms", None)
    reference = pick_reference(enrol)
    assert report["reference"]["utt_id"] == reference.utt_id
    ref_audio, ref_sr = load_audio(reference.wav_path)
    voice = pipe.build_voice_prompt(ref_audio.astype(np.float32), ref_sr, reference.text, reference.lang)
    ge = pipe.reference_embedding(voice)
    sentences = speaker_utterances(env.corpus / "heldout_eval.list", "flite_rms", None)[:2]
    assert [r["utt_id"] for r in rows] == [u.utt_id for u in sentences]
    for utt, row in zip(sentences, rows):
        recording, sr = load_audio(utt.wav_path)
        tokens = pipe.semantic_tokens(recording.astype(np.float32), sr)
        phones = pipe.frontend.process(utt.text, utt.lang).ids
        expected = pipe.tokens_to_audio(tokens, list(phones), ge, SynthesisParams(seed=5), segment_seed(5, 0))
        clip, clip_sr = load_audio(audio_dir / "zero_shot_own_tokens" / f"{utt.utt_id}.wav")
        assert clip_sr == 32_000 and len(clip) == len(expected) == 2 * len(tokens) * pipe.hop
        assert np.abs(clip - np.clip(expected, -1, 1)).max() <= 1.5 / 32768  # 16-bit PCM on disk
        assert row["seconds"] == pytest.approx(len(clip) / 32_000)
