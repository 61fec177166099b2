"""What a matched route tells the data plane to do: the contract between table and proxy.

The forwarding table (:mod:`agents.table`) turns each Envoy ``Route`` into one
of :data:`Action` when it is built, once per accepted update; the HTTP proxy
(:mod:`agents.http_proxy`) carries the action out per request. Everything
that can be decided at build time is decided here already: regexes compiled,
cumulative weights summed, header names lower-cased, header edits of the
route, virtual host and route configuration merged in Envoy's order (route
first, then virtual host, then route configuration), durations in seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class HeaderValue:
    name: str
    """Lower-case."""
    value: str
    append: bool = True
    """Append to an existing value (True) or replace it (False)."""


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()
    """Lower-case names, removed before ``add`` is applied."""


NO_EDITS = HeaderEdits()


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int = 1
    request_headers: HeaderEdits = NO_EDITS
    response_headers: HeaderEdits = NO_EDITS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_on: frozenset[str]
    """Envoy's condition names: ``5xx``, ``gateway-error``, ``connect-failure``,
    ``reset``, ``retriable-4xx``, ``refused-stream``, ``retriable-status-codes``."""
    num_retries: int = 1
    per_try_timeout: float | None = None
    base_interval: float = 0.025
    max_interval: float = 0.25
    retriable_status_codes: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class FaultDelay:
    seconds: float
    percent: float
    """0 to 100."""


@dataclass(frozen=True, slots=True)
class FaultAbort:
    status: int
    percent: float


@dataclass(frozen=True, slots=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class HashPolicy:
    kind: Literal["header", "cookie", "source_ip", "query_parameter"]
    name: str = ""
    """Header (lower-case), cookie or query parameter name; empty for ``source_ip``."""
    terminal: bool = False
    cookie_ttl: float | None = None
    """Cookie only: when set and the request has no such cookie, Envoy makes one up and sets
    it on the response with this max-age (0: a session cookie), so the client sticks."""
    cookie_path: str = ""


@dataclass(frozen=True, slots=True)
class Forward:
    """Proxy to one of ``clusters``, picked by weight."""

    clusters: tuple[WeightedCluster, ...]
    cumulative_weights: tuple[int, ...] = ()
    """Running sums of the weights, for a bisect on a random number below the total."""
    timeout: float | None = 15.0
    """The whole exchange (Envoy's default 15 s); None: no limit."""
    idle_timeout: float | None = None
    retry: RetryPolicy | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[re.Pattern[str], str] | None = None
    host_rewrite: str | None = None
    hash_policies: tuple[HashPolicy, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    fault: Fault | None = None
    upgrades: frozenset[str] = frozenset()
    """Upgrade protocols the route allows (lower-case, e.g. ``websocket``)."""
    request_headers: HeaderEdits = NO_EDITS
    response_headers: HeaderEdits = NO_EDITS
    matched_prefix: str | None = None
    """With ``prefix_rewrite``: the route's prefix (or exact path), which the rewrite
    replaces: the path's first ``len(matched_prefix)`` characters (matched without
    regard to case when the route ignores case)."""


@dataclass(frozen=True, slots=True)
class Redirect:
    status: int = 301
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    prefix_rewrite: str | None = None
    strip_query: bool = False
    matched_prefix: str | None = None
    """As :attr:`Forward.matched_prefix`."""


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)


Action = Forward | Redirect | DirectResponse
