"""Does TensorRT's ONNX parser take every node of our graphs? A check that runs anywhere.

The table (`build/tensorrt_ops.json`, described in docs/TENSORRT_OPS.md) lists the operators
the onnx-tensorrt parser supports for TensorRT 10.x, with its source (repository, file, commit).
A graph passes when:

- its default-domain opset lies in the parser's range (9..20);
- every node, in subgraphs too, is a default-domain operator the table marks supported (custom
  domains need plugins, which we do not ship);
- inputs the parser needs as build-time constants (the `axes` of Slice / Squeeze / Unsqueeze /
  Pad / Reduce*, CumSum's axis, TopK's K) come from an initializer or a Constant node.

`python -m build.trt_ops DIR_OR_ONNX... [--unsupported OP ...]` prints the findings and exits
non-zero when there are any (`--unsupported` marks extra operators unsupported, to see the
check fail).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

TABLE_FILE = Path(__file__).with_name("tensorrt_ops.json")


@dataclass(frozen=True)
class Finding:
    graph: str
    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.graph}: {self.op} ({self.node or 'graph'}): {self.reason}"


@dataclass
class OpTable:
    supported: dict[str, list[str]]
    constant_inputs: dict[str, list[int]]
    opset_min: int
    opset_max: int
    source: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = TABLE_FILE) -> OpTable:
        data = json.loads(path.read_text())
        return cls(
            supported=dict(data["supported"]),
            constant_inputs={k: list(v) for k, v in data["constant_inputs"].items()},
            opset_min=int(data["opset"]["min"]),
            opset_max=int(data["opset"]["max"]),
            source=dict(data["source"]),
        )

    def without(self, ops: Iterable[str]) -> OpTable:
        """A copy that treats `ops` as unsupported."""
        drop = set(ops)
        return OpTable(
            {k: v for k, v in self.supported.items() if k not in drop},
            self.constant_inputs,
            self.opset_min,
            self.opset_max,
            self.source,
        )


def _check_graph(
    graph: onnx.GraphProto, name: str, table: OpTable, constants: set[str], out: list[Finding]
) -> None:
    constants = constants | {init.name for init in graph.initializer}
    constants |= {
        o
        for node in graph.node
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
        for o in node.output
    }
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            out.append(
                Finding(
                    name,
                    node.name,
                    f"{node.domain}::{node.op_type}",
                    "custom-domain operator (needs a plugin)",
                )
            )
            continue
        if node.op_type not in table.supported:
            out.append(Finding(name, node.name, node.op_type, "not supported by TensorRT's ONNX parser"))
        for index in table.constant_inputs.get(node.op_type, []):
            if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                out.append(
                    Finding(
                        name,
                        node.name,
                        node.op_type,
                        f"input {index} ({node.input[index]}) must be a constant",
                    )
                )
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                _check_graph(sub, f"{name}/{node.name}.{attr.name}", table, constants, out)


def check_model(model: onnx.ModelProto, name: str, table: OpTable) -> list[Finding]:
    """Every finding for one ONNX model (empty: TensorRT's parser takes it)."""
    out: list[Finding] = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not table.opset_min <= opset.version <= table.opset_max:
            out.append(
                Finding(
                    name, "", "opset", f"opset {opset.version} outside {table.opset_min}..{table.opset_max}"
                )
            )
    _check_graph(model.graph, name, table, set(), out)
    for fn in model.functions:
        fn_graph = onnx.helper.make_graph(list(fn.node), fn.name, [], [])
        _check_graph(fn_graph, f"{name}/{fn.name}", table, set(), out)
    return out


def check_file(path: Path, table: OpTable | None = None) -> list[Finding]:
    return check_model(onnx.load(str(path), load_external_data=False), path.stem, table or OpTable.load())


def onnx_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.onnx")) if p.is_dir() else [p])
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build.trt_ops", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="ONNX files or directories of them")
    parser.add_argument(
        "--unsupported", nargs="*", default=[], help="also treat these operators as unsupported"
    )
    args = parser.parse_args(argv)
    table = OpTable.load().without(args.unsupported)
    files = onnx_files(args.paths)
    if not files:
        parser.error("no .onnx files found")
    findings = [f for path in files for f in check_file(path, table)]
    for f in findings:
        print(f)
    src = table.source
    print(
        f"{len(files)} graph(s), {len(findings)} finding(s) against {src.get('repository')} "
        f"{src.get('path')} @ {src.get('commit', '')[:10]} ({src.get('release')})"
    )
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
