"""A small reference synthesiser over a `BaseModel`, for training-time samples and evaluation.

It does what upstream's inference does for one segment: the reference clip (3-10 s, plus 0.3 s
of silence) -> SSL -> semantic prompt tokens; reference spectrogram -> `ge`; GPT continues the
prompt given reference phones + target phones; SoVITS decodes the new tokens with the target
phones and `ge`; the vocoder renders 32 kHz audio. Serving uses `tritone.pipeline`; this module
exists so training does not depend on the serving stack and to check that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tritone.audio.features import SpectrogramConfig, spectrogram
from tritone.audio.io import normalize_peak, resample
from tritone.models.base import BaseModel
from tritone.models.gpt import GenerationRequest
from tritone.models.sampling import SamplingParams

PROMPT_PAD_S = 0.3  # upstream appends 0.3 s of zeros to the reference before SSL


@dataclass
class Reference:
    """A voice prompt in tensors: what a clip + transcript contribute to every synthesis."""

    codes: Tensor  # [Ty] semantic prompt tokens (long)
    phones: Tensor  # [Nr] phone ids of the transcript (long)
    bert: Tensor  # [bert_dim, Nr]
    spec: Tensor  # [bins, Tr] linear spectrogram at 32 kHz


def _spec_config(model: BaseModel) -> SpectrogramConfig:
    c = model.config.sovits
    return SpectrogramConfig(
        sample_rate=c.sampling_rate, n_fft=c.filter_length, hop_length=c.hop_length, win_length=c.win_length
    )


@torch.no_grad()
def build_reference(
    model: BaseModel, audio: np.ndarray, sample_rate: int, text: str, lang: str, frontend: object
) -> Reference:
    """Reference clip (any rate, mono float) + its transcript -> `Reference`."""
    sr = model.config.sovits.sampling_rate
    wav32 = normalize_peak(resample(np.asarray(audio, dtype=np.float32), sample_rate, sr))
    spec = spectrogram(torch.from_numpy(wav32), _spec_config(model))[0]
    wav16 = resample(wav32, sr, 16_000)
    wav16 = np.concatenate([wav16, np.zeros(int(16_000 * PROMPT_PAD_S), dtype=np.float32)])
    feats = model.ssl(torch.from_numpy(wav16).unsqueeze(0))
    codes = model.sovits.extract_latent(feats)[0, 0]
    seq = frontend.process(text, lang)  # type: ignore[attr-defined]
    return Reference(
        codes=codes.long(),
        phones=torch.tensor(seq.ids, dtype=torch.long),
        bert=torch.from_numpy(np.asarray(seq.bert, dtype=np.float32)),
        spec=spec,
    )


@torch.no_grad()
def synthesize(
    model: BaseModel,
    ref: Reference,
    text: str,
    lang: str,
    frontend: object,
    params: SamplingParams | None = None,
    noise_scale: float = 0.5,
    seed: int = 0,
    max_tokens_per_phone: float = 4.0,
) -> tuple[np.ndarray, Tensor]:
    """Text in the reference's voice -> (32 kHz float audio, generated tokens)."""
    seq = frontend.process(text, lang)  # type: ignore[attr-defined]
    phones = torch.tensor(seq.ids, dtype=torch.long)
    bert = torch.from_numpy(np.asarray(seq.bert, dtype=np.float32))
    limit = int(min(1500, max(25, max_tokens_per_phone * len(seq.ids) + 20)))
    params = params or SamplingParams(seed=seed, max_new_tokens=limit)
    req = GenerationRequest(
        phones=torch.cat([ref.phones, phones]),
        bert=torch.cat([ref.bert, bert], dim=1),
        prompt=ref.codes,
        params=params,
    )
    tokens = model.gpt.generate([req])[0]
    if tokens.numel() == 0:
        return np.zeros(0, dtype=np.float32), tokens
    ge = model.sovits.ref_embedding(ref.spec.unsqueeze(0))
    g = torch.Generator().manual_seed(seed)
    z, _ = model.sovits.decode_latent(
        tokens.view(1, -1),
        torch.tensor([tokens.numel()]),
        phones.view(1, -1),
        torch.tensor([phones.numel()]),
        ge,
        noise_scale=noise_scale,
        generator=g,
    )
    wav = model.vocoder(z, ge)[0, 0]
    return wav.numpy().astype(np.float32), tokens
