"""Benchmark: the xDS server's resident memory per stream, one connection each or shared.

An in-process xDS server (over a two-cluster mesh: the responses are small, so
what is measured is the cost of holding a stream and its connection) is
opened ``--streams`` state-of-the-world ADS streams from a client process,
``--per-channel`` streams per gRPC channel (one TCP connection each). Each
stream subscribes to CDS and ACKs, then, with ``--names N``, sends an EDS
request naming N clusters and ACKs its answer (repeating the N names, as
Envoy does: 3,000 names are about 150 KB). The server's RSS is read after a
full collection and a malloc trim, before the clients connect and once they
are all synced; printed: the difference per stream, for each
``--read-buffer`` (``XdsServerOptions.read_buffer_bytes``; 0: gRPC's default).

Usage: ``python bench/connection_memory.py --streams 1000 --per-channel 1 100
--names 0 3000 --read-buffer 0 8192``. With ``--tracemalloc N`` it also prints
the server's Python heap per stream and the N source lines that allocated the
most of it (tracemalloc's own bookkeeping inflates the RSS figure then).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import multiprocessing
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import grpc
import structlog

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import xds_clients  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402

from controlplane.server import XdsServerOptions, memory, start_xds_server  # noqa: E402
from controlplane.xds import CLUSTER, ENDPOINT, SnapshotCache  # noqa: E402
from tests.xds.resources import base_mesh  # noqa: E402


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def clients(
    address: str, streams: int, per_channel: int, names: int, ready: Any, stop: Any
) -> None:
    async def main() -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels: list[grpc.aio.Channel] = []
        calls = []
        wanted = [
            "a",
            *(f"outbound|8080||svc-{j:05d}.bench.svc.cluster.local" for j in range(names)),
        ]
        for index in range(streams):
            if index % per_channel == 0:
                channels.append(grpc.aio.insecure_channel(address, options=options))
            call = channels[-1].stream_stream(xds_clients.ADS_SOTW)()
            node = xds_clients.make_node(f"node-{index}")
            for type_url, subscribe in ((CLUSTER, []), (ENDPOINT, wanted)):
                if type_url == ENDPOINT and not names:
                    break
                request = discovery_pb2.DiscoveryRequest(
                    type_url=type_url, resource_names=subscribe
                )
                if type_url == CLUSTER:
                    request.node.CopyFrom(node)
                await call.write(request.SerializeToString())
                response = discovery_pb2.DiscoveryResponse.FromString(
                    await asyncio.wait_for(call.read(), 60)
                )
                ack = discovery_pb2.DiscoveryRequest(
                    type_url=type_url,
                    resource_names=subscribe,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
                await call.write(ack.SerializeToString())
            calls.append(call)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for channel in channels:
            await channel.close()

    asyncio.run(main())


async def measure(
    streams: int, per_channel: int, names: int, read_buffer: int, top: int = 0
) -> float:
    cache = SnapshotCache(lambda node: "sidecar", lambda key: base_mesh())
    # Every client connection comes from 127.0.0.1: lift the per-peer connection limit.
    options = XdsServerOptions(read_buffer_bytes=read_buffer, max_connections_per_peer=0)
    server = await start_xds_server(cache, options=options)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    try:
        await asyncio.sleep(1)
        gc.collect()
        memory.trim()
        before = rss()
        heap_before = tracemalloc.take_snapshot() if top else None
        process = context.Process(
            target=clients, args=(server.address, streams, per_channel, names, ready, stop)
        )
        process.start()
        while not ready.is_set():
            if not process.is_alive():
                raise RuntimeError("the client process died")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        gc.collect()
        memory.trim()
        await asyncio.sleep(0.5)
        held = (rss() - before) / streams
        if heap_before is not None:
            print_heap(tracemalloc.take_snapshot().compare_to(heap_before, "lineno"), streams, top)
        return held
    finally:
        stop.set()
        await asyncio.sleep(0.5)
        await server.stop(0)


def print_heap(diff: list[tracemalloc.StatisticDiff], streams: int, top: int) -> None:
    total = sum(d.size_diff for d in diff)
    print(f"  Python heap per stream: {total / streams / 1024:.1f} KiB; by line:")
    for d in sorted(diff, key=lambda d: -d.size_diff)[:top]:
        frame = d.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"  {d.size_diff / streams:8.0f} B {d.count_diff / streams:6.1f} blocks  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--per-channel", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--names", type=int, nargs="+", default=[0, 3000])
    parser.add_argument("--read-buffer", type=int, nargs="+", default=[0, 8192])
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(1)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    memory.tune()
    print(f"{'streams':>8} {'per chan':>8} {'names':>6} {'read buf':>8} | RSS per stream")
    for per_channel, names, read_buffer in itertools.product(
        args.per_channel, args.names, args.read_buffer
    ):
        per_stream = asyncio.run(
            measure(args.streams, per_channel, names, read_buffer, args.tracemalloc)
        )
        print(
            f"{args.streams:>8} {per_channel:>8} {names:>6} {read_buffer:>8} | "
            f"{per_stream / 1024:.1f} KiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
