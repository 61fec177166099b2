"""The ``pilotfish`` command line.

Subcommands: ``validate`` (offline analysis of a config directory, like
``istioctl analyze``), ``serve`` (the xDS control plane), ``demo`` (a whole
mesh on one machine: services, sidecar agents, a gateway, the control plane;
see :mod:`controlplane.demo.run`) and ``agent`` (a thin proxy agent: its flags and
code live in :mod:`agents.cli`, imported only when the subcommand runs, since
the control plane does not depend on the agents). Exit codes follow
the usual convention: 0 fine, 1 the command ran and found errors, 2 the
command was used wrongly. ``pilotfish`` alone prints the full help on stdout and
exits 2, like ``git`` with no command.

This module imports little: the server, the store and the status commands
are imported by the functions that need them. ``serve`` on a large directory
first starts its read helper (:func:`_read_ahead`, see
:mod:`controlplane.config.parallel_read`), which parses files on another core
while this process imports the server (most of a second); the helper is
stopped when ``serve`` returns, whatever happened, if the first reload has not
stopped it already.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING

from controlplane import __version__
from controlplane.config.durations import parse_duration
from controlplane.config.limits import KIB, MIB, ConfigLimits
from controlplane.config.parallel_read import ReadHelper, enough_files, helper_pays
from controlplane.errors import PilotfishError

if TYPE_CHECKING:
    from controlplane.server.control_plane import ControlPlaneOptions
    from controlplane.server.grpc_server import ServerStartError
    from controlplane.server.peers import WorkerSlot

# What the store reads each file with, named for a read helper started before the store is
# imported (parallel_read checks the name against the reader when it takes the helper over).
_CONFIG_READER = "controlplane.config.store:_read"


def __getattr__(name: str) -> ModuleType:
    # The server is imported when a command needs it (`serve` starts its read helper
    # first); `event_loop` stays an attribute of this module for whoever replaces its run.
    if name == "event_loop":
        from controlplane.server import event_loop

        return event_loop
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def configure_logging(log_format: str, level: str) -> None:
    """:func:`controlplane.logs.configure` (structlog is imported when serve needs it)."""
    from controlplane.logs import configure

    configure(log_format, level)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        usage = self.format_usage().strip()
        if usage.count("\n") > 1:
            # A page of flags would bury the one line that matters.
            positionals = "".join(
                f" {action.metavar or action.dest}"
                for action in self._actions
                if not action.option_strings
            )
            usage = f"usage: {self.prog} [flags]{positionals}; '{self.prog} --help' lists them"
        print(usage, file=sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _validate(args: argparse.Namespace) -> int:
    from controlplane.config.diagnostics import render_json
    from controlplane.config.files import CONFIG_SUFFIXES, scan
    from controlplane.config.store import validate_directory

    root = Path(args.directory)
    if not root.is_dir():
        print(f"pilotfish validate: {root} is not a directory", file=sys.stderr)
        return 2
    diagnostics = [
        replace(d, file=os.path.join(root, d.file))
        for d in validate_directory(root, _limits(args), strict=args.strict)
    ]
    if not diagnostics and not scan(root, {}):
        if args.output == "json":
            print(render_json(diagnostics))
        looked_for = " and ".join(f"*{suffix}" for suffix in CONFIG_SUFFIXES)
        print(
            f"pilotfish validate: no config files found in {root} (looked for {looked_for})",
            file=sys.stderr,
        )
        return 1
    if args.output == "json":
        print(render_json(diagnostics))
    else:
        for diagnostic in diagnostics:
            print(diagnostic.render())
        errors = sum(d.is_error for d in diagnostics)
        warnings = len(diagnostics) - errors
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if any(d.is_error for d in diagnostics) else 0


def _address(text: str) -> str:
    from controlplane.server.grpc_server import split_address

    try:
        split_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT, like 127.0.0.1:18000, 0.0.0.0:18000 or [::]:18000"
        ) from None
    return text


def _admin_address(text: str) -> str | None:
    from controlplane.server.grpc_server import split_address

    if text in ("", "off"):
        return None
    try:
        split_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (like 127.0.0.1:15000) or off"
        ) from None
    return text


def _duration(text: str) -> float:
    parsed = parse_duration(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 100ms or 1.5s")
    return parsed.total_seconds()


def _interval(text: str) -> float:
    seconds = _duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return seconds


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 < share <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 (excluded) and 1")
    return share


_BYTE_UNITS = {"": 1, "b": 1, "kib": KIB, "ki": KIB, "k": KIB, "mib": MIB, "mi": MIB, "m": MIB}


def _byte_size(text: str) -> int:
    number = text.strip().rstrip("BbIiKkMm")
    unit = text.strip()[len(number) :].lower()
    try:
        size = float(number) * _BYTE_UNITS[unit]
    except (ValueError, KeyError):
        size = 0
    if not 1 <= size < 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 65536, 64KiB or 1.5MiB")
    return int(size)


def _byte_size_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else _byte_size(text)


def _count(text: str) -> int:
    try:
        count = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return count


def _limits(args: argparse.Namespace) -> ConfigLimits:
    return ConfigLimits(
        max_file_bytes=args.max_file_bytes,
        max_documents_per_file=args.max_documents_per_file,
        max_document_bytes=args.max_document_bytes,
        max_alias_nodes=args.max_alias_nodes,
        max_string_bytes=args.max_string_bytes,
    )


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    defaults = ConfigLimits()
    parser.add_argument(
        "--max-file-bytes",
        type=_byte_size,
        default=defaults.max_file_bytes,
        help="largest config file read; larger ones are errors, never read (4MiB)",
    )
    parser.add_argument(
        "--max-documents-per-file",
        type=_count,
        default=defaults.max_documents_per_file,
        help="most YAML documents in one file (10000)",
    )
    parser.add_argument(
        "--max-document-bytes",
        type=_byte_size,
        default=defaults.max_document_bytes,
        help="largest YAML document (1.5MiB, the largest object etcd stores)",
    )
    parser.add_argument(
        "--max-alias-nodes",
        type=_count,
        default=defaults.max_alias_nodes,
        help="values YAML aliases may add to one document beyond its size in bytes (100000)",
    )
    parser.add_argument(
        "--max-string-bytes",
        type=_byte_size,
        default=defaults.max_string_bytes,
        help="longest string value or key (64KiB)",
    )


def _serve(args: argparse.Namespace) -> int:
    from controlplane.config.state import default_state_dir
    from controlplane.server import event_loop
    from controlplane.server.admin_errors import AdminStartError
    from controlplane.server.control_plane import ControlPlaneOptions
    from controlplane.server.grpc_server import ServerStartError, XdsServerOptions, check_address
    from controlplane.server.workers import leave

    root = Path(args.config_dir)
    if not root.is_dir():
        print(f"pilotfish serve: {root} is not a directory", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir(root)
    real_root, real_state = os.path.realpath(root), os.path.realpath(state_dir)
    if os.path.commonpath([real_root, real_state]) == real_root:
        print(
            f"pilotfish serve: --state-dir {state_dir} is inside the config directory; "
            "keep it where operators do not edit",
            file=sys.stderr,
        )
        return 2
    worker = _worker_slot(args)
    if worker is None:
        try:
            check_address(args.xds_address)
        except ServerStartError as exc:
            return _cannot_listen(exc)
        if args.admin_address is not None:
            try:
                check_address(args.admin_address)
            except ServerStartError as exc:
                return _cannot_listen(exc, "--admin-address")
        if args.workers > 1:
            return _supervise(args, state_dir)
    configure_logging(args.log_format, args.log_level)
    options = ControlPlaneOptions(
        config_dir=root,
        xds_address=args.xds_address,
        debounce=args.debounce,
        settle=args.settle,
        max_delay=args.max_delay,
        polling=args.poll,
        state_dir=state_dir,
        withdraw_grace=args.withdraw_grace,
        max_withdraw_share=args.max_withdraw_share,
        server=XdsServerOptions(
            max_message_bytes=args.max_message_bytes,
            max_connection_age=args.max_connection_age,
            max_connection_age_grace=args.max_connection_age_grace,
            max_receive_message_bytes=args.max_receive_message_bytes,
            max_streams=args.max_streams,
            max_pending_calls=args.max_pending_calls,
            max_pending_time=args.max_pending_time,
            max_streams_per_connection=args.max_streams_per_connection,
            max_connections_per_peer=args.max_connections_per_peer,
            max_resource_names=args.max_resource_names,
            max_ping_strikes=args.max_ping_strikes,
            load_report_interval=args.load_report_interval,
            read_buffer_bytes=args.read_buffer_bytes,
            reuse_port=worker is not None,
        ),
        proxy_class_grace=args.proxy_class_grace,
        max_proxy_classes=args.max_proxy_classes,
        limits=_limits(args),
        admin_address=args.admin_address,
        worker=worker,
        read_helper=args.read_helper,
    )
    try:
        event_loop.run(_run_until_signalled(options, args.grace), args.event_loop)
    except AdminStartError as exc:  # taken since the check
        return _cannot_listen(exc, "--admin-address")
    except ServerStartError as exc:
        return _cannot_listen(exc)
    except PilotfishError as exc:
        print(f"pilotfish serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            leave(worker, args.supervisor)
    return 0


def _worker_slot(args: argparse.Namespace) -> WorkerSlot | None:
    """This process's slot when a ``--workers`` supervisor started it (it dies with it)."""
    from controlplane.server.peers import WorkerSlot
    from controlplane.server.workers import die_with_parent

    if args.worker is None:
        return None
    slot = WorkerSlot(args.worker, args.workers, Path(args.run_dir or "."))
    args.supervisor = die_with_parent(slot.run_dir)
    return slot


def _supervise(args: argparse.Namespace, state_dir: Path) -> int:
    """``--workers N``: reserve the ports, run N copies of this command, supervise them."""
    import socket

    from controlplane.server.grpc_server import ServerStartError
    from controlplane.server.workers import Supervisor, guard

    if not sys.platform.startswith("linux"):
        print(
            "pilotfish serve: --workers needs Linux's SO_REUSEPORT; run one serve per core "
            "on different ports instead",
            file=sys.stderr,
        )
        return 2
    guards: list[socket.socket] = []
    try:
        xds_guard, xds_port = guard(args.xds_address)
        guards += xds_guard
        admin = "off"
        if args.admin_address is not None:
            admin_guard, admin_port = guard(args.admin_address)
            guards += admin_guard
            admin = f"{args.admin_address.rpartition(':')[0]}:{admin_port}"
    except ServerStartError as exc:
        for sock in guards:
            sock.close()
        return _cannot_listen(exc, "--admin-address" if guards else "--xds-address")
    xds = f"{args.xds_address.rpartition(':')[0]}:{xds_port}"
    package_root = str(Path(__file__).resolve().parent.parent)
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }

    def command(index: int, run_dir: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "controlplane",
            *args.argv,
            *("--xds-address", xds, "--admin-address", admin, "--state-dir", str(state_dir)),
            *("--worker", str(index), "--run-dir", str(run_dir)),
        ]

    try:
        supervisor = Supervisor(
            args.workers, command, grace=args.grace, address=xds, tell=_tell, environ=environ
        )
        return supervisor.run()
    finally:
        for sock in guards:
            sock.close()


def _cannot_listen(exc: ServerStartError, flag: str = "--xds-address") -> int:
    from controlplane.server.admin_errors import AdminStartError
    from controlplane.server.grpc_server import AddressInUseError

    in_use = exc.in_use if isinstance(exc, AdminStartError) else isinstance(exc, AddressInUseError)
    hint = f"pick another with {flag}" if in_use else f"check {flag}"
    print(f"pilotfish serve: {exc}; {hint}", file=sys.stderr)
    return 2


async def _run_until_signalled(options: ControlPlaneOptions, grace: float) -> None:
    import asyncio

    from controlplane.server.control_plane import ControlPlane
    from controlplane.server.workers import announce_ready

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    plane = ControlPlane(options)
    await plane.start()
    if options.worker is not None:
        announce_ready(options.worker)
        _tell(f"pilotfish: worker {options.worker.index} serving xDS on {plane.address}")
    else:
        _tell(f"pilotfish: serving xDS on {plane.address}")
    if plane.http_admin is not None:
        _tell(
            f"pilotfish: HTTP admin on http://{plane.http_admin.address}/ "
            "(dashboard; /metrics /healthz /readyz /debug/config)"
        )
    try:
        await stop.wait()
    finally:
        await plane.stop(grace)


def _tell(line: str) -> None:
    """Print to stderr unless it cannot take the line (a full disk): serving goes on."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _whole(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return count


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


def _demo(args: argparse.Namespace) -> int:
    # Imported here: the demo's Envoy runner and mesh writer are no part of `serve`.
    from controlplane.demo.run import Demo, DemoOptions

    options = DemoOptions(
        config_dir=Path(args.config_dir) if args.config_dir is not None else None,
        gateway_port=args.gateway_port,
        admin_port=args.admin_port,
        xds_port=args.xds_port,
        use_envoy=not args.no_envoy,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    demo = Demo(options, interrupted=stop)
    try:
        demo.prepare()
    except PilotfishError as exc:  # a port taken, a mesh it cannot run, a missing directory
        demo.stop()
        print(f"pilotfish demo: {exc}", file=sys.stderr)
        return 2
    try:
        demo.start()
    except PilotfishError as exc:
        if stop.is_set():
            print("pilotfish demo: stopped", file=sys.stderr)
            return 0
        print(f"pilotfish demo: {exc}", file=sys.stderr)
        return 1
    try:
        print(demo.guide(), flush=True)
        demo.wait(stop)
    finally:
        demo.stop()
    print("pilotfish demo: stopped", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from controlplane.server import event_loop
    from controlplane.status_cli import add_status_commands

    parser = _Parser(
        prog="pilotfish",
        description="A file-driven xDS control plane.",
        epilog="Run 'pilotfish COMMAND --help' for a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"pilotfish {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    validate = commands.add_parser(
        "validate",
        help="check a config directory and report every problem",
        description="Check every *.yaml and *.yml file under DIRECTORY as serve would, and\n"
        "print each problem with its file, line, column and code (docs/validation.md).",
        epilog=_VALIDATE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("directory", help="the config directory")
    validate.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: one compiler-style line per problem and a count on stderr; "
        'json: {"messages": [...]} with severity, code, file, line, column, resource, '
        "field and message (text)",
    )
    validate.add_argument(
        "--strict",
        action="store_true",
        help="report documents of kinds Pilotfish does not read (PF122) as errors, not warnings",
    )
    _add_limit_flags(validate)
    validate.set_defaults(run=_validate)

    serve = commands.add_parser(
        "serve",
        help="serve a config directory to proxies over xDS",
        description="Serve the config directory to proxies over xDS (ADS and the single-type "
        "services, SotW and delta) and apply every change to it. Exit codes: 0 stopped by "
        "SIGTERM or SIGINT, 1 failed while serving, 2 bad flags or the address cannot be used.",
    )
    serve.add_argument("--config-dir", required=True, help="the watched config directory")
    serve.add_argument(
        "--xds-address",
        type=_address,
        default="127.0.0.1:18000",
        help="HOST:PORT the xDS gRPC server listens on; 0.0.0.0:PORT for every interface, "
        "port 0 for any free one (127.0.0.1:18000)",
    )
    serve.add_argument(
        "--admin-address",
        type=_admin_address,
        default="127.0.0.1:15000",
        help="HOST:PORT of the HTTP admin endpoint (/metrics, /healthz, /readyz, "
        "/debug/config); off to serve none (127.0.0.1:15000)",
    )
    serve.add_argument(
        "--debounce", type=_duration, default=0.1, help="quiet time before a reload (100ms)"
    )
    serve.add_argument(
        "--settle",
        type=_duration,
        default=0.02,
        help="quiet time before a reload once every written file is closed (20ms)",
    )
    serve.add_argument(
        "--max-delay", type=_duration, default=1.0, help="longest wait for a reload (1s)"
    )
    serve.add_argument(
        "--event-loop",
        choices=event_loop.LOOPS,
        default="auto",
        help="asyncio event loop: uvloop when installed (auto), or the one named",
    )
    serve.add_argument(
        "--poll", action="store_true", help="poll the directory (filesystems without inotify)"
    )
    serve.add_argument(
        "--log-format",
        choices=("console", "json"),
        default="console",
        help="console: one readable line per event; json: one JSON object per line (console)",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe events logged; debug adds one line per response and ACK (info)",
    )
    serve.add_argument(
        "--grace", type=_duration, default=5.0, help="time to finish sends on shutdown (5s)"
    )
    serve.add_argument(
        "--max-message-bytes",
        type=_byte_size,
        default=16 * MIB,
        help="largest response sent to a proxy; a change whose resources of one type do not "
        "fit is held back (16MiB)",
    )
    serve.add_argument(
        "--read-buffer-bytes",
        type=_byte_size_or_zero,
        default=8 * 1024,
        help="most gRPC allocates to read one connection at a time and keeps while it is "
        "idle; 0: gRPC's default, which grows to the largest burst read (a SotW EDS ACK "
        "can be 150 KB): less CPU per large request, more memory per connection (8KiB)",
    )
    serve.add_argument(
        "--max-connection-age",
        type=_duration,
        default=None,
        help="age after which a connection is asked to reconnect, so that proxies spread over "
        "replicas started later (default: never)",
    )
    serve.add_argument(
        "--max-connection-age-grace",
        type=_duration,
        default=None,
        help="time a connection past its age has to finish in-flight calls (default: no limit)",
    )
    serve.add_argument(
        "--proxy-class-grace",
        type=_duration,
        default=60.0,
        help="how long a proxy class with no connected proxy is kept (60s)",
    )
    serve.add_argument(
        "--max-proxy-classes",
        type=_count,
        default=1000,
        help="proxy classes (distinct roles, gateway labels, bind addresses) kept at once; "
        "a proxy needing one more is refused with RESOURCE_EXHAUSTED (1000)",
    )
    serve.add_argument(
        "--state-dir",
        default=None,
        help="where the last good version of each file is kept across restarts "
        "(default: $XDG_STATE_HOME or ~/.local/state, then pilotfish/<hash of the config dir>)",
    )
    serve.add_argument(
        "--withdraw-grace",
        type=_duration,
        default=30.0,
        help="how long a reload that would withdraw too much of the mesh is held back (30s)",
    )
    serve.add_argument(
        "--max-withdraw-share",
        type=_share,
        default=0.5,
        help="share of the accepted resources one reload may withdraw at once (0.5)",
    )
    serve.add_argument(
        "--max-receive-message-bytes",
        type=_whole,
        default=4 * 1024 * 1024,
        help="largest request accepted from a proxy (4 MiB)",
    )
    serve.add_argument(
        "--max-streams",
        type=_whole,
        default=100_000,
        help="xDS streams served at once; more are refused (100000)",
    )
    serve.add_argument(
        "--max-pending-calls",
        type=_whole,
        default=0,
        help="calls gRPC queues before the server takes them; beyond twice this, "
        "calls are shed (0: --max-streams)",
    )
    serve.add_argument(
        "--max-pending-time",
        type=_duration,
        default=120.0,
        help="longest a call waits in that queue before gRPC cancels it (120s)",
    )
    serve.add_argument(
        "--max-streams-per-connection",
        type=_whole,
        default=1_000,
        help="streams one HTTP/2 connection may hold; more wait (1000)",
    )
    serve.add_argument(
        "--max-connections-per-peer",
        type=_whole,
        default=1_000,
        help="connections one client address may hold; more are refused (1000; 0: no limit)",
    )
    serve.add_argument(
        "--max-resource-names",
        type=_whole,
        default=100_000,
        help="names one request may subscribe to per type; more are refused (100000)",
    )
    serve.add_argument(
        "--max-ping-strikes",
        type=_whole,
        default=2,
        help="pings more often than every 10s a proxy may send before it is sent away (2)",
    )
    serve.add_argument(
        "--load-report-interval",
        type=_interval,
        default=10.0,
        help="how often proxies report their traffic per cluster (10s)",
    )
    serve.add_argument(
        "--workers",
        type=_count,
        default=1,
        help="processes serving the xDS port together, each a complete control plane on the "
        "directory (Linux, SO_REUSEPORT); the admin answers for all of them (1)",
    )
    serve.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    _add_limit_flags(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo",
        help="run a whole mesh locally (control plane, services, sidecar agents, gateway); "
        "edit its routing live",
        description="Run the storefront mesh (or --config-dir's) as local processes on "
        "127.0.0.1: the control plane, the services its WorkloadEntries describe, a sidecar "
        "agent beside each frontend, and a gateway (Envoy when installed, else a Pilotfish "
        "agent). Ctrl-C stops everything. Exit codes: 0 stopped, 1 failed while starting, "
        "2 bad flags, a port taken or a directory it cannot run.",
    )
    demo.add_argument(
        "--config-dir",
        default=None,
        help="the mesh to run, edited in place; the storefront example is written into it "
        "when it holds no YAML (default: a temporary copy of the example)",
    )
    demo.add_argument(
        "--gateway-port",
        type=_port,
        default=None,
        help="the gateway's port (8080; for an existing --config-dir, its Gateway's port)",
    )
    demo.add_argument(
        "--admin-port", type=_port, default=15000, help="the dashboard: the HTTP admin (15000)"
    )
    demo.add_argument("--xds-port", type=_port, default=18000, help="the xDS port (18000)")
    demo.add_argument(
        "--no-envoy",
        action="store_true",
        help="use a Pilotfish agent as the gateway even when Envoy is installed",
    )
    demo.set_defaults(run=_demo)

    add_status_commands(commands, _Parser)

    commands.add_parser(
        "agent",
        help="run a thin proxy agent subscribed to a control plane (pilotfish agent --help)",
        add_help=False,
    )
    return parser


_VALIDATE_EXIT_CODES = """\
exit codes:
  0  no errors (warnings may have been printed)
  1  at least one error, or no config files found in DIRECTORY
  2  used wrongly: bad flags, or DIRECTORY is not a directory"""


def _agent(argv: Sequence[str]) -> int:
    from agents.cli import main as agent_main

    return agent_main(argv, prog="pilotfish agent")


class _Unparsed(Exception):
    pass


class _QuietParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Unparsed(message)


def _read_ahead(argv: Sequence[str]) -> ReadHelper | None:
    """``serve``'s read helper, started before the server is imported, when it pays.

    The helper scans the config directory and parses files while this process
    imports the server; the first reload takes it over
    (:mod:`controlplane.config.parallel_read`). The flags it needs are picked out
    of ``argv`` here; ``serve`` parses them properly later, and a helper for
    another directory or other limits is not taken over but stopped.
    """
    if {"-h", "--help"} & set(argv):
        return None
    parser = _QuietParser(add_help=False)
    parser.add_argument("--config-dir")
    parser.add_argument("--workers", type=_count, default=1)
    parser.add_argument("--worker", type=int, default=None)
    _add_limit_flags(parser)
    try:
        args, _ = parser.parse_known_args(argv)
    except _Unparsed:
        return None
    if args.config_dir is None or args.workers > 1 or args.worker is not None:
        return None
    root = Path(args.config_dir)
    if not helper_pays() or not enough_files(root):
        return None
    return ReadHelper.ahead(root, _limits(args), _CONFIG_READER)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["agent"]:
        return _agent(argv[1:])
    read_helper = _read_ahead(argv[1:]) if argv[:1] == ["serve"] else None
    try:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 2
        args = parser.parse_args(argv)
        args.argv = tuple(argv)
        args.read_helper = read_helper
        result: int = args.run(args)
        return result
    finally:
        # Taken over and stopped by the first reload; here if serve never got that far.
        if read_helper is not None:
            read_helper.close()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
