"""Sans-IO core of one incremental (delta) xDS client stream.

:class:`DeltaClient` is the mirror image of :class:`controlplane.xds.delta.DeltaStream`,
as :class:`controlplane.xds.client.SotwClient` is of the state-of-the-world
server core: it builds ``DeltaDiscoveryRequest`` messages, consumes
``DeltaDiscoveryResponse`` messages, and answers every response with an ACK or
a NACK. It owns no socket; the caller sends what it returns.

Per type it keeps the subscription (explicit names, a wildcard flag, and
whether that wildcard is the legacy one: a first request with empty lists,
LDS and CDS only), the accepted resources (decoded messages) with their
versions, the newest nonce, and the names the server reported as not
existing. Requests carry only changes: :meth:`DeltaClient.subscribe` and
:meth:`DeltaClient.unsubscribe` send the names they add or drop. Subscribing to
a name again asks the server to send it again.

A response is rejected (NACKed with its nonce and an ``error_detail``, and
nothing of it applied) when an ``Any`` does not match the response's
``type_url``, when a resource's name differs from the name of the message it
holds, when a name repeats or is both updated and removed, or when the
pluggable ``validate`` callback raises. An accepted response upserts the
resources the client asked for (others are ignored) and drops the names in
``removed_resources``; a removed name that is explicitly subscribed is then
known not to exist (:meth:`DeltaClient.absent`).

Unsubscribing an explicit name while on wildcard keeps the resource: only the
server knows whether the wildcard still covers it, and it answers with the
resource or its removal. Unsubscribing anything else forgets the resource at
once; leaving the wildcard forgets everything not explicitly subscribed.

With ``follow=True`` the client behaves like Envoy: after accepting clusters
it subscribes to the load assignments of its EDS clusters and unsubscribes
from those no longer used, and after accepting listeners does the same for
the route configurations their connection managers name. The subscription
change follows the ACK.

:meth:`DeltaClient.reconnect` starts a new stream: it restates every
subscription (the legacy wildcard as empty lists, otherwise ``"*"`` and the
names) with ``initial_resource_versions`` listing what the client holds, so
that the server resends only what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import ProtocolError
from controlplane.xds.client import (
    DEPENDENT_TYPES,
    INVALID_ARGUMENT,
    ClientCore,
    RejectedResponse,
)
from controlplane.xds.delta import LEGACY_WILDCARD_TYPES
from controlplane.xds.snapshot import resource_references
from controlplane.xds.types import RESOURCE_TYPES, WILDCARD, push_rank


@dataclass(slots=True)
class _DeltaClientType:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    legacy: bool = False
    """On the legacy wildcard: it was never expressed with ``"*"``."""
    resources: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    """Unsubscribed while on wildcard: kept until the server says whether it still applies."""
    absent: set[str] = field(default_factory=set)
    requested_at: dict[str, float] = field(default_factory=dict)
    nonce: str = ""
    system_version: str = ""
    last_error: str = ""

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def forget(self, name: str) -> None:
        self.resources.pop(name, None)
        self.versions.pop(name, None)


@dataclass(slots=True)
class _Decoded:
    messages: dict[str, Any]
    versions: dict[str, str]


class DeltaClient(ClientCore[_DeltaClientType]):
    def subscribe(self, type_url: str, *names: str) -> Any:
        """Subscribe to ``names`` (``"*"`` for the wildcard) and build the request.

        The first subscription of LDS or CDS without names is the legacy
        wildcard: a request with empty lists.
        """
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = _DeltaClientType()
            if not names and type_url in LEGACY_WILDCARD_TYPES:
                state.wildcard = state.legacy = True
        return self._change(type_url, state, names, ())

    def unsubscribe(self, type_url: str, *names: str) -> Any:
        """Unsubscribe from ``names`` (``"*"`` leaves the wildcard) and build the request."""
        state = self._types.setdefault(type_url, _DeltaClientType())
        return self._change(type_url, state, (), names)

    def on_response(self, response: Any) -> list[Any]:
        """Consume a response; return the ACK or NACK, then any follow-up subscription."""
        type_url: str = response.type_url
        state = self._types.get(type_url)
        if state is None:
            raise ProtocolError("server", f"response for {type_url}, which was never requested")
        state.nonce = response.nonce
        try:
            decoded = self._decode(type_url, response)
            if self._validate is not None:
                self._validate(type_url, MappingProxyType(decoded.messages))
        except Exception as exc:
            state.last_error = str(exc)
            nack = self._build(type_url, response_nonce=response.nonce)
            nack.error_detail.code = INVALID_ARGUMENT
            nack.error_detail.message = str(exc) or type(exc).__name__
            return [nack]
        for name, message in decoded.messages.items():
            state.ambiguous.discard(name)
            if not state.wants(name):
                state.forget(name)
                continue
            state.resources[name] = message
            state.versions[name] = decoded.versions[name]
            state.absent.discard(name)
            state.requested_at.pop(name, None)
        for name in response.removed_resources:
            state.ambiguous.discard(name)
            state.forget(name)
            if name in state.names:
                state.absent.add(name)
                state.requested_at.pop(name, None)
        state.system_version = response.system_version_info
        state.last_error = ""
        requests = [self._build(type_url, response_nonce=response.nonce)]
        if self._follow and type_url in DEPENDENT_TYPES:
            follow_up = self._follow_dependents(type_url, state)
            if follow_up is not None:
                requests.append(follow_up)
        return requests

    def reconnect(self) -> list[Any]:
        """Requests that restore every subscription on a new stream, in push order.

        Each carries the whole subscription and, in ``initial_resource_versions``,
        the versions of every resource held; none carries a nonce.
        """
        self._node_sent = False
        requests = []
        for type_url in sorted(self._types, key=push_rank):
            state = self._types[type_url]
            state.nonce = ""
            if not state.wildcard and not state.names:
                continue
            legacy = state.legacy and not state.names
            listed = [] if legacy else ([WILDCARD] if state.wildcard else []) + sorted(state.names)
            request = self._build(type_url, subscribe=listed)
            for name, version in sorted(state.versions.items()):
                request.initial_resource_versions[name] = version
            requests.append(request)
        return requests

    def system_version(self, type_url: str) -> str:
        """``system_version_info`` of the last accepted response (informational)."""
        state = self._types.get(type_url)
        return state.system_version if state else ""

    def versions(self, type_url: str) -> Mapping[str, str]:
        """``{name: version}`` of the accepted resources of ``type_url``."""
        state = self._types.get(type_url)
        return MappingProxyType(state.versions if state else {})

    def subscription(self, type_url: str) -> list[str]:
        """``"*"`` when on wildcard, then the explicit names, sorted."""
        state = self._types.get(type_url)
        if state is None:
            return []
        return ([WILDCARD] if state.wildcard else []) + sorted(state.names)

    def absent(self, type_url: str) -> set[str]:
        """Explicit names the server reported missing, or unanswered for ``absent_timeout``."""
        state = self._types.get(type_url)
        if state is None:
            return set()
        deadline = self._clock() - self._absent_timeout
        late = {n for n, at in state.requested_at.items() if at <= deadline}
        return (state.absent | late) & state.names

    def _change(
        self, type_url: str, state: _DeltaClientType, added: Iterable[str], dropped: Iterable[str]
    ) -> Any:
        subscribe = sorted(set(added))
        unsubscribe = sorted(set(dropped) - set(subscribe))
        now = self._clock()
        for name in subscribe:
            if name == WILDCARD:
                state.wildcard = True
                state.legacy = False
                continue
            state.names.add(name)
            state.absent.discard(name)
            state.requested_at[name] = now
        for name in unsubscribe:
            if name == WILDCARD:
                state.wildcard = state.legacy = False
                for held in set(state.resources) - state.names:
                    state.forget(held)
                state.ambiguous.clear()
                continue
            if name not in state.names:
                continue
            state.names.discard(name)
            state.absent.discard(name)
            state.requested_at.pop(name, None)
            if state.wildcard:
                state.ambiguous.add(name)
            else:
                state.forget(name)
        return self._build(type_url, subscribe=subscribe, unsubscribe=unsubscribe)

    def _decode(self, type_url: str, response: Any) -> _Decoded:
        kind = RESOURCE_TYPES.get(type_url)
        if kind is None:
            raise RejectedResponse(f"unsupported resource type {type_url}")
        decoded = _Decoded({}, {})
        for item in response.resources:
            body = item.resource
            if body.type_url != type_url:
                raise RejectedResponse(f"resource of type {body.type_url} in a {type_url} response")
            message = kind.decode(body)
            name = kind.name_of(message)
            if item.name and item.name != name:
                raise RejectedResponse(f"resource {item.name!r} holds {kind.short_name} {name!r}")
            if name in decoded.messages:
                raise RejectedResponse(f"resource {name!r} appears twice in one response")
            decoded.messages[name] = message
            decoded.versions[name] = item.version
        both = sorted(set(decoded.messages) & set(response.removed_resources))
        if both:
            raise RejectedResponse(f"resource {both[0]!r} is both updated and removed")
        return decoded

    def _follow_dependents(self, type_url: str, state: _DeltaClientType) -> Any | None:
        dependent = DEPENDENT_TYPES[type_url]
        needed = {
            name
            for message in state.resources.values()
            for url, name in resource_references(message)
            if url == dependent
        }
        current = self._types.get(dependent)
        have = current.names if current is not None else set()
        if needed == have:
            return None
        if current is None:
            current = self._types[dependent] = _DeltaClientType()
        return self._change(dependent, current, needed - have, have - needed)

    def _build(
        self,
        type_url: str,
        *,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        response_nonce: str = "",
    ) -> Any:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=response_nonce,
        )
        return self._with_node(request)
