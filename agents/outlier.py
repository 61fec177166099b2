"""Outlier detection: endpoints that keep failing are ejected for a while.

Envoy's consecutive-error detection, driven by the balancer's
``finished(endpoint, seconds, status)`` calls instead of timers:

* every 5xx response (and every connect failure or reset, ``status`` None,
  which Envoy maps to 503) counts towards ``consecutive_5xx``; 502, 503, 504
  and local failures also count towards ``consecutive_gateway_failure``; any
  other response resets the counters it does not extend;
* reaching a threshold ejects the endpoint, with the enforcement percentage
  as the probability, unless that would eject more than
  ``max_ejection_percent`` of the cluster (``always_eject_one_host`` aside);
* an ejection lasts ``base_ejection_time`` times the endpoint's ejection
  count, at most ``max_ejection_time``, and ends at the first ``interval``
  tick after that, as in Envoy, whose detector unejects on its interval
  timer. The count goes down by one for every interval the endpoint spends
  back in service, computed when it is ejected again.

There is no timer: the balancer asks :meth:`OutlierDetector.sweep` when the
earliest ejection ends (:attr:`OutlierDetector.next_return`), which costs
nothing while no endpoint is ejected. Every ejection and return is logged
(``endpoint_ejected``, ``endpoint_returned``) and counted.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import structlog

from agents.endpoints import Endpoint
from agents.lb_config import OutlierConfig

log = structlog.get_logger(__name__)

INF = math.inf
GATEWAY_ERRORS = frozenset((502, 503, 504))


class Tracked:
    """Per-endpoint outlier state; balancers extend it with their own per-endpoint state."""

    __slots__ = (
        "consecutive_5xx",
        "consecutive_gateway",
        "ejected",
        "ejected_until",
        "ejections",
        "endpoint",
        "returned_at",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.ejected = False
        self.ejected_until = INF
        self.ejections = 0
        self.returned_at = 0.0


def _nothing() -> None:
    return None


class OutlierDetector:
    """One cluster's detector; shared by the balancers of successive tables of the cluster."""

    def __init__(
        self,
        config: OutlierConfig,
        cluster: str,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self._clock = clock
        self._random = rng.random
        self._start = clock()
        self.hosts: Sequence[Tracked] = ()
        self.ejected: list[Tracked] = []
        self.next_return = INF
        self.ejections_total = 0
        self.returns_total = 0
        self.on_change: Callable[[], None] = _nothing
        """Called after an ejection or a return: the newest balancer rebuilds its live set."""

    def reconfigure(self, config: OutlierConfig, hosts: Sequence[Tracked]) -> None:
        """Follow a new table: ``hosts`` are now the cluster's; gone ones are forgotten."""
        self.config = config
        self.hosts = hosts
        present = {id(h) for h in hosts}
        self.ejected = [h for h in self.ejected if id(h) in present]
        self.next_return = min((h.ejected_until for h in self.ejected), default=INF)

    def failure(self, host: Tracked, status: int | None) -> None:
        """``host`` answered 5xx (``status``) or failed locally (None)."""
        host.consecutive_5xx += 1
        if status is None or status in GATEWAY_ERRORS:
            host.consecutive_gateway += 1
        else:
            host.consecutive_gateway = 0
        if host.ejected:
            return
        config = self.config
        if (
            config.consecutive_5xx
            and host.consecutive_5xx >= config.consecutive_5xx
            and self._enforced(config.enforcing_consecutive_5xx)
        ):
            self._eject(host, "consecutive_5xx")
        elif (
            config.consecutive_gateway_failure
            and host.consecutive_gateway >= config.consecutive_gateway_failure
            and self._enforced(config.enforcing_consecutive_gateway_failure)
        ):
            self._eject(host, "consecutive_gateway_failure")

    def _enforced(self, percent: int) -> bool:
        return percent >= 100 or (percent > 0 and self._random() * 100 < percent)

    def _eject(self, host: Tracked, reason: str) -> None:
        host.consecutive_5xx = host.consecutive_gateway = 0
        config = self.config
        active = len(self.ejected)
        total = len(self.hosts)
        allowed = (active + 1) * 100 <= config.max_ejection_percent * total
        if not allowed and not (config.always_eject_one_host and active == 0):
            log.info(
                "endpoint_ejection_skipped",
                cluster=self.cluster,
                endpoint=_name(host.endpoint),
                reason=reason,
                ejected=active,
                max_ejection_percent=config.max_ejection_percent,
            )
            return
        now = self._clock()
        interval = config.interval
        if host.ejections:
            healthy_ticks = int((now - host.returned_at) // interval)
            host.ejections = max(0, host.ejections - healthy_ticks)
        host.ejections += 1
        seconds = min(config.base_ejection_time * host.ejections, config.max_ejection_time)
        ticks = math.ceil((now + seconds - self._start) / interval - 1e-9)
        host.ejected = True
        host.ejected_until = self._start + ticks * interval
        self.ejected.append(host)
        self.next_return = min(self.next_return, host.ejected_until)
        self.ejections_total += 1
        log.warning(
            "endpoint_ejected",
            cluster=self.cluster,
            endpoint=_name(host.endpoint),
            reason=reason,
            seconds=round(host.ejected_until - now, 3),
            ejections=host.ejections,
        )
        self.on_change()

    def sweep(self, now: float) -> None:
        """Return every endpoint whose ejection has ended by ``now``."""
        if now < self.next_return:
            return
        staying: list[Tracked] = []
        returned = False
        for host in self.ejected:
            if host.ejected_until <= now:
                host.ejected = False
                host.ejected_until = INF
                host.returned_at = now
                self.returns_total += 1
                returned = True
                log.info("endpoint_returned", cluster=self.cluster, endpoint=_name(host.endpoint))
            else:
                staying.append(host)
        self.ejected = staying
        self.next_return = min((h.ejected_until for h in staying), default=INF)
        if returned:
            self.on_change()


def _name(endpoint: Endpoint) -> str:
    return f"{endpoint.address}:{endpoint.port}"
