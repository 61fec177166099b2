"""Which new streams the server takes, and how it says no.

gRPC core enforces some limits itself (streams per HTTP/2 connection, message
sizes, ping strikes, the queue of calls not yet picked up; see
:class:`~controlplane.server.grpc_server.XdsServerOptions`). Two it cannot:
the number of live xDS streams in the whole server, and the number of
connections one client address holds. gRPC Python has no connection hook, so
connections are seen through their streams: a connection is the peer string
gRPC reports for a stream (``ipv4:10.0.0.7:51234``: address and port), a
client address that string without its port, and a connection exists while
one of its streams lives. A stream beyond either limit is refused with
``RESOURCE_EXHAUSTED`` before it is served.

:class:`StreamLimits` carries the limits the servicer applies;
:class:`Admission` counts live streams and connections; :class:`Refusals`
keeps the log of refused clients to one line per reason and client address
every :data:`REFUSAL_LOG_INTERVAL` seconds, with the count refused since the
last line, so that a client retrying in a loop cannot flood the log. All of it
is loop-confined and does no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1024 * 1024

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about one reason and client address."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What one server accepts from its clients (0: no limit)."""

    max_streams: int = 100_000
    """Live xDS streams in the whole server."""
    max_connections_per_peer: int = 1_000
    """Connections with a live stream from one client address."""
    max_resource_names: int = 100_000
    """Names one request may subscribe to, per type (SotW: its list; delta: the total)."""
    max_send_bytes: int = 16 * MiB
    """The largest response the server sends (gRPC's send limit)."""


def peer_host(connection: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``; ``ipv6:[::1]:5`` -> ``ipv6:[::1]``."""
    host, sep, port = connection.rpartition(":")
    if sep and port.isdigit() and ":" in host:
        return host
    return connection


class Admission:
    """Live streams per connection and connections per client address."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self.streams = 0
        self._hosts: dict[str, dict[str, int]] = {}

    def admit(self, connection: str) -> str | None:
        """Count a new stream on ``connection``; or, if that is over a limit, return
        the limit's name (``"max_streams"``, ``"max_connections_per_peer"``)."""
        limits = self.limits
        if limits.max_streams and self.streams >= limits.max_streams:
            return "max_streams"
        host = peer_host(connection)
        connections = self._hosts.get(host)
        if connections is None:
            connections = self._hosts[host] = {}
        count = connections.get(connection)
        if count is None:
            cap = limits.max_connections_per_peer
            if cap and len(connections) >= cap:
                if not connections:
                    del self._hosts[host]
                return "max_connections_per_peer"
            count = 0
        connections[connection] = count + 1
        self.streams += 1
        return None

    def release(self, connection: str) -> None:
        """Forget one stream of ``connection`` (admitted before)."""
        host = peer_host(connection)
        connections = self._hosts.get(host)
        if connections is None or connection not in connections:
            return
        self.streams -= 1
        count = connections[connection] - 1
        if count:
            connections[connection] = count
            return
        del connections[connection]
        if not connections:
            del self._hosts[host]

    def connections(self, host: str) -> int:
        """Connections with a live stream from ``host`` (a :func:`peer_host`)."""
        return len(self._hosts.get(host, ()))


class Refusals:
    """Counts refusals and says when one is worth a log line."""

    def __init__(
        self,
        interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def refused(self, reason: str, host: str) -> int:
        """Count one refusal; return how many to report now (0: stay quiet)."""
        now = self._clock()
        key = (reason, host)
        last, count = self._state.get(key, (now - self._interval, 0))
        count += 1
        if now - last < self._interval:
            self._state[key] = (last, count)
            return 0
        if len(self._state) > 10_000:
            self._state.clear()
        self._state[key] = (now, 0)
        return count
