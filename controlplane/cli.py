"""The ``pilotfish`` command line.

Subcommands: ``validate`` (offline analysis of a config directory, like
``istioctl analyze``). Exit codes follow the usual convention: 0 fine, 1 the
command ran and found errors, 2 the command was used wrongly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from controlplane import __version__
from controlplane.config.diagnostics import render_json
from controlplane.config.store import validate_directory


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _validate(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        print(f"pilotfish validate: {root} is not a directory", file=sys.stderr)
        return 2
    diagnostics = [
        replace(d, file=os.path.join(args.directory, d.file)) for d in validate_directory(root)
    ]
    if args.output == "json":
        print(render_json(diagnostics))
    else:
        for diagnostic in diagnostics:
            print(diagnostic.render())
        errors = sum(d.is_error for d in diagnostics)
        warnings = len(diagnostics) - errors
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if any(d.is_error for d in diagnostics) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pilotfish", description="A file-driven xDS control plane.")
    parser.add_argument("--version", action="version", version=f"pilotfish {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    validate = commands.add_parser(
        "validate", help="check a config directory and report every problem"
    )
    validate.add_argument("directory", help="the config directory")
    validate.add_argument("-o", "--output", choices=("text", "json"), default="text")
    validate.set_defaults(run=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
