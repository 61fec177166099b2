"""The peer of bench/propagation.py: a bare grpc.aio fan-out server.

``/bench.Fanout/Subscribe`` (bidi, raw bytes): the server welcomes each stream,
then writes every triggered message to it; the client answers each with an ack,
which the server reads and drops. ``/bench.Fanout/Trigger`` (unary) queues its
request bytes to every connected stream. No serialization, no state beyond a
queue per stream: the floor for "one small message to N streams" in grpc.aio.
What is alive when a fan-out is triggered is frozen out of the cyclic collector
first, and the streams are written connection by connection: both as Pilotfish
does.

It runs on the same event loop as ``pilotfish serve`` does by default
(uvloop when installed, see controlplane/server/event_loop.py), so that the
two are compared on equal terms; ``--event-loop asyncio`` runs it on asyncio's.

``--pilotfish-options`` serves with the gRPC channel options ``pilotfish serve``
uses instead of gRPC's defaults (keepalive pings, the 8 KiB read buffer cap,
pending-call limits): the same transport settings, for a like-for-like floor.

Usage: ``python bench/fanout_peer.py --port PORT`` (prints ``ready`` when serving).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc

from controlplane.server import event_loop

WELCOME = b"welcome"
OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class Fanout:
    def __init__(self) -> None:
        self.queues: dict[asyncio.Queue[bytes], str] = {}

    async def subscribe(self, requests: AsyncIterator[bytes], context: Any) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queues[queue] = context.peer()

        async def drain() -> None:
            async for _ack in requests:
                pass

        reader = asyncio.create_task(drain())
        try:
            await context.write(WELCOME)
            while True:
                await context.write(await queue.get())
        finally:
            self.queues.pop(queue, None)
            reader.cancel()

    async def trigger(self, request: bytes, context: Any) -> bytes:
        # The streams' objects are long-lived: without this, the collections the
        # fan-out's allocations set off rescan all of them (gen 2 at 10,000
        # streams: a third of the peer's CPU, 0.4 s of its p99). Pilotfish freezes
        # its long-lived objects too (controlplane/server/memory.py).
        gc.freeze()
        # Connection by connection, as Pilotfish pushes (controlplane/server/ads.py).
        for queue, _ in sorted(self.queues.items(), key=lambda item: item[1]):
            queue.put_nowait(request)
        return str(len(self.queues)).encode()


def pilotfish_options() -> list[tuple[str, int]]:
    """The gRPC channel options ``pilotfish serve`` runs with (keepalive, the read buffer
    cap, pending-call limits...), without its per-connection and per-address limits,
    which the bench turns off for the server too."""
    from controlplane.server.grpc_server import XdsServerOptions

    options = XdsServerOptions(max_streams_per_connection=0, max_connections_per_peer=0)
    return options.channel_options()


async def serve(port: int, options: list[tuple[str, int]]) -> None:
    fanout = Fanout()
    handler = grpc.method_handlers_generic_handler(
        "bench.Fanout",
        {
            "Subscribe": grpc.stream_stream_rpc_method_handler(fanout.subscribe),
            "Trigger": grpc.unary_unary_rpc_method_handler(fanout.trigger),
        },
    )
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--event-loop", choices=event_loop.LOOPS, default="auto")
    parser.add_argument(
        "--pilotfish-options",
        action="store_true",
        help="serve with pilotfish serve's gRPC channel options instead of gRPC's defaults",
    )
    args = parser.parse_args()
    options = pilotfish_options() if args.pilotfish_options else OPTIONS
    event_loop.run(serve(args.port, options), args.event_loop)


if __name__ == "__main__":
    main()
