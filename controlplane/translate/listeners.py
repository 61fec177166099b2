"""Listeners: the ports a proxy opens and the filter chain behind each.

Sidecar: one outbound listener per port of :func:`~controlplane.translate.ports.sidecar_ports`
on the proxy's bind address, named ``<bind>_<port>``. HTTP ports run an
``HttpConnectionManager`` fetching the port's route configuration by RDS;
TCP ports run a ``tcp_proxy`` chosen by :mod:`~controlplane.translate.tcp`
for the service owning the port (its own cluster when no TCP rule applies).

Gateway: one listener per port of :func:`~controlplane.translate.ports.gateway_ports`.
HTTP ports run an ``HttpConnectionManager`` on ``http.<port>`` that trusts
the peer address as the client's (``use_remote_address``: a gateway is the
edge). TCP ports use the first applicable TCP rule of the VirtualServices
bound there; a TCP port with no rule to follow gets no listener, because
there is nowhere to send its bytes.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2

from controlplane.model import Mesh
from controlplane.translate.binding import (
    MESH_GATEWAY,
    gateway_virtual_services,
    mesh_virtual_services,
)
from controlplane.translate.filters import http_connection_manager, tcp_proxy
from controlplane.translate.names import (
    cluster_name,
    gateway_route_config_name,
    listener_name,
    route_config_name,
)
from controlplane.translate.ports import gateway_ports, sidecar_ports
from controlplane.translate.protos import Message
from controlplane.translate.proxy import ProxyClass
from controlplane.translate.tcp import select_tcp_route, tcp_clusters


def sidecar_listeners(mesh: Mesh, proxy: ProxyClass) -> list[Message]:
    listeners = []
    for port in sidecar_ports(mesh):
        name = listener_name(proxy.bind_address, port.port)
        stat_prefix = f"outbound_{name}"
        if port.is_http:
            network = http_connection_manager(stat_prefix, route_config_name(port.port))
        elif port.tcp_service is not None:
            host = port.tcp_service.host
            candidates = ((vs, (MESH_GATEWAY,)) for vs in mesh_virtual_services(mesh, host))
            rule = select_tcp_route(candidates, port.port)
            clusters = tcp_clusters(mesh, rule, port.port) if rule is not None else []
            network = tcp_proxy(stat_prefix, clusters or [(cluster_name(port.port, host), 1)])
        else:
            continue
        listener = _listener(name, proxy.bind_address, port.port, network)
        listener.traffic_direction = base_pb2.OUTBOUND
        listeners.append(listener)
    return listeners


def gateway_listeners(mesh: Mesh, proxy: ProxyClass) -> list[Message]:
    listeners = []
    for port in gateway_ports(mesh, proxy.labels):
        name = listener_name(proxy.bind_address, port.port)
        stat_prefix = f"gateway_{name}"
        if port.is_http:
            network = http_connection_manager(
                stat_prefix, gateway_route_config_name(port.port), use_remote_address=True
            )
        else:
            bound = gateway_virtual_services(mesh, port.servers)
            rule = select_tcp_route(((b.virtual_service, b.gateways) for b in bound), port.port)
            clusters = tcp_clusters(mesh, rule, None) if rule is not None else []
            if not clusters:
                continue
            network = tcp_proxy(stat_prefix, clusters)
        listeners.append(_listener(name, proxy.bind_address, port.port, network))
    return listeners


def _listener(name: str, address: str, port: int, network: Message) -> Message:
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        filter_chains=[listener_components_pb2.FilterChain(filters=[network])],
    )
