"""The agent's xDS subscription: the sans-IO client cores driven over grpc.aio.

:class:`XdsClient` runs one ADS stream at a time, state of the world
(:class:`~controlplane.xds.client.SotwClient`) or delta
(:class:`~controlplane.xds.delta_client.DeltaClient`), both with
``follow=True``: Listeners and Clusters on the wildcard, and the
RouteConfigurations and ClusterLoadAssignments they reference by name, as
Envoy subscribes. As Envoy does, listeners are asked for only once clusters
and their endpoints arrived (or after ``listener_wait``), so a fresh agent
never routes to a cluster still warming; :attr:`XdsClient.ready` is set once
every type subscribed has been answered (or a cached configuration loaded).

Applying is two-phase, around the core's bookkeeping, so that what is
ACKed is what is in force and a NACK leaves everything as it was:

1. The core decodes a response and calls its ``validate`` callback. The
   callback computes the *candidate*: every type held, with this response's
   type replaced (LDS, CDS) or merged (RDS, EDS, delta) exactly as the core is
   about to, and dependents no longer referenced dropped as the follow-up
   unsubscription will drop them. It hands the candidate to the sink's
   :meth:`ConfigSink.prepare` (which builds a forwarding table).
   :class:`~agents.errors.ConfigRejected` there makes the core NACK with its
   text as ``error_detail`` and keep the previous resources; nothing changed.
2. The core accepted: :meth:`ConfigSink.commit` puts the prepared table in
   force (listeners, cache file) and only then is the ACK sent. A commit that
   fails (a port taken) is NACKed with the last committed version instead, and
   the core is put back on what is in force, so later responses still apply.

A candidate whose content equals what is in force is not prepared again: a
server that resends the same resources after a reconnect costs a comparison,
not a table build. Only versions changed: ``commit(None, held)`` records them.

The stream is restarted with gRPC's connection backoff (:mod:`agents.backoff`),
reset by every response. A new stream starts with the core's ``reconnect()``
requests: every subscription with the versions held (SotW ``version_info``,
delta ``initial_resource_versions``), so an unchanged configuration is not
sent again. A configuration loaded from the cache seeds the core the same
way before the first connection (:meth:`XdsClient.load`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import structlog
from envoy.service.discovery.v3 import discovery_pb2

from agents.backoff import Backoff
from agents.cache import HeldConfig, TypeConfig
from agents.errors import ConfigRejected
from controlplane.errors import ProtocolError
from controlplane.xds.client import DEPENDENT_TYPES, SotwClient
from controlplane.xds.delta_client import DeltaClient
from controlplane.xds.snapshot import resource_references
from controlplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    WILDCARD,
    is_full_state,
    push_rank,
    short_name,
)

log = structlog.get_logger(__name__)

Resources = Mapping[str, Mapping[str, Any]]
"""Decoded resources by name, by type URL (always the four types, possibly empty)."""

TYPES: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
WILDCARD_TYPES: tuple[str, ...] = (CLUSTER, LISTENER)
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ConfigSink(Protocol):
    def prepare(self, resources: Resources, versions: Mapping[str, str]) -> Any:
        """Build what ``resources`` mean (``versions`` by type); raise ConfigRejected to NACK."""

    async def commit(self, prepared: Any | None, held: HeldConfig) -> None:
        """Put ``prepared`` in force (None: content unchanged, only versions) before the ACK."""


@dataclass(slots=True)
class ClientStats:
    connects: int = 0
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    applies: int = 0
    acks_by_type: dict[str, int] = field(default_factory=dict)
    nacks_by_type: dict[str, int] = field(default_factory=dict)
    """By type URL, for the agent's metrics."""

    def ack(self, type_url: str) -> None:
        self.acks += 1
        self.acks_by_type[type_url] = self.acks_by_type.get(type_url, 0) + 1

    def nack(self, type_url: str) -> None:
        self.nacks += 1
        self.nacks_by_type[type_url] = self.nacks_by_type.get(type_url, 0) + 1


class XdsClient:
    def __init__(
        self,
        server: str,
        node: Any,
        sink: ConfigSink,
        *,
        delta: bool = False,
        backoff: Backoff | None = None,
        channel_options: tuple[tuple[str, Any], ...] = (),
        listener_wait: float = 15.0,
    ) -> None:
        self.server = server
        self.delta = delta
        self._node = node
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._channel_options = (
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *channel_options,
        )
        self.listener_wait = listener_wait
        """Seconds after clusters arrive to subscribe to listeners without all endpoints."""
        self.stats = ClientStats()
        self.last_error = ""
        self.ready = asyncio.Event()
        """Set once a configuration is in force: the cached one, or the first complete
        one received (clusters, endpoints, listeners and routes each answered)."""
        self._applied: dict[str, dict[str, Any]] = {url: {} for url in TYPES}
        self._committed = HeldConfig()
        self._prepared: Any | None = None
        self._changed = False
        self._incoming: Any = None
        self._seeding = False
        self._answered: set[str] = set()
        """Types with an accepted response (or a cached configuration)."""
        self._endpoints_late = False
        self.core: SotwClient | DeltaClient = self._new_core()

    @property
    def held(self) -> HeldConfig:
        """What is in force, with the versions it came with."""
        return self._committed

    def _new_core(self) -> SotwClient | DeltaClient:
        core: SotwClient | DeltaClient
        if self.delta:
            core = DeltaClient(self._node, validate=self._validate, follow=True)
        else:
            core = SotwClient(self._node, validate=self._validate, follow=True)
        return core

    def _subscribe_wildcard(self, url: str) -> Any | None:
        """The request subscribing to all of ``url``, or None when already subscribed."""
        if WILDCARD in self.core.subscription(url):
            return None
        if isinstance(self.core, DeltaClient):
            return self.core.subscribe(url, WILDCARD)
        return self.core.request(url, [WILDCARD])

    def _listeners_due(self) -> Any | None:
        """Subscribe to listeners once clusters (and their endpoints) arrived, as Envoy does.

        Listeners then never point at clusters still warming on a fresh start.
        """
        if CLUSTER not in self._answered:
            return None
        if self.core.subscription(ENDPOINT) and ENDPOINT not in self._answered:
            return None
        return self._subscribe_wildcard(LISTENER)

    async def load(self, cached: HeldConfig) -> bool:
        """Put a cached configuration in force and seed the core with it, before connecting.

        False (logged, nothing changed) when the sink does not accept it; an error
        putting it in force propagates.
        """
        self._seeding = True
        try:
            for url in sorted(cached.types, key=push_rank):
                type_config = cached.types[url]
                if url in WILDCARD_TYPES:
                    self._subscribe_wildcard(url)
                elif not self.core.subscription(url):
                    continue  # nothing held references it any more
                self.core.on_response(self._seed_response(url, type_config))
                self._answered.add(url)
        finally:
            self._seeding = False
        resources = self._core_resources()
        held = self._held_from_core()
        try:
            prepared = self._sink.prepare(resources, _type_versions(held))
        except ConfigRejected as exc:
            log.warning("agent_cache_rejected", error_detail=str(exc))
            self.core = self._new_core()
            self._answered.clear()
            return False
        await self._sink.commit(prepared, held)  # its failure (a port taken) is the caller's
        self._applied = resources
        self._committed = held
        self.stats.applies += 1
        self.ready.set()
        log.info("agent_cache_applied", versions=_versions(held))
        return True

    def _seed_response(self, url: str, held: TypeConfig) -> Any:
        if self.delta:
            response = discovery_pb2.DeltaDiscoveryResponse(
                type_url=url, system_version_info=held.version
            )
            for name, message in sorted(held.resources.items()):
                item = response.resources.add(
                    name=name, version=held.resource_versions.get(name, "")
                )
                item.resource.Pack(message)
            return response
        sotw = discovery_pb2.DiscoveryResponse(type_url=url, version_info=held.version)
        for _, message in sorted(held.resources.items()):
            body: Any = sotw.resources.add()
            body.Pack(message)
        return sotw

    async def run(self) -> None:
        """Keep a stream open, reconnecting with backoff, until cancelled."""
        while True:
            try:
                await self._session()
                self.last_error = "the server closed the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except ProtocolError as exc:
                self.last_error = str(exc)
            except Exception as exc:  # a bug must not end the subscription for good
                log.exception("xds_client_failed")
                self.last_error = repr(exc)
            delay = self._backoff.next_delay()
            log.warning(
                "xds_disconnected",
                server=self.server,
                error=self.last_error,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(
            self.server, options=list(self._channel_options)
        ) as channel:
            if isinstance(self.core, DeltaClient):
                method = channel.stream_stream(
                    ADS + "DeltaAggregatedResources",
                    request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                    response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
                )
            else:
                method = channel.stream_stream(
                    ADS + "StreamAggregatedResources",
                    request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                    response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
                )
            call: Any = method()
            writing = asyncio.Lock()
            async with writing:
                for request in self.initial_requests():
                    await call.write(request)
            late = asyncio.create_task(self._listeners_anyway(call, writing))
            try:
                await self._read(call, writing)
            finally:
                late.cancel()

    def initial_requests(self) -> list[Any]:
        """The requests that open a stream: every subscription, with the versions held."""
        self._subscribe_wildcard(CLUSTER)
        self._listeners_due()  # a cached configuration may have its clusters already
        return list(self.core.reconnect())

    async def _read(self, call: Any, writing: asyncio.Lock) -> None:
        answered = False
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            if not answered:
                answered = True
                self.stats.connects += 1
                log.info("xds_connected", server=self.server, delta=self.delta)
            self._backoff.reset()
            requests = await self.handle(response)
            async with writing:
                for request in requests:
                    await call.write(request)

    async def _listeners_anyway(self, call: Any, writing: asyncio.Lock) -> None:
        """Subscribe to listeners even if the endpoints of some clusters never arrive."""
        await asyncio.sleep(self.listener_wait)
        if CLUSTER not in self._answered:
            return
        request = self._subscribe_wildcard(LISTENER)
        if request is not None:
            log.warning("xds_endpoints_late", waited=self.listener_wait)
            self._endpoints_late = True
            async with writing:
                await call.write(request)

    async def handle(self, response: Any) -> list[Any]:
        """Consume one response; return the requests to send (ACK or NACK, then follow-ups)."""
        self.stats.responses += 1
        self._incoming = response
        self._prepared = None
        self._changed = False
        try:
            requests = self.core.on_response(response)
        finally:
            self._incoming = None
        url = response.type_url
        reply = requests[0]
        if reply.HasField("error_detail"):
            self.stats.nack(url)
            log.warning(
                "xds_nack_sent",
                type=short_name(url),
                nonce=response.nonce,
                error_detail=reply.error_detail.message,
            )
            return requests
        held = self._held_from_core()
        if self._changed or _versions(held) != _versions(self._committed):
            try:
                await self._sink.commit(self._prepared if self._changed else None, held)
            except Exception as exc:
                log.error("agent_apply_failed", type=short_name(url), error=repr(exc))
                self.stats.nack(url)
                if not isinstance(self.core, DeltaClient):  # a delta NACK has no version
                    reply.version_info = self._committed_version(url)
                reply.error_detail.code = 3
                reply.error_detail.message = (
                    str(exc)
                    if isinstance(exc, ConfigRejected)
                    else f"cannot apply {short_name(url)}: {exc}"
                )
                return [reply, *self._restore(url, response.nonce)]
            if self._changed:
                self._applied = self._core_resources()
                self.stats.applies += 1
            self._committed = held
        self._prepared = None
        self._answered.add(url)
        self.stats.ack(url)
        log.debug("xds_ack_sent", type=short_name(url), nonce=response.nonce)
        if not self.ready.is_set() and self._initial_fetch_done():
            self.ready.set()
        listeners = self._listeners_due()
        return requests if listeners is None else [*requests, listeners]

    def _restore(self, url: str, nonce: str) -> list[Any]:
        """Put the core back on what is in force after the commit of a ``url`` response failed.

        The core accepted the response before the commit failed; left as it is, every later
        candidate would be built on resources that are not in force (a listener whose port is
        taken), and every later response of any type NACKed with the same error. Returns the
        subscription changes the restored resources need.
        """
        follow_ups: list[Any] = []
        self._seeding = True
        try:
            for restored in (url, DEPENDENT_TYPES.get(url)):
                if restored is None or not self.core.subscription(restored):
                    continue
                committed = self._committed.types.get(restored, TypeConfig())
                seed = self._seed_response(restored, committed)
                seed.nonce = nonce if restored == url else self.core.nonce(restored)
                if isinstance(self.core, DeltaClient):
                    gone = set(self.core.resources(restored)) - set(committed.resources)
                    seed.removed_resources.extend(sorted(gone))
                follow_ups.extend(self.core.on_response(seed)[1:])
        finally:
            self._seeding = False
        return follow_ups

    def _initial_fetch_done(self) -> bool:
        """Every type subscribed so far has been answered once, listeners included."""
        if LISTENER not in self._answered:
            return False
        waited = {ENDPOINT} if self._endpoints_late else set()
        return all(
            url in self._answered or url in waited for url in TYPES if self.core.subscription(url)
        )

    def _validate(self, type_url: str, decoded: Mapping[str, Any]) -> None:
        if self._seeding:
            return
        candidate = self._candidate(type_url, decoded)
        touched = (type_url, DEPENDENT_TYPES.get(type_url, type_url))
        unchanged = all(candidate[url] == self._applied[url] for url in touched)
        if unchanged and self.stats.applies:
            return
        versions = _type_versions(self._committed)
        incoming = self._incoming
        versions[type_url] = (
            incoming.system_version_info
            if isinstance(self.core, DeltaClient)
            else incoming.version_info
        )
        self._prepared = self._sink.prepare(candidate, versions)
        self._changed = True

    def _candidate(self, type_url: str, decoded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Every type as the core will hold it once it accepts this response."""
        candidate = self._core_resources()
        listed = self.core.subscription(type_url)
        wildcard = WILDCARD in listed
        wanted = {n: m for n, m in decoded.items() if wildcard or n in listed}
        if isinstance(self.core, DeltaClient):
            merged = {**candidate[type_url], **wanted}
            for name in self._incoming.removed_resources:
                merged.pop(name, None)
        elif is_full_state(type_url):
            merged = wanted
        else:
            merged = {**candidate[type_url], **wanted}
        candidate[type_url] = merged
        dependent = DEPENDENT_TYPES.get(type_url)
        if dependent is not None:
            referenced = {
                name
                for message in merged.values()
                for url, name in resource_references(message)
                if url == dependent
            }
            candidate[dependent] = {
                n: m for n, m in candidate[dependent].items() if n in referenced
            }
        return candidate

    def _core_resources(self) -> dict[str, dict[str, Any]]:
        return {url: dict(self.core.resources(url)) for url in TYPES}

    def _held_from_core(self) -> HeldConfig:
        core = self.core
        types = {}
        for url in TYPES:
            resources = dict(core.resources(url))
            if isinstance(core, DeltaClient):
                types[url] = TypeConfig(
                    core.system_version(url), resources, dict(core.versions(url))
                )
            else:
                types[url] = TypeConfig(core.version(url), resources)
        return HeldConfig(types)

    def _committed_version(self, type_url: str) -> str:
        held = self._committed.types.get(type_url)
        return held.version if held else ""


def _type_versions(held: HeldConfig) -> dict[str, str]:
    return {url: t.version for url, t in held.types.items()}


def _versions(held: HeldConfig) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        url: (t.version, tuple(sorted(t.resource_versions.items())))
        for url, t in held.types.items()
    }
