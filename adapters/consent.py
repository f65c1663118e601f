"""Consent records: no voice is registered without the speaker's documented permission.

A record names who the speaker is, who granted the permission, what it covers, when, and
the sha256 of the evidence (a signed form, a recording) kept outside the registry. The
registry stores the record with the voice (a registered-model tag and a run artifact) and
each adapter manifest names the record id it was made under.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from adapters.errors import ConsentMissing
from adapters.names import check_name, check_sha256
from adapters.util import sha256_file

_MAX_TEXT = 256


def _check_text(key: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConsentMissing(f"consent record: {key!r} must be a non-empty string")
    if len(value) > _MAX_TEXT or any(ord(c) < 32 for c in value):
        raise ConsentMissing(f"consent record: {key!r} must be at most {_MAX_TEXT} printable characters")


@dataclass(frozen=True)
class ConsentRecord:
    id: str
    speaker: str  # the speaker's identity, as the consent form names them
    granted_by: str  # the speaker, or their legal representative
    scope: str  # what the voice may be used for
    date: str  # ISO date the consent was given
    evidence_sha256: str  # hash of the evidence file held by the operator

    def __post_init__(self) -> None:
        try:
            check_name(self.id, "consent record id")
            check_sha256(self.evidence_sha256, "consent evidence sha256")
        except ValueError as exc:
            raise ConsentMissing(str(exc)) from exc
        for key in ("speaker", "granted_by", "scope", "date"):
            _check_text(key, getattr(self, key))
        try:
            dt.date.fromisoformat(self.date)
        except ValueError as exc:
            raise ConsentMissing(
                f"consent record: date {self.date!r} is not an ISO date (YYYY-MM-DD)"
            ) from exc

    @classmethod
    def from_dict(cls, data: Any) -> ConsentRecord:
        if not isinstance(data, dict):
            raise ConsentMissing("consent record must be a JSON object")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ConsentMissing(f"consent record lacks {', '.join(missing)}")
        return cls(**{n: data[n] for n in names})

    @classmethod
    def create(
        cls,
        *,
        id: str,
        speaker: str,
        granted_by: str,
        scope: str,
        evidence_file: str | Path,
        date: str | None = None,
    ) -> ConsentRecord:
        """A record whose evidence hash is computed from ``evidence_file``."""
        return cls(
            id=id,
            speaker=speaker,
            granted_by=granted_by,
            scope=scope,
            date=date or dt.date.today().isoformat(),
            evidence_sha256=sha256_file(evidence_file),
        )

    @classmethod
    def load(cls, path: str | Path) -> ConsentRecord:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConsentMissing(f"cannot read consent record {path}: {exc}") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
