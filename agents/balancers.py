"""Load balancers: which endpoint of a cluster gets the next request.

:func:`make_balancer` builds one :class:`Balancer` per cluster when the
forwarding table is built. The data plane calls :meth:`Balancer.pick` for a
request (None: no endpoint, answer 503), :meth:`Balancer.started` when the
request goes out and :meth:`Balancer.finished` with its duration and status
(None for a connect failure or reset) when it is over.

Everything that does not change per request is prepared when the balancer is
built and again only when the set of endpoints in use changes (an ejection
or a return): the endpoints in use, their effective weights, a round-robin
schedule, cumulative weights, a hash ring or a maglev table. A pick then
costs a few attribute loads and one or two random numbers, and allocates
nothing.

The endpoints in use are those of the lowest priority that has healthy,
non-ejected endpoints. When fewer than ``panic_threshold`` percent of all
endpoints are available, the balancer panics as Envoy does and uses every
endpoint of the lowest priority regardless of health. With locality
weighting, an endpoint's effective weight is its share of its locality's
weight, the locality's weight scaled down by its fraction of available
endpoints (times Envoy's overprovisioning factor 1.4, at most 1).

Policies:

* ``round_robin``: a precomputed earliest-deadline-first schedule over the
  effective weights (plain rotation when they are equal);
* ``random``: uniform, or a bisection of cumulative weights;
* ``least_request``: power of ``choice_count`` choices, drawn by weight; the
  fewest outstanding requests wins; for unequal weights a later candidate
  wins only with fewer outstanding requests *and* a lower
  ``(outstanding + 1) ** active_request_bias / weight`` (Envoy uses that
  ratio as the weight of an EDF schedule; this approximates it, and idle
  endpoints are picked in proportion to their weights, as in Envoy);
* ``ring_hash``: a ketama-like ring of at least ``min_ring_size`` and at
  most ``max_ring_size`` points, a host's share of points following its
  weight. Unlike Envoy, points per unit of weight are a power of two, so
  adding or removing a host rarely changes the other hosts' points and
  remaps only about its own share of keys;
  ``maglev``: Maglev's lookup table of ``table_size`` entries, weighted as in
  Envoy. Both take the request's ``hash_key`` (a random one without);
  :func:`stable_hash` gives the data plane a hash that agrees across
  processes;
* ``latency_aware``: power of two choices on the peak EWMA of response time
  times ``outstanding + 1``. The EWMA jumps up to any slower response at once
  and decays towards faster ones with time constant ``decay``; at pick time
  it is also decayed towards zero for the time since the endpoint's last
  response, so an endpoint that became slow gets probed again now and then.
  An endpoint without any response yet costs nothing while idle and a large
  penalty while busy, so new endpoints get one probe at a time.

State carry-over: :func:`make_balancer` with ``previous`` reuses the
per-endpoint state object (outstanding requests, latency estimate, outlier
counters and ejection) of every endpoint (by address and port) still
present, and the previous outlier detector. Old and new balancer share those
objects, so requests that finish on the old table still count.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from agents.endpoints import Endpoint
from agents.lb_config import LbConfig, OutlierConfig
from agents.outlier import INF, OutlierDetector, Tracked

exp = math.exp

MASK64 = (1 << 64) - 1
SCHEDULE_LIMIT = 8192
OVERPROVISIONING = 1.4
UNOBSERVED_PENALTY = 1e6


class Balancer(Protocol):
    def pick(self, hash_key: int | None = None) -> Endpoint | None: ...

    def started(self, ep: Endpoint) -> None: ...

    def finished(self, ep: Endpoint, seconds: float, status: int | None) -> None: ...

    def snapshot(self) -> list[dict[str, object]]: ...


def stable_hash(value: str | bytes) -> int:
    """A 64-bit hash of ``value`` that is the same in every process (for ``hash_key``)."""
    data = value.encode() if isinstance(value, str) else value
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Host(Tracked):
    """One endpoint's state: outlier counters plus load and latency."""

    __slots__ = ("ewma", "outstanding", "stamp")

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.outstanding = 0
        self.ewma = 0.0
        self.stamp = 0.0


class BaseBalancer:
    kind: ClassVar[str] = ""

    def __init__(
        self,
        lb: LbConfig,
        endpoints: Sequence[Endpoint],
        outlier: OutlierConfig | None,
        previous: object,
        cluster: str,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.lb = lb
        self.cluster = cluster
        self._clock = clock
        self._rng = rng
        self._random = rng.random
        carried: dict[tuple[str, int], Host] = (
            previous._by_key if isinstance(previous, BaseBalancer) else {}
        )
        hosts: list[Host] = []
        self._by_key: dict[tuple[str, int], Host] = {}
        for endpoint in endpoints:
            key = endpoint.key
            host = carried.get(key)
            if host is None or key in self._by_key:
                host = Host(endpoint)
            host.endpoint = endpoint
            self._by_key.setdefault(key, host)
            hosts.append(host)
        self.hosts: tuple[Host, ...] = tuple(hosts)
        self._by_id: dict[int, Host] = {id(h.endpoint): h for h in hosts}
        detector = previous._detector if isinstance(previous, BaseBalancer) else None
        if outlier is None:
            self._detector: OutlierDetector | None = None
            for host in hosts:
                host.ejected = False
                host.ejected_until = INF
        else:
            if detector is None:
                detector = OutlierDetector(outlier, cluster, clock, rng)
            detector.reconfigure(outlier, self.hosts)
            detector.on_change = self._rebuild
            self._detector = detector
        self._wake = INF
        self.live: tuple[Host, ...] = ()
        self.weights: tuple[float, ...] = ()
        self._rebuild()

    # -- the endpoints in use --------------------------------------------------------

    def _rebuild(self) -> None:
        detector = self._detector
        self._wake = detector.next_return if detector is not None else INF
        live = self._select()
        weights = self._weights(live)
        self.live = tuple(live)
        self.weights = tuple(weights)
        self._prepare(live, weights)

    def _select(self, ejections: bool = True) -> list[Host]:
        hosts = self.hosts
        if not hosts:
            return []
        available = [h for h in hosts if h.endpoint.healthy and not (ejections and h.ejected)]
        threshold = self.lb.panic_threshold
        if threshold > 0 and len(available) * 100 < threshold * len(hosts):
            available = list(hosts)
        if not available:
            return []
        lowest = min(h.endpoint.priority for h in available)
        return [h for h in available if h.endpoint.priority == lowest]

    def _weights(self, live: list[Host]) -> list[float]:
        if not (self.lb.locality_weighted and any(h.endpoint.locality_weight for h in live)):
            return [float(max(h.endpoint.weight, 1)) for h in live]
        priority = live[0].endpoint.priority if live else 0
        everyone: dict[object, int] = {}
        for host in self.hosts:
            if host.endpoint.priority == priority:
                everyone[host.endpoint.locality] = everyone.get(host.endpoint.locality, 0) + 1
        in_use: dict[object, list[Host]] = {}
        for host in live:
            in_use.setdefault(host.endpoint.locality, []).append(host)
        share: dict[int, float] = {}
        for locality, members in in_use.items():
            available = min(1.0, OVERPROVISIONING * len(members) / everyone[locality])
            locality_weight = members[0].endpoint.locality_weight * available
            total = sum(max(h.endpoint.weight, 1) for h in members)
            for host in members:
                share[id(host)] = locality_weight * max(host.endpoint.weight, 1) / total
        if not any(share.values()):
            return [float(max(h.endpoint.weight, 1)) for h in live]
        return [share[id(h)] for h in live]

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        raise NotImplementedError

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        raise NotImplementedError

    # -- per request ----------------------------------------------------------------

    def _host(self, ep: Endpoint) -> Host | None:
        host = self._by_id.get(id(ep))
        if host is not None and host.endpoint is ep:
            return host
        return self._by_key.get(ep.key)

    def _sweep(self) -> None:
        detector = self._detector
        if detector is None:
            self._wake = INF
            return
        detector.sweep(self._clock())
        self._wake = detector.next_return

    def started(self, ep: Endpoint) -> None:
        host = self._host(ep)
        if host is not None:
            host.outstanding += 1

    def finished(self, ep: Endpoint, seconds: float, status: int | None) -> None:
        host = self._host(ep)
        if host is None:
            return
        if host.outstanding:
            host.outstanding -= 1
        if status is not None and status < 500:
            if host.consecutive_5xx:
                host.consecutive_5xx = host.consecutive_gateway = 0
        elif self._detector is not None:
            self._detector.failure(host, status)

    @property
    def ejections_total(self) -> int:
        return self._detector.ejections_total if self._detector is not None else 0

    @property
    def returns_total(self) -> int:
        return self._detector.returns_total if self._detector is not None else 0

    def snapshot(self) -> list[dict[str, object]]:
        in_use = {id(h) for h in self.live}
        return [
            {
                "address": h.endpoint.address,
                "port": h.endpoint.port,
                "weight": h.endpoint.weight,
                "priority": h.endpoint.priority,
                "locality": "/".join(
                    (
                        h.endpoint.locality.region,
                        h.endpoint.locality.zone,
                        h.endpoint.locality.sub_zone,
                    )
                ).strip("/"),
                "healthy": h.endpoint.healthy,
                "ejected": h.ejected,
                "ejections": h.ejections,
                "in_use": id(h) in in_use,
                "outstanding": h.outstanding,
                "ewma_ms": round(h.ewma * 1000, 3),
                "consecutive_5xx": h.consecutive_5xx,
            }
            for h in self.hosts
        ]


class RoundRobin(BaseBalancer):
    kind = "round_robin"

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        endpoints = [h.endpoint for h in live]
        if len(set(weights)) > 1:
            endpoints = [endpoints[i] for i in _schedule(weights)]
        self._schedule = endpoints
        self._count = len(endpoints)
        self._next = int(self._random() * self._count) if self._count else 0

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        if self._wake != INF and self._clock() >= self._wake:
            self._sweep()
        count = self._count
        if not count:
            return None
        index = self._next
        self._next = index + 1 if index + 1 < count else 0
        return self._schedule[index]


def _schedule(weights: list[float]) -> list[int]:
    """Indices in earliest-deadline-first order over one period of integer ``weights``."""
    total = sum(weights)
    if all(w == int(w) for w in weights) and total <= SCHEDULE_LIMIT:
        integral = [int(w) for w in weights]
        divisor = 0
        for w in integral:
            divisor = math.gcd(divisor, w)
        integral = [w // divisor for w in integral]
    else:
        integral = [max(1, round(w * SCHEDULE_LIMIT / total)) for w in weights]
    heap = [(1.0 / w, i) for i, w in enumerate(integral) if w > 0]
    heapq.heapify(heap)
    order: list[int] = []
    for _ in range(sum(integral)):
        deadline, index = heapq.heappop(heap)
        order.append(index)
        heapq.heappush(heap, (deadline + 1.0 / integral[index], index))
    return order


class Random(BaseBalancer):
    kind = "random"

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        self._endpoints = [h.endpoint for h in live]
        self._count = len(live)
        self._uniform = len(set(weights)) <= 1
        self._cumulative = list(_accumulate(weights))
        self._total = self._cumulative[-1] if self._cumulative else 0.0

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        if self._wake != INF and self._clock() >= self._wake:
            self._sweep()
        count = self._count
        if not count:
            return None
        if self._uniform:
            return self._endpoints[int(self._random() * count)]
        index = bisect.bisect_right(self._cumulative, self._random() * self._total)
        return self._endpoints[index if index < count else count - 1]


def _accumulate(weights: Sequence[float]) -> list[float]:
    running = 0.0
    result = []
    for weight in weights:
        running += weight
        result.append(running)
    return result


class _Choices(BaseBalancer):
    """Shared by the power-of-choices balancers: weighted draws of distinct candidates."""

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        self._live = live
        self._count = len(live)
        self._uniform = len(set(weights)) <= 1
        self._weight = weights
        self._cumulative = _accumulate(weights)
        self._total = self._cumulative[-1] if self._cumulative else 0.0
        self._pairs = self._uniform and self.lb.choice_count == 2
        self._two = not self._uniform and self.lb.choice_count == 2

    def _draw(self) -> int:
        if self._uniform:
            return int(self._random() * self._count)
        index = bisect.bisect_right(self._cumulative, self._random() * self._total)
        return index if index < self._count else self._count - 1

    def _uniform_pair(self, count: int) -> tuple[int, int]:
        """Two different indexes below ``count``, each equally likely."""
        draw = self._random
        first = int(draw() * count)
        second = int(draw() * (count - 1))
        return first, second + 1 if second >= first else second

    def _weighted_pair(self, count: int) -> tuple[int, int]:
        cumulative, total, draw = self._cumulative, self._total, self._random
        first = bisect.bisect_right(cumulative, draw() * total)
        second = bisect.bisect_right(cumulative, draw() * total)
        if first >= count:
            first = count - 1
        if second >= count:
            second = count - 1
        if second == first:
            second = self._second(first)
        return first, second

    def _second(self, first: int) -> int:
        """Another candidate than ``first`` (uniform draws; weighted ones retry a few times)."""
        if self._uniform:
            other = int(self._random() * (self._count - 1))
            return other + 1 if other >= first else other
        for _ in range(4):
            other = self._draw()
            if other != first:
                return other
        return first + 1 if first + 1 < self._count else 0


class LeastRequest(_Choices):
    kind = "least_request"

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        if self._wake != INF and self._clock() >= self._wake:
            self._sweep()
        count = self._count
        if count < 2:
            return self._live[0].endpoint if count else None
        live = self._live
        if self._pairs:
            first, second = self._uniform_pair(count)
            a, b = live[first], live[second]
            return b.endpoint if b.outstanding < a.outstanding else a.endpoint
        if self._two:
            first, second = self._weighted_pair(count)
            a, b = live[first], live[second]
            if b.outstanding >= a.outstanding:
                return a.endpoint
            bias = self.lb.active_request_bias
            weight = self._weight
            if bias == 1.0:
                better = (b.outstanding + 1) / weight[second] < (a.outstanding + 1) / weight[first]
            else:
                better = (b.outstanding + 1) ** bias / weight[second] < (
                    a.outstanding + 1
                ) ** bias / weight[first]
            return b.endpoint if better else a.endpoint
        best = self._draw()
        if self._uniform:
            best_score: float = live[best].outstanding
            for _ in range(self.lb.choice_count - 1):
                other = self._second(best)
                score = live[other].outstanding
                if score < best_score:
                    best, best_score = other, score
            return live[best].endpoint
        bias = self.lb.active_request_bias
        weight = self._weight
        host = live[best]
        best_score = (host.outstanding + 1) ** bias / weight[best]
        for _ in range(self.lb.choice_count - 1):
            other = self._second(best)
            candidate = live[other]
            score = (candidate.outstanding + 1) ** bias / weight[other]
            if score < best_score and candidate.outstanding < host.outstanding:
                best, best_score, host = other, score, candidate
        return host.endpoint


class LatencyAware(_Choices):
    kind = "latency_aware"

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        super()._prepare(live, weights)
        self._decay = self.lb.decay

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        now = self._clock()
        if now >= self._wake:
            self._sweep()
        count = self._count
        if count < 2:
            return self._live[0].endpoint if count else None
        live = self._live
        if self._uniform:
            first, second = self._uniform_pair(count)
        else:
            first, second = self._weighted_pair(count)
        a, b = live[first], live[second]
        decay = self._decay
        # Cost: the EWMA decayed for the time since the last response, x (outstanding + 1);
        # no response yet: free while idle, a large penalty while busy (one probe at a time).
        cost_a = a.ewma
        if cost_a == 0.0:
            cost_a = UNOBSERVED_PENALTY + a.outstanding if a.outstanding else 0.0
        else:
            cost_a *= exp((a.stamp - now) / decay) * (a.outstanding + 1)
        cost_b = b.ewma
        if cost_b == 0.0:
            cost_b = UNOBSERVED_PENALTY + b.outstanding if b.outstanding else 0.0
        else:
            cost_b *= exp((b.stamp - now) / decay) * (b.outstanding + 1)
        if not self._uniform:
            cost_a /= self._weight[first]
            cost_b /= self._weight[second]
        return b.endpoint if cost_b < cost_a else a.endpoint

    def finished(self, ep: Endpoint, seconds: float, status: int | None) -> None:
        host = self._host(ep)
        if host is None:
            return
        if host.outstanding:
            host.outstanding -= 1
        now = self._clock()
        ewma = host.ewma
        if status is None or status >= 500:
            # A fast failure must not make an endpoint look attractive.
            seconds = max(seconds, ewma)
        if seconds >= ewma:
            host.ewma = seconds
        else:
            keep = math.exp(-(now - host.stamp) / self.lb.decay)
            host.ewma = ewma * keep + seconds * (1.0 - keep)
        host.stamp = now
        if status is not None and status < 500:
            if host.consecutive_5xx:
                host.consecutive_5xx = host.consecutive_gateway = 0
        elif self._detector is not None:
            self._detector.failure(host, status)


class _Hashing(BaseBalancer):
    """Ring hash and maglev: a table built once, ejected owners skipped at pick time.

    The table covers the endpoints in use as if nothing were ejected and is
    rebuilt only when that set changes (an EDS update, a health change, a new
    priority). An ejected owner's keys go to the next live entry of the
    table, so an ejection or a return moves only the ejected endpoint's keys
    and costs no rebuild (a maglev table takes a fifth of a second to build).
    """

    _built: tuple[Host, ...] | None = None
    _out: frozenset[int] = frozenset()

    def _rebuild(self) -> None:
        detector = self._detector
        self._wake = detector.next_return if detector is not None else INF
        live = self._select()
        table = self._select(ejections=False)
        if not live or (table and table[0].endpoint.priority != live[0].endpoint.priority):
            table = live
        self.live = tuple(live)
        self.weights = tuple(self._weights(live))
        in_use = {id(h) for h in live}
        self._out = frozenset(id(h.endpoint) for h in table if id(h) not in in_use)
        built = tuple(table)
        if built != self._built:
            self._built = built
            self._prepare(table, self._weights(table))


class RingHash(_Hashing):
    kind = "ring_hash"

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        self._hashes: list[int] = []
        self._owners: list[Endpoint] = []
        if not live:
            return
        smallest = min(weights)
        relative = [w / smallest for w in weights]
        total = sum(relative)
        per_unit = 2 ** math.ceil(math.log2(max(self.lb.min_ring_size / total, 1.0)))
        if per_unit * total > self.lb.max_ring_size:
            per_unit = max(self.lb.max_ring_size / total, 1.0)
        points: list[tuple[int, int]] = []
        for index, host in enumerate(live):
            name = f"{host.endpoint.address}:{host.endpoint.port}_"
            for replica in range(math.ceil(per_unit * relative[index])):
                points.append((stable_hash(f"{name}{replica}"), index))
        points.sort()
        self._hashes = [p[0] for p in points]
        self._owners = [live[p[1]].endpoint for p in points]

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        if self._wake != INF and self._clock() >= self._wake:
            self._sweep()
        hashes = self._hashes
        if not hashes:
            return None
        key = int(self._random() * MASK64) if hash_key is None else hash_key & MASK64
        index = bisect.bisect_left(hashes, key)
        owners = self._owners
        owner = owners[index if index < len(hashes) else 0]
        out = self._out
        if out and id(owner) in out:
            count = len(owners)
            for step in range(1, count):
                owner = owners[(index + step) % count]
                if id(owner) not in out:
                    break
        return owner


class Maglev(_Hashing):
    kind = "maglev"

    def _prepare(self, live: list[Host], weights: list[float]) -> None:
        size = self.lb.table_size
        self._size = size
        self._table: list[Endpoint] = []
        if not live:
            return
        heaviest = max(weights)
        offsets = []
        skips = []
        for host in live:
            name = f"{host.endpoint.address}:{host.endpoint.port}"
            offsets.append(stable_hash(name) % size)
            skips.append(stable_hash(f"{name}#skip") % (size - 1) + 1)
        table: list[int] = [-1] * size
        following = [0] * len(live)
        targets = [0.0] * len(live)
        filled = 0
        iteration = 1
        while filled < size:
            for index in range(len(live)):
                if filled >= size:
                    break
                if iteration * weights[index] < targets[index]:
                    continue
                targets[index] += heaviest
                offset, skip, step = offsets[index], skips[index], following[index]
                slot = (offset + skip * step) % size
                while table[slot] >= 0:
                    step += 1
                    slot = (offset + skip * step) % size
                table[slot] = index
                following[index] = step + 1
                filled += 1
            iteration += 1
        self._table = [live[i].endpoint for i in table]

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        if self._wake != INF and self._clock() >= self._wake:
            self._sweep()
        table = self._table
        if not table:
            return None
        key = int(self._random() * MASK64) if hash_key is None else hash_key & MASK64
        index = key % self._size
        owner = table[index]
        out = self._out
        if out and id(owner) in out:
            size = self._size
            for step in range(1, size):
                owner = table[(index + step) % size]
                if id(owner) not in out:
                    break
        return owner


_KINDS: dict[str, type[BaseBalancer]] = {
    cls.kind: cls for cls in (RoundRobin, Random, LeastRequest, LatencyAware, RingHash, Maglev)
}


def make_balancer(
    lb: LbConfig,
    endpoints: Sequence[Endpoint],
    outlier: OutlierConfig | None = None,
    previous: Balancer | None = None,
    *,
    cluster: str = "",
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Balancer:
    """A balancer of kind ``lb.kind`` over ``endpoints``, keeping ``previous``'s state."""
    return _KINDS[lb.kind](
        lb,
        endpoints,
        outlier,
        previous,
        cluster,
        clock,
        rng if rng is not None else random.Random(),
    )
