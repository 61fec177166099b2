"""The committed generated code under pilotfish/ is exactly what the .proto files give."""

from __future__ import annotations

import filecmp
import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "generate_protos", ROOT / "scripts/generate_protos.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    generator = _generator()
    cwd = os.getcwd()
    try:
        os.chdir(ROOT / "protos")
        generator.generate(tmp_path)
    finally:
        os.chdir(cwd)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(ROOT)
        for p in (ROOT / "pilotfish").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert generated == committed
    mismatched = [
        str(p) for p in generated if not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False)
    ]
    assert mismatched == [], "run: python scripts/generate_protos.py"


def test_admin_api_is_importable_and_round_trips() -> None:
    from pilotfish.admin.v1 import admin_pb2

    response = admin_pb2.GetStatusResponse(
        rejected_files=["a.yaml"],
        diagnostics=[admin_pb2.Diagnostic(severity=admin_pb2.Diagnostic.ERROR, code="PF110")],
    )
    decoded = admin_pb2.GetStatusResponse.FromString(response.SerializeToString())
    assert decoded.rejected_files == ["a.yaml"]
    assert decoded.diagnostics[0].code == "PF110"
