"""Generate the Python stubs of `tritone/v1/tts.proto` into `gateway/proto/gen/`.

    python -m gateway.proto.build           # regenerate the checked-in stubs
    python -m gateway.proto.build --check   # exit 1 when they differ from the .proto

protoc (from grpcio-tools) writes `tts_pb2.py`, `tts_pb2.pyi` and `tts_pb2_grpc.py`. The
generated service module imports its messages as `tritone.v1.tts_pb2`, which would collide with
this project's `tritone` package, so that one import is rewritten to a relative one. The output
is otherwise protoc's, byte for byte: a test regenerates it and compares.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILE = "tritone/v1/tts.proto"
GEN_DIR = PROTO_ROOT / "gen"
OUTPUTS = ("tts_pb2.py", "tts_pb2.pyi", "tts_pb2_grpc.py")
_IMPORT = "from tritone.v1 import tts_pb2 as tritone_dot_v1_dot_tts__pb2"
_RELATIVE = "from . import tts_pb2 as tritone_dot_v1_dot_tts__pb2"


def generate() -> dict[str, str]:
    """Run protoc on the .proto; returns {file name: content} of the stubs."""
    from grpc_tools import protoc  # build-time dependency only

    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).resolve().parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO_FILE,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILE}")
        out = {}
        for name in OUTPUTS:
            text = (Path(tmp) / "tritone" / "v1" / name).read_text()
            if name == "tts_pb2_grpc.py":
                if _IMPORT not in text:
                    raise RuntimeError("unexpected import layout in the generated service module")
                text = text.replace(_IMPORT, _RELATIVE)
            out[name] = text
        return out


def differences(gen_dir: Path = GEN_DIR) -> list[str]:
    """Names of the stubs in ``gen_dir`` that differ from a fresh generation."""
    fresh = generate()
    return [
        name
        for name, text in fresh.items()
        if not (gen_dir / name).is_file() or (gen_dir / name).read_text() != text
    ]


def write(gen_dir: Path = GEN_DIR) -> list[Path]:
    gen_dir.mkdir(parents=True, exist_ok=True)
    init = gen_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from gateway/proto/tritone/v1/tts.proto by gateway.proto.build."""\n')
    paths = []
    for name, text in generate().items():
        path = gen_dir / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences()
        if diff:
            print(
                f"stale stubs in {GEN_DIR}: {', '.join(diff)}; run python -m gateway.proto.build",
                file=sys.stderr,
            )
            return 1
        print("stubs match the .proto")
        return 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
