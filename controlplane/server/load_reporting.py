"""The Load Reporting Service on the xDS port: a thin grpc.aio shell around :class:`LoadReports`.

Each ``StreamLoadStats`` call is one reporter: every request it sends goes to
the core as the bytes that came off the wire (no request deserializer: the
core decodes only the clusters with traffic, see
:meth:`~controlplane.xds.load_reports.LoadReports.report_wire`; a malformed
one ends the stream with ``INVALID_ARGUMENT``), the first one is answered with
the core's response (report every cluster at the configured interval), and
when the stream ends its in-flight requests stop counting.
:meth:`LoadReportingService.close` ends the streams still open with
``UNAVAILABLE``, so that a shutdown does not wait out its grace period on
reporters that never end their streams themselves.
"""

from __future__ import annotations

import asyncio
import itertools

import grpc
import structlog
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc

from controlplane.server.untrusted import clip
from controlplane.xds.load_reports import LoadReports, MalformedReport, request_node_id

LRS_SERVICE = "envoy.service.load_stats.v3.LoadReportingService"

log = structlog.get_logger(__name__)


class LoadReportingService(lrs_pb2_grpc.LoadReportingServiceServicer):  # type: ignore[misc]
    """``envoy.service.load_stats.v3.LoadReportingService`` feeding one :class:`LoadReports`."""

    def __init__(self, reports: LoadReports) -> None:
        self.reports = reports
        self._ids = itertools.count(1)
        self._closed: asyncio.Future[None] | None = None

    def _closing(self) -> asyncio.Future[None]:
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        return self._closed

    async def StreamLoadStats(
        self, request_iterator: object, context: grpc.aio.ServicerContext[object, object]
    ) -> None:
        closing = self._closing()
        key = f"{context.peer()}#{next(self._ids)}"
        answered = False
        try:
            while not closing.done():
                read = asyncio.ensure_future(context.read())
                await asyncio.wait((read, closing), return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    break
                request = read.result()
                if request is grpc.aio.EOF:
                    return
                try:
                    taken = self.reports.report_wire(key, request)
                except MalformedReport as exc:
                    log.warning("lrs_stream_malformed", peer=context.peer(), error=str(exc))
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                if not taken:
                    log.warning("lrs_stream_refused", peer=context.peer(), node=_node(request))
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "too many load reporters"
                    )
                if not answered:
                    answered = True
                    log.debug("lrs_stream_started", peer=context.peer(), node=_node(request))
                    await context.write(self.reports.response())
        finally:
            self.reports.close(key)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "control plane shutting down")

    def close(self) -> None:
        """End every open stream with ``UNAVAILABLE`` (the server is stopping)."""
        try:
            closing = self._closing()
        except RuntimeError:  # no event loop: no stream can be open
            return
        if not closing.done():
            closing.set_result(None)


def _node(request: bytes) -> str:
    return clip(request_node_id(request))


def add_load_reporting_service(server: grpc.aio.Server, service: LoadReportingService) -> None:
    """Serve ``service`` with requests left as bytes (the generated helper would decode them)."""
    handlers = {
        "StreamLoadStats": grpc.stream_stream_rpc_method_handler(
            service.StreamLoadStats,
            request_deserializer=None,
            response_serializer=lrs_pb2.LoadStatsResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(LRS_SERVICE, handlers),))
    server.add_registered_method_handlers(LRS_SERVICE, handlers)
