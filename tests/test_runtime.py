"""Graph runtimes: a batch whose rows use different adapter slots gives each row what the model
with that adapter merged gives alone (through `tritone.pipeline.Pipeline`'s own code), and the
bank refuses adapters it cannot serve."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from adapters.errors import BasePinMismatch
from tritone.lora import LoRAWeights, merge_into_module
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.models.gpt import GenerationRequest
from tritone.pipeline import Pipeline, SynthesisParams, latent_noise, segment_seed
from tritone.serving.runtime import DEFAULT_TARGETS, AdapterRefused, Runtime
from tritone.serving.runtime_graphs import lora_target_names
from tritone.serving.runtime_torch import TorchRuntime
from tritone.voice import VoicePrompt

BANK_SIZE, MAX_RANK = 4, 4


# --------------------------------------------------------------------------------------------
# Helpers (also used by test_export.py)
# --------------------------------------------------------------------------------------------


def tiny_model(seed: int = 0) -> BaseModel:
    """The tiny base with a vocoder that listens to z (random init leaves it nearly deaf)."""
    m = BaseModel.random(BaseModelConfig.tiny(), seed=seed)
    with torch.no_grad():
        for mod in m.vocoder.modules():
            if isinstance(mod, nn.Conv1d | nn.ConvTranspose1d):
                mod.weight.normal_(0, mod.weight[0].numel() ** -0.5)
    return m.eval()


def random_adapter(
    model: nn.Module, names: list[str], rank: int, seed: int, scale: float = 0.3
) -> dict[str, LoRAWeights]:
    """Random LoRA factors of `rank` for each named Linear / Conv1d of `model`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:
        w = model.get_submodule(name).weight
        assert isinstance(w, torch.Tensor)
        a = torch.randn(rank, *w.shape[1:], generator=g) * scale
        b = torch.randn(w.shape[0], rank, *([1] if w.dim() == 3 else []), generator=g) * scale
        out[name] = LoRAWeights(a, b, alpha=2.0 * rank)
    return out


def merged(model: BaseModel, adapter: dict[str, LoRAWeights]) -> BaseModel:
    """A copy of `model` with `adapter` merged into its weights (what the voice computes alone)."""
    m = copy.deepcopy(model)
    for name, lora in adapter.items():
        merge_into_module(m.get_submodule(name), lora)
    return m.eval()


def adapters_for(model: BaseModel) -> dict[int, dict[str, LoRAWeights]]:
    """Slot -> adapter: two over every default target (ranks 4 and 2), one over the GPT only."""
    names = lora_target_names(model, DEFAULT_TARGETS)
    gpt_only = [n for n in names if n.startswith("gpt.layers.1.")]
    return {
        1: random_adapter(model, names, 4, seed=1),
        2: random_adapter(model, names, 2, seed=2),
        3: random_adapter(model, gpt_only, 3, seed=3),
    }


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> BaseModel:
    return tiny_model()


@pytest.fixture(scope="module")
def adapters(model: BaseModel) -> dict[int, dict[str, LoRAWeights]]:
    return adapters_for(model)


@pytest.fixture(scope="module")
def references(model: BaseModel, adapters: dict[int, dict[str, LoRAWeights]]) -> dict[int, BaseModel]:
    return {0: model, **{s: merged(model, a) for s, a in adapters.items()}}


@pytest.fixture(scope="module")
def torch_runtime(model: BaseModel, adapters: dict[int, dict[str, LoRAWeights]]) -> TorchRuntime:
    rt = TorchRuntime(model, bank_size=BANK_SIZE, max_rank=MAX_RANK)
    for slot, adapter in adapters.items():
        rt.load_slot(slot, adapter)
    return rt


def exported_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's graphs (bank of BANK_SIZE slots, MAX_RANK), exported once per session."""
    from build.export import export_graphs
    from tritone.serving.runtime_manifest import MANIFEST_FILE

    out = tmp_path_factory.getbasetemp() / "tiny_build"
    if not (out / MANIFEST_FILE).is_file():
        export_graphs(tiny_model(), out, bank_size=BANK_SIZE, max_rank=MAX_RANK)
    return out


@pytest.fixture(scope="module")
def onnx_runtime(
    tmp_path_factory: pytest.TempPathFactory, adapters: dict[int, dict[str, LoRAWeights]]
) -> Runtime:
    pytest.importorskip("onnxruntime")
    from tritone.serving.runtime_onnx import OnnxRuntime

    rt = OnnxRuntime(exported_tiny(tmp_path_factory), intra_op_threads=2)
    for slot, adapter in adapters.items():  # loaded after the sessions bound the bank
        rt.load_slot(slot, adapter)
    return rt


@pytest.fixture(scope="module", params=["torch", "onnx"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    fixture = {"torch": "torch_runtime", "onnx": "onnx_runtime"}[request.param]
    rt: Runtime = request.getfixturevalue(fixture)
    return rt


def voice(model: BaseModel, seed: int) -> VoicePrompt:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    n_phones, n_sem, n_spec = 5 + seed, 7 + 2 * seed, 30 + 5 * seed
    return VoicePrompt(
        text="ref",
        lang="en",
        phone_ids=torch.randint(1, cfg.sovits.n_symbols, (n_phones,), generator=g),
        bert=torch.zeros(cfg.gpt.bert_dim, n_phones),
        semantic=torch.randint(0, cfg.gpt.eos, (n_sem,), generator=g),
        refer_spec=torch.rand(cfg.sovits.spec_channels, n_spec, generator=g),
    )


# --------------------------------------------------------------------------------------------
# Pipeline parity
# --------------------------------------------------------------------------------------------

ROW_SLOTS = [2, 0, 1, 3]  # a heterogeneous batch: each row its own voice
GREEDY = SynthesisParams(top_k=1, repetition_penalty=1.0, max_new_tokens=14, seed=7)


def greedy_decode(
    rt: Runtime, voices: list[VoicePrompt], texts: list[torch.Tensor], slots: list[int]
) -> list[list[int]]:
    """The scheduler's job in miniature: batched prefill, then one decode step per token, greedy
    (top_k=1 with EOS masked for `min_new_tokens` steps, as `SamplingParams` does)."""
    B = len(voices)
    phones = [torch.cat([v.phone_ids, t]) for v, t in zip(voices, texts)]
    tx, ty = max(p.numel() for p in phones), max(v.semantic.numel() for v in voices)
    P = np.zeros((B, tx), np.int64)
    Y = np.zeros((B, ty), np.int64)
    for b, (p, v) in enumerate(zip(phones, voices)):
        P[b, : p.numel()] = p.numpy()
        Y[b, : v.semantic.numel()] = v.semantic.numpy()
    bert = np.zeros((B, 1024, tx), np.float32)
    phone_lens = np.array([p.numel() for p in phones])
    prompt_lens = np.array([v.semantic.numel() for v in voices])
    rows = np.array([3, 0, 5, 2])[:B]  # cache rows need not be consecutive or ordered
    rt.allocate_kv(6, int((phone_lens + prompt_lens).max()) + GREEDY.max_new_tokens + 1)
    sampling = GREEDY.sampling(0)
    logits, lengths = rt.gpt_prefill(P, phone_lens, bert, Y, prompt_lens, np.array(slots), rows)
    out: list[list[int]] = [[] for _ in range(B)]
    alive = np.ones(B, bool)
    eos = logits.shape[1] - 1
    for step in range(sampling.max_new_tokens):
        masked = logits.copy()
        if step < sampling.min_new_tokens:
            masked[:, eos] = -np.inf
        tokens = masked.argmax(1)
        alive &= tokens != eos
        for b in np.flatnonzero(alive):
            out[b].append(int(tokens[b]))
        if not alive.any() or step == sampling.max_new_tokens - 1:
            break
        live = np.flatnonzero(alive)  # finished rows leave the batch
        audio_pos = prompt_lens[live] + np.array([len(out[b]) for b in live]) - 1
        step_logits = rt.gpt_decode(tokens[live], audio_pos, lengths[live], rows[live], np.array(slots)[live])
        lengths[live] += 1
        logits[live] = step_logits
    return out


def test_batch_of_voices_matches_merged_pipelines(
    runtime: Runtime, model: BaseModel, references: dict[int, BaseModel]
) -> None:
    cfg = model.config
    voices = [voice(model, i) for i in range(len(ROW_SLOTS))]
    g = torch.Generator().manual_seed(11)
    texts = [torch.randint(1, cfg.sovits.n_symbols, (4 + 3 * i,), generator=g) for i in range(len(ROW_SLOTS))]
    tokens = greedy_decode(runtime, voices, texts, ROW_SLOTS)

    # What each voice's merged model gives alone, through the pipeline's own code.
    seg_seed = segment_seed(GREEDY.seed or 0, 0)
    expected_audio = []
    for b, slot in enumerate(ROW_SLOTS):
        pipe = Pipeline(references[slot])
        request = GenerationRequest(
            phones=torch.cat([voices[b].phone_ids, texts[b]]),
            bert=torch.cat([voices[b].bert, torch.zeros(1024, texts[b].numel())], dim=1),
            prompt=voices[b].semantic,
            params=GREEDY.sampling(seg_seed),
        )
        (want,) = pipe.model.gpt.generate([request])
        assert tokens[b] == want.tolist(), f"row {b} (slot {slot}): tokens differ"
        ge_alone = pipe.reference_embedding(voices[b])
        expected_audio.append(pipe.tokens_to_audio(want, texts[b].tolist(), ge_alone, GREEDY, seg_seed))

    # SoVITS + vocoder for the whole heterogeneous batch at once.
    B = len(ROW_SLOTS)
    slots = np.array(ROW_SLOTS)
    spec_lens = np.array([v.refer_spec.shape[1] for v in voices])
    spec = np.zeros((B, cfg.sovits.spec_channels, spec_lens.max()), np.float32)
    for b, v in enumerate(voices):
        spec[b, :, : spec_lens[b]] = v.refer_spec.numpy()
    ge = runtime.ref_embedding(spec, spec_lens, slots)
    code_lens = np.array([len(t) for t in tokens])
    codes = np.zeros((B, code_lens.max()), np.int64)
    phone_lens = np.array([t.numel() for t in texts])
    phones = np.zeros((B, phone_lens.max()), np.int64)
    for b in range(B):
        codes[b, : code_lens[b]] = tokens[b]
        phones[b, : phone_lens[b]] = texts[b].numpy()
    frames = 2 * code_lens
    noise = np.zeros((B, cfg.sovits.inter_channels, frames.max()), np.float32)
    for b in range(B):
        noise[b, :, : frames[b]] = latent_noise(
            seg_seed ^ 0x5EED, cfg.sovits.inter_channels, int(frames[b])
        ).numpy()
    z, got_frames = runtime.sovits(
        codes,
        code_lens,
        phones,
        phone_lens,
        ge,
        noise,
        np.full(B, GREEDY.noise_scale, np.float32),
        np.full(B, GREEDY.speed),
        slots,
    )
    assert got_frames.tolist() == frames.tolist()
    audio = runtime.vocoder(z, ge, slots, lengths=frames)
    hop = model.vocoder.hop_length
    for b in range(B):
        got = audio[b, : frames[b] * hop]
        assert got.shape == expected_audio[b].shape
        assert np.abs(got - expected_audio[b]).max() < 1e-4, f"row {b} (slot {ROW_SLOTS[b]}): audio differs"
        assert not audio[b, frames[b] * hop :].any()
    # the adapters matter: voice 1 and the base voice do not sound the same
    assert (
        np.abs(
            expected_audio[2][: len(expected_audio[1])] - expected_audio[1][: len(expected_audio[2])]
        ).max()
        > 1e-3
    )


def test_speed_and_noise_scale_per_row(
    runtime: Runtime, model: BaseModel, references: dict[int, BaseModel]
) -> None:
    """Rows with different speed and noise scale in one SoVITS call equal `decode_latent` alone."""
    cfg = model.config
    g = torch.Generator().manual_seed(5)
    B, inter = 3, cfg.sovits.inter_channels
    code_lens = np.array([9, 6, 8])
    speeds = np.array([1.0, 0.8, 1.3])
    scales = np.array([0.5, 0.0, 0.9], np.float32)
    slots = np.array([1, 2, 0])
    codes = torch.randint(0, cfg.sovits.codebook_size, (B, 9), generator=g)
    phones = torch.randint(1, cfg.sovits.n_symbols, (B, 7), generator=g)
    phone_lens = np.array([7, 5, 6])
    ge = torch.randn(B, cfg.sovits.gin_channels, 1, generator=g)
    frames = [int(2 * n) if s == 1.0 else int(2 * n / s) + 1 for n, s in zip(code_lens, speeds)]
    noise = torch.randn(B, inter, max(frames), generator=g)
    z, got = runtime.sovits(
        codes.numpy(), code_lens, phones.numpy(), phone_lens, ge.numpy(), noise.numpy(), scales, speeds, slots
    )
    assert got.tolist() == frames
    for b in range(B):
        ref = references[int(slots[b])].sovits
        want, _ = ref.decode_latent(
            codes[b : b + 1, : code_lens[b]],
            torch.tensor([code_lens[b]]),
            phones[b : b + 1, : phone_lens[b]],
            torch.tensor([phone_lens[b]]),
            ge[b : b + 1],
            noise_scale=float(scales[b]),
            speed=float(speeds[b]),
            noise=noise[b : b + 1, :, : frames[b]],
        )
        assert np.abs(z[b, :, : frames[b]] - want[0].numpy()).max() < 1e-4, f"row {b}"
        assert not z[b, :, frames[b] :].any()


def test_semantic_codes_match_the_pipeline(runtime: Runtime, model: BaseModel) -> None:
    g = torch.Generator().manual_seed(3)
    lens = np.array([8000, 6400, 8000])
    wav = (torch.rand(3, 8000, generator=g) - 0.5).numpy()
    codes, code_lens = runtime.semantic_codes(wav, lens)
    for b in range(3):
        feats = model.ssl(torch.from_numpy(wav[b : b + 1, : lens[b]]))
        want = model.sovits.extract_latent(feats)[0]
        assert code_lens[b] == want.numel()
        assert codes[b, : code_lens[b]].tolist() == want.tolist()


def test_decode_reads_cache_rows_by_index(runtime: Runtime, references: dict[int, BaseModel]) -> None:
    """Prefill into scattered cache rows, decode a subset in another order: each row's logits
    equal its merged model's own prefill + decode step."""
    g = torch.Generator().manual_seed(21)
    B, tx, ty = 3, 6, 5
    phones = torch.randint(1, 700, (B, tx), generator=g)
    phone_lens = torch.tensor([6, 3, 5])
    bert = torch.randn(B, 1024, tx, generator=g)
    prompt = torch.randint(0, 64, (B, ty), generator=g)
    prompt_lens = torch.tensor([5, 0, 2])
    slots = np.array([3, 1, 0])
    rows = np.array([4, 1, 2])
    runtime.allocate_kv(5, 20)
    _, lengths = runtime.gpt_prefill(
        phones.numpy(), phone_lens.numpy(), bert.numpy(), prompt.numpy(), prompt_lens.numpy(), slots, rows
    )
    order = np.array([2, 0])  # decode rows 2 and 0 only, in that order
    tokens, audio_pos = np.array([7, 9]), prompt_lens.numpy()[order]
    logits = runtime.gpt_decode(tokens, audio_pos, lengths[order], rows[order], slots[order])
    for i, b in enumerate(order):
        gpt = references[int(slots[b])].gpt
        cache = gpt.new_cache(1, 20)
        with torch.no_grad():
            gpt.prefill(
                phones[b : b + 1, : phone_lens[b]],
                phone_lens[b : b + 1],
                bert[b : b + 1, :, : phone_lens[b]],
                prompt[b : b + 1, : prompt_lens[b]],
                prompt_lens[b : b + 1],
                cache,
            )
            want = gpt.decode_step(torch.tensor([tokens[i]]), torch.tensor([audio_pos[i]]), cache)
        assert np.abs(logits[i] - want[0].numpy()).max() < 1e-4, f"row {b}"


def test_slot_changes_show_through_without_rebinding(
    runtime: Runtime, adapters: dict[int, dict[str, LoRAWeights]], model: BaseModel
) -> None:
    """Clearing a slot makes its rows the base voice; loading it again brings the voice back
    (for ONNX Runtime: through the OrtValues bound when the sessions were made)."""
    g = torch.Generator().manual_seed(8)
    cfg = model.config
    z = torch.randn(2, cfg.sovits.inter_channels, 6, generator=g).numpy()
    ge = torch.randn(2, cfg.vocoder.gin_channels, 1, generator=g).numpy()
    same = runtime.vocoder(np.stack([z[0], z[0]]), np.stack([ge[0], ge[0]]), np.array([0, 1]))
    assert np.abs(same[0] - same[1]).max() > 1e-3  # slot 1 is another voice
    try:
        runtime.clear_slot(1)
        cleared = runtime.vocoder(np.stack([z[0], z[0]]), np.stack([ge[0], ge[0]]), np.array([0, 1]))
        assert np.abs(cleared[0] - cleared[1]).max() < 1e-6
    finally:
        runtime.load_slot(1, adapters[1])
    again = runtime.vocoder(np.stack([z[0], z[0]]), np.stack([ge[0], ge[0]]), np.array([0, 1]))
    assert np.abs(again - same).max() < 1e-6


# --------------------------------------------------------------------------------------------
# Refusals and slot management
# --------------------------------------------------------------------------------------------


def test_reference_encoder_adapter_shapes_the_voice_embedding(
    runtime: Runtime, model: BaseModel, references: dict[int, BaseModel]
) -> None:
    """The bank holds the reference encoder: one reference spectrogram through every slot gives
    each adapter's own `ge` (the merged model's), so a voice's timbre embedding is its adapter's."""
    assert any(n.startswith("sovits.ref_enc.") for n in runtime.targets)
    ref = voice(model, 0).refer_spec.numpy()
    slots = np.array([0, 1, 2, 3])
    spec = np.repeat(ref[None], len(slots), axis=0)
    ge = runtime.ref_embedding(spec, np.full(len(slots), ref.shape[1]), slots)
    for b, slot in enumerate(slots):
        want = Pipeline(references[int(slot)]).reference_embedding(voice(model, 0))[0].numpy()
        scale = max(1.0, float(np.abs(want).max()))  # random factors blow ge up to ~1e2
        assert np.abs(ge[b] - want).max() < 1e-4 * scale, f"slot {slot}: ge differs from the merged model's"
    assert np.abs(ge[1] - ge[0]).max() > 1e-3  # the adapter moved the embedding
    assert np.abs(ge[3] - ge[0]).max() < 1e-6  # slot 3 adapts only the GPT


def test_adapter_with_a_target_the_bank_lacks_is_refused(model: BaseModel) -> None:
    rt = TorchRuntime(model, targets=[r"gpt\.layers\.\d+\.linear1"], bank_size=3, max_rank=2)
    assert rt.targets == ("gpt.layers.0.linear1", "gpt.layers.1.linear1")
    good = random_adapter(model, ["gpt.layers.0.linear1"], 2, seed=0)
    rt.load_slot(1, good)
    before = rt.bank.tensors["gpt.layers.0.linear1"][0][1].clone()
    bad = {
        **random_adapter(model, ["gpt.layers.0.linear1"], 1, seed=1),
        **random_adapter(model, ["gpt.layers.0.linear2"], 1, seed=2),
    }
    with pytest.raises(AdapterRefused, match=r"does not hold: gpt\.layers\.0\.linear2"):
        rt.load_slot(1, bad)
    with pytest.raises(AdapterRefused, match="max rank 2"):
        rt.load_slot(1, random_adapter(model, ["gpt.layers.0.linear1"], 3, seed=3))
    with pytest.raises(AdapterRefused, match="slot 0 is the base voice"):
        rt.load_slot(0, good)
    assert torch.equal(rt.bank.tensors["gpt.layers.0.linear1"][0][1], before)  # refusals leave the slot
    rt.clear_slot(1)
    assert not rt.bank.tensors["gpt.layers.0.linear1"][0][1].any()


def test_every_runtime_refuses_foreign_targets_and_bases(
    runtime: Runtime, model: BaseModel, adapters: dict[int, dict[str, LoRAWeights]], tmp_path: Path
) -> None:
    from adapters.format import BasePin, read_adapter, write_adapter

    foreign = random_adapter(model, ["gpt.bert_proj"], 2, seed=5)  # a Linear no default target selects
    with pytest.raises(AdapterRefused, match=r"does not hold: gpt\.bert_proj"):
        runtime.load_slot(2, foreign)
    other_base = write_adapter(
        tmp_path / "a",
        voice="bob",
        tenant="acme",
        base=BasePin("tritone-base", 1, "e" * 64),
        lora=adapters[2],
        prompt=voice(model, 1),
        consent_id="c2",
        training_data_sha256="0" * 64,
    )
    with pytest.raises(BasePinMismatch):
        runtime.load_adapter(2, read_adapter(other_base))
    assert runtime.base_sha256 == model.weights_sha256


def test_adapter_of_another_base_is_refused(model: BaseModel, tmp_path: Path) -> None:
    from adapters.format import BasePin, read_adapter, write_adapter

    rt = TorchRuntime(model, bank_size=2, max_rank=2)
    v = voice(model, 0)
    lora = random_adapter(model, ["gpt.layers.0.linear1"], 2, seed=0)
    pin = BasePin("tritone-base", 1, model.weights_sha256)

    def write(name: str, base: BasePin, full: dict[str, torch.Tensor] | None = None) -> Path:
        return write_adapter(
            tmp_path / name,
            voice="alice",
            tenant="acme",
            base=base,
            lora=lora,
            prompt=v,
            consent_id="c1",
            training_data_sha256="0" * 64,
            full=full,
        )

    rt.load_adapter(1, read_adapter(write("own", pin)))
    assert rt.bank.tensors["gpt.layers.0.linear1"][2][1] == pytest.approx(2.0)
    with pytest.raises(BasePinMismatch, match="pinned to base"):
        rt.load_adapter(1, read_adapter(write("other", BasePin("tritone-base", 1, "f" * 64))))
    full = write("full", pin, {"gpt.bert_proj.bias": torch.zeros(model.config.gpt.d_model)})
    with pytest.raises(AdapterRefused, match="fully trained modules"):
        rt.load_adapter(1, read_adapter(full))


def test_targets_and_bad_calls(model: BaseModel) -> None:
    names = lora_target_names(model, DEFAULT_TARGETS)
    n_layer = model.config.gpt.n_layer
    assert sum(n.startswith("gpt.") for n in names) == 4 * n_layer
    assert "sovits.enc_p.mrte.cross_attention.conv_q" in names and "vocoder.cond" in names
    with pytest.raises(AdapterRefused, match="serve no voice"):
        lora_target_names(model, [r"ssl\.proj"])
    rt = TorchRuntime(model, bank_size=2, max_rank=1)
    one = np.ones((1, 3), np.int64)
    with pytest.raises(RuntimeError, match="allocate_kv"):
        rt.gpt_prefill(
            one,
            np.array([3]),
            np.zeros((1, 1024, 3), np.float32),
            one,
            np.array([3]),
            np.array([0]),
            np.array([0]),
        )
    rt.allocate_kv(2, 8)
    with pytest.raises(ValueError, match=r"slots must lie in 0\.\.1"):
        rt.gpt_prefill(
            one,
            np.array([3]),
            np.zeros((1, 1024, 3), np.float32),
            one,
            np.array([3]),
            np.array([5]),
            np.array([0]),
        )
    with pytest.raises(ValueError, match="cache holds 8"):
        rt.gpt_prefill(
            one,
            np.array([3]),
            np.zeros((1, 1024, 3), np.float32),
            np.ones((1, 6), np.int64),
            np.array([6]),
            np.array([0]),
            np.array([0]),
        )
    with pytest.raises(ValueError, match="distinct"):
        rt.gpt_decode(
            np.array([1, 1]), np.array([0, 0]), np.array([2, 2]), np.array([1, 1]), np.array([0, 0])
        )
