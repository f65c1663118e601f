"""docs/BENCHMARKS.md sections are rewritten in place, prose untouched, unknown sections refused."""

from __future__ import annotations

import re

import pytest

from loadtest.bench_doc import DOC, replace_section


def test_replace_section_keeps_surroundings() -> None:
    text = "intro\n<!-- bench:x -->\n| old |\n<!-- /bench:x -->\noutro\n"
    out = replace_section(text, "x", "| new |\n")
    assert out == "intro\n<!-- bench:x -->\n| new |\n<!-- /bench:x -->\noutro\n"


def test_unknown_section_is_refused() -> None:
    with pytest.raises(ValueError, match="no section"):
        replace_section("nothing here", "x", "| row |")
    with pytest.raises(ValueError, match="bad section"):
        replace_section("", "../etc", "")


def test_every_make_bench_section_exists_in_the_doc() -> None:
    script = (DOC.parent.parent / "scripts" / "bench.sh").read_text()
    names = [line.split()[1] for line in script.splitlines() if line.startswith("run ")]
    assert names, "scripts/bench.sh runs no benchmark"
    doc = DOC.read_text()
    for name in names:
        assert f"<!-- bench:{name} -->" in doc and f"<!-- /bench:{name} -->" in doc


def test_machine_names_cpu_cores_load_and_python() -> None:
    import platform

    from tritone.benchmarking import machine

    text = machine()
    assert " CPUs" in text and f"Python {platform.python_version()}" in text
    assert "|" not in text  # it goes into a markdown table cell


def test_every_bench_script_uses_the_shared_machine_helper() -> None:
    root = DOC.parent.parent
    scripts = ["adapters/bench_resolve.py", "build/bench_components.py", "loadtest/bench_serving.py",
               "loadtest/bench_upstream.py"]  # fmt: skip
    for name in scripts:
        source = (root / name).read_text()
        assert re.search(r"from tritone\.benchmarking import [^\n]*\bmachine\b", source), name
        assert "def machine(" not in source and "/proc/cpuinfo" not in source, name


def test_goal_verdict_follows_the_measured_value() -> None:
    from tritone.benchmarking import goal_verdict

    assert goal_verdict(3.2, 3, at_least=True) == "goal ≥ 3×: met"
    assert goal_verdict(1.4, 3, at_least=True) == "goal ≥ 3×: **missed**"
    assert goal_verdict(49.0, 50, at_least=False, unit="ms") == "goal ≤ 50 ms: met"
    assert goal_verdict(71.0, 50, at_least=False, unit="ms") == "goal ≤ 50 ms: **missed**"
