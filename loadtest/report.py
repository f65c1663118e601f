"""An HTML report with plots from a headless Locust run's CSV files.

    python -m loadtest.report PREFIX [-o PREFIX_report.html] [--title TEXT]

Reads what `locust --csv PREFIX --csv-full-history` writes (`PREFIX_stats.csv`,
`PREFIX_stats_history.csv`, `PREFIX_failures.csv`) and, when present, the per-request log of
`loadtest/locustfile.py` (`PREFIX_requests.csv`). Writes one self-contained page (matplotlib
PNGs embedded as data URIs): a summary, the request table, and plots of latency percentiles
over time, throughput (requests and seconds of audio per second), time to first audio, and
errors. Links Locust's own report (`PREFIX_locust.html`) when it exists.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = ("50%", "95%", "99%")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


@dataclass
class RunData:
    stats: list[dict[str, str]]
    history: list[dict[str, str]]
    failures: list[dict[str, str]]
    requests: list[dict[str, str]]

    @classmethod
    def load(cls, prefix: str) -> RunData:
        data = cls(
            stats=read_csv(Path(f"{prefix}_stats.csv")),
            history=read_csv(Path(f"{prefix}_stats_history.csv")),
            failures=read_csv(Path(f"{prefix}_failures.csv")),
            requests=read_csv(Path(f"{prefix}_requests.csv")),
        )
        if not data.stats:
            raise FileNotFoundError(
                f"{prefix}_stats.csv is missing or empty (run locust with --csv {prefix})"
            )
        return data

    def t0(self) -> float:
        times = [_num(r["Timestamp"]) for r in self.history]
        times += [_num(r["start"]) for r in self.requests]
        finite = [t for t in times if math.isfinite(t)]
        return min(finite) if finite else 0.0

    def names(self) -> list[str]:
        return [r["Name"] for r in self.stats if r["Name"] != "Aggregated"]

    def series(self, name: str, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(seconds since start, value) of one history column for one request name."""
        t0 = self.t0()
        rows = [r for r in self.history if r["Name"] == name]
        t = np.array([_num(r["Timestamp"]) - t0 for r in rows])
        v = np.array([_num(r[column]) for r in rows])
        keep = np.isfinite(t) & np.isfinite(v)
        return t[keep], v[keep]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(rows: int = 1, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(10, height * rows), squeeze=False, layout="constrained")
    return fig, axes[:, 0]


def _requests_array(
    data: RunData, column: str, where: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    t0 = data.t0()
    rows = [r for r in data.requests if all(r.get(k) == v for k, v in (where or {}).items())]
    t = np.array([_num(r["start"]) - t0 + _num(r["latency_s"]) for r in rows])  # completion time
    v = np.array([_num(r[column]) for r in rows])
    keep = np.isfinite(t) & np.isfinite(v)
    return t[keep], v[keep]


def plot_latency(data: RunData) -> str:
    fig, (agg, per_name) = _figure(2)
    for col in PERCENTILES:
        t, v = data.series("Aggregated", col)
        agg.plot(t, v / 1000.0, label=f"p{col[:-1]}")
    agg.set_title("Latency percentiles over time, all requests (Locust's 10 s window)")
    agg.set_ylabel("seconds")
    agg.legend(loc="upper left")
    for name in data.names():
        t, v = data.series(name, "95%")
        if t.size:
            per_name.plot(t, v / 1000.0, label=name)
    per_name.set_title("p95 latency over time, per request name")
    per_name.set_ylabel("seconds")
    per_name.set_xlabel("seconds since start")
    if per_name.get_legend_handles_labels()[0]:
        per_name.legend(fontsize=7, loc="upper left")
    return _png(fig)


def _binned_rate(
    times: np.ndarray, weights: np.ndarray, end: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    edges = np.arange(0.0, max(end, width) + width, width)
    counts, _ = np.histogram(times, bins=edges, weights=weights)
    return edges[:-1] + width / 2, counts / width


def plot_throughput(data: RunData, bin_s: float = 5.0) -> str:
    fig, (req, audio) = _figure(2)
    t_users, users = data.series("Aggregated", "User Count")
    if data.requests:
        t, ok = _requests_array(data, "ok")
        end = float(t.max()) if t.size else 0.0
        for label, mask in (("completed", ok == 1), ("failed", ok == 0)):
            x, y = _binned_rate(t[mask], np.ones(int(mask.sum())), end, bin_s)
            if mask.any() or label == "completed":
                req.plot(x, y, label=f"{label} requests/s ({bin_s:g} s bins)")
        t_a, secs = _requests_array(data, "audio_s", {"ok": "1"})
        x, y = _binned_rate(t_a, secs, end, bin_s)
        audio.plot(x, y, color="tab:green")
        audio.set_title("Throughput in seconds of audio per second")
    else:
        t, rps = data.series("Aggregated", "Requests/s")
        req.plot(t, rps, label="requests/s (Locust; a stream counts twice)")
        audio.set_title("Seconds of audio per second: needs PREFIX_requests.csv")
    req.set_title("Requests per second")
    req.set_ylabel("requests/s")
    if t_users.size:
        twin = req.twinx()
        twin.plot(t_users, users, color="gray", linestyle=":", label="users")
        twin.set_ylabel("users")
    req.legend(loc="upper left")
    audio.set_ylabel("audio s / s")
    audio.set_xlabel("seconds since start")
    return _png(fig)


def plot_first_audio(data: RunData) -> str:
    fig, (over_time, cdf) = _figure(2)
    if data.requests:
        for api in ("http", "grpc"):
            t, v = _requests_array(data, "first_audio_s", {"kind": "stream", "api": api, "ok": "1"})
            if not t.size:
                continue
            over_time.scatter(t, v, s=8, label=f"{api} stream")
            ordered = np.sort(v)
            cdf.plot(
                ordered,
                np.arange(1, ordered.size + 1) / ordered.size,
                label=f"{api} stream (n={ordered.size})",
            )
        over_time.set_title("Time to first audio of each streamed request (at its completion)")
    else:
        for name in data.names():
            if "first audio" in name:
                t, v = data.series(name, "50%")
                over_time.plot(t, v / 1000.0, label=f"{name} p50")
        over_time.set_title("Time to first audio over time (Locust's window)")
    over_time.set_ylabel("seconds")
    cdf.set_title("Time to first audio, cumulative distribution")
    cdf.set_xlabel("seconds")
    cdf.set_ylabel("share of requests")
    for ax in (over_time, cdf):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is cdf else "upper left")
    return _png(fig)


def plot_errors(data: RunData) -> str:
    fig, (rate,) = _figure(1)
    t, v = data.series("Aggregated", "Failures/s")
    rate.plot(t, v, color="tab:red", label="failures/s")
    t2, total = data.series("Aggregated", "Total Failure Count")
    if t2.size:
        twin = rate.twinx()
        twin.plot(t2, total, color="black", linestyle=":", label="failures so far")
        twin.set_ylabel("failures so far")
    rate.set_title("Errors over time")
    rate.set_ylabel("failures/s")
    rate.set_xlabel("seconds since start")
    rate.legend(loc="upper left")
    return _png(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values.size else "–"


def summary(data: RunData) -> list[tuple[str, str]]:
    agg = next((r for r in data.stats if r["Name"] == "Aggregated"), {})
    out = [("Locust events (a stream counts twice)", agg.get("Request Count", "0")),
           ("Locust failures", agg.get("Failure Count", "0"))]  # fmt: skip
    if data.requests:
        ok = np.array([_num(r["ok"]) for r in data.requests])
        starts = np.array([_num(r["start"]) for r in data.requests])
        ends = starts + np.array([_num(r["latency_s"]) for r in data.requests])
        span = float(ends.max() - starts.min()) if starts.size else 0.0
        audio = float(sum(_num(r["audio_s"]) for r in data.requests if r["ok"] == "1"))
        latency = np.array([_num(r["latency_s"]) for r in data.requests if r["ok"] == "1"])
        out += [
            ("requests (completed / failed)", f"{int((ok == 1).sum())} / {int((ok == 0).sum())}"),
            ("wall time of the requests", f"{span:.1f} s"),
            ("audio produced", f"{audio:.1f} s ({audio / span if span else 0:.2f} s of audio per s)"),
            ("latency p50 / p95 / p99, all requests", f"{_pct(latency, 50)} / {_pct(latency, 95)} / {_pct(latency, 99)} s"),
            ("voices used", str(len({r['voice'] for r in data.requests}))),
        ]  # fmt: skip
        for api in ("http", "grpc"):
            ttfa = np.array([_num(r["first_audio_s"]) for r in data.requests
                             if r["api"] == api and r["kind"] == "stream" and r["ok"] == "1"])  # fmt: skip
            if ttfa.size:
                out.append((f"time to first audio, {api} stream, p50 / p95 / p99",
                            f"{_pct(ttfa, 50)} / {_pct(ttfa, 95)} / {_pct(ttfa, 99)} s (n={ttfa.size})"))  # fmt: skip
    return out


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
.ok { color: #176d1f; } .bad { color: #b00020; }
"""


def build_report(prefix: str, out: Path | None = None, title: str = "tritone load test") -> Path:
    """Write the HTML report for the run with CSV prefix `prefix`; returns its path."""
    data = RunData.load(prefix)
    out = out or Path(f"{prefix}_report.html")
    failures = int(
        _num(next((r for r in data.stats if r["Name"] == "Aggregated"), {}).get("Failure Count")) or 0
    )
    cols = [
        "Type",
        "Name",
        "Request Count",
        "Failure Count",
        "50%",
        "95%",
        "99%",
        "Max Response Time",
        "Requests/s",
    ]
    stats_rows = [
        [r.get(c, "") if c in ("Type", "Name") else _fmt(r.get(c)) for c in cols] for r in data.stats
    ]
    fail_rows = [[r.get("Method", ""), r.get("Name", ""), r.get("Error", ""), r.get("Occurrences", "")]
                 for r in data.failures]  # fmt: skip
    locust_html = Path(f"{prefix}_locust.html")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='{'ok' if failures == 0 else 'bad'}'><b>{failures} failures</b></p>",
        _table(["figure", "value"], summary(data)),
        "<h2>Requests (Locust statistics, milliseconds)</h2>",
        _table(cols, stats_rows),
    ]
    if locust_html.is_file():
        parts.append(
            f"<p>Locust's own report: <a href='{html.escape(locust_html.name)}'>{html.escape(locust_html.name)}</a></p>"
        )
    plots = [
        ("Latency percentiles over time", plot_latency(data)),
        ("Throughput", plot_throughput(data)),
        ("Time to first audio", plot_first_audio(data)),
        ("Errors", plot_errors(data)),
    ]
    for heading, png in plots:
        parts.append(f"<h2>{heading}</h2><img alt='{heading}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Failures</h2>")
    parts.append(
        _table(["Method", "Name", "Error", "Occurrences"], fail_rows) if fail_rows else "<p>none</p>"
    )
    parts.append("</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


def _fmt(value: str | None) -> str:
    v = _num(value)
    if not math.isfinite(v):
        return value or ""
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", help="the --csv prefix of the Locust run")
    parser.add_argument("-o", "--out", type=Path, help="output HTML (default PREFIX_report.html)")
    parser.add_argument("--title", default="tritone load test")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.prefix, args.out, args.title)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
