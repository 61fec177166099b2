"""``pilotfish status`` and ``pilotfish config dump``: ask a running control plane.

Both are clients of the admin service on the xDS port
(:mod:`controlplane.server.admin`). ``status`` shows, per connected proxy and
per xDS type, SYNCED, PENDING (sent or due, not ACKed yet), STALE (sent and
not ACKed for more than 5 s), NACKED (with the proxy's error detail) or
NOT SENT, like ``istioctl proxy-status`` with the reason; ``config dump``
prints what one proxy holds. Failures are one line on stderr: exit 1 when the
server cannot be reached or does not know the proxy, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc

from controlplane.server.grpc_server import split_address
from controlplane.xds.types import short_name
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:18000"
TIMEOUT = 5.0
_COLUMNS = ("CDS", "LDS", "EDS", "RDS")


class _Failure(Exception):
    """One line for the operator; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_status_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register ``status`` and ``config dump`` on ``pilotfish``'s subcommands."""
    status = commands.add_parser(
        "status",
        help="per proxy and xDS type: SYNCED, PENDING, STALE, NACKED (with the reason) or NOT SENT",
    )
    _server_flag(status)
    status.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format (table)"
    )
    status.set_defaults(run=_status)

    config = commands.add_parser("config", help="inspect the configuration proxies hold")
    actions = config.add_subparsers(dest="action", required=True, parser_class=parser_class)
    dump = actions.add_parser("dump", help="print the resources one connected proxy holds")
    dump.add_argument("--proxy", required=True, help="the proxy's node id")
    _server_flag(dump)
    dump.add_argument(
        "-o", "--output", choices=("yaml", "json"), default="yaml", help="output format (yaml)"
    )
    dump.set_defaults(run=_dump)


def _server_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        type=_address,
        default=DEFAULT_SERVER,
        help=f"host:port of the control plane's xDS port ({DEFAULT_SERVER})",
    )


def _address(text: str) -> str:
    try:
        port = split_address(text)[1]
    except ValueError:
        port = 0  # a client cannot dial port 0 either
    if port == 0:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def _status(args: argparse.Namespace) -> int:
    return _run(args, "status", _show_status)


def _dump(args: argparse.Namespace) -> int:
    return _run(args, "config dump", _show_config)


def _run(
    args: argparse.Namespace, name: str, show: Callable[[Any, argparse.Namespace], str]
) -> int:
    try:
        with grpc.insecure_channel(args.server) as channel:
            text = show(admin_pb2_grpc.AdminServiceStub(channel), args)
    except _Failure as exc:
        print(f"pilotfish {name}: {exc}", file=sys.stderr)
        return exc.code
    except grpc.RpcError as exc:
        print(f"pilotfish {name}: {_rpc_error(exc, args.server)}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _rpc_error(exc: grpc.RpcError, server: str) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"cannot reach the control plane at {server} (is `pilotfish serve` running there?)"
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return f"{server} does not serve Pilotfish's admin API"
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"{details} ({code.name if code else 'error'}, {server})"


def status_json(response: admin_pb2.ListProxiesResponse) -> dict[str, Any]:
    """``{"proxies": [{node_id, role, address, protocol, types: {short: {...}}}]}``."""
    proxies = []
    for proxy in response.proxies:
        types: dict[str, Any] = {}
        for sync in proxy.types:
            nack = None
            if sync.HasField("last_nack"):
                nack = {"message": sync.last_nack.message, "at": sync.last_nack.at}
            types[short_name(sync.type_url)] = {
                "state": sync.state,
                "sent": sync.version_sent,
                "acked": sync.version_acked,
                "nack": nack,
            }
        proxies.append(
            {
                "node_id": proxy.node_id,
                "role": proxy.role,
                "address": _address_of(proxy.peer),
                "protocol": proxy.protocol,
                "types": types,
            }
        )
    return {"proxies": proxies}


def _address_of(peer: str) -> str:
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            return peer[len(prefix) :]
    return peer


def _show_status(stub: Any, args: argparse.Namespace) -> str:
    data = status_json(stub.ListProxies(admin_pb2.ListProxiesRequest(), timeout=TIMEOUT))
    if args.output == "json":
        return json.dumps(data, indent=2) + "\n"
    return status_table(data)


def status_table(data: dict[str, Any]) -> str:
    header = ("NODE ID", "ROLE", "ADDRESS", "PROTOCOL", *_COLUMNS)
    rows: list[tuple[str, ...]] = [header]
    reasons: list[str] = []
    for proxy in data["proxies"]:
        cells = []
        for column in _COLUMNS:
            sync = proxy["types"].get(column)
            cells.append(_cell(sync))
            if sync is not None and sync["state"] == "NACKED" and sync["nack"]:
                nack = sync["nack"]
                reasons.append(
                    f"{proxy['node_id']} {column} NACKED at {nack['at']}: {nack['message']}"
                )
        rows.append((proxy["node_id"], proxy["role"], proxy["address"], proxy["protocol"], *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no proxy connected)")
    return "\n".join([*lines, *reasons]) + "\n"


def _cell(sync: dict[str, Any] | None) -> str:
    if sync is None or sync["state"] == "NOT_SENT":
        return "NOT SENT"
    version = sync["sent"][:8]
    return f"{sync['state']} ({version})" if version else sync["state"]


def _show_config(stub: Any, args: argparse.Namespace) -> str:
    try:
        response = stub.GetProxyConfig(
            admin_pb2.GetProxyConfigRequest(node_id=args.proxy), timeout=TIMEOUT
        )
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.NOT_FOUND:
            raise _Failure(f"no connected proxy has node id {args.proxy!r}") from None
        raise
    data = config_json(response)
    if args.output == "json":
        return json.dumps(data, indent=2) + "\n"
    import yaml  # only here: `pilotfish serve` builds this parser and never needs PyYAML

    text: str = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return text


def config_json(response: admin_pb2.GetProxyConfigResponse) -> dict[str, Any]:
    types: dict[str, Any] = {}
    for typed in response.types:
        types[short_name(typed.type_url)] = {
            "version_sent": typed.version_sent,
            "version_acked": typed.version_acked,
            "resources": [json.loads(r.json) for r in typed.resources],
        }
    return {
        "node_id": response.proxy.node_id,
        "protocol": response.proxy.protocol,
        "proxy_class": response.proxy.proxy_class,
        "types": types,
    }
