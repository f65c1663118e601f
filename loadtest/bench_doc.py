"""Write a benchmark's markdown output into its section of docs/BENCHMARKS.md.

    python -m loadtest.bench_doc SECTION -- COMMAND...   # run COMMAND, replace SECTION with its stdout

Sections are delimited by `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers, so each
`make bench` step rewrites only its own rows and the prose around them stays as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def replace_section(text: str, name: str, body: str) -> str:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"bad section name {name!r}")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"docs/BENCHMARKS.md has no section {name!r} (add {start} ... {end})")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    name, command = argv[0], argv[2:]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        print(
            f"benchmark {name} failed (exit {result.returncode}); BENCHMARKS.md left unchanged",
            file=sys.stderr,
        )
        return result.returncode
    rows = "\n".join(line for line in result.stdout.splitlines() if line.startswith("|"))
    DOC.write_text(replace_section(DOC.read_text(), name, rows))
    print(f"updated section {name} of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
