"""Frame-level pitch (f0) by normalised autocorrelation, aligned with the s2 spectrogram frames.

Frame t covers the hop [t * hop, (t + 1) * hop) and is analysed in a 40 ms window centred on
that hop's middle, as the s2 spectrogram's frame t is (`features.spectrogram`); a clip of n
samples gives n // hop frames. A frame is voiced when its autocorrelation peak at a pitch lag
(fmin..fmax) is high and it is not near-silent; unvoiced frames get f0 = 0.
"""

from __future__ import annotations

import numpy as np

WINDOW_SECONDS = 0.040


def pitch_track(
    audio: np.ndarray,
    sample_rate: int,
    hop: int,
    fmin: float = 80.0,
    fmax: float = 400.0,
    voicing: float = 0.5,
) -> np.ndarray:
    """f0 in Hz per frame (0 where unvoiced): shape (len(audio) // hop,), float32."""
    x = np.asarray(audio, dtype=np.float64).ravel()
    if hop <= 0 or fmin <= 0 or fmax <= fmin:
        raise ValueError(f"need hop > 0 and 0 < fmin < fmax, got hop={hop}, fmin={fmin}, fmax={fmax}")
    n_frames = x.size // hop
    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    win = int(WINDOW_SECONDS * sample_rate)
    lo, hi = int(sample_rate / fmax), int(np.ceil(sample_rate / fmin))
    if hi + 2 >= win:
        raise ValueError(f"fmin {fmin} Hz needs a longer window than {win} samples")
    # frame t: samples centred on t * hop + hop / 2, zero-padded at the clip's edges
    pad = win // 2
    padded = np.pad(x, (pad, pad + hop))
    starts = np.arange(n_frames) * hop + hop // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[starts]  # [T, win]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, n=2 * win, axis=1)
    ac = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :win]  # [T, win], lag 0..win-1
    power = ac[:, 0] / win
    lags = np.arange(win)
    # per-lag mean products, relative to the frame's power: 1 for a perfectly periodic frame
    norm = ac / (win - lags)[None, :] / (power[:, None] + 1e-12)
    band = norm[:, lo : hi + 1]  # [T, lags lo..hi]
    best = band.max(axis=1)
    # the smallest lag close to the best peak: a period's multiples score as high as the period
    near = band >= 0.9 * best[:, None]
    local_max = np.zeros_like(near)
    local_max[:, 1:-1] = (band[:, 1:-1] >= band[:, :-2]) & (band[:, 1:-1] >= band[:, 2:])
    candidates = near & local_max
    first = np.where(candidates.any(axis=1), candidates.argmax(axis=1), band.argmax(axis=1))
    # parabolic interpolation around the chosen lag for sub-sample resolution
    i = np.clip(first, 1, band.shape[1] - 2)
    rows = np.arange(n_frames)
    a, b, c = band[rows, i - 1], band[rows, i], band[rows, i + 1]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    lag = lo + i + np.clip(shift, -0.5, 0.5)
    rms = np.sqrt(power)
    loud = rms >= 0.03 * rms.max() if rms.max() > 0 else np.zeros(n_frames, dtype=bool)
    voiced = (best >= voicing) & loud
    return np.where(voiced, sample_rate / lag, 0.0).astype(np.float32)
