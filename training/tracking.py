"""MLflow tracking for training runs: params, losses, learning rate, audio and spectrogram images.

One `Tracker` per training stage. Only the main process logs; the others get a disabled tracker
whose methods do nothing. A resumed stage continues its MLflow run (the run id is kept in the
stage's checkpoint). The tracking URI is the registry's (`adapters.registry.default_tracking_uri`).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def tracking_uri(uri: str | None = None) -> str:
    from adapters.registry import default_tracking_uri

    return uri or default_tracking_uri()


def experiment_id(client: Any, name: str, uri: str) -> str:
    """Get or create an experiment; with an embedded sqlite store, artifacts live beside the db."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _store_creation_lock(uri: str) -> AbstractContextManager[object]:
    """For an embedded sqlite store: a lock beside the database while the first client creates or
    migrates its tables (two trainings started at once on a fresh store otherwise both run the
    migrations and both fail); nothing for a tracking server."""
    if not uri.startswith("sqlite:///"):
        return nullcontext()
    from filelock import FileLock

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db.with_name(db.name + ".lock")), timeout=300)


class Tracker:
    """Thin wrapper over `MlflowClient` for one run."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        *,
        enabled: bool = True,
        uri: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.client: Any = None
        if not enabled:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.uri = tracking_uri(uri)
        with _store_creation_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            if run_id is not None:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
                return
            exp = experiment_id(self.client, experiment, self.uri)
        run = self.client.create_run(exp, run_name=run_name, tags=dict(tags or {}))
        self.run_id = run.info.run_id
        if params:
            items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.enabled and self.run_id is not None:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id is not None:
            self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_audio(
        self, audio: np.ndarray, sample_rate: int, name: str, artifact_path: str = "samples"
    ) -> None:
        """A WAV file and a PNG of its log spectrogram."""
        if not self.enabled or self.run_id is None:
            return
        from tritone.audio.io import write_wav

        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / f"{name}.wav"
            write_wav(wav, audio, sample_rate)
            png = Path(tmp) / f"{name}.png"
            png.write_bytes(spectrogram_png(audio, sample_rate, title=name))
            self.client.log_artifact(self.run_id, str(wav), artifact_path)
            self.client.log_artifact(self.run_id, str(png), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def spectrogram_png(audio: np.ndarray, sample_rate: int, title: str = "") -> bytes:
    """A log-magnitude spectrogram image (PNG bytes) of mono float audio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from tritone.audio.features import SpectrogramConfig, spectrogram

    cfg = SpectrogramConfig(sample_rate=sample_rate, n_fft=1024, hop_length=256, win_length=1024)
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    if x.numel() <= cfg.n_fft:
        x = torch.nn.functional.pad(x, (0, cfg.n_fft + 1 - x.numel()))
    spec = 20 * torch.log10(spectrogram(x, cfg)[0].clamp(min=1e-5)).numpy()
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max())
    ax.set_title(title)
    ax.set_xlabel(f"frames ({cfg.hop_length / sample_rate * 1000:.0f} ms)")
    ax.set_ylabel("bin")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
