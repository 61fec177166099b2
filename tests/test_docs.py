"""The documentation a user reads stays in step with the code."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agents import cli as agent_cli
from controlplane import cli
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


# -- every command in the README and the docs is a real one ---------------------------------

SHELL_WORDS = {"for", "do", "done", "sort", "uniq", "seq", "curl", "grpcurl", "pytest"}
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_commands(path: Path) -> list[str]:
    """Every command of the fenced ``sh`` blocks of ``path``, comments and pipes split off."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            for part in re.split(r"\s*(?:&&|\||;)\s*", line):
                if part:
                    commands.append(part)
    return commands


def all_commands() -> list[tuple[str, str]]:
    return [
        (path.relative_to(ROOT).as_posix(), c) for path in DOCUMENTS for c in shell_commands(path)
    ]


def check_paths(words: list[str]) -> None:
    for word in words:
        if re.match(r"(examples|docs|bench)/", word):
            assert (ROOT / word).exists(), f"{word} does not exist"


def test_the_readme_and_docs_have_commands_to_check() -> None:
    commands = [c for _, c in all_commands()]
    assert "pilotfish demo" in commands
    assert "pilotfish validate examples/broken" in commands
    assert "docker compose up --build" in commands


@pytest.mark.parametrize(("document", "command"), all_commands())
def test_every_documented_command_is_a_real_command_line(document: str, command: str) -> None:
    words = shlex.split(command)
    check_paths(words)
    program = words[0]
    if program == "pilotfish" and words[1:2] == ["agent"]:
        agent_cli.build_parser().parse_args(words[2:])
    elif program == "pilotfish":
        args = cli.build_parser().parse_args(words[1:])
        if args.command in ("serve", "demo") and args.config_dir not in (None, "my-mesh"):
            assert (ROOT / args.config_dir).is_dir()
    elif program == "python3":
        assert words == ["python3", "-m", "venv", ".venv"]
    elif program == ".":
        assert words == [".", ".venv/bin/activate"]
    elif program == "pip":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        (extra,) = re.fullmatch(r"\.\[(\w+)\]", words[-1]).groups()  # type: ignore[union-attr]
        assert words[:3] == ["pip", "install", "-e"] and extra in extras
    elif program == "python":
        script = words[1]
        assert (ROOT / script).is_file()
        shown = subprocess.run(
            [sys.executable, script, "--help"], capture_output=True, text=True, timeout=120
        )
        assert shown.returncode == 0, shown.stderr
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert flag in shown.stdout, f"{script} has no {flag}"
    elif words[:3] == ["docker", "compose", "up"]:
        assert (ROOT / "docker-compose.yml").is_file()
    else:
        assert program in SHELL_WORDS, f"{document}: nothing checks {command!r}"


def test_the_readme_validate_example_is_what_pilotfish_validate_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "validate", "examples/broken"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1
    shown = f"```\n{result.stdout}{result.stderr}```"
    assert shown in readme


def test_pilotfish_validate_accepts_the_mesh_the_readme_serves() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "validate", "examples/bookinfo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert (result.returncode, result.stderr) == (0, "0 error(s), 0 warning(s)\n")
