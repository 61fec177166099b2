"""A real grpc.aio xDS server on 127.0.0.1:0 over a small cache, and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from controlplane.server import XdsServer, start_xds_server
from controlplane.xds import SnapshotCache
from tests.server.support import MiB
from tests.xds.resources import base_mesh


@pytest.fixture
async def cache_and_server() -> AsyncIterator[tuple[SnapshotCache, XdsServer]]:
    cache = SnapshotCache(lambda node: node.cluster, lambda key: base_mesh())
    server = await start_xds_server(cache)
    yield cache, server
    await server.stop(0)


@pytest.fixture
async def channel(
    cache_and_server: tuple[SnapshotCache, XdsServer],
) -> AsyncIterator[grpc.aio.Channel]:
    _, server = cache_and_server
    options = [("grpc.max_receive_message_length", 16 * MiB)]
    async with grpc.aio.insecure_channel(server.address, options=options) as ch:
        yield ch
