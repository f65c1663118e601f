"""What every benchmark row says about where it was measured (`make bench`, docs/BENCHMARKS.md)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from collections.abc import Sequence
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine column of a benchmark row: CPU, core count, load average now, Python version.

    The load average is part of it because the shared benchmark machines often run other jobs:
    a row measured under load says so."""
    load = ""
    with contextlib.suppress(OSError):
        load = f", load avg {os.getloadavg()[0]:.1f}"
    return f"{cpu_name()}, {os.cpu_count()} CPUs{load}, Python {platform.python_version()}"


def goal_verdict(measured: float, target: float, *, at_least: bool, unit: str = "×") -> str:
    """`goal ≥ 3×: met` or `goal ≤ 50 ms: **missed**`, decided from the measured value."""
    met = measured >= target if at_least else measured <= target
    sign = "≥" if at_least else "≤"
    space = " " if unit and unit[0].isalnum() else ""
    return f"goal {sign} {target:g}{space}{unit}: " + ("met" if met else "**missed**")


def print_table(rows: Sequence[tuple[str, str]], command: str, where: str) -> None:
    """Print `(figure, value)` rows as the markdown table of a BENCHMARKS.md section, dated today."""
    date = dt.date.today().isoformat()
    print("| figure | value | command | machine | date |")
    print("|---|---|---|---|---|")
    for figure, value in rows:
        print(f"| {figure} | {value} | `{command}` | {where} | {date} |")
