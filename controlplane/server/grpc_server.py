"""The grpc.aio server that carries Pilotfish's xDS services.

:func:`start_xds_server` binds a port, registers ADS and the single-type
services around one :class:`SnapshotCache`, each in both variants (state of
the world and incremental/delta; the client picks one by the method it calls),
and returns an :class:`XdsServer` handle.

Connection settings live in :class:`XdsServerOptions`. Keepalive pings detect
dead proxies behind NATs and load balancers; ``max_connection_age`` makes
clients reconnect now and then so that streams spread over replicas added
later (the grace lets an in-flight response finish first). xDS responses for
large meshes exceed gRPC's default 4 MiB limit, so the message limits are
raised.

Shutdown is graceful: :meth:`XdsServer.stop` first asks every stream to finish
the responses it is writing and end with ``UNAVAILABLE`` (clients reconnect
elsewhere at once), then stops the gRPC server, which refuses new calls and
cancels whatever is still running when the grace period ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import structlog

from controlplane.errors import PilotfishError
from controlplane.server.ads import AggregatedDiscoveryService, add_xds_services
from controlplane.xds.cache import SnapshotCache

log = structlog.get_logger(__name__)

MiB = 1024 * 1024


class ServerStartError(PilotfishError):
    """The xDS server could not bind its address."""


@dataclass(frozen=True, slots=True)
class XdsServerOptions:
    max_message_bytes: int = 16 * MiB
    keepalive_time: float = 30.0
    """Seconds between server pings on an idle connection."""
    keepalive_timeout: float = 10.0
    """Seconds to wait for a ping acknowledgement before closing the connection."""
    keepalive_permit_without_calls: bool = True
    min_client_ping_interval: float = 10.0
    """Clients may ping this often without being treated as abusive."""
    max_connection_age: float | None = None
    """Seconds after which a connection is asked to go away (``None``: never)."""
    max_connection_age_grace: float | None = None
    """Seconds a connection past its age may still finish in-flight calls."""

    def channel_options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)),
            (
                "grpc.http2.min_recv_ping_interval_without_data_ms",
                _ms(self.min_client_ping_interval),
            ),
            ("grpc.http2.max_ping_strikes", 0),
        ]
        if self.max_connection_age is not None:
            options.append(("grpc.max_connection_age_ms", _ms(self.max_connection_age)))
        if self.max_connection_age_grace is not None:
            options.append(("grpc.max_connection_age_grace_ms", _ms(self.max_connection_age_grace)))
        return options


class XdsServer:
    """A running xDS server: its bound port and a graceful :meth:`stop`."""

    def __init__(
        self, server: grpc.aio.Server, ads: AggregatedDiscoveryService, host: str, port: int
    ) -> None:
        self._server = server
        self.ads = ads
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """End every stream after its current writes; cancel what remains after ``grace``."""
        log.info("xds_server_stopping", address=self.address, grace=grace)
        self.ads.close()
        await self._server.stop(grace)
        log.info("xds_server_stopped", address=self.address)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start_xds_server(
    cache: SnapshotCache,
    address: str = "127.0.0.1:0",
    *,
    options: XdsServerOptions | None = None,
) -> XdsServer:
    """Serve ADS and the single-type services, SotW and delta, for ``cache`` on ``address``."""
    options = options or XdsServerOptions()
    server = grpc.aio.server(options=options.channel_options())
    ads = AggregatedDiscoveryService(cache)
    add_xds_services(server, ads)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ServerStartError(f"cannot listen on {address}")
    await server.start()
    host = address.rsplit(":", 1)[0]
    log.info("xds_server_started", address=f"{host}:{port}")
    return XdsServer(server, ads, host, port)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
