"""What a load test runs against: the gateway's addresses, the voices and one API key per tenant.

`python -m loadtest.setup_voices` writes it (JSON, owner-only: it holds clear API keys of the
load-test tenants); the Locust users read it (`--scenario`, or `$TRITONE_LOADTEST_SCENARIO`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HTTP = "http://127.0.0.1:8080"
DEFAULT_GRPC = "127.0.0.1:50051"


@dataclass(frozen=True)
class Voice:
    ref: str  # "tenant.name"
    tenant: str


@dataclass
class Scenario:
    voices: list[Voice]  # most popular first (Zipf rank order)
    keys: dict[str, str]  # tenant -> clear API key
    http: str = DEFAULT_HTTP
    grpc: str = DEFAULT_GRPC
    base: str = ""  # the serving base this was set up for (directory or description)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = sorted({v.tenant for v in self.voices} - set(self.keys))
        if missing:
            raise ValueError(f"scenario has voices of tenants without a key: {', '.join(missing)}")
        if not self.voices:
            raise ValueError("scenario has no voices")

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Scenario:
        data = json.loads(Path(path).read_text())
        data["voices"] = [Voice(**v) for v in data["voices"]]
        return cls(**data)

    def first(self, n: int | None) -> list[Voice]:
        """The `n` most popular voices (all when n is None or 0)."""
        if n is not None and n > len(self.voices):
            raise ValueError(f"asked for {n} voices, the scenario has {len(self.voices)}")
        return self.voices[:n] if n else list(self.voices)
