"""``pilotfish agent`` and ``python -m agents``: run one thin proxy agent.

Every flag is checked before anything starts; a bad one, a control plane
that cannot be reached at start with nothing cached, or a port already taken
ends the agent with one line on stderr and a non-zero exit code (2: the
command was used wrongly, 1: it could not start), never a traceback.
SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.agent import Agent, AgentOptions
from agents.node import (
    DEFAULT_NAMESPACE,
    ROLES,
    NodeIdentity,
    parse_bind_address,
    parse_labels,
    parse_namespace,
)
from controlplane.errors import PilotfishError
from controlplane.logs import configure as configure_logging

PROG = "pilotfish agent"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _host_port(text: str, lowest: int = 1) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _listen_address(text: str) -> str:
    """HOST:PORT, where port 0 lets the system choose (the log says which)."""
    return _host_port(text, lowest=0)


def _duration(text: str) -> float:
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 500ms or 10s")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = parse.__name__
    return check


def _node_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the node id must not be empty")
    return text


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Run a thin proxy agent: subscribe to a Pilotfish control plane over xDS "
        "and proxy HTTP and TCP traffic by what it receives.",
    )
    parser.add_argument(
        "--xds-server", required=True, type=_host_port, help="the control plane, HOST:PORT"
    )
    parser.add_argument("--node-id", required=True, type=_node_id, help="this proxy's node id")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="sidecar",
        help="sidecar (every service) or gateway (the Gateways its labels select)",
    )
    parser.add_argument(
        "--labels",
        type=_checked(parse_labels),
        default={},
        help="node labels, k=v,k=v (select Gateways)",
    )
    parser.add_argument(
        "--namespace",
        type=_checked(parse_namespace),
        default=DEFAULT_NAMESPACE,
        help="this proxy's namespace: it sees what is exported to it (exportTo) (default)",
    )
    parser.add_argument(
        "--bind-address",
        type=_checked(parse_bind_address),
        default="127.0.0.1",
        help="address the listeners bind to (127.0.0.1)",
    )
    parser.add_argument(
        "--admin-address",
        type=_listen_address,
        default="127.0.0.1:15001",
        help="admin endpoint HOST:PORT: /ready, /config_dump (127.0.0.1:15001)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the last applied configuration is kept, to serve from at start",
    )
    parser.add_argument(
        "--delta", action="store_true", help="use incremental (delta) xDS instead of SotW"
    )
    parser.add_argument(
        "--connect-timeout",
        type=_duration,
        default=10.0,
        help="how long to wait at start for a first configuration when none is cached (10s)",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="asyncio event loop: uvloop when installed (auto), or the one named",
    )
    parser.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="console: one readable line per event; json: one JSON object per line (console)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe events logged (info)",
    )
    return parser


def options_from(args: argparse.Namespace) -> AgentOptions:
    return AgentOptions(
        xds_server=args.xds_server,
        node=NodeIdentity(
            node_id=args.node_id,
            role=args.role,
            labels=args.labels,
            bind_address=args.bind_address,
            namespace=args.namespace,
        ),
        cache_dir=args.cache_dir,
        delta=args.delta,
        connect_timeout=args.connect_timeout,
        admin_address=args.admin_address,
    )


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        print(f"{prog}: --cache-dir {args.cache_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        factory = _loop_factory(args.event_loop)
    except ImportError:
        print(f"{prog}: --event-loop uvloop: uvloop is not installed", file=sys.stderr)
        return 2
    configure_logging(args.log_format, args.log_level)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(options_from(args), prog))
    except PilotfishError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None for asyncio's own loop; raises ImportError when uvloop is asked for and missing."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(options: AgentOptions, prog: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(options)
    await agent.start()
    with contextlib.suppress(OSError, ValueError):
        print(
            f"{prog}: {options.node.node_id} serving, subscribed to {options.xds_server}",
            file=sys.stderr,
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await agent.close()
