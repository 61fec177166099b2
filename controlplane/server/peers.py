"""One view over every worker: the admin answers of ``pilotfish serve --workers``.

Workers share the xDS port and the HTTP admin port (``SO_REUSEPORT``), so an
operator's call reaches whichever worker the kernel picks, and that worker
holds only its own proxies. Each worker therefore also listens on private
Unix sockets in the supervisor's run directory (:class:`WorkerSlot` names
them): ``w<i>.grpc`` serves the same gRPC services as the xDS port, ``w<i>.http``
the same HTTP admin. The worker that takes a call answers for itself and asks
each peer on its private socket with the ``pilotfish-local-only`` marker
(gRPC metadata, or an HTTP header), so that a peer answers for itself only and
the fan-out is one level deep. Answers are merged: proxies listed side by
side, proxy classes' stream counts added, CSDS configs concatenated, a proxy's
config taken from the worker that holds it, event streams interleaved, and
Prometheus samples relabelled with ``worker="<i>"`` (sum over that label for
the totals).

A peer that does not answer within :data:`PEER_TIMEOUT` (it is restarting)
is left out and logged; the answer then covers the workers that are up, which
is also what the proxies see. Nothing here is on the push path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog
from envoy.service.status.v3 import csds_pb2

from controlplane.server.admin import AdminServices, ClientStatusService
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc

if TYPE_CHECKING:
    from prometheus_client import Metric

log = structlog.get_logger(__name__)

LOCAL_ONLY = "pilotfish-local-only"
"""gRPC metadata key and HTTP header: answer for this worker only."""
PEER_TIMEOUT = 2.0
"""Seconds a peer has to answer before it is left out of the merged answer."""

_Response = TypeVar("_Response")


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Worker ``index`` of ``count``, and the run directory the supervisor made for them."""

    index: int
    count: int
    run_dir: Path

    def grpc_path(self, index: int) -> Path:
        return self.run_dir / f"w{index}.grpc"

    def http_path(self, index: int) -> Path:
        return self.run_dir / f"w{index}.http"

    def ready_path(self, index: int) -> Path:
        """Written by a worker once it serves (it holds the worker's pid)."""
        return self.run_dir / f"w{index}.ready"

    @property
    def peers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.count) if i != self.index)


def local_only(context: Any) -> bool:
    """Whether a gRPC call asks this worker for its own part only."""
    return any(key == LOCAL_ONLY for key, _ in context.invocation_metadata() or ())


class Peers:
    """Clients of the other workers' private sockets (channels made on first use)."""

    def __init__(self, slot: WorkerSlot, timeout: float = PEER_TIMEOUT) -> None:
        self.slot = slot
        self.timeout = timeout
        self._channels: dict[int, grpc.aio.Channel] = {}

    def channel(self, index: int) -> grpc.aio.Channel:
        channel = self._channels.get(index)
        if channel is None:
            # A peer's list of proxies grows with its streams: no 4 MiB ceiling on answers.
            channel = grpc.aio.insecure_channel(
                f"unix:{self.slot.grpc_path(index)}",
                options=[("grpc.max_receive_message_length", -1)],
            )
            self._channels[index] = channel
        return channel

    async def ask(
        self, call: Callable[[grpc.aio.Channel, Any], Awaitable[_Response]]
    ) -> list[_Response]:
        """``call(channel, kwargs)`` on every peer at once; the answers of those that gave one."""

        async def one(index: int) -> _Response | None:
            kwargs = {"metadata": ((LOCAL_ONLY, "1"),), "timeout": self.timeout}
            try:
                return await call(self.channel(index), kwargs)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                if code is not grpc.StatusCode.NOT_FOUND:
                    log.warning("worker_peer_unanswered", peer=index, error=str(code))
                return None

        answers = await asyncio.gather(*(one(i) for i in self.slot.peers))
        return [answer for answer in answers if answer is not None]

    async def metrics(self) -> dict[int, bytes]:
        """Each answering peer's own ``/metrics`` text, by worker index."""
        return await self._http_get("/metrics")

    async def dashboard_parts(self) -> list[dict[str, Any]]:
        """Each answering peer's own dashboard parts (the dashboard's ``Parts.peers`` hook)."""
        answers = await self._http_get("/dashboard/state")
        return [json.loads(answers[index]) for index in sorted(answers)]

    async def _http_get(self, path: str) -> dict[int, bytes]:
        """``path`` of every peer's HTTP admin, local-only: the bodies of those that answered."""
        from controlplane.server.http11 import HttpError, get

        async def one(index: int) -> tuple[int, bytes | None]:
            try:
                async with asyncio.timeout(self.timeout):
                    body = await get(str(self.slot.http_path(index)), path, [(LOCAL_ONLY, "1")])
                return index, body
            except (HttpError, TimeoutError, OSError) as exc:
                log.warning("worker_peer_unanswered", peer=index, error=str(exc) or repr(exc))
                return index, None

        answers = await asyncio.gather(*(one(i) for i in self.slot.peers))
        return {index: text for index, text in answers if text is not None}

    async def merged_metrics(self, own: bytes, request: Any) -> bytes:
        """The HTTP admin hook: ``own`` metrics text merged with the peers (unless local-only)."""
        if request.headers.get(LOCAL_ONLY):
            return own
        texts = await self.metrics()
        texts[self.slot.index] = own
        return merge_metrics(texts)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


def merge_metrics(texts: Mapping[int, bytes]) -> bytes:
    """Prometheus texts of several workers as one, each sample labelled ``worker``."""
    # Imported here, as the HTTP admin that alone calls this: not by a server without it.
    from prometheus_client import Metric, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text.decode("utf-8")):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                merged.add_sample(
                    sample.name,
                    {**sample.labels, "worker": str(index)},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    return generate_latest(_Merged())  # type: ignore[arg-type]


class AggregatingAdmin(AdminServices):
    """The admin API of one worker, answering for every worker unless asked for its own part."""

    def __init__(self, *args: Any, peers: Peers, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peers = peers

    def client_status_service(self) -> ClientStatusService:
        return AggregatingClientStatus(self)

    async def ListProxies(
        self, request: admin_pb2.ListProxiesRequest, context: Any
    ) -> admin_pb2.ListProxiesResponse:
        response = await super().ListProxies(request, context)
        if not local_only(context):
            for answer in await self.peers.ask(
                lambda channel, kw: admin_pb2_grpc.AdminServiceStub(channel).ListProxies(
                    request, **kw
                )
            ):
                response.proxies.extend(answer.proxies)
        return response

    async def GetProxyConfig(
        self, request: admin_pb2.GetProxyConfigRequest, context: Any
    ) -> admin_pb2.GetProxyConfigResponse:
        if self.streams_of(request.node_id) or local_only(context):
            return await super().GetProxyConfig(request, context)
        for answer in await self.peers.ask(
            lambda channel, kw: admin_pb2_grpc.AdminServiceStub(channel).GetProxyConfig(
                request, **kw
            )
        ):
            found: admin_pb2.GetProxyConfigResponse = answer
            return found
        await context.abort(
            grpc.StatusCode.NOT_FOUND, f"no connected proxy has node id {request.node_id!r}"
        )
        raise AssertionError("abort returns only by raising")  # pragma: no cover

    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: Any
    ) -> admin_pb2.GetStatusResponse:
        response = await super().GetStatus(request, context)
        if local_only(context):
            return response
        classes = {c.key: c for c in response.proxy_classes}
        for answer in await self.peers.ask(
            lambda channel, kw: admin_pb2_grpc.AdminServiceStub(channel).GetStatus(request, **kw)
        ):
            for other in answer.proxy_classes:
                mine = classes.get(other.key)
                if mine is None:
                    classes[other.key] = mine = response.proxy_classes.add()
                    mine.CopyFrom(other)
                else:
                    mine.streams += other.streams
        return response

    async def WatchEvents(
        self, request: admin_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[admin_pb2.Event]:
        if local_only(context):
            async for event in super().WatchEvents(request, context):
                yield event
            return
        queue: asyncio.Queue[admin_pb2.Event | None] = asyncio.Queue(maxsize=1024)

        async def pump(events: AsyncIterator[admin_pb2.Event], last: bool) -> None:
            with contextlib.suppress(grpc.RpcError):
                async for event in events:
                    await queue.put(event)
            if last:  # this worker's own events end when it stops: so does the merged stream
                await queue.put(None)

        def peer_events(index: int) -> AsyncIterator[admin_pb2.Event]:
            stub = admin_pb2_grpc.AdminServiceStub(self.peers.channel(index))
            call: AsyncIterator[admin_pb2.Event] = stub.WatchEvents(
                request, metadata=((LOCAL_ONLY, "1"),)
            )
            return call

        tasks = [asyncio.ensure_future(pump(super().WatchEvents(request, context), True))]
        tasks += [asyncio.ensure_future(pump(peer_events(i), False)) for i in self.peers.slot.peers]
        try:
            while True:
                next_event = await queue.get()
                if next_event is None:
                    return
                yield next_event
        finally:
            for task in tasks:
                task.cancel()


class AggregatingClientStatus(ClientStatusService):
    """CSDS over every worker: each answers for its own proxies, the configs are concatenated."""

    async def FetchClientStatus(
        self, request: csds_pb2.ClientStatusRequest, context: Any
    ) -> csds_pb2.ClientStatusResponse:
        response = self.status(request)
        if local_only(context):
            return response
        assert isinstance(self.admin, AggregatingAdmin)
        from envoy.service.status.v3 import csds_pb2_grpc

        for answer in await self.admin.peers.ask(
            lambda channel, kw: csds_pb2_grpc.ClientStatusDiscoveryServiceStub(
                channel
            ).FetchClientStatus(request, **kw)
        ):
            response.config.extend(answer.config)
        return response
