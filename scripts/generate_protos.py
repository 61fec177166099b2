"""Generate Python code for Pilotfish's own protos (protos/ -> pilotfish/).

Run from anywhere: ``python scripts/generate_protos.py [--out DIR]``. The output
is committed; tests/test_protos.py regenerates into a temporary directory and
fails on any difference, so the committed code never drifts from the .proto
files. grpcio-tools is pinned in pyproject.toml for the same reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    for proto in proto_files():
        rel = proto.relative_to(PROTOS)
        args = [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(rel),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {rel}")
    for package in {p.parent for p in out.rglob("*_pb2.py")}:
        node = package
        while node != out:
            (node / "__init__.py").touch()
            node = node.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    args = parser.parse_args()
    import os

    os.chdir(PROTOS)
    generate(args.out.resolve())


if __name__ == "__main__":
    sys.exit(main())
