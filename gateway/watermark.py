"""An inaudible, keyed audio watermark carrying (tenant, voice, request id).

Scheme: spread-transform dither modulation (Chen and Wornell's STDM) on 8 ms blocks.

- Each block j of the signal (from sample 0) gets a keyed pseudo-random carrier u_j: a sum of
  cosines and sines with random signs on the 125 Hz harmonics from 250 Hz to 6 kHz, so it is
  the same continuous function at any sample rate and survives resampling to 16 kHz.
- The block's projection p = mean(x * u_j) is moved to the nearest point of a dithered
  lattice of step Δ that encodes one payload bit (bit 0 on Δ(n + d_j), bit 1 on
  Δ(n + d_j + 1/2)): x' = x + (q - p) u_j.
- Δ is proportional to the block's in-band energy orthogonal to u_j (which embedding does not
  change, so the detector recomputes the same Δ): the watermark follows the speech's loudness
  and its mean power is ~34 dB below the speech in every block. Quiet blocks are skipped.
- Block j carries bit ``perm[j % 96]`` of the payload: 16-bit tenant tag, 16-bit voice tag,
  48-bit request id and a CRC-16; the payload repeats through the audio and the detector
  sums every copy's soft votes (cos 2π(p/Δ - d_j)), so the more audio, the surer.

Detection needs no original, only the key: resample to 32 kHz, compute the votes, decode,
check the CRC. Clean audio passes the CRC by chance with probability 2^-16, and a confidence
threshold on the votes rejects it further. Robust to 16-bit PCM, resampling (16/24/44.1/48 kHz)
and mild filtering; not designed to survive cropping that shifts the block grid, lossy codecs
or deliberate removal.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tritone.audio import resample

BLOCK_S = 0.008  # 8 ms blocks: 256 samples at 32 kHz
BIN_HZ = 1.0 / BLOCK_S  # 125 Hz harmonics
LOW_BIN, HIGH_BIN = 2, 48  # 250 Hz .. 6 kHz
DETECT_SR = 32_000
WATERMARK_DB = -34.0  # mean watermark power relative to the block's in-band speech power
GAMMA = float(np.sqrt(12.0 * 10.0 ** (WATERMARK_DB / 10.0)))  # Δ / σ: uniform error power Δ²/12
EMBED_FLOOR = 1.0e-3  # blocks quieter than this (in-band RMS, ~ -60 dBFS) carry nothing
DETECT_FLOOR = 0.7e-3
N_CODES = 1021  # distinct carriers; prime, so carriers and bit positions do not align
TAG_BITS, RID_BITS, CRC_BITS = 16, 48, 16
PAYLOAD_BITS = 2 * TAG_BITS + RID_BITS  # 80
FRAME_BITS = PAYLOAD_BITS + CRC_BITS  # 96
CONFIDENCE_MIN = 0.5
DEFAULT_KEY = "tritone-watermark-v1"


def tag(text: str) -> int:
    """The 16-bit tag of a tenant or a voice name."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=2).digest(), "big")


def request_id_bits(request_id: str) -> int:
    """A gateway request id is 12 hex digits (48 bits); anything else is hashed to 48 bits."""
    rid = request_id.lower()
    if len(rid) == 12 and all(c in "0123456789abcdef" for c in rid):
        return int(rid, 16)
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=6).digest(), "big")


@dataclass(frozen=True)
class Payload:
    tenant_tag: int
    voice_tag: int
    request_id: int  # 48 bits

    @classmethod
    def create(cls, tenant: str, voice: str, request_id: str) -> Payload:
        return cls(tag(tenant), tag(voice) if voice else 0, request_id_bits(request_id))

    @property
    def request_id_hex(self) -> str:
        return f"{self.request_id:012x}"

    def bits(self) -> np.ndarray:
        value = (self.tenant_tag << (TAG_BITS + RID_BITS)) | (self.voice_tag << RID_BITS) | self.request_id
        data = value.to_bytes(PAYLOAD_BITS // 8, "big")
        crc = binascii.crc_hqx(data, 0xFFFF)
        frame = int.from_bytes(data, "big") << CRC_BITS | crc
        return np.array([(frame >> (FRAME_BITS - 1 - i)) & 1 for i in range(FRAME_BITS)], np.int64)

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload | None:
        frame = 0
        for b in bits.tolist():
            frame = frame << 1 | int(b)
        crc = frame & 0xFFFF
        value = frame >> CRC_BITS
        if binascii.crc_hqx(value.to_bytes(PAYLOAD_BITS // 8, "big"), 0xFFFF) != crc:
            return None
        rid = value & ((1 << RID_BITS) - 1)
        voice = (value >> RID_BITS) & 0xFFFF
        tenant = value >> (RID_BITS + TAG_BITS)
        return cls(tenant, voice, rid)


@dataclass(frozen=True)
class Detection:
    payload: Payload | None  # None: no valid watermark
    confidence: float  # mean agreement of the votes with the decoded bits (1 = perfect)
    blocks: int  # blocks that voted

    @property
    def found(self) -> bool:
        return self.payload is not None and self.confidence >= CONFIDENCE_MIN


def _seed(key: str, label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}|{label}".encode()).digest()[:8], "big")


@lru_cache(maxsize=16)
def _codes(key: str, block: int) -> np.ndarray:
    """[N_CODES, block] unit-power carriers for a block length (sample rate)."""
    rng = np.random.default_rng(_seed(key, "carriers"))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(N_CODES, HIGH_BIN - LOW_BIN + 1, 2))
    spec = np.zeros((N_CODES, block // 2 + 1), np.complex128)
    spec[:, LOW_BIN : HIGH_BIN + 1] = (block / 2.0) * (signs[..., 0] - 1j * signs[..., 1])
    codes = np.fft.irfft(spec, n=block, axis=1)
    codes /= np.sqrt(np.mean(codes**2, axis=1, keepdims=True))
    return codes.astype(np.float64)


@lru_cache(maxsize=4)
def _layout(key: str) -> tuple[np.ndarray, np.ndarray]:
    """(bit position of block j % FRAME_BITS, dither of block j % N_CODES)."""
    rng = np.random.default_rng(_seed(key, "layout"))
    return rng.permutation(FRAME_BITS), rng.random(N_CODES)


def _block_len(sr: int) -> int:
    n = sr * BLOCK_S
    if abs(n - round(n)) > 1e-9 or round(n) < 2 * HIGH_BIN + 2:
        raise ValueError(
            f"watermarking needs a sample rate that is a multiple of 125 Hz and >= 16 kHz, got {sr}"
        )
    return round(n)


def _analyse(blocks: np.ndarray, j0: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per block: carrier index, projection p, step Δ, in-band orthogonal RMS σ."""
    n_blocks, n = blocks.shape
    idx = (j0 + np.arange(n_blocks)) % N_CODES
    codes = _codes(key, n)[idx]
    p = np.mean(blocks * codes, axis=1)
    spec = np.fft.rfft(blocks, axis=1)[:, LOW_BIN : HIGH_BIN + 1]
    energy = 2.0 * np.sum(np.abs(spec) ** 2, axis=1) / (n * n)
    sigma = np.sqrt(np.maximum(energy - p * p, 0.0))
    return idx, p, GAMMA * sigma, sigma


class Embedder:
    """Streams audio through the watermark: chunks in, marked chunks out, 8 ms held back at most."""

    def __init__(self, payload: Payload, sample_rate: int, key: str = DEFAULT_KEY) -> None:
        self.sample_rate = sample_rate
        self.block = _block_len(sample_rate)
        self.key = key
        self.bits = payload.bits()
        self.perm, self.dither = _layout(key)
        self.next_block = 0
        self.pending = np.zeros(0, np.float32)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self.pending, np.asarray(chunk, np.float32).reshape(-1)])
        n_blocks = audio.size // self.block
        cut = n_blocks * self.block
        self.pending = audio[cut:]
        if n_blocks == 0:
            return np.zeros(0, np.float32)
        out = self._mark(audio[:cut].astype(np.float64).reshape(n_blocks, self.block), self.next_block)
        self.next_block += n_blocks
        return out.reshape(-1).astype(np.float32)

    def flush(self) -> np.ndarray:
        """The last partial block (shorter than 8 ms), unmarked."""
        rest, self.pending = self.pending, np.zeros(0, np.float32)
        return rest

    def _mark(self, blocks: np.ndarray, j0: int) -> np.ndarray:
        j = j0 + np.arange(blocks.shape[0])
        idx, p, delta, sigma = _analyse(blocks, j0, self.key)
        active = sigma >= EMBED_FLOOR
        bit = self.bits[self.perm[j % FRAME_BITS]]
        offset = self.dither[idx] + 0.5 * bit
        safe = np.where(active, delta, 1.0)
        q = safe * (np.round(p / safe - offset) + offset)
        change = np.where(active, q - p, 0.0)
        codes = _codes(self.key, self.block)[idx]
        return np.clip(blocks + change[:, None] * codes, -1.0, 1.0)


def embed(audio: np.ndarray, sample_rate: int, payload: Payload, key: str = DEFAULT_KEY) -> np.ndarray:
    """Watermark a whole signal (same samples count out as in)."""
    emb = Embedder(payload, sample_rate, key)
    return np.concatenate([emb.process(audio), emb.flush()])


def detect(audio: np.ndarray, sample_rate: int, key: str = DEFAULT_KEY) -> Detection:
    """Look for a watermark in mono audio at any rate >= 16 kHz (resampled to 32 kHz)."""
    x = np.asarray(audio, np.float32).reshape(-1)
    if sample_rate != DETECT_SR:
        x = resample(x, sample_rate, DETECT_SR)
    n = _block_len(DETECT_SR)
    n_blocks = x.size // n
    if n_blocks == 0:
        return Detection(None, 0.0, 0)
    blocks = x[: n_blocks * n].astype(np.float64).reshape(n_blocks, n)
    perm, dither = _layout(key)
    idx, p, delta, sigma = _analyse(blocks, 0, key)
    active = sigma >= DETECT_FLOOR
    if not active.any():
        return Detection(None, 0.0, 0)
    j = np.arange(n_blocks)[active]
    votes = np.cos(2.0 * np.pi * (p[active] / delta[active] - dither[idx[active]]))
    position = perm[j % FRAME_BITS]
    sums = np.bincount(position, weights=votes, minlength=FRAME_BITS)
    counts = np.bincount(position, minlength=FRAME_BITS)
    if (counts == 0).any():
        return Detection(None, 0.0, int(active.sum()))
    bits = (sums < 0).astype(np.int64)
    confidence = float(np.abs(sums).sum() / counts.sum())
    return Detection(Payload.from_bits(bits), confidence, int(active.sum()))
