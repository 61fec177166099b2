"""The operator's services on the xDS port: Pilotfish's admin API, CSDS, health, reflection.

Nothing here runs on the push path. Proxy state is read from the live streams
when a request comes: each stream core already knows, per type, the version
it sent, the version the client ACKed and the version it NACKed; the driver
adds the last NACK's message and time (one dict entry per NACK) and the time
it connected, and the ADS service the time each proxy class last got a new
snapshot. A type whose sent version is not ACKed within :data:`STALE_AFTER`
seconds of that time is STALE.

* ``pilotfish.admin.v1.AdminService``: ``ListProxies``, ``GetProxyConfig``
  (the resources a stream last sent, as JSON), ``GetConfigStatus`` (from a
  :class:`ConfigView` the control plane supplies), ``WatchEvents`` (see
  :mod:`~controlplane.server.events`) and the older ``GetStatus``.
* ``envoy.service.status.v3.ClientStatusDiscoveryService``: the same state
  as Envoy's tooling reads it, one ``GenericXdsConfig`` per resource.
* ``grpc.health.v1.Health``: ``NOT_SERVING`` until :meth:`AdminServices.loaded`.
* Server reflection of every service above and the xDS ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.cluster.v3 import cds_pb2
from envoy.service.discovery.v3 import ads_pb2
from envoy.service.endpoint.v3 import eds_pb2
from envoy.service.listener.v3 import lds_pb2
from envoy.service.route.v3 import rds_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import controlplane.translate  # noqa: F401  (registers the resource types for JSON)
from controlplane.config.diagnostics import Diagnostic
from controlplane.server.ads import (
    _SINGLE_TYPE_SERVICES,
    ADS_SERVICE,
    AggregatedDiscoveryService,
    _Stream,
)
from controlplane.xds.snapshot import Resource
from controlplane.xds.stream import TypeStatus
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, push_rank
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc

STALE_AFTER = 5.0
"""Seconds a sent version may go un-ACKed before it counts as STALE."""

SYNCED = "SYNCED"
PENDING = "PENDING"
STALE = "STALE"
NACKED = "NACKED"
NOT_SENT = "NOT_SENT"

_TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
_SERVICE_DESCRIPTORS = (ads_pb2, lds_pb2, cds_pb2, rds_pb2, eds_pb2)


@dataclass(frozen=True, slots=True)
class ConfigView:
    """What the control plane tells ``GetConfigStatus`` about its configuration."""

    loaded: bool = False
    files: Mapping[str, str] = field(default_factory=dict)
    """``{path: digest}`` of the files in effect."""
    diagnostics: tuple[Diagnostic, ...] = ()
    rejected: tuple[str, ...] = ()
    reloaded_at: float = 0.0
    reloads: int = 0
    version: str = ""
    """The config version served (:func:`controlplane.config.store.config_version`)."""


def rfc3339(at: float) -> str:
    if not at:
        return ""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def type_state(status: TypeStatus | None, pending: bool, sent_at: float, now: float) -> str:
    """SYNCED, PENDING, STALE, NACKED or NOT_SENT for one type of one stream."""
    if status is None or not status.version:
        return PENDING if pending and status is not None else NOT_SENT
    if status.nacked_version == status.version:
        return NACKED
    if status.acked_version == status.version and not pending:
        return SYNCED
    return STALE if now - sent_at > STALE_AFTER else PENDING


def _labels(node: base_pb2.Node) -> dict[str, str]:
    fields = node.metadata.fields
    if "labels" not in fields or fields["labels"].WhichOneof("kind") != "struct_value":
        return {}
    return {
        key: value.string_value
        for key, value in fields["labels"].struct_value.fields.items()
        if value.WhichOneof("kind") == "string_value"
    }


def _type_urls(stream: _Stream) -> list[str]:
    snapshot = stream.core.snapshot
    urls = set(_TYPES) | (set(snapshot.type_urls) if snapshot is not None else set())
    return sorted(urls, key=lambda url: (push_rank(url), url))


class AdminServices:
    """Pilotfish's admin API over one :class:`AggregatedDiscoveryService`."""

    def __init__(
        self,
        ads: AggregatedDiscoveryService,
        config: Callable[[], ConfigView] = ConfigView,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ads = ads
        self.config = config
        self.clock = clock
        self.health = health.aio.HealthServicer()

    def register(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self, server)
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            self.client_status_service(), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # The descriptor modules are imported for their services' descriptors; only the
        # services served are listed (rds_pb2 also holds VHDS, which is not).
        assert all(module.DESCRIPTOR for module in _SERVICE_DESCRIPTORS)
        names = [
            ADS_SERVICE,
            *(service for service, _ in _SINGLE_TYPE_SERVICES.values()),
            *(
                service.full_name
                for module in (admin_pb2, csds_pb2, health_pb2)
                for service in module.DESCRIPTOR.services_by_name.values()
            ),
        ]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)

    def client_status_service(self) -> ClientStatusService:
        """The CSDS servicer over this admin (workers substitute one that aggregates)."""
        return ClientStatusService(self)

    async def loaded(self, loaded: bool = True) -> None:
        """Health: SERVING once the first configuration is loaded."""
        status = health_pb2.HealthCheckResponse
        await self.health.set("", status.SERVING if loaded else status.NOT_SERVING)

    # -- proxies ---------------------------------------------------------------

    def proxy(self, stream: _Stream, now: float) -> admin_pb2.ProxyStatus:
        node = stream.core.node
        sent_at = max(self.ads.published_at.get(stream.key or "", 0.0), stream.connected_at)
        role = (stream.key or "").split("|", 1)[0]
        proxy = admin_pb2.ProxyStatus(
            node_id=node.id if node is not None else "",
            cluster=node.cluster if node is not None else "",
            role=role,
            labels=_labels(node) if node is not None else {},
            peer=stream.connection,
            protocol=stream.protocol,
            connected_since=rfc3339(stream.connected_at),
            proxy_class=stream.key or "",
            stream_id=stream.stream_id,
        )
        nacks = stream.last_nacks or {}
        for url in _type_urls(stream):
            status = stream.core.status(url)
            if status is None and url not in _TYPES:
                continue
            sync = proxy.types.add(
                type_url=url,
                state=type_state(status, stream.dirty, sent_at, now),
                push_pending=stream.dirty,
                resources=len(stream.core.held(url)),
            )
            if status is not None:
                sync.version_sent = status.version
                sync.version_acked = status.acked_version
            if url in nacks:
                version, message, at = nacks[url]
                sync.last_nack.CopyFrom(
                    admin_pb2.Nack(version=version, message=message, at=rfc3339(at))
                )
        return proxy

    def streams_of(self, node_id: str) -> list[_Stream]:
        return [s for s in self.ads.streams() if s.core.has_node and s.core.node_id == node_id]

    async def ListProxies(
        self, request: admin_pb2.ListProxiesRequest, context: Any
    ) -> admin_pb2.ListProxiesResponse:
        now = self.clock()
        proxies = [self.proxy(s, now) for s in self.ads.streams() if s.core.has_node]
        return admin_pb2.ListProxiesResponse(proxies=proxies)

    async def GetProxyConfig(
        self, request: admin_pb2.GetProxyConfigRequest, context: Any
    ) -> admin_pb2.GetProxyConfigResponse:
        streams = self.streams_of(request.node_id)
        if not streams:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no connected proxy has node id {request.node_id!r}"
            )
        now = self.clock()
        response = admin_pb2.GetProxyConfigResponse(proxy=self.proxy(streams[0], now))
        for stream in streams:
            for url in _type_urls(stream):
                status = stream.core.status(url)
                if status is None:
                    continue
                typed = response.types.add(
                    type_url=url, version_sent=status.version, version_acked=status.acked_version
                )
                for name, resource in sorted(stream.core.held(url).items()):
                    typed.resources.add(
                        name=name, version=resource.hash, json=resource_json(resource)
                    )
        return response

    # -- configuration ---------------------------------------------------------

    async def GetConfigStatus(
        self, request: admin_pb2.GetConfigStatusRequest, context: Any
    ) -> admin_pb2.GetConfigStatusResponse:
        view = self.config()
        return admin_pb2.GetConfigStatusResponse(
            config_version=view.version,
            files=[admin_pb2.ConfigFile(path=p, digest=d) for p, d in sorted(view.files.items())],
            diagnostics=[_diagnostic(d) for d in view.diagnostics],
            rejected_files=view.rejected,
            reloaded_at=rfc3339(view.reloaded_at),
            reloads=view.reloads,
            loaded=view.loaded,
        )

    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: Any
    ) -> admin_pb2.GetStatusResponse:
        view = self.config()
        response = admin_pb2.GetStatusResponse(
            rejected_files=view.rejected, diagnostics=[_diagnostic(d) for d in view.diagnostics]
        )
        counts: dict[str, int] = {}
        for stream in self.ads.streams():
            if stream.key is not None:
                counts[stream.key] = counts.get(stream.key, 0) + 1
        for key in sorted(counts):
            snapshot = self.ads.cache.get(key)
            versions = dict(snapshot.versions) if snapshot is not None else {}
            response.proxy_classes.add(key=key, versions=versions, streams=counts[key])
        return response

    # -- events ----------------------------------------------------------------

    async def WatchEvents(
        self, request: admin_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[admin_pb2.Event]:
        watcher = self.ads.events.subscribe()
        try:
            while True:
                event = await watcher.get()
                if event is None:
                    return
                yield admin_pb2.Event(
                    kind=event.kind,
                    at=rfc3339(event.at),
                    node_id=event.node_id,
                    stream_id=event.stream_id,
                    type_url=event.type_url,
                    version=event.version,
                    message=event.message,
                    dropped=event.dropped,
                )
        finally:
            self.ads.events.unsubscribe(watcher)


def resource_json(resource: Resource) -> str:
    try:
        text: str = json_format.MessageToJson(resource.body, sort_keys=True, indent=None)
    except Exception as exc:  # a type this process cannot decode: say so, do not fail
        text = json.dumps({"@type": resource.type_url, "undecodable": str(exc)})
    return text


def _diagnostic(d: Diagnostic) -> admin_pb2.Diagnostic:
    severity = admin_pb2.Diagnostic.ERROR if d.is_error else admin_pb2.Diagnostic.WARNING
    return admin_pb2.Diagnostic(
        severity=severity,
        code=d.code,
        file=d.file,
        line=d.line,
        column=d.column,
        resource=d.resource,
        field=d.field,
        message=d.message,
    )


_CONFIG_STATUS = {
    SYNCED: csds_pb2.SYNCED,
    PENDING: csds_pb2.STALE,
    STALE: csds_pb2.STALE,
    NACKED: csds_pb2.ERROR,
    NOT_SENT: csds_pb2.NOT_SENT,
}
_CLIENT_STATUS = {
    SYNCED: config_dump_shared_pb2.ACKED,
    PENDING: config_dump_shared_pb2.REQUESTED,
    STALE: config_dump_shared_pb2.REQUESTED,
    NACKED: config_dump_shared_pb2.NACKED,
    NOT_SENT: config_dump_shared_pb2.UNKNOWN,
}


class ClientStatusService:
    """CSDS: each connected proxy's config status, per resource, as Envoy's tooling reads it."""

    def __init__(self, admin: AdminServices) -> None:
        self.admin = admin

    def status(self, request: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        wanted = _wanted_ids(request)
        now = self.admin.clock()
        response = csds_pb2.ClientStatusResponse()
        for stream in self.admin.ads.streams():
            node = stream.core.node
            if node is None or (wanted is not None and node.id not in wanted):
                continue
            config = response.config.add()
            config.node.CopyFrom(node)
            proxy = self.admin.proxy(stream, now)
            for sync in proxy.types:
                held = stream.core.held(sync.type_url)
                self._add(config, sync, held, request.exclude_resource_contents)
        return response

    def _add(
        self,
        config: csds_pb2.ClientConfig,
        sync: admin_pb2.TypeSync,
        held: Mapping[str, Resource],
        exclude: bool,
    ) -> None:
        items: Iterable[tuple[str, Resource | None]] = sorted(held.items()) or [("", None)]
        for name, resource in items:
            entry = config.generic_xds_configs.add(
                type_url=sync.type_url,
                name=name,
                version_info=sync.version_sent,
                config_status=_CONFIG_STATUS[sync.state],
                client_status=_CLIENT_STATUS[sync.state],
            )
            if resource is not None and not exclude:
                entry.xds_config.CopyFrom(resource.body)
            if sync.state == NACKED:
                entry.error_state.details = sync.last_nack.message
                entry.error_state.version_info = sync.last_nack.version

    async def FetchClientStatus(
        self, request: csds_pb2.ClientStatusRequest, context: Any
    ) -> csds_pb2.ClientStatusResponse:
        return self.status(request)

    async def StreamClientStatus(
        self, requests: AsyncIterator[csds_pb2.ClientStatusRequest], context: Any
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in requests:
            yield self.status(request)


def _wanted_ids(request: csds_pb2.ClientStatusRequest) -> set[str] | None:
    """Node ids asked for by exact ``node_matchers``, or None for all (``node`` is the
    asker's own node, not a filter)."""
    ids = {m.node_id.exact for m in request.node_matchers if m.node_id.exact}
    return ids or None
