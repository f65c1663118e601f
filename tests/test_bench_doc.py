"""docs/BENCHMARKS.md sections are rewritten in place, prose untouched, unknown sections refused."""

from __future__ import annotations

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
