"""Vocoder (s2 generator): shapes, receptive field, seamless chunked vocoding, weight norm; discriminators."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tritone.models.discriminator import MultiPeriodDiscriminator
from tritone.models.vocoder import Vocoder, VocoderConfig, receptive_field_frames


def tiny_vocoder(seed: int = 0, double: bool = False) -> Vocoder:
    torch.manual_seed(seed)
    voc = Vocoder(VocoderConfig.tiny()).eval()
    return voc.double() if double else voc


def test_config_defaults_are_upstream() -> None:
    cfg = VocoderConfig()
    assert cfg.upsample_rates == (10, 8, 2, 2, 2) and cfg.hop_length == 640
    assert cfg.upsample_kernel_sizes == (16, 16, 8, 2, 2) and cfg.upsample_initial_channel == 512
    assert cfg.resblock_kernel_sizes == (3, 7, 11) and cfg.resblock_dilation_sizes == ((1, 3, 5),) * 3
    assert (cfg.in_channels, cfg.gin_channels, cfg.sampling_rate) == (192, 512, 32000)
    # a JSON round trip (lists) gives back an equal config
    assert VocoderConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    with pytest.raises(ValueError):
        VocoderConfig(upsample_rates=(10, 8), upsample_kernel_sizes=(16,))


def test_output_shape_and_range() -> None:
    voc = tiny_vocoder()
    z, ge = torch.randn(2, 8, 13), torch.randn(2, 32, 1)
    with torch.no_grad():
        wav = voc(z, ge)
    assert wav.shape == (2, 1, 13 * 640)
    assert wav.abs().max() <= 1.0 and wav.std() > 0


def test_receptive_field_upstream_size() -> None:
    assert receptive_field_frames(VocoderConfig()) == (11, 11)  # about 0.22 s each side
    assert Vocoder(VocoderConfig.tiny()).receptive_field == (11, 11)  # widths do not matter


def test_receptive_field_is_exact() -> None:
    """With every weight positive and no biases, an impulse at frame f reaches exactly the output
    frames whose window contains f (no cancellation, no vanishing products): f - right .. f + left."""
    voc = tiny_vocoder(double=True)
    voc.remove_weight_norm()
    with torch.no_grad():
        for name, p in voc.named_parameters():
            p.fill_(0.5 if name.endswith("weight") else 0.0)
    left, right = voc.receptive_field
    T, f = 60, 30
    z = torch.zeros(1, 8, T, dtype=torch.float64)
    z[:, :, f] = 1e-3
    with torch.no_grad():
        reached = voc(z, None).abs().view(T, 640).amax(1) > 0  # per output frame
    frames = torch.nonzero(reached).flatten()
    assert frames.min().item() == f - right and frames.max().item() == f + left
    assert bool(reached[f - right : f + left + 1].all())


def test_random_weights_stay_inside_receptive_field() -> None:
    voc = tiny_vocoder(double=True)
    left, right = voc.receptive_field
    T, f = 50, 25
    z, ge = torch.randn(1, 8, T, dtype=torch.float64), torch.randn(1, 32, 1, dtype=torch.float64)
    z2 = z.clone()
    z2[:, :, f] += 1.0
    with torch.no_grad():
        changed = (voc(z2, ge) - voc(z, ge)).abs().view(T, 640).amax(1) > 0
    frames = torch.nonzero(changed).flatten()
    assert frames.min().item() >= f - right and frames.max().item() <= f + left


@pytest.mark.parametrize("chunk", [4, 16, 25])
def test_chunked_vocoding_equals_full(chunk: int) -> None:
    voc = tiny_vocoder()
    T = 53
    z, ge = torch.randn(1, 8, T), torch.randn(1, 32, 1)
    with torch.no_grad():
        full = voc(z, ge)
        parts = [voc.vocode_window(z, ge, s, min(T, s + chunk)) for s in range(0, T, chunk)]
    torch.testing.assert_close(torch.cat(parts, -1), full, atol=1e-5, rtol=0)


def test_chunks_without_context_have_seams() -> None:
    voc = tiny_vocoder()
    z, ge = torch.randn(1, 8, 40), torch.randn(1, 32, 1)
    with torch.no_grad():
        full = voc(z, ge)
        naive = torch.cat([voc(z[:, :, :20], ge), voc(z[:, :, 20:], ge)], -1)
    seam = slice(19 * 640, 21 * 640)
    assert (naive[..., seam] - full[..., seam]).abs().max() > 1e-4  # the context is what fixes it
    torch.testing.assert_close(naive[..., : 8 * 640], full[..., : 8 * 640], atol=1e-5, rtol=0)


def test_remove_weight_norm_keeps_output() -> None:
    voc = tiny_vocoder()
    assert any("parametrizations.weight.original0" in k for k in voc.state_dict())
    z, ge = torch.randn(1, 8, 9), torch.randn(1, 32, 1)
    with torch.no_grad():
        before = voc(z, ge)
        voc.remove_weight_norm()
        after = voc(z, ge)
    assert not any("parametrizations" in k for k in voc.state_dict())
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_vocoder_trains() -> None:
    voc = tiny_vocoder().train()
    wav = voc(torch.randn(2, 8, 4), torch.randn(2, 32, 1))
    wav.pow(2).mean().backward()
    grads = {n: p.grad for n, p in voc.named_parameters()}
    assert all(g is not None for g in grads.values())
    gain = grads["ups.0.parametrizations.weight.original0"]
    assert gain is not None and gain.abs().sum() > 0  # the weight-norm gain learns


def test_multi_period_discriminator_shapes() -> None:
    torch.manual_seed(0)
    mpd = MultiPeriodDiscriminator()
    assert len(mpd.discriminators) == 6  # scale + periods 2, 3, 5, 7, 11
    y, y_hat = torch.randn(2, 1, 1201), torch.randn(2, 1, 1201)
    d_r, d_g, f_r, f_g = mpd(y, y_hat)
    assert len(d_r) == len(d_g) == len(f_r) == len(f_g) == 6
    assert len(f_r[0]) == 7 and all(len(f) == 6 for f in f_r[1:])
    for r, g in zip(d_r, d_g):
        assert r.shape == g.shape and r.dim() == 2 and r.size(0) == 2
    assert len(MultiPeriodDiscriminator(periods=(2, 3, 5, 7, 11, 17, 23)).discriminators) == 8
