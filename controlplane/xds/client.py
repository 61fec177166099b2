"""Sans-IO core of one state-of-the-world xDS client stream.

:class:`SotwClient` is the mirror image of :class:`controlplane.xds.sotw.SotwStream`:
it builds ``DiscoveryRequest`` messages, consumes ``DiscoveryResponse``
messages, and answers each response with an ACK or a NACK. It owns no socket;
the caller sends what it returns. Pilotfish's thin proxy agents drive it over
gRPC, and the tests pair it with the server core in memory.

Per type it keeps the subscription, the newest nonce received, the last
accepted version and the accepted resources (decoded messages by name). A
response is rejected (NACKed, with the last accepted version and an
``error_detail``) when an ``Any`` does not match the response's ``type_url``,
when a name repeats, or when the pluggable ``validate`` callback raises.
Full-state types (LDS, CDS) are replaced by every accepted response; partial
types (RDS, EDS) are merged, and lose a resource only when it is unsubscribed.

With ``follow=True`` the client behaves like Envoy: after accepting clusters
it subscribes to the load assignments of EDS clusters, and after accepting
listeners to the route configurations their connection managers name; the
subscription request follows the ACK. Resources no longer referenced are
dropped with the unsubscription.

A subscribed name that never arrives is reported by :meth:`SotwClient.absent`
after ``absent_timeout`` seconds (full-state types report it as soon as a
response lacks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import PilotfishError, ProtocolError
from controlplane.xds.snapshot import resource_references
from controlplane.xds.subscription import Subscription
from controlplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    RESOURCE_TYPES,
    ROUTE,
    is_full_state,
    push_rank,
)

Validator = Callable[[str, Mapping[str, Any]], None]
"""Called with a response's type URL and its decoded resources by name; raise to NACK."""

INVALID_ARGUMENT = 3
DEPENDENT_TYPES: Mapping[str, str] = MappingProxyType({CLUSTER: ENDPOINT, LISTENER: ROUTE})


class RejectedResponse(PilotfishError):
    """Internal: the reason a response is NACKed."""


@dataclass(slots=True)
class _ClientType:
    subscription: Subscription = field(default_factory=Subscription)
    version: str = ""
    nonce: str = ""
    resources: dict[str, Any] = field(default_factory=dict)
    requested_at: dict[str, float] = field(default_factory=dict)
    answered: bool = False
    last_error: str = ""


class _TypeStateBase(Protocol):
    nonce: str
    last_error: str
    resources: dict[str, Any]


TypeState = TypeVar("TypeState", bound=_TypeStateBase)


class ClientCore(Generic[TypeState]):
    """What both client cores share: the node and when to send it, the options, and
    the per-type state (``TypeState``) of the variant."""

    def __init__(
        self,
        node: base_pb2.Node,
        *,
        validate: Validator | None = None,
        follow: bool = False,
        node_on_every_request: bool = False,
        absent_timeout: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._validate = validate
        self._follow = follow
        self._node_always = node_on_every_request
        self._absent_timeout = absent_timeout
        self._clock = clock
        self._types: dict[str, TypeState] = {}
        self._node_sent = False

    def nonce(self, type_url: str) -> str:
        state = self._types.get(type_url)
        return state.nonce if state else ""

    def last_error(self, type_url: str) -> str:
        state = self._types.get(type_url)
        return state.last_error if state else ""

    def resources(self, type_url: str) -> Mapping[str, Any]:
        """Accepted resources of ``type_url`` by name (decoded messages)."""
        state = self._types.get(type_url)
        return MappingProxyType(state.resources if state else {})

    def _with_node(self, request: Any) -> Any:
        """``request``, carrying the node when it must (the first one, or every one)."""
        if self._node_always or not self._node_sent:
            request.node.CopyFrom(self._node)
            self._node_sent = True
        return request


class SotwClient(ClientCore[_ClientType]):
    def request(self, type_url: str, resource_names: Sequence[str]) -> Any:
        """Replace the subscription of ``type_url`` (a SotW name list) and build the request."""
        state = self._types.setdefault(type_url, _ClientType())
        before = set(state.subscription.names)
        state.subscription.replace(resource_names)
        now = self._clock()
        for name in state.subscription.names - before:
            state.requested_at[name] = now
        for name in list(state.resources):
            if not state.subscription.wants(name):
                del state.resources[name]
        for name in list(state.requested_at):
            if name not in state.subscription.names:
                del state.requested_at[name]
        return self._build(type_url, state)

    def subscribe(self, type_url: str, *names: str) -> Any:
        """Add ``names`` (``"*"`` for wildcard) to the subscription."""
        current = self._types.get(type_url)
        listed = current.subscription.sotw_names() if current else []
        return self.request(type_url, sorted({*listed, *names}))

    def unsubscribe(self, type_url: str, *names: str) -> Any:
        """Remove ``names`` from the subscription; their resources are forgotten."""
        current = self._types.get(type_url)
        listed = current.subscription.sotw_names() if current else []
        return self.request(type_url, [n for n in listed if n not in names])

    def on_response(self, response: Any) -> list[Any]:
        """Consume a response; return the ACK or NACK, then any follow-up subscriptions."""
        type_url: str = response.type_url
        state = self._types.get(type_url)
        if state is None:
            raise ProtocolError("server", f"response for {type_url}, which was never requested")
        state.nonce = response.nonce
        try:
            decoded = self._decode(type_url, response)
            if self._validate is not None:
                self._validate(type_url, MappingProxyType(decoded))
        except Exception as exc:
            state.last_error = str(exc)
            nack = self._build(type_url, state)
            nack.error_detail.code = INVALID_ARGUMENT
            nack.error_detail.message = str(exc) or type(exc).__name__
            return [nack]
        wanted = {n: m for n, m in decoded.items() if state.subscription.wants(n)}
        if is_full_state(type_url):
            state.resources = wanted
        else:
            state.resources.update(wanted)
        state.version = response.version_info
        state.answered = True
        state.last_error = ""
        requests = [self._build(type_url, state)]
        if self._follow and type_url in DEPENDENT_TYPES:
            follow_up = self._follow_dependents(type_url, state)
            if follow_up is not None:
                requests.append(follow_up)
        return requests

    def reconnect(self) -> list[Any]:
        """Requests that restore every subscription on a new stream, in push order.

        They carry the last accepted versions and no nonces (nonces belong to a stream).
        """
        self._node_sent = False
        requests = []
        for type_url in sorted(self._types, key=push_rank):
            state = self._types[type_url]
            state.nonce = ""
            requests.append(self._build(type_url, state))
        return requests

    def version(self, type_url: str) -> str:
        state = self._types.get(type_url)
        return state.version if state else ""

    def subscription(self, type_url: str) -> list[str]:
        """The subscription of ``type_url`` as its SotW name list."""
        state = self._types.get(type_url)
        return state.subscription.sotw_names() if state else []

    def absent(self, type_url: str) -> set[str]:
        """Explicitly subscribed names the client must now treat as not existing."""
        state = self._types.get(type_url)
        if state is None:
            return set()
        missing = set(state.subscription.names - set(state.resources))
        if is_full_state(type_url) and state.answered:
            return missing
        deadline = self._clock() - self._absent_timeout
        return {n for n in missing if state.requested_at.get(n, deadline + 1) <= deadline}

    def _decode(self, type_url: str, response: Any) -> dict[str, Any]:
        kind = RESOURCE_TYPES.get(type_url)
        if kind is None:
            raise RejectedResponse(f"unsupported resource type {type_url}")
        decoded: dict[str, Any] = {}
        for body in response.resources:
            if body.type_url != type_url:
                raise RejectedResponse(f"resource of type {body.type_url} in a {type_url} response")
            message = kind.decode(body)
            name = kind.name_of(message)
            if name in decoded:
                raise RejectedResponse(f"resource {name!r} appears twice in one response")
            decoded[name] = message
        return decoded

    def _follow_dependents(self, type_url: str, state: _ClientType) -> Any | None:
        dependent = DEPENDENT_TYPES[type_url]
        names = {
            name
            for message in state.resources.values()
            for url, name in resource_references(message)
            if url == dependent
        }
        current = self._types.get(dependent)
        if current is None and not names:
            return None
        if current is not None and current.subscription.names == names:
            return None
        return self.request(dependent, sorted(names))

    def _build(self, type_url: str, state: _ClientType) -> Any:
        request = discovery_pb2.DiscoveryRequest(
            version_info=state.version,
            type_url=type_url,
            response_nonce=state.nonce,
            resource_names=state.subscription.sotw_names(),
        )
        return self._with_node(request)
