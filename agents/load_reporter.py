"""The agent's load reports: its traffic per cluster, sent to the control plane's LRS.

:class:`LoadReportBuilder` is the sans-IO part. It reads two things the agent
keeps anyway, cumulative responses per cluster (successful, and 5xx errors)
and the requests outstanding per cluster now, and turns them into
``LoadStatsRequest`` messages of what changed since the previous report:
:meth:`LoadReportBuilder.start` takes the server's ``LoadStatsResponse`` (which
clusters, how often) and sets the baseline, :meth:`LoadReportBuilder.report`
makes the next request. Requests issued in an interval are the responses
completed in it plus the growth of the outstanding requests, so that a run
of reports adds up to what was sent. A cluster whose counts went down (it
left the table and came back) starts again from its new counts.

:func:`run_load_reporter` drives it over one gRPC stream: the first request
names the node, the server's answer starts the clock, and a report follows
every interval until cancelled; a broken stream is reopened with backoff.
A server without the service (``UNIMPLEMENTED``) ends the reporter quietly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import structlog
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc

from agents.backoff import Backoff

log = structlog.get_logger(__name__)

Outcomes = Callable[[], Mapping[str, tuple[int, int]]]
InProgress = Callable[[], Mapping[str, int]]


class LoadReportBuilder:
    """Deltas of the agent's traffic counts as LoadStatsRequests (see the module docstring)."""

    def __init__(self, node: Any, outcomes: Outcomes, in_progress: InProgress) -> None:
        self.node = node
        self._outcomes = outcomes
        self._in_progress = in_progress
        self._last: dict[str, tuple[int, int]] = {}
        self._last_active: dict[str, int] = {}
        self._clusters: frozenset[str] | None = None
        self.interval = 10.0

    def first_request(self) -> Any:
        return lrs_pb2.LoadStatsRequest(node=self.node)

    def start(self, response: Any) -> float:
        """Follow the server's answer (which clusters, how often: seconds); reset the baseline."""
        self._clusters = None if response.send_all_clusters else frozenset(response.clusters)
        interval = response.load_reporting_interval.ToNanoseconds() / 1e9
        self.interval = interval if interval > 0 else self.interval
        self._last = dict(self._outcomes())
        self._last_active = dict(self._in_progress())
        return self.interval

    def report(self, elapsed: float) -> Any:
        """The counts since the previous report (or :meth:`start`), ``elapsed`` seconds ago."""
        outcomes = dict(self._outcomes())
        active = dict(self._in_progress())
        request = lrs_pb2.LoadStatsRequest(node=self.node)
        for name in sorted(set(outcomes) | set(active)):
            if self._clusters is not None and name not in self._clusters:
                continue
            ok, failed = outcomes.get(name, (0, 0))
            last_ok, last_failed = self._last.get(name, (0, 0))
            if ok < last_ok or failed < last_failed:
                last_ok = last_failed = 0
            done_ok, done_failed = ok - last_ok, failed - last_failed
            now_active = active.get(name, 0)
            grown = now_active - self._last_active.get(name, 0)
            if not (done_ok or done_failed or now_active or grown):
                continue
            stats = request.cluster_stats.add(cluster_name=name)
            stats.load_report_interval.FromNanoseconds(round(elapsed * 1e9))
            locality = stats.upstream_locality_stats.add()
            locality.total_successful_requests = done_ok
            locality.total_error_requests = done_failed
            locality.total_issued_requests = max(0, done_ok + done_failed + grown)
            locality.total_requests_in_progress = now_active
        self._last = outcomes
        self._last_active = active
        return request


async def run_load_reporter(
    server: str,
    builder: LoadReportBuilder,
    *,
    backoff: Backoff | None = None,
    clock: Callable[[], float] | None = None,
) -> None:
    """Report to ``server`` until cancelled (or the server has no LRS)."""
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    while True:
        try:
            async with grpc.aio.insecure_channel(server) as channel:
                call = lrs_pb2_grpc.LoadReportingServiceStub(channel).StreamLoadStats()
                await call.write(builder.first_request())
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise ConnectionError("the server ended the load report stream")
                backoff.reset()
                interval = builder.start(response)
                since = now()
                while True:
                    await asyncio.sleep(interval)
                    elapsed, since = now() - since, now()
                    await call.write(builder.report(elapsed))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.info("lrs_not_served", server=server)
                return
            error = f"{exc.code().name}: {exc.details()}"
        except (ConnectionError, grpc.aio.UsageError) as exc:
            error = str(exc)
        delay = backoff.next_delay()
        log.info("lrs_disconnected", server=server, error=error, retry_in=round(delay, 3))
        await asyncio.sleep(delay)
