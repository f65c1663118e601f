"""Load-test building blocks: the Zipf voice mix and the text-length distribution (statistical
checks), the scenario file, the bulk registration path, the HTML report builder on a small CSV
set, and the served vs upstream-style tables."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from loadtest.bench_upstream import Results
from loadtest.mix import ZipfSampler, zipf_probabilities
from loadtest.texts import PARAGRAPHS, SENTENCES, TextLengths, TextSampler

# -- Zipf voice mix --------------------------------------------------------------------------------


def test_zipf_probabilities() -> None:
    p = zipf_probabilities(64, 1.1)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(np.diff(p) < 0)
    assert p[0] / p[1] == pytest.approx(2**1.1)
    assert np.allclose(zipf_probabilities(10, 0.0), 0.1)
    with pytest.raises(ValueError):
        zipf_probabilities(0, 1.0)
    with pytest.raises(ValueError):
        zipf_probabilities(5, -1.0)


@pytest.mark.parametrize(("n", "s"), [(64, 1.1), (8, 0.8), (1000, 1.2)])
def test_zipf_sampler_matches_the_distribution(n: int, s: float) -> None:
    draws = 40_000
    sampler = ZipfSampler(list(range(n)), s, seed=123)
    counts = np.bincount([sampler.sample() for _ in range(draws)], minlength=n)
    expected = zipf_probabilities(n, s) * draws
    # chi-square over ranks with enough expected mass (tail ranks pooled into one bin)
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # the rank-frequency slope on log-log axes is -s (top ranks, where counts are large)
    top = np.arange(1, min(n, 16) + 1)
    slope = np.polyfit(np.log(top), np.log(counts[: top.size]), 1)[0]
    assert slope == pytest.approx(-s, abs=0.12)


def test_zipf_sampler_is_reproducible_and_uniform_at_zero() -> None:
    a, b = ZipfSampler("abcdefgh", 1.1, seed=5), ZipfSampler("abcdefgh", 1.1, seed=5)
    assert [a.sample() for _ in range(50)] == [b.sample() for _ in range(50)]
    uniform = ZipfSampler(list(range(8)), 0.0, seed=1)
    counts = np.bincount([uniform.index() for _ in range(16_000)], minlength=8)
    assert stats.chisquare(counts).pvalue > 1e-3


# -- text lengths ----------------------------------------------------------------------------------


def test_target_lengths_are_log_normal() -> None:
    lengths = TextLengths(median=90, sigma=0.6, minimum=1, maximum=100_000)
    rng = np.random.default_rng(0)
    logs = np.log([lengths.draw(rng) for _ in range(20_000)])
    assert np.exp(np.median(logs)) == pytest.approx(90, rel=0.03)
    assert logs.std() == pytest.approx(0.6, rel=0.05)
    assert stats.kstest((logs - math.log(90)) / 0.6, "norm").statistic < 0.02
    clipped = TextLengths(median=90, sigma=2.0, minimum=20, maximum=300)
    values = [clipped.draw(rng) for _ in range(2_000)]
    assert min(values) == 20 and max(values) == 300


def test_sampled_texts_follow_the_target_distribution() -> None:
    lengths = TextLengths()  # median 90, sigma 0.9, [10, 1000]
    sampler = TextSampler(lengths, seed=3)
    texts = [sampler.sample() for _ in range(4_000)]
    got = np.array([len(t) for t in texts])
    rng = np.random.default_rng(4)
    target = np.array([lengths.draw(rng) for _ in range(4_000)])
    for q in (25, 50, 75, 90):
        assert np.percentile(got, q) == pytest.approx(np.percentile(target, q), rel=0.2), q
    assert got.max() <= lengths.maximum and got.min() >= min(map(len, SENTENCES))
    assert sum(len(t) > 250 for t in texts) > 0.05 * len(texts)  # a real long tail
    long = [t for t in texts if len(t) > 150]
    assert len(set(long)) > 0.8 * len(long)  # composed texts vary; short ones repeat, as in real traffic
    assert TextSampler(seed=9).sample() == TextSampler(seed=9).sample()


def test_the_texts_are_ours_and_speakable() -> None:
    from tritone.text import TextFrontend

    units = SENTENCES + PARAGRAPHS
    assert len(set(units)) == len(units)
    lengths = sorted(map(len, units))
    assert lengths[0] < 20 and lengths[-1] > 250 and len(PARAGRAPHS) >= 8
    frontend = TextFrontend(version="v2")
    for unit in units:
        assert re.fullmatch(r"[A-Za-z0-9 ,.;?'!]+", unit), unit
        assert len(frontend.process(unit, "en").ids) > 3


# -- scenario and voices -------------------------------------------------------------------------


def test_scenario_round_trip(tmp_path: Path) -> None:
    from loadtest.scenario import Scenario, Voice

    sc = Scenario([Voice("lt0.a", "lt0"), Voice("lt1.b", "lt1")], {"lt0": "k0", "lt1": "k1"})
    path = sc.save(tmp_path / "s" / "scenario.json")
    assert path.stat().st_mode & 0o777 == 0o600
    again = Scenario.load(path)
    assert again == sc and again.first(1) == [Voice("lt0.a", "lt0")] and len(again.first(None)) == 2
    with pytest.raises(ValueError, match="without a key"):
        Scenario([Voice("lt2.c", "lt2")], {"lt0": "k0"})
    with pytest.raises(ValueError):
        sc.first(3)


def test_voice_specs_spread_tenants() -> None:
    from loadtest.voices import voice_specs

    specs = voice_specs(64, ["lt0", "lt1", "lt2", "lt3"], clips=16)
    assert [s.tenant for s in specs[:5]] == ["lt0", "lt1", "lt2", "lt3", "lt0"]
    assert len({s.ref for s in specs}) == 64 and len({s.seed for s in specs}) == 64
    assert specs[10].ref == "lt2.voice010" and specs[17].clip == 1


def test_bulk_registration_equals_the_registry_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk-registered voice resolves like one registered by `AdapterRegistry.register`."""
    import loadtest.voices as lv
    from adapters.registry import AdapterRegistry
    from adapters.store import AdapterStore
    from adapters.synthetic import STANDIN_TARGETS, demo_prompt, make_standin, save_standin

    model = make_standin(0)
    registry = AdapterRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", store=AdapterStore(tmp_path / "store"))
    pin = registry.register_base(save_standin(model, tmp_path / "base"))
    monkeypatch.setattr(lv, "lora_targets", lambda: STANDIN_TARGETS)
    specs = [lv.VoiceSpec("lt0", f"v{i}", i, 0) for i in range(2)]
    dirs = [lv.write_voice(tmp_path / s.ref, s, model, pin, demo_prompt(0)) for s in specs]
    register_voices, register_voices_bulk = lv.register_voices, lv.register_voices_bulk
    register_voices(registry, dirs[:1])
    register_voices_bulk(registry, dirs[1:])
    infos = [registry.show(f"lt0.v{i}") for i in range(2)]
    for details in infos:
        assert details.summary.aliases == {"staging": 1, "production": 1}
        assert details.summary.consent is not None and details.summary.state == "active"
    normal, bulk = infos[0].versions[0], infos[1].versions[0]
    for field in ("base", "consent_id", "metrics", "state"):
        assert getattr(normal, field) == getattr(bulk, field), field
    assert set(normal.tags) == set(bulk.tags)
    for i in range(2):
        resolved = registry.resolve(f"lt0.v{i}@production")
        assert (resolved.path / "manifest.json").is_file() and resolved.version == 1


# -- the report ------------------------------------------------------------------------------------

PCT = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]


def _write_locust_csvs(prefix: Path, failures: int = 1, with_requests: bool = True) -> None:
    names = [
        ("HTTP", "POST /v1/tts"),
        ("gRPC", "SynthesizeStream: first audio"),
        ("gRPC", "SynthesizeStream: total"),
    ]
    stats_head = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                  "Average Response Time", "Min Response Time", "Max Response Time", "Average Content Size",
                  "Requests/s", "Failures/s", *PCT]  # fmt: skip
    with open(f"{prefix}_stats.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(stats_head)
        for typ, name in names:
            w.writerow(
                [typ, name, 20, 0, 800, 900, 100, 3000, 50000, 0.5, 0, *[800 + 100 * i for i in range(11)]]
            )
        w.writerow(["", "Aggregated", 60, failures, 800, 900, 100, 3000, 50000, 1.5, 0, *[900] * 11])
    hist_head = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PCT,
                 "Total Request Count", "Total Failure Count", "Total Median Response Time",
                 "Total Average Response Time", "Total Min Response Time", "Total Max Response Time",
                 "Total Average Content Size"]  # fmt: skip
    with open(f"{prefix}_stats_history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(hist_head)
        for t in range(30):
            for typ, name in [*names, ("", "Aggregated")]:
                pct = ["N/A"] * 11 if t == 0 else [500 + 10 * t + 100 * i for i in range(11)]
                w.writerow([1_700_000_000 + t, min(t, 4), typ, name, 1.0, 0.1 if t == 20 else 0.0, *pct,
                            2 * t, int(t >= 20) * failures, 800, 900, 100, 3000, 50000])  # fmt: skip
    with open(f"{prefix}_failures.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Method", "Name", "Error", "Occurrences"])
        if failures:
            w.writerow(["gRPC", "SynthesizeStream: total", "StatusCode.UNAVAILABLE <script>", failures])
    if with_requests:
        with open(f"{prefix}_requests.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["start", "api", "kind", "voice", "tenant", "chars", "ok", "latency_s", "first_audio_s",
                        "audio_s", "bytes", "error"])  # fmt: skip
            for i in range(40):
                api, kind = ("http", "unary") if i % 3 == 0 else ("grpc" if i % 2 else "http", "stream")
                ok = int(i != 7)
                w.writerow([1_700_000_000 + 0.7 * i, api, kind, f"lt0.voice{i % 5:03d}", "lt0", 50 + i, ok,
                            1.0 + 0.01 * i, 0.3 + 0.01 * i if ok else "nan", 2.5 if ok else 0, 160000, ""])  # fmt: skip


def _pngs(html_text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html_text)]


def test_report_from_a_small_csv_set(tmp_path: Path) -> None:
    from loadtest.report import build_report

    prefix = tmp_path / "run"
    _write_locust_csvs(prefix)
    (tmp_path / "run_locust.html").write_text("<html></html>")
    out = build_report(str(prefix))
    assert out == Path(f"{prefix}_report.html")
    text = out.read_text()
    pngs = _pngs(text)
    assert len(pngs) == 4 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in pngs)
    for heading in ("Latency percentiles over time", "Throughput", "Time to first audio", "Errors"):
        assert f"<h2>{heading}</h2>" in text
    assert "1 failures" in text and "SynthesizeStream: first audio" in text
    assert "&lt;script&gt;" in text and "<script>" not in text  # error text is escaped
    assert "39 / 1" in text  # completed / failed from the request log
    assert "100.0 s of audio" not in text and "97.5 s" in text  # 39 x 2.5 s of audio
    assert "run_locust.html" in text


def test_report_without_the_request_log(tmp_path: Path) -> None:
    from loadtest.report import build_report, main

    prefix = tmp_path / "bare"
    _write_locust_csvs(prefix, failures=0, with_requests=False)
    text = build_report(str(prefix), tmp_path / "out" / "r.html").read_text()
    assert len(_pngs(text)) == 4 and "0 failures" in text
    assert main([str(tmp_path / "missing")]) == 1


# -- served vs upstream-style tables ---------------------------------------------------------------


def _results() -> Results:
    def cell(v: int, c: int, path: str, tput: float, p99: float) -> dict[str, object]:
        return {"voices": v, "concurrency": c, "path": path, "n": 16, "ok": 16, "errors": [], "wall_s": 10.0,
                "audio_s": tput * 10, "throughput": tput, "p50": p99 / 2, "p95": p99 * 0.9, "p99": p99,
                "ttfa_p50": 0.3, "ttfa_p95": 0.5, "swaps": 5}  # fmt: skip

    cells = []
    for v in (1, 8, 64):
        for c in (1, 8):
            cells.append(
                cell(v, c, "served", 3.0 if c == 8 else 1.0, 2.0 + (0.2 if v == 64 and c == 8 else 0))
            )
            cells.append(cell(v, c, "upstream", 1.0, 4.0))
    memory = [
        {"voices": n, "served_rss": 1.6e9, "served_pss": 1.2e9, "served_processes": 3, "upstream_disk": n * 2e6,
         "served_disk": n * 1e6, "hold_rss": 2.5e8 + n * 1.5e6, "hold_measured": n < 1000}
        for n in (1, 64, 1000)
    ]  # fmt: skip
    memory[0].update(upstream_rss=6e8, upstream_pss=5e8, upstream_voices_swapped=1)
    memory[1].update(upstream_rss=6.2e8, upstream_pss=5e8, upstream_voices_swapped=64)
    meta = {"base": "tiny base, random weights", "command": "python -m loadtest.bench_upstream", "machine": "m",
            "date": "2026-01-01", "adapter_bytes": 1e6, "voice_copy_bytes": 2e6}  # fmt: skip
    return Results(meta, cells, memory)


def test_served_vs_upstream_tables(tmp_path: Path) -> None:
    from loadtest.bench_upstream import load_results, main, render_goals, render_memory, render_throughput

    res = _results()
    rows = render_throughput(res)
    assert len(rows) == 2 + 6 and all(r.startswith("|") for r in rows)
    assert "**3.00×**" in rows[3] and "(5 swaps)" in rows[3] and "tiny base, random weights" in rows[3]
    goals = "\n".join(render_goals(res))
    assert "**3.00×** | met" in goals
    assert "concurrency 1 | 2.00 s vs 2.00 s: **1.00×** | met" in goals
    assert "concurrency 8 | 2.20 s vs 2.00 s: **1.10×** | met" in goals
    memory = "\n".join(render_memory(res))
    assert "| 1,000 |" in memory and "projected" in memory and "the 64-voice process" in memory
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": res.meta, "cells": res.cells, "memory": res.memory}))
    assert render_goals(load_results(path)) == render_goals(res)
    assert main(["--render", "goals", str(path)]) == 0


def test_missed_goals_state_the_gap() -> None:
    from loadtest.bench_upstream import render_goals

    res = _results()
    for c in res.cells:
        if c["path"] == "served" and c["concurrency"] == 8:
            c["throughput"] = 1.5
            if c["voices"] == 64:
                c["p99"] = 3.0
    goals = "\n".join(render_goals(res))
    assert "**1.50×** | **missed**: 50% of the goal (1.50× short)" in goals
    assert "**1.50×** | **missed** by 0.25× (goal ≤ 1.25×)" in goals


def test_bench_sections_exist() -> None:
    from loadtest.bench_doc import DOC

    script = (DOC.parent.parent / "scripts" / "bench.sh").read_text()
    doc = DOC.read_text()
    for name in ("upstream", "upstream-goals", "upstream-memory"):
        assert f"loadtest.bench_doc {name} " in script or f"run {name} " in script
        assert f"<!-- bench:{name} -->" in doc and f"<!-- /bench:{name} -->" in doc
