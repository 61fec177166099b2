"""The ``pilotfish`` command line.

Subcommands: ``validate`` (offline analysis of a config directory, like
``istioctl analyze``) and ``serve`` (the xDS control plane). Exit codes follow
the usual convention: 0 fine, 1 the command ran and found errors, 2 the
command was used wrongly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from controlplane import __version__
from controlplane.config.diagnostics import render_json
from controlplane.config.durations import parse_duration
from controlplane.config.store import validate_directory
from controlplane.errors import PilotfishError
from controlplane.logs import configure as configure_logging
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.grpc_server import XdsServerOptions


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


def _duration(text: str) -> float:
    parsed = parse_duration(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 100ms or 1.5s")
    return parsed.total_seconds()


def _serve(args: argparse.Namespace) -> int:
    root = Path(args.config_dir)
    if not root.is_dir():
        print(f"pilotfish serve: {root} is not a directory", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    options = ControlPlaneOptions(
        config_dir=root,
        xds_address=args.xds_address,
        debounce=args.debounce,
        max_delay=args.max_delay,
        polling=args.poll,
        server=XdsServerOptions(
            max_message_bytes=args.max_message_bytes,
            max_connection_age=args.max_connection_age,
            max_connection_age_grace=args.max_connection_age_grace,
        ),
    )
    try:
        asyncio.run(_run_until_signalled(options, args.grace))
    except PilotfishError as exc:
        print(f"pilotfish serve: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run_until_signalled(options: ControlPlaneOptions, grace: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    plane = ControlPlane(options)
    await plane.start()
    print(f"pilotfish: serving xDS on {plane.address}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await plane.stop(grace)


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

    serve = commands.add_parser("serve", help="serve a config directory to proxies over xDS")
    serve.add_argument("--config-dir", required=True, help="the watched config directory")
    serve.add_argument(
        "--xds-address", default="127.0.0.1:18000", help="host:port for the xDS gRPC server"
    )
    serve.add_argument(
        "--debounce", type=_duration, default=0.1, help="quiet time before a reload (100ms)"
    )
    serve.add_argument(
        "--max-delay", type=_duration, default=1.0, help="longest wait for a reload (1s)"
    )
    serve.add_argument(
        "--poll", action="store_true", help="poll the directory (filesystems without inotify)"
    )
    serve.add_argument("--log-format", choices=("console", "json"), default="console")
    serve.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    serve.add_argument(
        "--grace", type=_duration, default=5.0, help="time to finish sends on shutdown (5s)"
    )
    serve.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024)
    serve.add_argument("--max-connection-age", type=_duration, default=None)
    serve.add_argument("--max-connection-age-grace", type=_duration, default=None)
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
