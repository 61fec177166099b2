"""The Load Reporting Service on the xDS port: a thin grpc.aio shell around :class:`LoadReports`.

Each ``StreamLoadStats`` call is one reporter: every request it sends goes to
the core, the first one is answered with the core's response (report every
cluster at the configured interval), and when the stream ends its in-flight
requests stop counting. :meth:`LoadReportingService.close` ends the
streams still open with ``UNAVAILABLE``, so that a shutdown does not wait out its grace period on
reporters that never end their streams themselves.
"""

from __future__ import annotations

import asyncio
import itertools

import grpc
import structlog
from envoy.service.load_stats.v3 import lrs_pb2_grpc

from controlplane.server.untrusted import clip
from controlplane.xds.load_reports import LoadReports

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
                if not self.reports.report(key, request):
                    log.warning(
                        "lrs_stream_refused", peer=context.peer(), node=clip(request.node.id)
                    )
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "too many load reporters"
                    )
                if not answered:
                    answered = True
                    log.debug("lrs_stream_started", peer=context.peer(), node=clip(request.node.id))
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


def add_load_reporting_service(server: grpc.aio.Server, service: LoadReportingService) -> None:
    lrs_pb2_grpc.add_LoadReportingServiceServicer_to_server(service, server)
