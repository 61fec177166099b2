"""Counters the xDS server keeps for ``/metrics``, at the cost of an integer add.

The push path (:mod:`controlplane.server.ads`) must stay as fast with metrics as
without, so it only ever adds one to an entry of a small dict keyed by type URL
(:class:`XdsStats`), and on an ACK of a version a stream has not ACKed before,
one observation into a fixed-bucket :class:`Histogram` (a bisect over a dozen
bounds). Nothing is formatted, labelled or locked here: the Prometheus
collectors (:mod:`controlplane.server.http_admin`) read these numbers when
scraped. Everything is confined to the event loop, except the reload histogram,
which only the watcher's thread writes.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

CONVERGENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds from a config change to a proxy's ACK of it."""
RELOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Counts per upper bound (not cumulative; the last slot is +Inf) and a sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus exposes them, ending with ``+Inf``."""
        result: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


@dataclass
class XdsStats:
    """Per type URL: responses sent, ACKs and NACKs received, and convergence times."""

    pushes: dict[str, int] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)
    nacks: dict[str, int] = field(default_factory=dict)
    convergence: dict[str, Histogram] = field(default_factory=dict)

    def converged(self, type_url: str, seconds: float) -> None:
        histogram = self.convergence.get(type_url)
        if histogram is None:
            histogram = self.convergence[type_url] = Histogram(CONVERGENCE_BUCKETS)
        histogram.observe(seconds)
