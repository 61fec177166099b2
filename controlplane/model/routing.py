"""HTTP and TCP routing: what a ``VirtualService`` says.

Routes keep the order they were written in: the first matching rule wins, as
in Istio and Envoy. Hosts in destinations are already fully qualified
(:func:`controlplane.model.names.fqdn`), so translation never needs the
namespace a route was written in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from controlplane.model.visibility import EXPORTED_EVERYWHERE, ExportTo


class StringMatchKind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: StringMatchKind
    value: str


@dataclass(frozen=True, slots=True)
class HttpMatch:
    """One ``match`` entry; every condition set here must hold."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch | None], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()
    port: int | None = None
    ignore_uri_case: bool = False
    gateways: tuple[str, ...] = ()

    @property
    def is_catch_all(self) -> bool:
        """True when this match accepts every request (a ``/`` prefix or nothing at all)."""
        uri_all = self.uri is None or (
            self.uri.kind is StringMatchKind.PREFIX and self.uri.value in ("", "/")
        )
        return (
            uri_all
            and self.scheme is None
            and self.method is None
            and self.authority is None
            and not self.headers
            and not self.without_headers
            and not self.query_params
            and self.port is None
            and not self.gateways
        )


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteDestination:
    host: str
    subset: str | None = None
    port: int | None = None
    weight: int = 100
    request_headers: HeaderOperations = HeaderOperations()
    response_headers: HeaderOperations = HeaderOperations()


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    scheme: str | None = None
    redirect_code: int = 301


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout: timedelta | None = None
    retry_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delay:
    fixed_delay: timedelta
    percentage: float = 100.0


@dataclass(frozen=True, slots=True)
class Abort:
    http_status: int | None = None
    grpc_status: str | None = None
    percentage: float = 100.0


@dataclass(frozen=True, slots=True)
class Fault:
    delay: Delay | None = None
    abort: Abort | None = None


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """One ``http[]`` rule. Exactly one of ``destinations`` and ``redirect`` is non-empty."""

    name: str = ""
    matches: tuple[HttpMatch, ...] = ()
    destinations: tuple[RouteDestination, ...] = ()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    timeout: timedelta | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirror: RouteDestination | None = None
    mirror_percentage: float | None = None
    request_headers: HeaderOperations = HeaderOperations()
    response_headers: HeaderOperations = HeaderOperations()

    @property
    def is_catch_all(self) -> bool:
        for match in self.matches:
            if match.is_catch_all:
                return True
        return not self.matches


@dataclass(frozen=True, slots=True)
class TcpMatch:
    port: int | None = None
    destination_subnets: tuple[str, ...] = ()
    source_labels: tuple[tuple[str, str], ...] = ()
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TcpRoute:
    matches: tuple[TcpMatch, ...] = ()
    destinations: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualService:
    """A ``VirtualService``.

    ``hosts`` are FQDNs; ``gateways`` are ``namespace/name`` or ``mesh``.
    """

    namespace: str
    name: str
    hosts: tuple[str, ...]
    gateways: tuple[str, ...] = ("mesh",)
    http: tuple[HttpRoute, ...] = ()
    tcp: tuple[TcpRoute, ...] = ()
    export_to: ExportTo = EXPORTED_EVERYWHERE

    @property
    def applies_to_mesh(self) -> bool:
        return "mesh" in self.gateways
