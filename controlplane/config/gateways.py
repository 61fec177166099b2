"""Gateway documents -> :class:`controlplane.model.Gateway`."""

from __future__ import annotations

from typing import Any

from controlplane.config.report import Path, Reporter
from controlplane.model import Gateway, GatewayServer, Protocol

GATEWAY_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS")


def gateway(spec: dict[str, Any], namespace: str, name: str, report: Reporter) -> Gateway:
    servers: list[GatewayServer] = []
    raw = spec.get("servers") or []
    if not raw:
        report.error("PF113", ("spec", "servers"), "a Gateway needs at least one server")
    for index, server in enumerate(raw):
        here: Path = ("spec", "servers", index)
        server = server or {}
        port = server.get("port") or {}
        number, protocol = port.get("number"), port.get("protocol")
        if number is None:
            report.error("PF113", (*here, "port", "number"), "a server needs a port number")
            continue
        if not 1 <= number <= 65535:
            report.error("PF114", (*here, "port", "number"), f"port {number} is not 1-65535")
        if protocol is None:
            report.error(
                "PF113",
                (*here, "port", "protocol"),
                f"a server port needs a protocol: one of {', '.join(GATEWAY_PROTOCOLS)}",
            )
            continue
        if protocol.upper() not in GATEWAY_PROTOCOLS:
            report.error(
                "PF114",
                (*here, "port", "protocol"),
                f"protocol {protocol!r} is not one of {', '.join(GATEWAY_PROTOCOLS)}",
            )
            continue
        hosts = server.get("hosts") or []
        if not hosts:
            report.error("PF113", (*here, "hosts"), "a server needs at least one host")
        servers.append(
            GatewayServer(
                port=number,
                port_name=port.get("name") or "",
                protocol=Protocol(protocol.upper()),
                hosts=tuple(hosts),
            )
        )
    return Gateway(
        namespace=namespace,
        name=name,
        selector=tuple(sorted((spec.get("selector") or {}).items())),
        servers=tuple(servers),
    )
