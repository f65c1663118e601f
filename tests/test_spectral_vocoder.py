"""The spectral generator (`tritone/models/spectral_vocoder.py`): its inverse STFT, receptive
field and streaming windows, learning, and the served path (bundle, ONNX export with adapters)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from training.losses import FINE_MEL, MelLoss
from training.metrics import periodicity
from tritone.audio.features import SpectrogramConfig
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.models.spectral_vocoder import (
    InverseSTFT,
    SpectralVocoder,
    SpectralVocoderConfig,
    spectral_receptive_field,
)
from tritone.models.vocoder import VocoderConfig
from tritone.models.vocoders import vocoder_config_from_dict, vocoder_receptive_field, with_vocoder_kind

SR, HOP = 32_000, 640


@pytest.mark.parametrize("n_fft, hop", [(1280, 320), (640, 160), (1280, 256)])
def test_inverse_stft_rebuilds_a_waveform_and_matches_torch_istft(n_fft: int, hop: int) -> None:
    """The transposed-convolution inverse STFT is exact for a real spectrum, edges included (the
    generator only has to get the spectrum right), and equals `torch.istft` on any spectrum."""
    istft = InverseSTFT(n_fft, hop)
    window = torch.hann_window(n_fft)
    frames = 25
    x = torch.randn(2, frames * hop)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)[:, :, :frames]
    rebuilt = istft(spec.real, spec.imag)  # the stft's extra last frame is not needed
    assert rebuilt.shape == (2, 1, frames * hop)
    torch.testing.assert_close(rebuilt[:, 0], x, atol=1e-4, rtol=0)
    noise = torch.randn(2, n_fft // 2 + 1, frames, dtype=torch.complex64)
    noise[:, 0].imag = noise[:, -1].imag = 0  # what a real signal's spectrum has there
    reference = torch.istft(noise, n_fft, hop, window=window, center=True, length=frames * hop)
    torch.testing.assert_close(istft(noise.real, noise.imag)[:, 0], reference, atol=1e-4, rtol=0)


def _listening(voc: SpectralVocoder, seed: int = 0) -> SpectralVocoder:
    """Random weights large enough that every layer passes its input on."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in voc.parameters():
            p.normal_(0, 0.3)
    return voc.eval()


@pytest.mark.parametrize(
    "sizes",
    [
        {},
        {"upsample": 1},
        {"upsample": 4, "n_fft": 640},
        {"pre_blocks": 1, "post_blocks": 3},
        {"lookahead_taps": 3},
        {"lookahead_taps": 0},
    ],
)
def test_receptive_field_bounds_what_a_frame_hears_and_windows_are_exact(sizes: dict[str, int]) -> None:
    """Changing z outside (left, right) of frame t never changes frame t's samples, and the
    streaming window (`vocode_window`) equals vocoding all of z: chunks join without seams."""
    voc = _listening(
        SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=16, gin_channels=4, **sizes))
    )
    left, right = voc.receptive_field
    assert voc.receptive_field == spectral_receptive_field(voc.config)
    T, t = 90, 45
    z, ge = torch.randn(1, 8, T), torch.randn(1, 4, 1)
    frame = slice(t * HOP, (t + 1) * HOP)
    with torch.no_grad():
        full = voc(z, ge)
        for d in range(-T // 2 + 1, T // 2):
            changed = z.clone()
            changed[:, :, t + d] += torch.randn(8)
            moved = (voc(changed, ge) - full)[0, 0, frame].abs().max().item()
            if -d > left or d > right:
                assert moved == 0.0, (d, moved)
            elif d == 0:
                assert moved > 0.0
        for start, end in ((0, 7), (20, 33), (80, T)):
            window = voc.vocode_window(z, ge, start, end)
            torch.testing.assert_close(window, full[:, :, start * HOP : end * HOP], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("upsample, n_fft", [(1, 1280), (2, 1280), (4, 640)])
def test_one_hop_of_audio_per_latent_frame(upsample: int, n_fft: int) -> None:
    voc = SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=16, upsample=upsample, n_fft=n_fft))
    z = torch.randn(2, 8, 13, requires_grad=True)
    wav = voc(z)
    assert wav.shape == (2, 1, 13 * HOP) and voc.hop_length == HOP
    wav.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert voc.conv_pre.weight.grad is not None and voc.head.weight.grad is not None
    # an untrained head fed a huge latent stays finite: the magnitude is clipped
    assert torch.isfinite(voc(1e4 * torch.randn(1, 8, 5))).all()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="multiple of upsample"):
        SpectralVocoderConfig(upsample=3)
    with pytest.raises(ValueError, match="at least twice the frame hop"):
        SpectralVocoderConfig(upsample=1, n_fft=1000)
    with pytest.raises(ValueError, match="lookahead_taps"):
        SpectralVocoderConfig(lookahead_taps=7)
    with pytest.raises(ValueError, match="'spectral' kind"):
        SpectralVocoderConfig(kind="hifigan")


def test_learns_a_voiced_sound_within_a_few_dozen_steps() -> None:
    """What the probe is about: from a mel loss alone, the spectral generator makes a periodic
    waveform (harmonics as magnitude peaks) after a few dozen steps; untrained, it makes noise."""
    torch.manual_seed(0)
    frames = 16
    t = np.arange(frames * HOP) / SR
    target = sum(0.3 / k * np.sin(2 * np.pi * 140.0 * k * t) for k in range(1, 9))
    y = torch.from_numpy(target).float().view(1, 1, -1)
    z = torch.randn(1, 8, frames)
    voc = SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=32, pre_blocks=1, post_blocks=2))
    before = periodicity(voc(z).detach()[0, 0].numpy(), SR)
    mel = MelLoss((SpectrogramConfig(), FINE_MEL))
    opt = torch.optim.AdamW(voc.parameters(), lr=3e-3)
    for _ in range(60):
        loss = mel(voc(z), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = periodicity(voc(z).detach()[0, 0].numpy(), SR)
    assert before < 0.4 and after > 0.8, (before, after)


def test_a_spectral_base_saves_loads_and_old_bundles_stay_hifigan(tmp_path: Path) -> None:
    """The kind travels in the bundle's vocoder config; a config without one (every bundle
    written before the spectral kind, the shipped demo's included) is the HiFi-GAN generator."""
    model = BaseModel.random(BaseModelConfig.preset("tiny-spectral"))
    assert isinstance(model.vocoder, SpectralVocoder) and model.config.vocoder.gin_channels > 0
    loaded = BaseModel.load(model.save(tmp_path / "base"))
    assert isinstance(loaded.vocoder, SpectralVocoder) and loaded.weights_sha256 == model.weights_sha256
    z = torch.randn(1, model.config.sovits.inter_channels, 9)
    ge = torch.randn(1, model.config.vocoder.gin_channels, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.vocoder(z, ge), model.vocoder(z, ge))
    old = asdict(BaseModelConfig.tiny().vocoder)
    del old["kind"]
    assert isinstance(vocoder_config_from_dict(old), VocoderConfig)
    with pytest.raises(ValueError, match="unknown vocoder kind 'wavenet'"):
        vocoder_config_from_dict({**old, "kind": "wavenet"})
    # switching an existing config's kind keeps the interface the SoVITS latent needs
    demo = BaseModelConfig.preset("demo")
    spectral = with_vocoder_kind(demo.vocoder, "spectral")
    assert isinstance(spectral, SpectralVocoderConfig)
    assert (spectral.in_channels, spectral.gin_channels, spectral.hop_length) == (
        demo.vocoder.in_channels,
        demo.vocoder.gin_channels,
        demo.vocoder.hop_length,
    )
    assert vocoder_receptive_field(spectral) == SpectralVocoder(spectral).receptive_field


def test_the_spectral_generator_exports_with_adapters_and_passes_the_tensorrt_check(tmp_path: Path) -> None:
    """The served form: the vocoder graph exports to ONNX (no istft operator), matches PyTorch
    with LoRA adapters in several bank slots (conv_pre and the ge conditioning, as for the
    HiFi-GAN generator, plus the body that shapes the spectrum: every ConvNeXt block's pointwise
    layers and the head), and uses only operators TensorRT's parser supports."""
    from build.export import export_graphs
    from build.trt_ops import check_file

    model = BaseModel.random(BaseModelConfig.preset("tiny-spectral"))
    manifest = export_graphs(model, tmp_path, bank_size=4, max_rank=4, graphs=("vocoder",))
    entry = manifest["graphs"]["vocoder"]
    c = model.config.vocoder
    assert isinstance(c, SpectralVocoderConfig)
    body = [f"vocoder.{part}.{i}.pwconv{k}" for part, n in (("pre", c.pre_blocks), ("post", c.post_blocks))
            for i in range(n) for k in (1, 2)]  # fmt: skip
    assert sorted(entry["bank_modules"]) == sorted(
        ["vocoder.cond", "vocoder.conv_pre", "vocoder.head", *body]
    )
    assert entry["parity"]["ok"], entry["parity"]
    assert len(set(entry["parity"]["slots"]) - {0}) >= 2
    assert check_file(tmp_path / "vocoder.onnx") == []


def test_the_generator_body_adapter_serves_each_row_its_own_spectrum() -> None:
    """A batch of rows on different slots through the serving runtime gives each row what its
    adapter merged into the spectral generator gives alone: the body's Linears run on
    channels-last [B, T, D] activations, and each row must still read its own slot."""
    import copy

    from adapters.synthetic import random_lora
    from tritone.lora import merge_into_module
    from tritone.serving.runtime import VOCODER_BODY_TARGETS
    from tritone.serving.runtime_torch import TorchRuntime

    model = BaseModel.random(BaseModelConfig.preset("tiny-spectral"), seed=3).eval()
    adapters = {slot: random_lora(model, VOCODER_BODY_TARGETS, 4, seed=slot, scale=0.2) for slot in (1, 2)}
    g = torch.Generator().manual_seed(5)
    rt = TorchRuntime(model, bank_size=3, max_rank=4)
    for slot, lora in adapters.items():
        rt.load_slot(slot, lora)

    c = model.config
    z = torch.randn(3, c.sovits.inter_channels, 40, generator=g)
    ge = torch.randn(3, c.sovits.gin_channels, 1, generator=g)
    slots = [2, 0, 1]
    got = rt.vocoder(z.numpy(), ge.numpy(), np.array(slots))
    with torch.no_grad():
        base = model.vocoder(z, ge)[:, 0].numpy()
    for row, slot in enumerate(slots):
        alone = copy.deepcopy(model)
        for n, lora in adapters.get(slot, {}).items():
            merge_into_module(alone.get_submodule(n), lora)
        with torch.no_grad():
            want = alone.vocoder(z[row : row + 1], ge[row : row + 1])[0, 0].numpy()
        tol = 1e-4 * float(np.abs(want).max()) + 1e-6
        assert np.abs(got[row, : want.shape[0]] - want).max() < tol, f"row {row} (slot {slot})"
        if slot:  # the body adapter changes the audio
            assert np.abs(want - base[row, : want.shape[0]]).max() > 100 * tol
