"""Ports: what a proxy listens on, and what each listening port carries.

A sidecar opens one outbound port per service port number of the mesh,
whatever the host, as clients address services by name and port. A port
where any service speaks HTTP (HTTP, HTTP2, GRPC) is an HTTP port: all
those services share its route configuration, told apart by their virtual
hosts. Otherwise it is a TCP port, and since a plain TCP listener cannot
tell hosts apart, the first TCP service by host name owns it; the others on
that port, and TCP services on an HTTP port, are not reachable through the
sidecar. UDP ports get no listener.

A gateway opens one port per server port of the Gateways selecting it.
Servers of several Gateways on one port share it; an HTTP server makes it an
HTTP port (and non-HTTP servers on it are ignored), otherwise it is a TCP
port (HTTPS and TLS included: TLS termination is not modelled, so the bytes
pass through to the TCP routes).
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.model import Gateway, GatewayServer, Labels, Mesh, Protocol, Service


@dataclass(frozen=True, slots=True)
class SidecarPort:
    port: int
    http_services: tuple[Service, ...]
    tcp_service: Service | None

    @property
    def is_http(self) -> bool:
        return bool(self.http_services)


@dataclass(frozen=True, slots=True)
class GatewayPort:
    port: int
    is_http: bool
    servers: tuple[tuple[Gateway, GatewayServer], ...]


def sidecar_ports(mesh: Mesh) -> tuple[SidecarPort, ...]:
    """The sidecar's listening ports, sorted by number."""
    http: dict[int, list[Service]] = {}
    tcp: dict[int, list[Service]] = {}
    for service in sorted(mesh.services, key=lambda s: s.host):
        for port in service.ports:
            if port.protocol is Protocol.UDP:
                continue
            kind = http if port.protocol.is_http else tcp
            kind.setdefault(port.port, []).append(service)
    result = []
    for number in sorted(http.keys() | tcp.keys()):
        if number in http:
            result.append(SidecarPort(number, tuple(http[number]), None))
        else:
            result.append(SidecarPort(number, (), tcp[number][0]))
    return tuple(result)


def gateway_ports(mesh: Mesh, labels: Labels) -> tuple[GatewayPort, ...]:
    """The ports of the Gateways selecting a proxy with ``labels``, sorted by number."""
    servers: dict[int, list[tuple[Gateway, GatewayServer]]] = {}
    for gateway in mesh.gateways_for(labels):
        for server in gateway.servers:
            if server.protocol is not Protocol.UDP:
                servers.setdefault(server.port, []).append((gateway, server))
    result = []
    for number in sorted(servers):
        on_port = servers[number]
        http = [(g, s) for g, s in on_port if s.protocol.is_http]
        result.append(GatewayPort(number, bool(http), tuple(http or on_port)))
    return tuple(result)
