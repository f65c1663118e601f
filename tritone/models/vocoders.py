"""The s2 generator kinds, chosen by the `kind` field of the vocoder config:

| kind | config | module | |
|---|---|---|---|
| `hifigan` | `VocoderConfig` | `Vocoder` (vocoder.py) | upstream's generator; what bundles without a `kind` hold |
| `spectral` | `SpectralVocoderConfig` | `SpectralVocoder` (spectral_vocoder.py) | log magnitude + phase, inverse STFT |

Both take (z [B, C, T], ge [B, gin, 1]) and give [B, 1, T * hop_length], have a bounded
receptive field (so streaming windows are exact), and name their LoRA targets alike
(`conv_pre`, `cond`). Everything that builds or reads a vocoder config goes through here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeAlias

from tritone.models.spectral_vocoder import SpectralVocoder, SpectralVocoderConfig, spectral_receptive_field
from tritone.models.vocoder import Vocoder, VocoderConfig, receptive_field_frames

AnyVocoderConfig: TypeAlias = VocoderConfig | SpectralVocoderConfig
AnyVocoder: TypeAlias = Vocoder | SpectralVocoder
VOCODER_KINDS = ("hifigan", "spectral")


def vocoder_config_from_dict(data: dict[str, Any]) -> AnyVocoderConfig:
    """A config as `asdict` wrote it; no `kind` means the HiFi-GAN generator (older bundles)."""
    kind = data.get("kind", "hifigan")
    if kind == "hifigan":
        return VocoderConfig(**data)
    if kind == "spectral":
        return SpectralVocoderConfig(**data)
    raise ValueError(f"unknown vocoder kind {kind!r}; choose one of {', '.join(VOCODER_KINDS)}")


def build_vocoder(config: AnyVocoderConfig) -> AnyVocoder:
    if isinstance(config, SpectralVocoderConfig):
        return SpectralVocoder(config)
    return Vocoder(config)


def vocoder_receptive_field(config: AnyVocoderConfig) -> tuple[int, int]:
    """(left, right) z frames of context; see each kind's module."""
    if isinstance(config, SpectralVocoderConfig):
        return spectral_receptive_field(config)
    return receptive_field_frames(config)


def with_vocoder_kind(config: AnyVocoderConfig, kind: str) -> AnyVocoderConfig:
    """`config` as the other kind at the same interface (latent and reference widths, hop, rate),
    with that kind's default sizes; the same config when it already is `kind`."""
    if kind == config.kind:
        return config
    if kind == "spectral":
        return SpectralVocoderConfig(
            in_channels=config.in_channels,
            gin_channels=config.gin_channels,
            sampling_rate=config.sampling_rate,
            hop_length=config.hop_length,
        )
    if kind == "hifigan":
        default = VocoderConfig()
        if config.hop_length != default.hop_length:
            raise ValueError(f"the HiFi-GAN generator's upsampling is fixed at {default.upsample_rates}")
        return replace(
            default,
            in_channels=config.in_channels,
            gin_channels=config.gin_channels,
            sampling_rate=config.sampling_rate,
        )
    raise ValueError(f"unknown vocoder kind {kind!r}; choose one of {', '.join(VOCODER_KINDS)}")
