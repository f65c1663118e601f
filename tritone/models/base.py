"""The base model bundle: GPT (s1) + SoVITS (s2 content path) + vocoder + SSL encoder.

One object that every stage passes around, and one on-disk layout:

    <dir>/manifest.json      name, version, preset, per-component hashes, combined hash
    <dir>/gpt/               config.json + model.safetensors   (tritone.checkpoints format)
    <dir>/sovits/            ditto (inference modules only; enc_q stays in training checkpoints)
    <dir>/vocoder/           ditto
    <dir>/ssl/               ditto for the built-in encoder; for HuBERT, config.json names its directory
    <dir>/aligner/           ditto, only with SoVITS's aligned MRTE lookup (tritone.models.aligner)

`weights_sha256` (a hash over every component's weights) is the pin adapters record: an adapter
trained on other base weights is refused at load time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tritone.checkpoints import CheckpointError, load_weights, read_upstream_file, save_weights, weights_hash
from tritone.models.aligner import AlignerConfig, TokenAligner
from tritone.models.gpt import GPT, GPTConfig, gpt_state_dict_from_upstream
from tritone.models.s2_modules import folded_state_dict
from tritone.models.sovits import SoVITS, SoVITSConfig, load_upstream_sovits
from tritone.models.spectral_vocoder import SpectralVocoderConfig
from tritone.models.ssl import HubertSSL, SSLEncoder, TinySSL
from tritone.models.vocoder import VocoderConfig
from tritone.models.vocoders import (
    AnyVocoder,
    AnyVocoderConfig,
    build_vocoder,
    vocoder_config_from_dict,
    with_vocoder_kind,
)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class SSLConfig:
    """Which SSL encoder: the built-in `tiny` conv encoder, or HuBERT from a local directory."""

    kind: str = "tiny"  # "tiny" | "hubert"
    dim: int = 768
    channels: int = 128
    n_blocks: int = 2
    dilation_cycle: int = 1  # block i dilated by 2 ** (i % cycle); 1 = none (TinySSL)
    hubert_dir: str | None = None

    def build(self) -> SSLEncoder:
        if self.kind == "hubert":
            if not self.hubert_dir:
                raise ValueError("SSL kind 'hubert' needs hubert_dir")
            return HubertSSL.from_dir(self.hubert_dir)
        if self.kind != "tiny":
            raise ValueError(f"unknown SSL kind {self.kind!r} (tiny, hubert)")
        return TinySSL(self.dim, self.channels, self.n_blocks, self.dilation_cycle)


@dataclass
class BaseModelConfig:
    name: str = "tritone-base"
    version: str = "v2"  # symbol set and s2 architecture (v1 | v2)
    gpt: GPTConfig = field(default_factory=GPTConfig.v2)
    sovits: SoVITSConfig = field(default_factory=SoVITSConfig.v2)
    vocoder: AnyVocoderConfig = field(default_factory=VocoderConfig.v2)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    aligner: AlignerConfig | None = None  # needed by, and only by, SoVITS's aligned MRTE lookup

    def __post_init__(self) -> None:
        if (self.sovits.mrte_lookup == "aligned") != (self.aligner is not None):
            raise ValueError("SoVITS's aligned MRTE lookup needs a token aligner, and only it has one")

    @classmethod
    def tiny(cls) -> BaseModelConfig:
        """Seconds-fast sizes for tests and CLI smoke runs (same structure as v2)."""
        s2 = SoVITSConfig.tiny()
        gpt = replace(GPTConfig.tiny(), vocab_size=s2.codebook_size + 1, eos=s2.codebook_size)
        return cls(
            gpt=gpt,
            sovits=s2,
            vocoder=VocoderConfig.tiny(),
            ssl=SSLConfig(dim=s2.ssl_dim, channels=16, n_blocks=1),
        )

    @classmethod
    def demo(cls) -> BaseModelConfig:
        """The shipped demo base: v2's structure, narrowed to train on 2 CPU cores in hours and
        to fit the repository (about 6.8 M parameters and buffers, 27 MB in float32).

        GPT 4 x 192 (4 heads); SoVITS at width 96 with a 128-d content path, 3 text-encoder
        layers, 192-d reference embedding and 4 flows of 3 WaveNet layers (kernel 3); a
        128-channel generator; a 64-channel built-in SSL encoder. The codebook keeps 1024
        entries, so the GPT vocabulary (EOS = 1024) is upstream's.
        """
        s2 = SoVITSConfig(
            ssl_dim=128,
            kmeans_iters=20,
            inter_channels=96,
            hidden_channels=96,
            filter_channels=256,
            n_heads=2,
            n_layers=3,
            mrte_channels=192,
            mrte_heads=4,
            gin_channels=192,
            style_hidden=96,
            n_flows=4,
            flow_kernel_size=3,
            flow_n_layers=3,
            posterior_n_layers=8,
            segment_frames=16,  # generator trained on 0.32 s slices (upstream: 0.64 s)
        )
        return cls(
            gpt=GPTConfig(n_layer=4, n_head=4, d_model=192, d_ff=768),
            sovits=s2,
            vocoder=VocoderConfig(in_channels=96, upsample_initial_channel=128, gin_channels=192),
            ssl=SSLConfig(dim=128, channels=64, n_blocks=3),
        )

    @classmethod
    def v2(cls) -> BaseModelConfig:
        return cls()

    @classmethod
    def tiny_spectral(cls) -> BaseModelConfig:
        """`tiny` with a narrow spectral generator (vocoders.py), for tests."""
        config = cls.tiny()
        voc = config.vocoder
        spectral = SpectralVocoderConfig(
            in_channels=voc.in_channels,
            channels=32,
            pre_blocks=1,
            post_blocks=2,
            gin_channels=voc.gin_channels,
        )
        return replace(config, vocoder=spectral)

    @classmethod
    def demo_spectral(cls) -> BaseModelConfig:
        """`demo` with the spectral generator at its default size (1.1 M parameters, about the
        HiFi-GAN generator's 0.97 M), conditioned on the reference embedding like it."""
        config = cls.demo()
        return replace(config, vocoder=with_vocoder_kind(config.vocoder, "spectral"))

    def with_mrte_lookup(self, lookup: str) -> BaseModelConfig:
        """SoVITS's MRTE lookup changed; the aligned lookup brings a token aligner for its tokens."""
        sovits = replace(self.sovits, mrte_lookup=lookup)
        aligner = None
        if lookup == "aligned":
            aligner = AlignerConfig(
                n_codes=sovits.codebook_size, n_symbols=sovits.n_symbols, stride=sovits.semantic_stride
            )
        return replace(self, sovits=sovits, aligner=aligner)

    def with_codebook_size(self, size: int) -> BaseModelConfig:
        """The same model over a semantic codebook of `size` entries (the GPT's vocabulary follows:
        `size` tokens + EOS)."""
        if size < 2:
            raise ValueError(f"the codebook needs at least 2 entries, got {size}")
        aligner = replace(self.aligner, n_codes=size) if self.aligner is not None else None
        return replace(
            self,
            sovits=replace(self.sovits, codebook_size=size),
            gpt=replace(self.gpt, vocab_size=size + 1, eos=size),
            aligner=aligner,
        )

    def with_ssl_shape(
        self, n_blocks: int | None = None, dilation_cycle: int | None = None
    ) -> BaseModelConfig:
        """The same model over a built-in SSL encoder of another depth / dilation (None keeps it)."""
        if self.ssl.kind != "tiny":
            raise ValueError(f"only the built-in SSL encoder can be reshaped, this one is {self.ssl.kind!r}")
        ssl = replace(
            self.ssl,
            n_blocks=self.ssl.n_blocks if n_blocks is None else n_blocks,
            dilation_cycle=self.ssl.dilation_cycle if dilation_cycle is None else dilation_cycle,
        )
        if ssl.n_blocks < 0 or ssl.dilation_cycle < 1:
            raise ValueError(
                f"SSL blocks must be >= 0 and the dilation cycle >= 1, got {ssl.n_blocks}, {ssl.dilation_cycle}"
            )
        return replace(self, ssl=ssl)

    @classmethod
    def preset(cls, name: str) -> BaseModelConfig:
        presets = {
            "tiny": cls.tiny,
            "tiny-spectral": cls.tiny_spectral,
            "demo": cls.demo,
            "demo-spectral": cls.demo_spectral,
            "v2": cls.v2,
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()


class BaseModel(nn.Module):
    """Container for the four networks; inference helpers live in `tritone.pipeline`."""

    def __init__(self, config: BaseModelConfig, ssl: SSLEncoder | None = None) -> None:
        super().__init__()
        if config.gpt.phoneme_vocab_size < config.sovits.n_symbols:
            raise ValueError("GPT phoneme vocabulary is smaller than the SoVITS symbol set")
        if config.gpt.eos != config.sovits.codebook_size or config.gpt.vocab_size != config.gpt.eos + 1:
            raise ValueError(
                f"GPT vocabulary ({config.gpt.vocab_size}, EOS {config.gpt.eos}) must be the SoVITS "
                f"codebook ({config.sovits.codebook_size}) plus EOS"
            )
        self.config = config
        self.gpt = GPT(config.gpt)
        self.sovits = SoVITS(config.sovits, posterior=False)
        self.vocoder: AnyVocoder = build_vocoder(config.vocoder)
        # Inference form: weight norm folded into plain weights, so state dicts, hashes, adapters
        # and exported graphs all see one tensor per conv. Training keeps its own modules.
        self.sovits.remove_weight_norm()
        self.vocoder.remove_weight_norm()
        self.ssl = ssl if ssl is not None else config.ssl.build()
        self.aligner = TokenAligner(config.aligner) if config.aligner is not None else None

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def random(cls, config: BaseModelConfig, seed: int = 0) -> BaseModel:
        """Random weights with a usable codebook (for tests and CLI smoke runs)."""
        torch.manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            for cb in model.sovits.quantizer.codebooks:
                cb.embed.normal_()
                cb.embed_avg.copy_(cb.embed)
                cb.cluster_size.fill_(1.0)
                cb.inited.fill_(1.0)
        return model.eval()

    @classmethod
    def from_modules(
        cls,
        config: BaseModelConfig,
        gpt: GPT,
        sovits: SoVITS,
        vocoder: AnyVocoder,
        ssl: SSLEncoder | None = None,
        aligner: TokenAligner | None = None,
    ) -> BaseModel:
        """Bundle trained modules (weight norm and enc_q allowed: copies are folded/dropped)."""
        model = cls(config)
        model.gpt.load_state_dict(gpt.state_dict())
        model.sovits.load_state_dict(
            {k: v for k, v in folded_state_dict(sovits).items() if not k.startswith("enc_q.")}
        )
        model.vocoder.load_state_dict(folded_state_dict(vocoder))
        if ssl is not None and config.ssl.kind == "tiny":
            model.ssl.load_state_dict(ssl.state_dict())
        if model.aligner is not None:
            if aligner is None:
                raise ValueError("this config's SoVITS reads aligned phones: pass its token aligner")
            model.aligner.load_state_dict(aligner.state_dict())
        return model.eval()

    @classmethod
    def from_upstream(
        cls,
        s1_path: str | Path,
        s2_path: str | Path,
        hubert_dir: str | Path | None = None,
        name: str = "tritone-base",
    ) -> BaseModel:
        """Load an upstream GPT-SoVITS v1/v2 checkpoint pair (s1 `.ckpt`, s2 `.pth`)."""
        s1, _ = read_upstream_file(s1_path)
        if "weight" not in s1 or "config" not in s1:
            raise CheckpointError(f"{s1_path}: not an s1 checkpoint (needs 'weight' and 'config')")
        gpt_cfg = GPTConfig.from_upstream(s1["config"])
        s2, tagged = read_upstream_file(s2_path)
        if "weight" not in s2:
            raise CheckpointError(f"{s2_path}: not an s2 checkpoint (needs 'weight')")
        if tagged is not None and tagged not in ("v1", "v2"):
            raise CheckpointError(f"{s2_path}: upstream {tagged} weights are not supported (v1, v2)")
        s2_sd = {k: v.float() for k, v in s2["weight"].items()}
        sovits, vocoder = load_upstream_sovits(s2_sd)
        ssl = SSLConfig(kind="hubert", hubert_dir=str(hubert_dir)) if hubert_dir else SSLConfig()
        config = BaseModelConfig(
            name=name,
            version=sovits.config.version,
            gpt=gpt_cfg,
            sovits=sovits.config,
            vocoder=vocoder.config,
            ssl=ssl,
        )
        gpt = GPT(gpt_cfg)
        gpt.load_state_dict(gpt_state_dict_from_upstream({k: v.float() for k, v in s1["weight"].items()}))
        return cls.from_modules(config, gpt, sovits, vocoder)

    # -- persistence -----------------------------------------------------------------------------

    def component_hashes(self) -> dict[str, str]:
        out = {
            "gpt": weights_hash(self.gpt.state_dict()),
            "sovits": weights_hash(self.sovits.state_dict()),
            "vocoder": weights_hash(self.vocoder.state_dict()),
        }
        if self.config.ssl.kind == "tiny":
            out["ssl"] = weights_hash(self.ssl.state_dict())
        if self.aligner is not None:
            out["aligner"] = weights_hash(self.aligner.state_dict())
        return out

    @property
    def weights_sha256(self) -> str:
        """One hash over all component hashes: the identity adapters pin to."""
        parts = self.component_hashes()
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_weights(out / "gpt", "gpt", self.config.gpt, self.gpt.state_dict())
        save_weights(out / "sovits", "sovits", self.config.sovits, self.sovits.state_dict())
        save_weights(out / "vocoder", "vocoder", self.config.vocoder, self.vocoder.state_dict())
        if self.config.ssl.kind == "tiny":
            save_weights(out / "ssl", "ssl", self.config.ssl, self.ssl.state_dict())
        if self.aligner is not None:
            save_weights(out / "aligner", "aligner", self.aligner.config, self.aligner.state_dict())
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": self.config.name,
            "version": self.config.version,
            "ssl": asdict(self.config.ssl),
            "components": self.component_hashes(),
            "weights_sha256": self.weights_sha256,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> BaseModel:
        src = Path(directory)
        manifest_path = src / MANIFEST
        if not manifest_path.is_file():
            raise CheckpointError(f"{src}: not a tritone base model directory (no {MANIFEST})")
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{src}: unsupported base model format {manifest.get('format_version')!r}")
        gpt_cfg, gpt_sd = load_weights(src / "gpt", "gpt")
        s2_cfg, s2_sd = load_weights(src / "sovits", "sovits")
        voc_cfg, voc_sd = load_weights(src / "vocoder", "vocoder")
        ssl_cfg = SSLConfig(**manifest["ssl"])
        aligner_cfg, aligner_sd = None, None
        if "aligner" in manifest.get("components", {}):
            aligner_dict, aligner_sd = load_weights(src / "aligner", "aligner")
            aligner_cfg = AlignerConfig(**aligner_dict)
        config = BaseModelConfig(
            name=manifest["name"],
            version=manifest["version"],
            gpt=GPTConfig(**gpt_cfg),
            sovits=SoVITSConfig(**s2_cfg),
            vocoder=vocoder_config_from_dict(voc_cfg),
            ssl=ssl_cfg,
            aligner=aligner_cfg,
        )
        model = cls(config)
        model.gpt.load_state_dict(gpt_sd)
        model.sovits.load_state_dict(s2_sd)
        model.vocoder.load_state_dict(voc_sd)
        if ssl_cfg.kind == "tiny":
            _, ssl_sd = load_weights(src / "ssl", "ssl")
            model.ssl.load_state_dict(ssl_sd)
        if model.aligner is not None and aligner_sd is not None:
            model.aligner.load_state_dict(aligner_sd)
        if model.weights_sha256 != manifest["weights_sha256"]:
            raise CheckpointError(f"{src}: weights do not match the manifest hash (corrupt or edited files)")
        return model.eval()
