"""The grpc.aio server that carries Pilotfish's xDS services.

:func:`start_xds_server` binds a port, registers ADS and the single-type
services around one :class:`SnapshotCache`, each in both variants (state of
the world and incremental/delta; the client picks one by the method it calls),
and returns an :class:`XdsServer` handle.

Connection settings live in :class:`XdsServerOptions`. Keepalive pings detect
dead proxies behind NATs and load balancers; ``max_connection_age`` makes
clients reconnect now and then so that streams spread over replicas added
later (the grace lets an in-flight response finish first). xDS responses for
large meshes exceed gRPC's default 4 MiB limit, so the send limit is raised;
requests stay within a smaller receive limit.

Memory per connection (every Envoy opens its own): gRPC sizes the buffer it
reads a connection into after the largest burst it has read, and keeps that
buffer allocated between reads. A state-of-the-world Envoy's EDS request and
every EDS ACK repeat its whole name list (150 KB for 3,000 clusters), so with
gRPC's default each such connection held about 73 KiB, against 17 KiB with
``read_buffer_bytes`` capping the buffer (bench/connection_memory.py); a
larger request is then read in several reads.

Limits against hostile or broken clients (see docs/limits.md): gRPC core caps
streams per connection and penalises clients that ping too often (a GOAWAY
after ``max_ping_strikes`` pings too close together); the servicer caps live
streams, connections per client address and names per request
(:class:`~controlplane.server.admission.StreamLimits`). gRPC core queues the
calls the application has not picked up yet; by default it sheds calls beyond
1,000 queued (randomly, all of them beyond 3,000: the client sees
``RESOURCE_EXHAUSTED: Too many pending requests for this server``) and cancels
calls left queued 30 s. grpc.aio picks calls up one at a time on the event loop,
so a reconnect storm of a few thousand proxies overflowed that queue and lost
a third of them without a word in the server's log (shed calls never reach
Python). The queue is therefore sized from ``max_streams``, and calls the
server does see beyond its own limits are refused and logged.

The Load Reporting Service (:mod:`~controlplane.server.load_reporting`) shares
the port: proxies report their traffic there, readable as
:attr:`XdsServer.load_reports`.

Shutdown is graceful: :meth:`XdsServer.stop` first asks every stream to finish
the responses it is writing and end with ``UNAVAILABLE`` (clients reconnect
elsewhere at once), then stops the gRPC server, which refuses new calls and
cancels whatever is still running when the grace period ends.

Binding: gRPC sets ``SO_REUSEPORT`` by default, so a second server on a port
already served would bind too and the kernel would split the proxies between
the two; it is turned off. :func:`check_address` binds the address the way
gRPC does (``SO_REUSEADDR``) and closes it again, so that a port in use or a
host that does not resolve is one clear :class:`ServerStartError` rather than
gRPC core's own log line followed by a generic failure.

Workers (``pilotfish serve --workers``, :mod:`~controlplane.server.workers`)
are the exception: their supervisor holds the port, and each worker binds it
with ``reuse_port`` (``SO_REUSEPORT``) so the kernel spreads connections
over them; each also listens on a private Unix socket (``private_address``)
where its peers reach it alone.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import structlog

from controlplane.errors import PilotfishError
from controlplane.server.admission import StreamLimits
from controlplane.server.ads import AggregatedDiscoveryService, add_xds_services
from controlplane.server.load_reporting import LoadReportingService, add_load_reporting_service
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.load_reports import LoadReports

log = structlog.get_logger(__name__)

MiB = 1024 * 1024


class ServerStartError(PilotfishError):
    """The xDS server could not bind its address."""


class AddressInUseError(ServerStartError):
    """Another process listens on the xDS port."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(f"port {port} is already in use on {host}")


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as host and port; ValueError when it is not one."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or ("[" in host or "]" in host):
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host, int(port_text)


def check_address(address: str) -> None:
    """Raise :class:`ServerStartError` unless some address ``address`` resolves to can be bound."""
    try:
        host, port = split_address(address)
    except ValueError as exc:
        raise ServerStartError(f"cannot listen on {address}: expected HOST:PORT") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {address}: {host}: {exc.strerror}") from exc
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
            return
        except OSError as exc:
            failures.append(exc)
    if any(exc.errno == errno.EADDRINUSE for exc in failures):
        raise AddressInUseError(host, port)
    reason = failures[0].strerror if failures else "it resolves to no address"
    raise ServerStartError(f"cannot listen on {address}: {reason}")


@dataclass(frozen=True, slots=True)
class XdsServerOptions:
    max_message_bytes: int = 16 * MiB
    """The largest response sent; larger ones are refused and logged, never sent."""
    max_receive_message_bytes: int = 4 * MiB
    """The largest request accepted (gRPC ends the stream with ``RESOURCE_EXHAUSTED``)."""
    max_streams: int = 100_000
    """Live xDS streams; more are refused with ``RESOURCE_EXHAUSTED``."""
    max_pending_calls: int = 0
    """Calls gRPC queues before the server picks them up (0: ``max_streams``); gRPC
    starts shedding calls at random beyond it and sheds every one beyond twice it."""
    max_pending_time: float = 120.0
    """Seconds a call may wait in that queue before gRPC cancels it."""
    max_streams_per_connection: int = 1_000
    """Concurrent streams per HTTP/2 connection (gRPC's ``max_concurrent_streams``;
    0: no limit)."""
    max_connections_per_peer: int = 1_000
    """Connections with a live stream from one client address (0: no limit)."""
    max_resource_names: int = 100_000
    """Names a request may subscribe to, per type (0: no limit)."""
    max_ping_strikes: int = 2
    """Pings closer than ``min_client_ping_interval`` tolerated before a GOAWAY."""
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
    load_report_interval: float = 10.0
    """Seconds between the load reports each proxy sends (LRS)."""
    reuse_port: bool = False
    """Join the ``SO_REUSEPORT`` group a supervisor reserved (workers only)."""
    read_buffer_bytes: int = 8 * 1024
    """The most gRPC allocates to read one connection's socket at a time (0: gRPC's
    default, which grows with the largest burst read and stays allocated between
    reads). At 12 KiB and above gRPC allocates 64 KiB at once."""

    def channel_options(self) -> list[tuple[str, int]]:
        pending = self.max_pending_calls or self.max_streams or 100_000
        options = [
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.server.max_pending_requests", pending),
            ("grpc.server.max_pending_requests_hard_limit", 2 * pending),
            ("grpc.server_max_unrequested_time_in_server", max(1, round(self.max_pending_time))),
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                _ms(self.min_client_ping_interval),
            ),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
            ("grpc.so_reuseport", int(self.reuse_port)),
            # Nothing serves channelz here, and its bookkeeping costs 0.6-0.7 KiB per
            # connection (bench/connection_memory.py): 6 MiB at 10,000 proxies.
            ("grpc.enable_channelz", 0),
        ]
        if self.max_streams_per_connection:
            options.append(("grpc.max_concurrent_streams", self.max_streams_per_connection))
        if self.read_buffer_bytes:
            options.append(("grpc.experimental.tcp_max_read_buffer_size", self.read_buffer_bytes))
        if self.max_connection_age is not None:
            options.append(("grpc.max_connection_age_ms", _ms(self.max_connection_age)))
        if self.max_connection_age_grace is not None:
            options.append(("grpc.max_connection_age_grace_ms", _ms(self.max_connection_age_grace)))
        return options

    def stream_limits(self) -> StreamLimits:
        """The limits the servicer applies itself."""
        return StreamLimits(
            max_streams=self.max_streams,
            max_connections_per_peer=self.max_connections_per_peer,
            max_resource_names=self.max_resource_names,
            max_send_bytes=self.max_message_bytes,
        )


class XdsServer:
    """A running xDS server: its bound port and a graceful :meth:`stop`."""

    def __init__(
        self,
        server: grpc.aio.Server,
        ads: AggregatedDiscoveryService,
        host: str,
        port: int,
        *,
        lrs: LoadReportingService | None = None,
    ) -> None:
        self._server = server
        self.ads = ads
        self.host = host
        self.port = port
        self.lrs = lrs or LoadReportingService(LoadReports())

    @property
    def load_reports(self) -> LoadReports:
        """The traffic the proxies report (the Load Reporting Service's aggregate)."""
        return self.lrs.reports

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        """End every stream after its current writes; cancel what remains after ``grace``."""
        log.info("xds_server_stopping", address=self.address, grace=grace)
        self.ads.close()
        self.lrs.close()
        await self._server.stop(grace)
        log.info("xds_server_stopped", address=self.address)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start_xds_server(
    cache: SnapshotCache,
    address: str = "127.0.0.1:0",
    *,
    options: XdsServerOptions | None = None,
    services: Sequence[Callable[[grpc.aio.Server, AggregatedDiscoveryService], None]] = (),
    private_address: str | None = None,
) -> XdsServer:
    """Serve ADS and the single-type services, SotW and delta, for ``cache`` on ``address``.

    Each of ``services`` registers more services on the same server (the admin ones);
    ``private_address`` (``unix:PATH``) is a second port serving the same."""
    options = options or XdsServerOptions()
    if not options.reuse_port:
        check_address(address)
    server = grpc.aio.server(options=options.channel_options())
    ads = AggregatedDiscoveryService(cache, limits=options.stream_limits())
    add_xds_services(server, ads)
    lrs = LoadReportingService(LoadReports(options.load_report_interval))
    add_load_reporting_service(server, lrs)
    for register in services:
        register(server, ads)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ServerStartError(f"cannot listen on {address}")
    if private_address is not None and not server.add_insecure_port(private_address):
        raise ServerStartError(f"cannot listen on {private_address}")
    await server.start()
    host = address.rsplit(":", 1)[0]
    log.info("xds_server_started", address=f"{host}:{port}")
    return XdsServer(server, ads, host, port, lrs=lrs)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
