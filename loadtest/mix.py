"""Voice popularity: a Zipf distribution over a finite set of voices.

Voice `k` (1-based rank) is drawn with probability ``k^-s / H(n, s)``, ``H(n, s) = sum_j j^-s``:
with s = 1.1 over 64 voices the top voice gets ~25% of requests and the top 8 about 63%, the
long tail of a multi-tenant service. s = 0 is uniform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


def zipf_probabilities(n: int, s: float) -> np.ndarray:
    """P(rank k) for k = 1..n."""
    if n < 1:
        raise ValueError("need at least one item")
    if s < 0:
        raise ValueError("the Zipf exponent must be >= 0")
    weights = np.arange(1, n + 1, dtype=np.float64) ** -s
    return np.asarray(weights / weights.sum())


class ZipfSampler(Generic[T]):
    """Draws items (most popular first in `items`) with Zipf(s) popularity."""

    def __init__(self, items: Sequence[T], s: float = 1.1, seed: int | None = 0) -> None:
        self.items = list(items)
        self.s = s
        self.probabilities = zipf_probabilities(len(self.items), s)
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        self.rng = np.random.default_rng(seed)

    def index(self) -> int:
        """A 0-based rank."""
        return int(np.searchsorted(self._cdf, self.rng.random(), side="right"))

    def sample(self) -> T:
        return self.items[self.index()]
