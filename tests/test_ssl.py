"""SSL encoders: HF HuBERT from a local directory (tiny random model) and the built-in TinySSL."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.test_sovits import make_tiny
from tritone.models.sovits import SoVITSConfig
from tritone.models.ssl import HubertSSL, SSLEncoder, TinySSL, conv_frames, load_ssl


def _tiny_hubert_dir(path: Path) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    HubertModel(config).save_pretrained(path)
    return path


def test_conv_frames_is_hubert_grid() -> None:
    assert conv_frames(16000, (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == 49
    assert TinySSL(dim=8).num_frames(16000) == 49  # 50 Hz: one frame per 320 samples
    assert TinySSL(dim=8).num_frames(399) == 0 and TinySSL(dim=8).num_frames(400) == 1


def test_hubert_from_dir(tmp_path: Path) -> None:
    from transformers import HubertModel

    path = _tiny_hubert_dir(tmp_path / "hubert")
    ssl = HubertSSL.from_dir(path)
    assert isinstance(ssl, SSLEncoder)
    assert (ssl.sample_rate, ssl.frame_rate, ssl.dim) == (16000, 50, 16)
    wav = torch.randn(2, 16000) * 0.1
    feats = ssl(wav)
    assert feats.shape == (2, 16, ssl.num_frames(16000)) == (2, 16, 49)
    ref = HubertModel.from_pretrained(str(path), local_files_only=True).eval()
    with torch.no_grad():
        expect = ref(wav).last_hidden_state.transpose(1, 2)  # raw waveform in, as upstream
    torch.testing.assert_close(feats, expect)
    assert not any(p.requires_grad for p in ssl.parameters())  # frozen
    ssl.train()
    assert not ssl.model.training  # a frozen encoder stays deterministic
    torch.testing.assert_close(ssl(wav), feats)
    assert isinstance(load_ssl(path), HubertSSL)


def test_hubert_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        HubertSSL.from_dir(tmp_path / "nowhere")


def test_tiny_ssl_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    ssl = load_ssl(None, dim=24)
    assert isinstance(ssl, TinySSL) and ssl.dim == 24
    wav = torch.randn(3, 8000, requires_grad=True)
    feats = ssl(wav)
    assert feats.shape == (3, 24, ssl.num_frames(8000)) == (3, 24, 24)
    feats.pow(2).mean().backward()
    assert wav.grad is not None and all(p.grad is not None for p in ssl.parameters())


def test_tiny_ssl_dilation_widens_the_context_a_frame_sees() -> None:
    """Block i is dilated by 2^(i mod cycle): with a cycle of 4, four blocks reach 15 frames either
    side of a frame instead of 4, at the same frame rate and parameter count."""
    torch.manual_seed(1)
    wav = torch.randn(1, 16000)
    poke = wav.clone()
    poke[0, 8000:8020] += 1.0  # 20 samples inside frame 25 (of 49)

    def reach(cycle: int) -> int:
        """How many frames apart the first and last output frame the poke moves (the norms'
        whole-utterance statistics move every frame a little: count those moved > 10 % of most)."""
        torch.manual_seed(0)
        ssl = TinySSL(dim=8, channels=8, n_blocks=4, dilation_cycle=cycle).eval()
        with torch.no_grad():
            diff = (ssl(poke) - ssl(wav)).abs().amax(dim=1)[0]  # [T50]
        moved = torch.nonzero(diff > 0.1 * diff.max()).flatten()
        return int(moved.max() - moved.min())

    assert [b.dilation[0] for b in TinySSL(8, 8, 6, 4).blocks] == [1, 2, 4, 8, 1, 2]
    plain, dilated = reach(1), reach(4)
    assert plain <= 2 * 4 and dilated >= 12, (plain, dilated)
    assert sum(p.numel() for p in TinySSL(8, 8, 4, 4).parameters()) == sum(
        p.numel() for p in TinySSL(8, 8, 4, 1).parameters()
    )
    assert TinySSL(8, 8, 4, 4)(wav).shape == (1, 8, 49)
    with pytest.raises(ValueError, match="dilation_cycle"):
        TinySSL(8, 8, 4, 0)


def test_tiny_ssl_trains_with_the_quantizer() -> None:
    """A corpus without SSL weights: TinySSL -> ssl_proj -> quantizer, trained end to end."""
    cfg = dataclasses.replace(SoVITSConfig.tiny(), freeze_quantizer=False)
    model = make_tiny(config=cfg).train()
    torch.manual_seed(1)
    ssl = TinySSL(dim=cfg.ssl_dim, channels=16)
    wav = torch.randn(2, 12800) * 0.1  # 0.8 s -> 39 frames at 50 Hz
    feats = ssl(wav)
    T = feats.size(2)
    spec = torch.rand(2, 1025, T)
    phones = torch.randint(0, 732, (2, 6))
    out = model.forward_train(feats, spec, torch.tensor([T, T]), phones, torch.tensor([6, 4]))
    (out.commit_loss + out.m_p.pow(2).mean()).backward()
    assert all(p.grad is not None for p in ssl.parameters())
    codes = model.eval().extract_latent(ssl(wav))
    assert codes.shape == (2, T // 2)
