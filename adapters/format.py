"""The per-voice adapter directory: writing it, and reading it only after it proves intact.

A directory holds three files::

    adapter.safetensors       lora.<module>.A / lora.<module>.B  (peft shapes, see tritone.lora)
                              full.<state key>                   (fully trained tensors: peft's modules_to_save)
    voice_prompt.safetensors  the voice's reference prompt: opaque tensors + a small JSON metadata dict
    manifest.json             who, what base, how it was made, how good it is, and sha256 of both files

The sha256 of ``manifest.json`` itself is the adapter's content address: it covers the other
files through their recorded hashes, so one hash names the whole directory (the registry
records it and the local store is keyed by it).

Readers check, in order: the manifest parses and is a known format version, its fields are
well formed, every file's sha256 matches, the base pin matches the base being served, and
the tensors agree with the manifest. Any failure raises a typed error and nothing is returned.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from adapters.errors import (
    AdapterFormatError,
    BasePinMismatch,
    IntegrityError,
    UnsupportedFormatVersion,
)
from adapters.names import check_name, check_sha256
from adapters.util import sha256_bytes, sha256_file, write_json
from tritone.lora import LoRAError, LoRAWeights
from tritone.voice import VoicePrompt, VoicePromptError

FORMAT_NAME = "tritone-adapter"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
ADAPTER_FILE = "adapter.safetensors"
PROMPT_FILE = "voice_prompt.safetensors"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (ADAPTER_FILE, PROMPT_FILE)
_MAX_MANIFEST_BYTES = 4 << 20  # manifests are small; refuse to parse something huge


@dataclass(frozen=True)
class BasePin:
    """The base model an adapter was trained on: registry name, version, and weights hash."""

    name: str
    version: int
    weights_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "weights_sha256": self.weights_sha256}

    @classmethod
    def from_dict(cls, data: Any) -> BasePin:
        if not isinstance(data, dict):
            raise AdapterFormatError("manifest: 'base' must be an object")
        name, version, sha = data.get("name"), data.get("version"), data.get("weights_sha256")
        if not isinstance(name, str) or not name:
            raise AdapterFormatError("manifest: base.name must be a non-empty string")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise AdapterFormatError("manifest: base.version must be a positive integer")
        try:
            check_sha256(sha, "base weights sha256")  # type: ignore[arg-type]
        except ValueError as exc:
            raise AdapterFormatError(f"manifest: {exc}") from exc
        return cls(name, version, sha)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.weights_sha256[:12]})"


def check_base(pin: BasePin, expected: BasePin | str) -> None:
    """Raise BasePinMismatch unless ``pin`` names the ``expected`` base (a pin or a weights hash)."""
    expected_sha = expected if isinstance(expected, str) else expected.weights_sha256
    if pin.weights_sha256 != expected_sha or (isinstance(expected, BasePin) and pin.name != expected.name):
        raise BasePinMismatch(
            f"adapter is pinned to base {pin}, but the base in use is "
            f"{expected if isinstance(expected, BasePin) else expected[:12]}; refusing to apply it"
        )


@dataclass(frozen=True)
class TargetSpec:
    """One LoRA target: its kind, rank and alpha (scale = alpha / rank)."""

    kind: str
    rank: int
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rank": self.rank, "alpha": self.alpha}


@dataclass
class Manifest:
    voice: str
    tenant: str
    base: BasePin
    rank: int  # nominal rank (the largest target rank)
    alpha: float  # nominal alpha; per-target values in `targets` are authoritative
    targets: dict[str, TargetSpec]
    modules_to_save: list[str]
    training_data_sha256: str
    metrics: dict[str, float]
    consent_id: str
    files: dict[str, str]
    source: dict[str, Any] = field(default_factory=dict)  # how it was made: training run, peft, svd import
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "voice": self.voice,
            "tenant": self.tenant,
            "base": self.base.to_dict(),
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": {k: v.to_dict() for k, v in sorted(self.targets.items())},
            "modules_to_save": sorted(self.modules_to_save),
            "training_data_sha256": self.training_data_sha256,
            "metrics": dict(sorted(self.metrics.items())),
            "consent_id": self.consent_id,
            "files": dict(sorted(self.files.items())),
            "source": self.source,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise AdapterFormatError(f"{MANIFEST_FILE} is not a {FORMAT_NAME} manifest")
        version = data.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise UnsupportedFormatVersion(
                f"{MANIFEST_FILE}: format version {version!r} is not supported "
                f"(this tritone reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
            )
        try:
            voice = check_name(data.get("voice"), "voice")  # type: ignore[arg-type]
            tenant = check_name(data.get("tenant"), "tenant")  # type: ignore[arg-type]
            consent_id = check_name(data.get("consent_id"), "consent record id")  # type: ignore[arg-type]
            training = check_sha256(data.get("training_data_sha256"), "training data sha256")  # type: ignore[arg-type]
        except ValueError as exc:
            raise AdapterFormatError(f"{MANIFEST_FILE}: {exc}") from exc
        files = data.get("files")
        if not isinstance(files, dict) or set(files) != set(DATA_FILES):
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'files' must list exactly {', '.join(DATA_FILES)}")
        for name, sha in files.items():
            if not isinstance(sha, str) or len(sha) != 64:
                raise AdapterFormatError(f"{MANIFEST_FILE}: bad sha256 for {name}")
        targets_raw = data.get("targets")
        if not isinstance(targets_raw, dict):
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'targets' must be an object")
        targets = {name: _target_spec(name, spec) for name, spec in targets_raw.items()}
        modules = data.get("modules_to_save", [])
        if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'modules_to_save' must be a list of module names")
        if not targets and not modules:
            raise AdapterFormatError(f"{MANIFEST_FILE}: an adapter needs at least one target or module")
        rank, alpha = data.get("rank"), data.get("alpha")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'rank' must be a non-negative integer")
        if not _is_number(alpha):
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'alpha' must be a number")
        source = data.get("source", {})
        if not isinstance(source, dict):
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'source' must be an object")
        created = data.get("created_at", "")
        if not isinstance(created, str):
            raise AdapterFormatError(f"{MANIFEST_FILE}: 'created_at' must be a string")
        return cls(
            voice=voice,
            tenant=tenant,
            base=BasePin.from_dict(data.get("base")),
            rank=rank,
            alpha=float(alpha),
            targets=targets,
            modules_to_save=list(modules),
            training_data_sha256=training,
            metrics=_metrics(data.get("metrics", {})),
            consent_id=consent_id,
            files=dict(files),
            source=source,
            created_at=created,
            format_version=version,
        )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _target_spec(name: str, spec: Any) -> TargetSpec:
    if not isinstance(name, str) or not name:
        raise AdapterFormatError(f"{MANIFEST_FILE}: empty target name")
    if not isinstance(spec, dict):
        raise AdapterFormatError(f"{MANIFEST_FILE}: target {name!r} must be an object")
    kind, rank, alpha = spec.get("kind"), spec.get("rank"), spec.get("alpha")
    if kind not in ("linear", "conv1d"):
        raise AdapterFormatError(f"{MANIFEST_FILE}: target {name!r} has unknown kind {kind!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterFormatError(f"{MANIFEST_FILE}: target {name!r} rank must be a positive integer")
    if not _is_number(alpha):
        raise AdapterFormatError(f"{MANIFEST_FILE}: target {name!r} alpha must be a number")
    return TargetSpec(kind, rank, float(alpha))


def _metrics(data: Any) -> dict[str, float]:
    if not isinstance(data, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in data.items()):
        raise AdapterFormatError(f"{MANIFEST_FILE}: 'metrics' must map names to finite numbers")
    return {k: float(v) for k, v in data.items()}


@dataclass
class Adapter:
    """A verified adapter: its manifest, LoRA factors, full tensors and voice prompt."""

    manifest: Manifest
    lora: dict[str, LoRAWeights]
    full: dict[str, Tensor]
    prompt: VoicePrompt
    content_sha256: str
    path: Path | None = None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_adapter(
    out_dir: str | Path,
    *,
    voice: str,
    tenant: str,
    base: BasePin,
    lora: Mapping[str, LoRAWeights],
    prompt: VoicePrompt,
    consent_id: str,
    training_data_sha256: str,
    metrics: Mapping[str, float] | None = None,
    full: Mapping[str, Tensor] | None = None,
    source: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an adapter directory; returns its path. The directory appears complete or not at all."""
    out = Path(out_dir)
    full = dict(full or {})
    targets = {name: TargetSpec(w.kind, w.rank, float(w.alpha)) for name, w in lora.items()}
    clash = sorted(k for k in full if k.endswith(".weight") and k[: -len(".weight")] in targets)
    if clash:
        raise AdapterFormatError(f"tensors both LoRA-adapted and fully replaced: {', '.join(clash)}")
    modules = sorted({key.rpartition(".")[0] or key for key in full})
    manifest = Manifest(
        voice=check_name(voice, "voice"),
        tenant=check_name(tenant, "tenant"),
        base=base,
        rank=max((t.rank for t in targets.values()), default=0),
        alpha=max((t.alpha for t in targets.values()), default=0.0),
        targets=targets,
        modules_to_save=modules,
        training_data_sha256=check_sha256(training_data_sha256, "training data sha256"),
        metrics=_metrics(dict(metrics or {})),
        consent_id=check_name(consent_id, "consent record id"),
        files={},
        source=dict(source or {}),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors: dict[str, Tensor] = {}
        for name, w in lora.items():
            tensors[f"lora.{name}.A"] = w.A.detach().cpu().contiguous()
            tensors[f"lora.{name}.B"] = w.B.detach().cpu().contiguous()
        for key, t in full.items():
            tensors[f"full.{key}"] = t.detach().cpu().contiguous()
        save_file(tensors, str(tmp / ADAPTER_FILE), metadata={"format": FORMAT_NAME})
        prompt.save(tmp / PROMPT_FILE)
        manifest.files = {name: sha256_file(tmp / name) for name in DATA_FILES}
        write_json(tmp / MANIFEST_FILE, manifest.to_dict())
        Manifest.from_dict(json.loads((tmp / MANIFEST_FILE).read_text()))  # what we write, we can read
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_manifest(path: str | Path, *, expect_content_sha256: str | None = None) -> tuple[Manifest, str]:
    """Parse and validate ``manifest.json``; returns it and its sha256 (the content address)."""
    mpath = Path(path) / MANIFEST_FILE
    if not mpath.is_file():
        raise AdapterFormatError(
            f"{path}: no {MANIFEST_FILE}; not an adapter directory (or its artifacts are gone)"
        )
    if mpath.stat().st_size > _MAX_MANIFEST_BYTES:
        raise AdapterFormatError(f"{mpath}: manifest is implausibly large")
    raw = mpath.read_bytes()
    content = sha256_bytes(raw)
    if expect_content_sha256 is not None and content != expect_content_sha256:
        raise IntegrityError(
            f"{MANIFEST_FILE}: sha256 {content[:12]}… differs from the registered {expect_content_sha256[:12]}…; "
            "the adapter was altered or corrupted"
        )
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{mpath}: not valid JSON: {exc}") from exc
    return Manifest.from_dict(data), content


def verify_files(path: str | Path, manifest: Manifest) -> None:
    """Check every data file against the manifest's sha256 (IntegrityError names the file)."""
    root = Path(path)
    for name in DATA_FILES:
        fpath = root / name
        if not fpath.is_file():
            raise IntegrityError(f"{name} is missing from {root}")
        actual = sha256_file(fpath)
        if actual != manifest.files[name]:
            raise IntegrityError(
                f"{name}: sha256 {actual[:12]}… does not match the manifest's {manifest.files[name][:12]}…; "
                "the file is corrupted or was modified"
            )


def verify_adapter_dir(
    path: str | Path, *, expect_base: BasePin | str | None = None, expect_content_sha256: str | None = None
) -> tuple[Manifest, str]:
    """Everything ``read_adapter`` checks except tensor shapes, without loading tensors."""
    manifest, content = read_manifest(path, expect_content_sha256=expect_content_sha256)
    verify_files(path, manifest)
    if expect_base is not None:
        check_base(manifest.base, expect_base)
    return manifest, content


def read_adapter(
    path: str | Path, *, expect_base: BasePin | str | None = None, expect_content_sha256: str | None = None
) -> Adapter:
    """Load an adapter directory after verifying hashes, format version, base pin and tensors."""
    root = Path(path)
    manifest, content = verify_adapter_dir(
        root, expect_base=expect_base, expect_content_sha256=expect_content_sha256
    )
    try:
        tensors = load_file(str(root / ADAPTER_FILE))
        prompt = VoicePrompt.load(root / PROMPT_FILE)
    except (SafetensorError, OSError, json.JSONDecodeError, VoicePromptError) as exc:
        raise AdapterFormatError(f"{root}: cannot read tensors: {exc}") from exc
    lora: dict[str, LoRAWeights] = {}
    for name, spec in manifest.targets.items():
        a, b = tensors.pop(f"lora.{name}.A", None), tensors.pop(f"lora.{name}.B", None)
        if a is None or b is None:
            raise AdapterFormatError(f"{ADAPTER_FILE}: missing LoRA factors for target {name!r}")
        try:
            w = LoRAWeights(a, b, spec.alpha)
        except LoRAError as exc:
            raise AdapterFormatError(f"{ADAPTER_FILE}: target {name!r}: {exc}") from exc
        if w.kind != spec.kind or w.rank != spec.rank:
            raise AdapterFormatError(
                f"{ADAPTER_FILE}: target {name!r} tensors are {w.kind} rank {w.rank}, "
                f"manifest says {spec.kind} rank {spec.rank}"
            )
        lora[name] = w
    full = {k[len("full.") :]: v for k, v in tensors.items() if k.startswith("full.")}
    stray = sorted(k for k in tensors if not k.startswith("full."))
    if stray:
        raise AdapterFormatError(
            f"{ADAPTER_FILE}: tensors the manifest does not describe: {', '.join(stray)}"
        )
    owners = {key.rpartition(".")[0] or key for key in full}
    if owners != set(manifest.modules_to_save):
        raise AdapterFormatError(f"{ADAPTER_FILE}: full tensors do not match the manifest's modules_to_save")
    return Adapter(manifest, lora, full, prompt, content, root)
