"""A proxyless gRPC client takes a latency-aware cluster without a NACK and calls through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import ControlPlaneThread, write_docs
from tests.interop.grpc_backends import EchoBackend, XdsClient
from tests.interop.test_grpc_xds import SPLIT, TARGET, VERSIONS, echo_docs

pytestmark = pytest.mark.slow


@pytest.fixture
def backends() -> Iterator[dict[str, EchoBackend]]:
    started: dict[str, EchoBackend] = {}
    try:
        for version in VERSIONS:
            started[version] = EchoBackend(version).start()
        yield started
    finally:
        for backend in started.values():
            backend.stop()


def test_grpc_calls_a_latency_aware_cluster_without_a_nack(
    backends: dict[str, EchoBackend], tmp_path: Path
) -> None:
    docs = echo_docs(backends, [SPLIT])
    (rule,) = [d for d in docs if d["kind"] == "DestinationRule"]
    rule["metadata"]["annotations"] = {"pilotfish.io/load-balancer": "latency-aware"}
    write_docs(tmp_path / "config" / "echo.yaml", docs)
    with (
        ControlPlaneThread(tmp_path / "config") as plane,
        XdsClient(plane.port, TARGET, tmp_path) as client,
    ):
        result = client.call(40)
        assert result.errors == []
        assert set(result.backends) == {"v1", "v3"}
        assert client.nacks() == []
