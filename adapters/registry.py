"""The adapter registry on MLflow: register, list, show, resolve, promote, roll back, revoke.

Layout in MLflow (any tracking URI: the embedded ``sqlite:///`` default under ``data_dir()``,
or an ``mlflow server`` with a SQL backend and an artifact store):

- registered model ``tritone-base``: one version per base weights, tag ``weights_sha256``;
- registered model ``voice.<tenant>.<name>`` per voice, tags ``state`` (active|revoked),
  ``consent`` (the consent record as JSON), ``tenant``, ``voice``;
- one model version per adapter, created from its run (training run, or a registration run)
  whose artifacts hold the adapter directory; version tags ``content_sha256`` (the manifest's
  sha256: the content address), ``base_*`` (the pin), ``consent_id``, ``state``
  (active|rolled_back|revoked), ``metric.<name>`` (evaluation);
- aliases ``staging``, ``production``, ``previous``. Moving an alias is one atomic write.

``resolve`` turns ``[tenant.]name[@alias|/version]`` into an immutable version and a local,
verified copy in the content-addressed store. A cold resolve costs one registry call (plus a
download when the content is not on local disk yet); a warm one is an in-process dict hit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Before mlflow is imported: no usage telemetry, no progress bars in logs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # keeps CLI output (and --json) clean

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from adapters.base import BUNDLE_MANIFEST, load_base
from adapters.consent import ConsentRecord
from adapters.errors import (
    AdapterError,
    BasePinMismatch,
    ConsentMissing,
    PromotionRefused,
    VoiceNotFound,
    VoiceRevoked,
)
from adapters.format import (
    DATA_FILES,
    MANIFEST_FILE,
    BasePin,
    Manifest,
    check_base,
    read_manifest,
    verify_adapter_dir,
)
from adapters.gate import PromotionGate
from adapters.names import (
    BASE_MODEL_NAME,
    DEFAULT_TENANT,
    VOICE_MODEL_PREFIX,
    VoiceId,
    VoiceRef,
    check_name,
    check_sha256,
    parse_voice_id,
    parse_voice_ref,
)
from adapters.store import AdapterStore
from tritone.config import data_dir

ADAPTER_EXPERIMENT = "tritone-adapters"
BASE_EXPERIMENT = "tritone-base"
STATE_ACTIVE, STATE_REVOKED, STATE_ROLLED_BACK = "active", "revoked", "rolled_back"
PROMOTABLE_ALIASES = ("staging", "production")
_PAGE = 1000


def default_tracking_uri() -> str:
    """``$TRITONE_MLFLOW_URI``, else ``$MLFLOW_TRACKING_URI``, else sqlite under ``data_dir()``."""
    uri = os.environ.get("TRITONE_MLFLOW_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{data_dir() / 'mlflow' / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def _metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    return {f"metric.{k}": repr(float(v)) for k, v in metrics.items()}


def version_tags(manifest: Manifest, content: str) -> dict[str, str]:
    """The tags of a new adapter version: content hash, base pin, lineage, consent, metrics."""
    return {
        "content_sha256": content,
        "base_name": manifest.base.name,
        "base_version": str(manifest.base.version),
        "base_sha256": manifest.base.weights_sha256,
        "consent_id": manifest.consent_id,
        "training_data_sha256": manifest.training_data_sha256,
        "format_version": str(manifest.format_version),
        "rank": str(manifest.rank),
        "source_kind": str(manifest.source.get("kind", "")),
        "state": STATE_ACTIVE,
        **_metric_tags(manifest.metrics),
    }


def _metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                out[key[len("metric.") :]] = float(value)
            except ValueError:
                continue  # a hand-edited tag that is not a number counts as missing
    return out


def _is_not_found(exc: MlflowException) -> bool:
    # A missing alias comes back as INVALID_PARAMETER_VALUE "... alias X not found".
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()


@dataclass(frozen=True)
class VersionInfo:
    """One registered adapter version, as the registry records it."""

    voice: VoiceId
    version: int
    content_sha256: str
    run_id: str
    source: str
    base: BasePin
    state: str
    consent_id: str
    metrics: dict[str, float]
    aliases: tuple[str, ...]
    created_ms: int
    tags: dict[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def from_mlflow(cls, voice: VoiceId, mv: ModelVersion) -> VersionInfo:
        tags = dict(mv.tags or {})
        try:
            base = BasePin(
                tags.get("base_name", BASE_MODEL_NAME),
                int(tags["base_version"]),
                check_sha256(tags["base_sha256"]),
            )
        except (KeyError, ValueError) as exc:
            raise AdapterError(f"{voice}/{mv.version}: registry entry lacks a valid base pin") from exc
        return cls(
            voice=voice,
            version=int(mv.version),
            content_sha256=tags.get("content_sha256", ""),
            run_id=mv.run_id or "",
            source=mv.source or "",
            base=base,
            state=tags.get("state", STATE_ACTIVE),
            consent_id=tags.get("consent_id", ""),
            metrics=_metrics_from_tags(tags),
            aliases=tuple(sorted(mv.aliases or ())),
            created_ms=int(mv.creation_timestamp or 0),
            tags=tags,
        )


@dataclass(frozen=True)
class VoiceSummary:
    voice: VoiceId
    state: str
    aliases: dict[str, int]
    latest_version: int | None
    consent: ConsentRecord | None


@dataclass(frozen=True)
class VoiceDetails:
    summary: VoiceSummary
    versions: list[VersionInfo]


@dataclass(frozen=True)
class ResolvedVoice:
    """An immutable adapter version and its verified local directory."""

    voice: VoiceId
    version: int
    alias: str | None
    content_sha256: str
    path: Path
    base: BasePin
    run_id: str


@dataclass(frozen=True)
class Promotion:
    voice: VoiceId
    alias: str
    version: int
    replaced: int | None  # the version the alias pointed at before (now `previous` for production)


@dataclass(frozen=True)
class Revocation:
    voice: VoiceId
    versions: list[int]
    aliases_removed: list[str]
    artifacts_deleted: list[int]
    local_copies_removed: int


def voice_summary(rm: RegisteredModel) -> VoiceSummary:
    tags = dict(rm.tags or {})
    consent: ConsentRecord | None = None
    if "consent" in tags:
        try:
            consent = ConsentRecord.from_dict(json.loads(tags["consent"]))
        except (ValueError, json.JSONDecodeError):
            consent = None  # a damaged record counts as none: promotion then refuses
    latest = [int(v.version) for v in (rm.latest_versions or [])]
    return VoiceSummary(
        voice=VoiceId.from_model_name(rm.name),
        state=tags.get("state", STATE_ACTIVE),
        aliases={k: int(v) for k, v in (rm.aliases or {}).items()},
        latest_version=max(latest) if latest else None,
        consent=consent,
    )


class AdapterRegistry:
    """Adapters in MLflow plus a local verified store and an in-process resolver cache."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        store: AdapterStore | None = None,
        gate: PromotionGate | None = None,
        serving_base: BasePin | str | None = None,
        cache_ttl_s: float = 30.0,
        default_tenant: str = DEFAULT_TENANT,
        client: MlflowClient | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        db = _sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = client or MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.store = store or AdapterStore()
        self.gate = gate or PromotionGate.from_env()
        self.serving_base = serving_base
        self.cache_ttl_s = cache_ttl_s
        self.default_tenant = check_name(default_tenant, "tenant")
        # (raw reference, default tenant) -> (expiry, result): a hit skips even parsing.
        self._cache: dict[tuple[str, str], tuple[float, ResolvedVoice]] = {}
        self._cache_lock = threading.Lock()
        # bumped by every invalidation: a cold resolve that overlapped one may have read the old
        # state, so its answer is returned but not cached (else it would outlive the change)
        self._invalidations = 0
        self._experiments: dict[str, str] = {}

    # ---------------------------------------------------------------------------------------
    # helpers
    # ---------------------------------------------------------------------------------------

    def _experiment_id(self, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            db = _sqlite_path(self.tracking_uri)
            if db is not None:  # embedded: keep artifacts beside the database, not in the cwd
                location = (db.parent / "artifacts").resolve().as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created concurrently
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                exp_id = found.experiment_id
        else:
            exp_id = exp.experiment_id
        self._experiments[name] = exp_id
        return exp_id

    def _voice_id(self, voice: str | VoiceId) -> VoiceId:
        return voice if isinstance(voice, VoiceId) else parse_voice_id(voice, self.default_tenant)

    def _registered(self, voice: VoiceId) -> RegisteredModel:
        try:
            return self.client.get_registered_model(voice.model_name)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise VoiceNotFound(f"no voice {voice} in the registry") from exc
            raise

    def _version(self, voice: VoiceId, version: int) -> ModelVersion:
        try:
            return self.client.get_model_version(voice.model_name, str(version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise VoiceNotFound(f"voice {voice} has no version {version}") from exc
            raise

    def _versions(self, voice: VoiceId) -> list[ModelVersion]:
        out: list[ModelVersion] = []
        token: str | None = None
        while True:
            page = self.client.search_model_versions(
                f"name='{voice.model_name}'", max_results=_PAGE, page_token=token
            )
            out.extend(page)
            token = page.token
            if not token:
                return sorted(out, key=lambda mv: int(mv.version))

    def _download(self, source: str) -> Callable[[Path], None]:
        def fetch(dst: Path) -> None:
            repo = get_artifact_repository(source, tracking_uri=self.tracking_uri)
            repo.download_artifacts("", str(dst))

        return fetch

    def invalidate(self, voice: str | VoiceId | None = None) -> None:
        """Drop cached resolutions (of one voice, or all)."""
        with self._cache_lock:
            self._invalidations += 1
            if voice is None:
                self._cache.clear()
                return
            vid = self._voice_id(voice)
            for key in [k for k, (_, r) in self._cache.items() if r.voice == vid]:
                del self._cache[key]

    # ---------------------------------------------------------------------------------------
    # base model
    # ---------------------------------------------------------------------------------------

    def register_base(self, weights_dir: str | Path, *, description: str = "") -> BasePin:
        """Register base weights as a ``tritone-base`` version and return its pin.

        ``weights_dir`` is a base bundle (``BaseModel.save``) or a single weights directory
        (``tritone.checkpoints.save_weights``); hashes are recomputed from the tensors and
        must match what the directory records. The same weights twice give the same version.
        """
        root = Path(weights_dir)
        _, sha = load_base(root)
        kind = "bundle" if (root / BUNDLE_MANIFEST).is_file() else "weights"
        existing = self.find_base(sha)
        if existing is not None:
            return existing
        exp_id = self._experiment_id(BASE_EXPERIMENT)
        run = self.client.create_run(exp_id, run_name="register-base", tags={"weights_sha256": sha})
        run_id = run.info.run_id
        self.client.log_artifacts(run_id, str(root), "base")
        self.client.set_terminated(run_id)
        try:
            self.client.create_registered_model(BASE_MODEL_NAME, tags={"kind": "base"})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(
            BASE_MODEL_NAME,
            source=f"{run.info.artifact_uri}/base",
            run_id=run_id,
            tags={"weights_sha256": sha, "kind": kind},
            description=description or None,
        )
        return BasePin(BASE_MODEL_NAME, int(mv.version), sha)

    def find_base(self, weights_sha256: str) -> BasePin | None:
        """The registered base version with these weights, if any."""
        sha = check_sha256(weights_sha256, "weights sha256")
        found = self.client.search_model_versions(f"name='{BASE_MODEL_NAME}' and tag.weights_sha256='{sha}'")
        if not found:
            return None
        return BasePin(BASE_MODEL_NAME, min(int(mv.version) for mv in found), sha)

    def base_pin(self, version: int) -> BasePin:
        try:
            mv = self.client.get_model_version(BASE_MODEL_NAME, str(version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise BasePinMismatch(
                    f"{BASE_MODEL_NAME} has no version {version}; register the base first"
                ) from exc
            raise
        return BasePin(BASE_MODEL_NAME, int(mv.version), (mv.tags or {})["weights_sha256"])

    # ---------------------------------------------------------------------------------------
    # register
    # ---------------------------------------------------------------------------------------

    def register(
        self,
        adapter_dir: str | Path,
        *,
        consent: ConsentRecord | None = None,
        run_id: str | None = None,
        stage: bool = True,
    ) -> VersionInfo:
        """Register a verified adapter directory as a new version of its voice.

        ``consent`` is required the first time a voice is registered (later versions may
        reuse the stored record); the manifest's ``consent_id`` must name it. ``run_id`` is
        the training run that produced the adapter (lineage); without one a registration run
        is created. ``stage`` points the ``staging`` alias at the new version.
        """
        manifest, content = verify_adapter_dir(adapter_dir)
        voice = VoiceId(manifest.tenant, manifest.voice)
        registered_base = self.base_pin(manifest.base.version)
        check_base(manifest.base, registered_base)

        rm = self._get_or_create_voice(voice)
        summary = voice_summary(rm)
        if summary.state == STATE_REVOKED:
            raise VoiceRevoked(f"voice {voice} was revoked; a revoked voice name is never reused")
        record = consent or summary.consent
        if record is None:
            raise ConsentMissing(f"voice {voice} has no consent record; pass one to register it")
        if record.id != manifest.consent_id:
            raise ConsentMissing(
                f"the adapter was made under consent record {manifest.consent_id!r}, "
                f"but the record given for {voice} is {record.id!r}"
            )
        if consent is not None and (summary.consent is None or summary.consent != consent):
            self.client.set_registered_model_tag(voice.model_name, "consent", consent.to_json())

        for mv in self._versions(voice):
            if (mv.tags or {}).get("content_sha256") == content:
                return VersionInfo.from_mlflow(voice, mv)  # same bytes already registered

        run_id = self._log_adapter_run(voice, manifest, adapter_dir, content, record, run_id)
        artifact_uri = self.client.get_run(run_id).info.artifact_uri
        mv = self.client.create_model_version(
            voice.model_name,
            source=f"{artifact_uri}/adapter/{content[:16]}",
            run_id=run_id,
            tags=version_tags(manifest, content),
        )
        version = int(mv.version)
        if stage:
            self.client.set_registered_model_alias(voice.model_name, "staging", str(version))
        self.invalidate(voice)
        return VersionInfo.from_mlflow(voice, self._version(voice, version))

    def _get_or_create_voice(self, voice: VoiceId) -> RegisteredModel:
        try:
            return self.client.get_registered_model(voice.model_name)
        except MlflowException as exc:
            if not _is_not_found(exc):
                raise
        tags = {"kind": "voice", "tenant": voice.tenant, "voice": voice.name, "state": STATE_ACTIVE}
        try:
            return self.client.create_registered_model(voice.model_name, tags=tags)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_registered_model(voice.model_name)

    def _log_adapter_run(
        self,
        voice: VoiceId,
        manifest: Manifest,
        adapter_dir: str | Path,
        content: str,
        consent: ConsentRecord,
        run_id: str | None,
    ) -> str:
        own_run = run_id is None
        if run_id is None:
            run = self.client.create_run(
                self._experiment_id(ADAPTER_EXPERIMENT),
                run_name=f"register-{voice.tenant}.{voice.name}",
                tags={"voice": str(voice), "tenant": voice.tenant},
            )
            run_id = run.info.run_id
            params = {
                "rank": manifest.rank,
                "alpha": manifest.alpha,
                "base_version": manifest.base.version,
                "targets": len(manifest.targets),
                "source_kind": manifest.source.get("kind", ""),
            }
            now = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in manifest.metrics.items()],
                params=[Param(k, str(v)) for k, v in params.items()],
            )
        else:
            self.client.get_run(run_id)  # fails clearly on an unknown run id
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / content[:16]
            staged.mkdir()
            for name in (*DATA_FILES, MANIFEST_FILE):  # exactly what the manifest covers
                shutil.copy2(Path(adapter_dir) / name, staged / name)
            self.client.log_artifacts(run_id, str(staged), f"adapter/{content[:16]}")
            (Path(tmp) / "consent.json").write_text(consent.to_json())
            self.client.log_artifact(run_id, str(Path(tmp) / "consent.json"), "consent")
        if own_run:
            self.client.set_terminated(run_id)
        return run_id

    def record_metrics(self, voice: str | VoiceId, version: int, metrics: Mapping[str, float]) -> None:
        """Attach (more) evaluation metrics to a version; the promotion gate reads these."""
        vid = self._voice_id(voice)
        self._version(vid, version)
        for key, value in _metric_tags(metrics).items():
            check_name(key[len("metric.") :].replace(".", "_"), "metric name")
            self.client.set_model_version_tag(vid.model_name, str(version), key, value)

    # ---------------------------------------------------------------------------------------
    # read
    # ---------------------------------------------------------------------------------------

    def iter_voices(self, tenant: str | None = None) -> Iterator[RegisteredModel]:
        prefix = VOICE_MODEL_PREFIX + (f"{check_name(tenant, 'tenant')}." if tenant else "")
        token: str | None = None
        while True:
            page = self.client.search_registered_models(
                filter_string=f"name LIKE '{prefix}%'", max_results=_PAGE, page_token=token
            )
            # LIKE treats '_' as a wildcard: keep exact prefix matches only.
            yield from (rm for rm in page if rm.name.startswith(prefix))
            token = page.token
            if not token:
                return

    def list_voices(self, tenant: str | None = None) -> list[VoiceSummary]:
        return sorted((voice_summary(rm) for rm in self.iter_voices(tenant)), key=lambda s: str(s.voice))

    def show(self, voice: str | VoiceId) -> VoiceDetails:
        vid = self._voice_id(voice)
        summary = voice_summary(self._registered(vid))
        versions = []
        for mv in self._versions(vid):
            info = VersionInfo.from_mlflow(vid, mv)
            # Search results carry no aliases; the registered model's alias map is authoritative.
            aliases = tuple(sorted(a for a, v in summary.aliases.items() if v == info.version))
            versions.append(dataclasses.replace(info, aliases=aliases))
        return VoiceDetails(summary, versions)

    # ---------------------------------------------------------------------------------------
    # resolve
    # ---------------------------------------------------------------------------------------

    def resolve(self, ref: str | VoiceRef) -> ResolvedVoice:
        """``[tenant.]name[@alias|/version]`` → immutable version + verified local directory."""
        key = (str(ref), self.default_tenant)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic() and hit[1].path.is_dir():
            return hit[1]
        parsed = ref if isinstance(ref, VoiceRef) else parse_voice_ref(ref, self.default_tenant)
        with self._cache_lock:
            invalidations = self._invalidations
        resolved = self._resolve_cold(parsed)
        with self._cache_lock:
            if self._invalidations == invalidations:
                self._cache[key] = (time.monotonic() + self.cache_ttl_s, resolved)
        return resolved

    def _resolve_cold(self, ref: VoiceRef) -> ResolvedVoice:
        name = ref.voice.model_name
        try:  # the one registry round trip of a cold resolve
            if ref.alias is not None:
                mv = self.client.get_model_version_by_alias(name, ref.alias)
            else:
                mv = self.client.get_model_version(name, str(ref.version))
        except MlflowException as exc:
            if _is_not_found(exc):
                raise self._explain_missing(ref) from exc
            raise
        info = VersionInfo.from_mlflow(ref.voice, mv)
        if info.state == STATE_REVOKED:
            raise VoiceRevoked(f"voice {ref.voice} is revoked; it can no longer be served")
        if self.serving_base is not None:
            check_base(info.base, self.serving_base)
        check_sha256(info.content_sha256, f"content sha256 of {ref.voice}/{info.version}")
        path = self.store.ensure(info.content_sha256, self._download(info.source))
        if self.serving_base is not None:  # the manifest's own pin, not just the registry tag
            manifest, _ = read_manifest(path, expect_content_sha256=info.content_sha256)
            check_base(manifest.base, self.serving_base)
        return ResolvedVoice(
            ref.voice, info.version, ref.alias, info.content_sha256, path, info.base, info.run_id
        )

    def _explain_missing(self, ref: VoiceRef) -> AdapterError:
        try:
            summary = voice_summary(self._registered(ref.voice))
        except VoiceNotFound as exc:
            return exc
        if summary.state == STATE_REVOKED:
            return VoiceRevoked(f"voice {ref.voice} is revoked; it can no longer be served")
        if ref.alias is not None:
            known = ", ".join(f"{k}->{v}" for k, v in sorted(summary.aliases.items())) or "none"
            return VoiceNotFound(f"voice {ref.voice} has no {ref.alias!r} alias (aliases: {known})")
        return VoiceNotFound(f"voice {ref.voice} has no version {ref.version}")

    # ---------------------------------------------------------------------------------------
    # promote / rollback / revoke
    # ---------------------------------------------------------------------------------------

    def promote(
        self, voice: str | VoiceId, *, to: str = "production", version: int | None = None
    ) -> Promotion:
        """Point ``to`` (staging|production) at ``version`` (default: the staging version).

        Production requires the gate's metrics and a consent record matching the version;
        on refusal nothing moves. The replaced production version becomes ``previous``.
        """
        if to not in PROMOTABLE_ALIASES:
            raise AdapterError(f"can promote to {' or '.join(PROMOTABLE_ALIASES)}, not {to!r}")
        vid = self._voice_id(voice)
        summary = voice_summary(self._registered(vid))
        if summary.state == STATE_REVOKED:
            raise VoiceRevoked(f"voice {vid} is revoked")
        if version is None:
            version = summary.aliases.get("staging")
            if version is None:
                raise VoiceNotFound(f"voice {vid} has no staging version; name one with --version")
        info = VersionInfo.from_mlflow(vid, self._version(vid, version))
        if info.state == STATE_REVOKED:
            raise VoiceRevoked(f"{vid}/{version} is revoked")
        reasons: list[str] = []
        if summary.consent is None:
            reasons.append("no consent record is stored for the voice")
        elif summary.consent.id != info.consent_id:
            reasons.append(
                f"version was made under consent {info.consent_id!r}, voice's record is {summary.consent.id!r}"
            )
        if to == "production":
            reasons += self.gate.failures(info.metrics)
        if reasons:
            raise PromotionRefused(
                f"refusing to promote {vid}/{version} to {to}: "
                + "; ".join(reasons)
                + f" (gate: {self.gate.describe()})",
                reasons,
            )
        current = summary.aliases.get(to)
        if current != version:
            if to == "production" and current is not None:
                # previous first: if we stop in between, production still serves a valid version.
                self.client.set_registered_model_alias(vid.model_name, "previous", str(current))
            self.client.set_registered_model_alias(vid.model_name, to, str(version))
            if info.state != STATE_ACTIVE:
                self.client.set_model_version_tag(vid.model_name, str(version), "state", STATE_ACTIVE)
        self.invalidate(vid)
        return Promotion(vid, to, version, current if current != version else None)

    def rollback(self, voice: str | VoiceId) -> Promotion:
        """Point ``production`` back at ``previous`` (then cleared); the replaced version is tagged rolled_back."""
        vid = self._voice_id(voice)
        summary = voice_summary(self._registered(vid))
        if summary.state == STATE_REVOKED:
            raise VoiceRevoked(f"voice {vid} is revoked")
        previous = summary.aliases.get("previous")
        if previous is None:
            raise VoiceNotFound(f"voice {vid} has no previous production version to roll back to")
        if VersionInfo.from_mlflow(vid, self._version(vid, previous)).state == STATE_REVOKED:
            raise VoiceRevoked(f"{vid}/{previous} is revoked; cannot roll back to it")
        current = summary.aliases.get("production")
        self.client.set_registered_model_alias(vid.model_name, "production", str(previous))
        self.client.delete_registered_model_alias(vid.model_name, "previous")
        if current is not None and current != previous:
            self.client.set_model_version_tag(vid.model_name, str(current), "state", STATE_ROLLED_BACK)
        self.invalidate(vid)
        return Promotion(vid, "production", previous, current)

    def revoke(self, voice: str | VoiceId) -> Revocation:
        """Irreversibly withdraw a voice: versions tagged revoked, aliases removed, artifacts deleted.

        Safe to repeat (finishes an interrupted revocation). Servers elsewhere learn of it
        through the change feed and drop their copies (``forget``).
        """
        vid = self._voice_id(voice)
        rm = self._registered(vid)
        versions = self._versions(vid)
        # Versions first: a resolver reads the version's tags in its one round trip.
        for mv in versions:
            if (mv.tags or {}).get("state") != STATE_REVOKED:
                self.client.set_model_version_tag(vid.model_name, str(mv.version), "state", STATE_REVOKED)
        self.client.set_registered_model_tag(vid.model_name, "state", STATE_REVOKED)
        self.client.set_registered_model_tag(vid.model_name, "revoked_at", str(int(time.time())))
        aliases = sorted((rm.aliases or {}).keys())
        for alias in aliases:
            self.client.delete_registered_model_alias(vid.model_name, alias)
        deleted: list[int] = []
        for mv in versions:
            if mv.source:
                get_artifact_repository(mv.source, tracking_uri=self.tracking_uri).delete_artifacts()
                deleted.append(int(mv.version))
        removed = self._forget_versions(vid, versions)
        return Revocation(vid, [int(mv.version) for mv in versions], aliases, deleted, removed)

    def forget(self, voice: str | VoiceId) -> int:
        """Drop a voice from this machine: resolver cache entries and local store copies."""
        vid = self._voice_id(voice)
        try:
            versions = self._versions(vid)
        except MlflowException:
            versions = []
        return self._forget_versions(vid, versions)

    def _forget_versions(self, vid: VoiceId, versions: list[ModelVersion]) -> int:
        contents = {(mv.tags or {}).get("content_sha256", "") for mv in versions}
        with self._cache_lock:
            self._invalidations += 1
            for key in [k for k, (_, r) in self._cache.items() if r.voice == vid]:
                contents.add(self._cache.pop(key)[1].content_sha256)
        removed = 0
        for content in sorted(c for c in contents if c):
            try:
                removed += self.store.remove(content)
            except ValueError:
                continue  # a malformed tag names nothing we stored
        return removed


__all__ = [
    "ADAPTER_EXPERIMENT",
    "BASE_EXPERIMENT",
    "AdapterRegistry",
    "Promotion",
    "ResolvedVoice",
    "Revocation",
    "VersionInfo",
    "VoiceDetails",
    "VoiceSummary",
    "default_tracking_uri",
]
