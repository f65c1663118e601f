"""The promotion gate: evaluation thresholds a version must meet to serve in production.

Thresholds come from code, a JSON file (``{"min": {"speaker_similarity": 0.75}, "max": {"wer": 0.25}}``)
or the environment (``TRITONE_GATE_MIN_<METRIC>`` / ``TRITONE_GATE_MAX_<METRIC>``, e.g.
``TRITONE_GATE_MIN_SPEAKER_SIMILARITY=0.8``). A metric the version lacks fails the gate:
an unevaluated voice never reaches production by accident.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import AdapterError

_METRIC_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DEFAULT_MINIMUMS = {"speaker_similarity": 0.75}
DEFAULT_MAXIMUMS = {"wer": 0.25}


def _thresholds(data: Any, what: str) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise AdapterError(f"gate {what} thresholds must be an object of metric -> number")
    out: dict[str, float] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not _METRIC_RE.fullmatch(key):
            raise AdapterError(f"gate: invalid metric name {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AdapterError(f"gate: threshold for {key!r} must be a finite number, got {value!r}")
        out[key] = float(value)
    return out


@dataclass(frozen=True)
class PromotionGate:
    """``metric >= minimums[metric]`` and ``metric <= maximums[metric]`` for every listed metric."""

    minimums: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MINIMUMS))
    maximums: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MAXIMUMS))

    def __post_init__(self) -> None:
        _thresholds(self.minimums, "min")
        _thresholds(self.maximums, "max")

    def failures(self, metrics: Mapping[str, float]) -> list[str]:
        """Why ``metrics`` fail the gate; empty when they pass."""
        reasons: list[str] = []
        for name, bound in sorted(self.minimums.items()):
            value = metrics.get(name)
            if value is None or not math.isfinite(value):
                reasons.append(f"{name} is missing (gate needs >= {bound:g})")
            elif value < bound:
                reasons.append(f"{name} {value:g} < {bound:g}")
        for name, bound in sorted(self.maximums.items()):
            value = metrics.get(name)
            if value is None or not math.isfinite(value):
                reasons.append(f"{name} is missing (gate needs <= {bound:g})")
            elif value > bound:
                reasons.append(f"{name} {value:g} > {bound:g}")
        return reasons

    def describe(self) -> str:
        parts = [f"{k} >= {v:g}" for k, v in sorted(self.minimums.items())]
        parts += [f"{k} <= {v:g}" for k, v in sorted(self.maximums.items())]
        return ", ".join(parts) or "no thresholds"

    @classmethod
    def from_dict(cls, data: Any) -> PromotionGate:
        if not isinstance(data, Mapping) or set(data) - {"min", "max"}:
            raise AdapterError('gate must be an object with "min" and/or "max"')
        return cls(_thresholds(data.get("min", {}), "min"), _thresholds(data.get("max", {}), "max"))

    @classmethod
    def load(cls, path: str | Path) -> PromotionGate:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise AdapterError(f"cannot read gate file {path}: {exc}") from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PromotionGate:
        """Defaults overridden (or extended) by ``TRITONE_GATE_MIN_*`` / ``TRITONE_GATE_MAX_*``."""
        env = os.environ if environ is None else environ
        minimums, maximums = dict(DEFAULT_MINIMUMS), dict(DEFAULT_MAXIMUMS)
        for key, raw in env.items():
            for prefix, target in (("TRITONE_GATE_MIN_", minimums), ("TRITONE_GATE_MAX_", maximums)):
                if key.startswith(prefix):
                    metric = key[len(prefix) :].lower()
                    try:
                        target[metric] = float(raw)
                    except ValueError as exc:
                        raise AdapterError(f"{key}={raw!r} is not a number") from exc
        return cls(_thresholds(minimums, "min"), _thresholds(maximums, "max"))
