"""SoVITS (s2 content path + flow) on tiny configs: shapes, batching, speed, noise, training forward."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tritone.models.s2_modules import stretch_time
from tritone.models.sovits import SoVITS, SoVITSConfig
from tritone.models.vocoder import Vocoder, VocoderConfig

# upstream GPT_SoVITS/configs/s2.json, the sections a config reads
S2_JSON: dict[str, Any] = {
    "train": {"segment_size": 20480, "text_low_lr_rate": 0.4},
    "data": {
        "max_wav_value": 32768.0,
        "sampling_rate": 32000,
        "filter_length": 2048,
        "hop_length": 640,
        "win_length": 2048,
        "n_mel_channels": 128,
    },
    "model": {
        "inter_channels": 192,
        "hidden_channels": 192,
        "filter_channels": 768,
        "n_heads": 2,
        "n_layers": 6,
        "kernel_size": 3,
        "p_dropout": 0.1,
        "resblock": "1",
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "upsample_rates": [10, 8, 2, 2, 2],
        "upsample_initial_channel": 512,
        "upsample_kernel_sizes": [16, 16, 8, 2, 2],
        "n_layers_q": 3,
        "use_spectral_norm": False,
        "gin_channels": 512,
        "semantic_frame_rate": "25hz",
        "freeze_quantizer": True,
    },
}


def make_tiny(seed: int = 0, posterior: bool = True, config: SoVITSConfig | None = None) -> SoVITS:
    """A tiny SoVITS in eval mode with a k-means-initialised codebook and non-trivial flow."""
    torch.manual_seed(seed)
    model = SoVITS(config or SoVITSConfig.tiny(), posterior=posterior)
    model.quantizer.train()
    model.quantizer(torch.randn(3, model.config.ssl_dim, 80))  # k-means init on random features
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".post." in name:  # couplings start as identity; make the flow do something
                p.normal_(0.0, 0.1)
    return model.eval()


def rand_refer(b: int = 1, t: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1025, t, generator=g)


def pad_stack(rows: list[torch.Tensor]) -> torch.Tensor:
    n = max(r.size(-1) for r in rows)
    return torch.stack([F.pad(r, (0, n - r.size(-1))) for r in rows])


# -- configs -----------------------------------------------------------------------------------


def test_upstream_configs() -> None:
    v1, v2 = SoVITSConfig.v1(), SoVITSConfig.v2()
    assert (v1.n_symbols, v1.ref_spec_channels, v1.spec_channels) == (322, 1025, 1025)
    assert (v2.n_symbols, v2.ref_spec_channels, v2.spec_channels) == (732, 704, 1025)
    for c in (v1, v2):
        assert (c.sampling_rate, c.filter_length, c.hop_length, c.win_length) == (32000, 2048, 640, 2048)
        assert (c.inter_channels, c.hidden_channels, c.filter_channels, c.n_heads, c.n_layers) == (
            192,
            192,
            768,
            2,
            6,
        )
        assert (c.gin_channels, c.ssl_dim, c.codebook_size, c.semantic_stride) == (512, 768, 1024, 2)
    tiny = SoVITSConfig.tiny()
    assert tiny.version == "v2" and tiny.semantic_stride == 2 and tiny.ref_spec_channels == 704


def test_config_from_upstream_hps() -> None:
    assert SoVITSConfig.from_upstream(S2_JSON, version="v2") == SoVITSConfig.v2()
    assert SoVITSConfig.from_upstream(S2_JSON, version="v1") == SoVITSConfig.v1()
    hps = {**S2_JSON, "model": {**S2_JSON["model"], "version": "v2"}}
    assert SoVITSConfig.from_upstream(hps).version == "v2"
    assert SoVITSConfig.from_upstream(S2_JSON).version == "v1"  # upstream's default without a tag
    assert VocoderConfig.from_upstream(S2_JSON) == VocoderConfig()
    with pytest.raises(ValueError, match="v2Pro"):
        SoVITSConfig.from_upstream(S2_JSON, version="v2Pro")
    with pytest.raises(ValueError, match="gin_channels"):
        dataclasses.replace(SoVITSConfig.tiny(), gin_channels=64)


# -- semantic tokens ---------------------------------------------------------------------------


def test_extract_latent_is_nearest_code_at_25hz() -> None:
    model = make_tiny()
    ssl = torch.randn(2, 32, 41)  # odd length: the last 50 Hz frame has no partner
    codes = model.extract_latent(ssl)
    assert codes.shape == (2, 20) and codes.dtype == torch.long
    x = model.ssl_proj(ssl).transpose(1, 2)  # [B, 20, D]
    book = model.quantizer.codebooks[0].embed
    brute = torch.cdist(x, book.expand(2, -1, -1)).argmin(-1)
    assert torch.equal(codes, brute)
    assert codes.unique().numel() > 5


def test_uninitialised_codebook_refuses_inference() -> None:
    model = SoVITS(SoVITSConfig.tiny()).eval()
    with pytest.raises(RuntimeError, match="not initialised"):
        model.extract_latent(torch.randn(1, 32, 10))


def test_quantizer_training_updates_codebook_and_passes_gradients() -> None:
    torch.manual_seed(0)
    model = SoVITS(SoVITSConfig.tiny())
    q = model.quantizer.train()
    x = torch.randn(2, 32, 60, requires_grad=True)
    out, codes, loss = q(x)
    cb = q.codebooks[0]
    assert bool(cb.inited) and codes.shape == (1, 2, 60)
    assert loss.item() > 0
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.ones_like(x))  # straight-through
    before = cb.embed.clone()
    q(torch.randn(2, 32, 60) + 3.0)
    assert not torch.equal(before, cb.embed)  # EMA moved toward the new batch
    q.eval()
    frozen = cb.embed.clone()
    _, _, loss_eval = q(torch.randn(2, 32, 10))
    assert torch.equal(frozen, cb.embed) and loss_eval.item() == 0.0


# -- reference embedding -----------------------------------------------------------------------


def test_ref_embedding_v2_reads_first_704_bins_only() -> None:
    model = make_tiny()
    refer = rand_refer(1, 40)
    ge = model.ref_embedding(refer)
    assert ge.shape == (1, 32, 1)
    changed = refer.clone()
    changed[:, 704:] = 5.0
    assert torch.equal(model.ref_embedding(changed), ge)
    changed[:, 703] = 5.0
    assert not torch.allclose(model.ref_embedding(changed), ge)


def test_ref_embedding_v1_reads_all_bins() -> None:
    cfg = dataclasses.replace(SoVITSConfig.tiny(), version="v1", n_symbols=322, ref_spec_channels=1025)
    model = make_tiny(config=cfg)
    refer = rand_refer(1, 40)
    changed = refer.clone()
    changed[:, 1000] = 5.0
    assert not torch.allclose(model.ref_embedding(changed), model.ref_embedding(refer))


def test_ref_embedding_batched_equals_single() -> None:
    model = make_tiny()
    refs = [rand_refer(1, t, seed=t)[0] for t in (40, 23, 31)]
    ge = model.ref_embedding(pad_stack(refs), torch.tensor([40, 23, 31]))
    for b, r in enumerate(refs):
        assert torch.allclose(ge[b], model.ref_embedding(r[None])[0], atol=1e-5)


# -- decode_latent -----------------------------------------------------------------------------


def _rows(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, 64, (t,), generator=g), torch.randint(0, 732, (n,), generator=g))
        for t, n in ((17, 9), (11, 14), (23, 5))
    ]


def _batch(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    codes = pad_stack([c for c, _ in rows])
    phones = pad_stack([p for _, p in rows])
    return (
        codes,
        torch.tensor([c.numel() for c, _ in rows]),
        phones,
        torch.tensor([p.numel() for _, p in rows]),
    )


@pytest.mark.parametrize("speed", [1.0, 1.3, 0.8])
def test_decode_latent_batch_equals_rows_alone(speed: float) -> None:
    model = make_tiny()
    rows = _rows()
    codes, code_lens, phones, phone_lens = _batch(rows)
    ge = model.ref_embedding(rand_refer(3, 30))
    gens = [torch.Generator().manual_seed(100 + b) for b in range(3)]
    z, mask = model.decode_latent(codes, code_lens, phones, phone_lens, ge, 0.5, speed, generator=gens)
    expect_lens = torch.floor(2 * code_lens.double() / speed).long() + 1 if speed != 1.0 else 2 * code_lens
    assert torch.equal(mask.sum((1, 2)).long(), expect_lens)
    assert z.shape == (3, 8, int(expect_lens.max()))
    for b, (c, p) in enumerate(rows):
        g = torch.Generator().manual_seed(100 + b)
        z1, m1 = model.decode_latent(
            c[None],
            torch.tensor([c.numel()]),
            p[None],
            torch.tensor([p.numel()]),
            ge[b : b + 1],
            0.5,
            speed,
            [g],
        )
        n = int(expect_lens[b])
        assert z1.shape[-1] == n and m1.all()
        torch.testing.assert_close(z[b, :, :n], z1[0], atol=1e-5, rtol=0)
        assert torch.all(z[b, :, n:] == 0)  # padding stays zero


def test_decode_latent_noise_sources() -> None:
    model = make_tiny()
    codes, code_lens, phones, phone_lens = _batch(_rows()[:1])
    ge = model.ref_embedding(rand_refer())
    args = (codes, code_lens, phones, phone_lens, ge)

    def run(**kw: object) -> torch.Tensor:
        return model.decode_latent(*args, **kw)[0]  # type: ignore[arg-type]

    a = run(generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, run(generator=torch.Generator().manual_seed(1)))  # reproducible per request
    assert not torch.allclose(a, run(generator=torch.Generator().manual_seed(2)))
    eps = torch.randn(1, 8, 34, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(run(noise=eps), a)  # injected eps == the generator's draw
    torch.manual_seed(7)
    b = run()
    torch.manual_seed(7)
    torch.testing.assert_close(run(noise=torch.randn(1, 8, 34)), b)  # global RNG: one randn of m's shape
    z0 = run(noise_scale=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z0, run(noise_scale=0.0, generator=torch.Generator().manual_seed(9)))
    with pytest.raises(ValueError, match="shape"):
        run(noise=torch.randn(1, 8, 5))
    with pytest.raises(ValueError, match="one generator per row"):
        run(generator=[torch.Generator(), torch.Generator()])


def test_decode_content_reads_vectors_where_decode_latent_reads_codes() -> None:
    """The codebook's vectors through `decode_content` give `decode_latent`'s latent exactly;
    other content (here, the vectors nudged) gives another one."""
    model = make_tiny()
    codes, code_lens, phones, phone_lens = _batch(_rows()[:1])
    ge = model.ref_embedding(rand_refer())
    eps = torch.randn(1, 8, 34, generator=torch.Generator().manual_seed(1))
    z, mask = model.decode_latent(codes, code_lens, phones, phone_lens, ge, noise=eps)
    vectors = model.quantizer.decode(codes[None])  # [1, ssl_dim, T25]
    z2, mask2 = model.decode_content(vectors, code_lens, phones, phone_lens, ge, noise=eps)
    assert torch.equal(z, z2) and torch.equal(mask, mask2)
    z3, _ = model.decode_content(vectors + 0.5, code_lens, phones, phone_lens, ge, noise=eps)
    assert not torch.allclose(z, z3)


def test_stretch_time_matches_upstream_interpolate() -> None:
    x = torch.randn(1, 6, 37)
    for speed in (0.7, 0.9, 1.1, 1.5, 2.0):
        ref = F.interpolate(x, size=int(37 / speed) + 1, mode="linear")
        got, lens = stretch_time(x, torch.tensor([37]), speed)
        assert lens.item() == int(37 / speed) + 1
        # same sampling grid; only float32 rounding of the source positions differs
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)


def test_decode_then_vocode_shapes() -> None:
    model, voc = make_tiny(), Vocoder(VocoderConfig.tiny()).eval()
    codes, code_lens, phones, phone_lens = _batch(_rows())
    ge = model.ref_embedding(rand_refer(3))
    z, _ = model.decode_latent(codes, code_lens, phones, phone_lens, ge)
    with torch.no_grad():
        wav = voc(z, ge)
    assert wav.shape == (3, 1, z.size(-1) * 640) and wav.abs().max() <= 1.0


def test_remove_weight_norm_keeps_outputs() -> None:
    model = make_tiny()
    codes, code_lens, phones, phone_lens = _batch(_rows())
    ge = model.ref_embedding(rand_refer(3))
    before = model.decode_latent(codes, code_lens, phones, phone_lens, ge, noise_scale=0.0)[0]
    model.remove_weight_norm()
    assert not any("parametrizations" in k for k in model.state_dict())
    torch.testing.assert_close(
        model.decode_latent(codes, code_lens, phones, phone_lens, ge, noise_scale=0.0)[0], before
    )


def test_bundling_trained_modules_folds_copies_and_leaves_the_originals_usable() -> None:
    """`BaseModel.from_modules` folds the weight norms into the bundle and drops enc_q, and the
    training modules it read keep working: folding a deep copy would have deleted `weight` from
    the parametrized class the original shares with it."""
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.models.gpt import GPT
    from tritone.models.vocoders import build_vocoder

    config = BaseModelConfig.tiny()
    sovits, vocoder = SoVITS(config.sovits, posterior=True).eval(), build_vocoder(config.vocoder).eval()
    codes, code_lens, phones, phone_lens = _batch(_rows())
    spec = torch.rand(1, config.sovits.spec_channels, 12)

    def run(s: SoVITS, v: Any) -> torch.Tensor:
        with torch.no_grad():
            ge = s.ref_embedding(rand_refer(3))
            z, _ = s.decode_latent(codes, code_lens, phones, phone_lens, ge, noise_scale=0.0)
            return v(z, ge)

    before = run(sovits, vocoder)
    bundle = BaseModel.from_modules(config, GPT(config.gpt), sovits, vocoder)
    torch.testing.assert_close(run(bundle.sovits, bundle.vocoder), before)
    assert not any("parametrizations" in k or k.startswith("enc_q.") for k in bundle.sovits.state_dict())
    torch.testing.assert_close(run(sovits, vocoder), before)  # the originals still run
    with torch.no_grad():
        assert sovits.enc_q is not None
        assert sovits.enc_q(spec, torch.tensor([12]))[1].shape[2] == 12


# -- training forward --------------------------------------------------------------------------


TrainBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _train_batch(seed: int = 0) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    ssl = torch.randn(2, 32, 40, generator=g)
    spec = torch.rand(2, 1025, 40, generator=g)
    spec_lens = torch.tensor([40, 31])
    spec[1, :, 31:] = 0
    phones = torch.randint(0, 732, (2, 12), generator=g)
    return ssl, spec, spec_lens, phones, torch.tensor([12, 7])


def test_forward_train_outputs_and_gradients() -> None:
    model = make_tiny().train()
    ssl, spec, spec_lens, phones, phone_lens = _train_batch()
    book = model.quantizer.codebooks[0].embed.clone()
    out = model.forward_train(
        ssl, spec, spec_lens, phones, phone_lens, generator=torch.Generator().manual_seed(0)
    )
    T = 40
    for t in (out.z, out.z_p, out.m_p, out.logs_p, out.m_q, out.logs_q):
        assert t.shape == (2, 8, T)
    assert out.z_mask.shape == (2, 1, T) and out.z_mask[1, 0, 31:].sum() == 0
    assert out.z_slice.shape == (2, 8, 8) and out.ge.shape == (2, 32, 1)
    assert out.quantized.shape == (2, 32, T)
    for b in range(2):
        s = int(out.ids_slice[b])
        assert 0 <= s <= int(spec_lens[b]) - 8
        torch.testing.assert_close(out.z_slice[b], out.z[b, :, s : s + 8])
    kl = (
        out.logs_p - out.logs_q - 0.5 + 0.5 * (out.z_p - out.m_p) ** 2 * torch.exp(-2 * out.logs_p)
    ) * out.z_mask
    (kl.sum() / out.z_mask.sum() + out.z_slice.pow(2).mean()).backward()
    for name in ("enc_p.encoder2", "enc_q.enc", "flow.flows.0", "ref_enc.spectral", "enc_p.text_embedding"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads), name
    assert model.ssl_proj.weight.grad is None  # frozen quantizer (upstream fine-tuning)
    assert torch.equal(book, model.quantizer.codebooks[0].embed)


def test_forward_train_unfrozen_quantizer_learns() -> None:
    cfg = dataclasses.replace(SoVITSConfig.tiny(), freeze_quantizer=False)
    model = make_tiny(config=cfg).train()
    book = model.quantizer.codebooks[0].embed.clone()
    out = model.forward_train(*_train_batch())
    (out.commit_loss + out.m_p.pow(2).mean()).backward()
    assert model.ssl_proj.weight.grad is not None and model.ssl_proj.weight.grad.abs().sum() > 0
    assert not torch.equal(book, model.quantizer.codebooks[0].embed)


def test_content_corruption_replaces_spans_of_the_priors_content_only() -> None:
    """`content_corruption`: about that share of the 25 Hz content frames, in whole spans, become
    random codebook entries for the prior; the posterior reads the spectrogram as before."""
    model = make_tiny().eval()  # no dropout: the posterior's outputs compare exactly
    batch = _train_batch()
    clean = model.forward_train(*batch, generator=torch.Generator().manual_seed(0))
    same = model.forward_train(*batch, generator=torch.Generator().manual_seed(0), content_corruption=0.0)
    torch.testing.assert_close(same.quantized, clean.quantized)
    book = model.quantizer.codebooks[0].embed
    shares = []
    for seed in range(8):
        out = model.forward_train(
            *batch, generator=torch.Generator().manual_seed(seed), content_corruption=0.4, corruption_span=3
        )
        q, q0 = out.quantized[:, :, ::2], clean.quantized[:, :, ::2]  # [B, D, T25]
        changed = (q != q0).any(dim=1)  # [B, T25]
        assert changed.any()
        for b, t in changed.nonzero().tolist():  # every replaced frame is a codebook entry
            assert torch.isclose(book, q[b, :, t]).all(dim=1).any()
        for row in changed.int().tolist():  # in whole spans, but where a span is cut by the row's ends
            # (a gap of one frame may be a random code that happens to be the frame's own)
            runs = re.split("00+", "".join(map(str, row)))
            assert all(len(run) >= 3 for run in runs[1:-1]), row
        shares.append(changed.float().mean().item())
        torch.testing.assert_close(out.m_q, clean.m_q)  # the posterior is untouched
        assert not torch.allclose(out.m_p, clean.m_p)  # the prior reads the corrupted content
    assert 0.2 < sum(shares) / len(shares) < 0.5, shares


def test_a_content_cut_row_passes_on_only_what_it_looked_up_in_the_phones() -> None:
    """MRTE's `keep_content` at 0: with one phone to look up, every content frame finds the same
    thing, so the output no longer depends on the content; kept rows (and the default) do."""
    mrte = make_tiny().enc_p.mrte.eval()
    g = torch.Generator().manual_seed(0)
    channels = mrte.c_pre.in_channels
    a, b = torch.randn(2, channels, 10, generator=g), torch.randn(2, channels, 10, generator=g)
    text = torch.randn(2, channels, 1, generator=g)
    mask, text_mask = torch.ones(2, 1, 10), torch.ones(2, 1, 1)
    ge = torch.randn(2, mrte.c_post.in_channels, 1, generator=g)
    cut = torch.tensor([0.0, 1.0])  # the first row cut, the second kept
    out_a = mrte.forward_with_attention(a, mask, text, text_mask, ge, keep_content=cut)[0]
    out_b = mrte.forward_with_attention(b, mask, text, text_mask, ge, keep_content=cut)[0]
    torch.testing.assert_close(out_a[0], out_b[0])
    assert not torch.allclose(out_a[1], out_b[1])
    torch.testing.assert_close(mrte(a, mask, text, text_mask, ge)[1], out_a[1])


def test_mrte_place_prior_lets_frames_find_their_phone_by_position() -> None:
    """`mrte_lookup` content+place: content frames that all sound alike (the content carries
    nothing) still read different phones, each the one at its place in the sentence, and a row's
    place is counted over its own lengths, not the batch's padding. With the content lookup
    (upstream's) they all read the same mixture, and a model has no extra weight (older bundles
    load as they are)."""
    plain = make_tiny().enc_p.mrte.eval()
    assert "position_log_strength" not in dict(plain.named_parameters())
    cfg = dataclasses.replace(SoVITSConfig.tiny(), mrte_lookup="content+place")
    mrte = make_tiny(config=cfg).enc_p.mrte.eval()
    assert mrte.position_log_strength is not None
    with torch.no_grad():
        mrte.position_log_strength.fill_(3.0)  # a sharp prior: e^3 per squared phone of distance
    g = torch.Generator().manual_seed(0)
    channels = mrte.c_pre.in_channels
    T, N = 12, 4
    content = torch.randn(1, channels, 1, generator=g).expand(1, channels, T)  # every frame alike
    text = torch.randn(1, channels, N, generator=g)
    ge = torch.randn(1, mrte.c_post.in_channels, 1, generator=g)
    mask, text_mask = torch.ones(1, 1, T), torch.ones(1, 1, N)
    out, weights = mrte.forward_with_attention(content, mask, text, text_mask, ge)
    # frame t of 12 sits at phone t // 3 of 4: each head's attention peaks there
    assert weights[0].argmax(-1).tolist() == [[t // 3 for t in range(T)]] * weights.size(1)
    assert not torch.allclose(out[..., 0], out[..., -1], atol=1e-3)  # the first and last frames differ
    flat = plain(content, mask, text, text_mask, ge)
    torch.testing.assert_close(flat[..., 0], flat[..., -1])  # without the prior they cannot
    # the same row padded to a longer batch: the same output on its own frames
    pad_content = torch.cat([content, torch.randn(1, channels, 5, generator=g)], 2)
    pad_text = torch.cat([text, torch.randn(1, channels, 3, generator=g)], 2)
    pad_mask = F.pad(mask, (0, 5))
    pad_text_mask = F.pad(text_mask, (0, 3))
    padded = mrte(pad_content, pad_mask, pad_text, pad_text_mask, ge)
    torch.testing.assert_close(padded[..., :T], out)


def test_mrte_place_lookup_reads_no_content() -> None:
    """`mrte_lookup` place: which phones a frame attends to depends on its place alone, so with
    the residual content path cut (`keep_content` 0) the output carries nothing of the content,
    only the phones at each place; with the content lookup the attention weights themselves
    carry the content. An unknown lookup is refused."""
    g = torch.Generator().manual_seed(1)
    outs = {}
    for lookup in ("content", "place"):
        mrte = make_tiny(
            config=dataclasses.replace(SoVITSConfig.tiny(), mrte_lookup=lookup)
        ).enc_p.mrte.eval()
        channels, T, N = mrte.c_pre.in_channels, 10, 5
        a, b = torch.randn(2, 1, channels, T, generator=g)
        text = torch.randn(1, channels, N, generator=g)
        ge = torch.randn(1, mrte.c_post.in_channels, 1, generator=g)
        mask, text_mask, cut = torch.ones(1, 1, T), torch.ones(1, 1, N), torch.zeros(1)
        out_a, w_a = mrte.forward_with_attention(a, mask, text, text_mask, ge, keep_content=cut)
        out_b, w_b = mrte.forward_with_attention(b, mask, text, text_mask, ge, keep_content=cut)
        outs[lookup] = (out_a, out_b, w_a, w_b)
    out_a, out_b, w_a, w_b = outs["place"]
    torch.testing.assert_close(w_a, w_b)
    torch.testing.assert_close(out_a, out_b)
    assert not torch.allclose(out_a[..., 0], out_a[..., -1], atol=1e-4)  # but the place matters
    out_a, out_b, w_a, w_b = outs["content"]
    assert not torch.allclose(w_a, w_b) and not torch.allclose(out_a, out_b)
    with pytest.raises(ValueError, match="mrte_lookup"):
        dataclasses.replace(SoVITSConfig.tiny(), mrte_lookup="places")


def test_mrte_aligned_lookup_reads_each_frames_own_phone_and_no_content() -> None:
    """`mrte_lookup` aligned: each frame attends to exactly the phone `phone_index` gives it, so
    two frames given the same phone read the same, another index reads another phone, and with
    the content path cut the output carries nothing of the content. Without an index, or with one
    of the wrong shape, it refuses; `decode_content` passes the index through."""
    model = make_tiny(config=dataclasses.replace(SoVITSConfig.tiny(), mrte_lookup="aligned")).eval()
    mrte = model.enc_p.mrte
    assert "position_log_strength" not in dict(mrte.named_parameters())  # no new weights
    g = torch.Generator().manual_seed(2)
    channels, T, N = mrte.c_pre.in_channels, 8, 4
    a, b = torch.randn(2, 1, channels, T, generator=g)
    text = torch.randn(1, channels, N, generator=g)
    ge = torch.randn(1, mrte.c_post.in_channels, 1, generator=g)
    mask, text_mask, cut = torch.ones(1, 1, T), torch.ones(1, 1, N), torch.zeros(1)
    index = torch.tensor([[0, 0, 1, 1, 1, 2, 3, 3]])
    out_a, w_a = mrte.forward_with_attention(a, mask, text, text_mask, ge, cut, index)
    out_b = mrte.forward_with_attention(b, mask, text, text_mask, ge, cut, index)[0]
    assert w_a.argmax(-1).unique(dim=1).tolist() == [[index[0].tolist()]]
    assert float(w_a.detach().max(-1).values.min()) > 0.999  # all of it on that phone
    torch.testing.assert_close(out_a, out_b)  # the content does not reach it
    torch.testing.assert_close(out_a[..., 2], out_a[..., 4])  # same phone, same output
    assert not torch.allclose(out_a[..., 1], out_a[..., 2], atol=1e-4)  # another phone, another
    shifted = mrte.forward_with_attention(a, mask, text, text_mask, ge, cut, index.roll(1, dims=1))[0]
    assert not torch.allclose(shifted, out_a, atol=1e-4)
    with pytest.raises(ValueError, match="phone_index"):
        mrte(a, mask, text, text_mask, ge)
    with pytest.raises(ValueError, match="phone_index"):
        mrte(a, mask, text, text_mask, ge, phone_index=index[:, :5])
    # through decode_content: 9 tokens are 18 content frames, each given a phone
    cfg = model.config
    content = model.quantizer.decode(torch.randint(0, cfg.codebook_size, (1, 1, 9), generator=g))
    phones = torch.randint(1, cfg.n_symbols, (1, 5), generator=g)
    gz = torch.randn(1, cfg.gin_channels, 1, generator=g)
    args = (content, torch.tensor([9]), phones, torch.tensor([5]), gz, 0.0)
    spread = torch.arange(18).view(1, -1) * 5 // 18
    z = model.decode_content(*args, phone_index=spread)[0]
    other = model.decode_content(*args, phone_index=spread.flip(1))[0]
    assert z.shape == (1, cfg.inter_channels, 18) and not torch.allclose(z, other, atol=1e-4)
    with pytest.raises(ValueError, match="phone_index"):
        model.decode_content(*args)


def test_decode_content_can_cut_the_content_path() -> None:
    """`decode_content(keep_content=0)` (the resynthesis check's `phones-only`): the latent
    changes, and the same call with `keep_content` 1 is the plain decode."""
    model = make_tiny(posterior=False).eval()
    g = torch.Generator().manual_seed(3)
    cfg = model.config
    content = model.quantizer.decode(torch.randint(0, cfg.codebook_size, (1, 1, 9), generator=g))
    phones = torch.randint(1, cfg.n_symbols, (1, 5), generator=g)
    ge = torch.randn(1, cfg.gin_channels, 1, generator=g)
    args = (content, torch.tensor([9]), phones, torch.tensor([5]), ge, 0.0)
    plain = model.decode_content(*args)[0]
    kept = model.decode_content(*args, keep_content=torch.ones(1))[0]
    cut = model.decode_content(*args, keep_content=torch.zeros(1))[0]
    torch.testing.assert_close(kept, plain)
    assert not torch.allclose(cut, plain, atol=1e-3)


def test_inference_model_has_no_posterior() -> None:
    full, infer = SoVITS(SoVITSConfig.tiny()), SoVITS(SoVITSConfig.tiny(), posterior=False)
    assert infer.enc_q is None and not any(k.startswith("enc_q.") for k in infer.state_dict())
    assert full.num_params(include_posterior=False) == infer.num_params()
    with pytest.raises(RuntimeError, match="enc_q"):
        infer.forward_train(*_train_batch())


def test_mrte_attention_is_a_distribution_over_the_valid_phones() -> None:
    """`forward_train` hands out MRTE's attention of the content frames over the phones: per frame
    a distribution over the row's phones (none on padding), from the same forward as the prior."""
    model = make_tiny().train()
    ssl, spec, spec_lens, phones, phone_lens = _train_batch()
    out = model.forward_train(
        ssl, spec, spec_lens, phones, phone_lens, generator=torch.Generator().manual_seed(0)
    )
    att = out.text_attention
    assert att.shape == (2, model.config.mrte_heads, spec.shape[2], phones.shape[1])
    for b in range(2):
        n, frames = int(phone_lens[b]), int(spec_lens[b])
        valid = att[b, :, :frames]
        torch.testing.assert_close(valid[..., :n].sum(-1), torch.ones_like(valid[..., 0]))
        if n < phones.shape[1]:
            assert float(valid[..., n:].abs().max()) < 1e-6
    # the inference path's MRTE output is the training one's
    mrte = model.enc_p.mrte.eval()
    x = torch.randn(1, model.config.hidden_channels, 12)
    t = torch.randn(1, model.config.hidden_channels, 5)
    ge = torch.randn(1, model.config.mrte_channels, 1)
    masks = torch.ones(1, 1, 12), torch.ones(1, 1, 5)
    torch.testing.assert_close(
        mrte(x, masks[0], t, masks[1], ge), mrte.forward_with_attention(x, masks[0], t, masks[1], ge)[0]
    )


def test_guided_attention_cost_pulls_mrte_to_the_diagonal() -> None:
    """The trainer's `mrte_align_weight` term: descending the cost alone makes MRTE's attention
    diagonal, where the same steps on the prior's mean alone leave it as it was."""
    from training.losses import diagonal_attention_cost

    def train(align: bool) -> tuple[float, float]:
        model = make_tiny(seed=1).train()
        ssl, spec, spec_lens, phones, phone_lens = _train_batch()
        opt = torch.optim.Adam([p for p in model.enc_p.parameters() if p.requires_grad], lr=3e-3)
        costs = []
        for _ in range(60):
            out = model.forward_train(
                ssl, spec, spec_lens, phones, phone_lens, torch.Generator().manual_seed(0)
            )
            cost = diagonal_attention_cost(out.text_attention, phone_lens, spec_lens, 0.2).mean()
            costs.append(float(cost))
            loss = cost if align else out.m_p.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return costs[0], costs[-1]

    start, guided = train(align=True)
    _, unguided = train(align=False)
    assert guided < 0.5 * start and guided < 0.5 * unguided
