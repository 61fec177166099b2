"""Gateway documents -> :class:`controlplane.model.Gateway`.

TLS is not implemented yet, so a server that asks for it (an ``HTTPS`` or
``TLS`` port, or ``tls`` settings: see :mod:`controlplane.config.schema`) is
an error (``PF123``), never served as plaintext. ``tls.httpsRedirect`` on an
HTTP server needs no TLS of its own: it answers every request with a
redirect to ``https``.
"""

from __future__ import annotations

from typing import Any

from controlplane.config.report import Path, Reporter
from controlplane.model import Gateway, GatewayServer, Protocol

GATEWAY_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS")
_TLS_PROTOCOLS = ("HTTPS", "TLS")


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
        if not port.get("name"):
            report.error(
                "PF113",
                (*here, "port"),
                "a server port needs a name, as Istio requires (for example name: http)",
            )
        if port.get("targetPort") is not None:
            report.error(
                "PF114",
                (*here, "port", "targetPort"),
                "targetPort has no effect on a Gateway and Istio rejects it; remove it",
            )
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
        if protocol.upper() in _TLS_PROTOCOLS:
            report.error(
                "PF123",
                (*here, "port", "protocol"),
                f"a {protocol.upper()} server needs TLS, which is not supported yet; the "
                "server is refused rather than served as plaintext",
            )
            continue
        redirect = bool((server.get("tls") or {}).get("httpsRedirect"))
        if redirect and not Protocol(protocol.upper()).is_http:
            report.error(
                "PF114",
                (*here, "tls", "httpsRedirect"),
                f"httpsRedirect applies to HTTP servers, not {protocol.upper()}; remove it",
            )
        hosts = server.get("hosts") or []
        if not hosts:
            report.error("PF113", (*here, "hosts"), "a server needs at least one host")
        servers.append(
            GatewayServer(
                port=number,
                port_name=port.get("name") or "",
                protocol=Protocol(protocol.upper()),
                hosts=tuple(hosts),
                https_redirect=redirect,
            )
        )
    return Gateway(
        namespace=namespace,
        name=name,
        selector=tuple(sorted((spec.get("selector") or {}).items())),
        servers=tuple(servers),
    )
