"""MLflow tracking of training runs: trainings started at once on a fresh embedded store."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any


def _start_run(uri: str, barrier: Any, results: Any) -> None:
    import mlflow  # noqa: F401  (imported before the barrier, so the starts really coincide)

    from training.tracking import Tracker

    barrier.wait()
    try:
        tracker = Tracker("tritone-train-race", "race", {"seed": 1}, uri=uri)
        tracker.log_metrics({"loss": 1.0}, 0)
        tracker.finish()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(repr(exc)[:300])


def test_trainings_started_together_on_a_fresh_store_all_log(tmp_path: Path) -> None:
    """Two stages of a recipe start side by side on a new TRITONE_HOME (the demo recipe runs GPT
    and SoVITS so): without the creation lock both ran the store's migrations and both failed."""
    ctx = mp.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_start_run, args=(uri, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * 3

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tritone-train-race")
    assert exp is not None
    assert len(client.search_runs([exp.experiment_id])) == 3
