"""The documentation a user reads stays in step with the code."""

from __future__ import annotations

from pathlib import Path

from controlplane.config.diagnostics import CODES

ROOT = Path(__file__).resolve().parent.parent


def test_every_validation_code_is_documented_with_its_severity() -> None:
    text = (ROOT / "docs/validation.md").read_text()
    for code in CODES.values():
        assert f"| {code.code} | {code.slug} | {code.severity.value} |" in text


def test_the_ci_script_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"
    assert command in readme
    assert command in (ROOT / ".ci/run").read_text()
