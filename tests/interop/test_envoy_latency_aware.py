"""Real Envoy ACKs a latency-aware cluster and balances it by its fallback, least request.

The DestinationRule of the hello-world example gets the annotation
``pilotfish.io/load-balancer: latency-aware``; the translator then emits the
hello cluster with a ``load_balancing_policy`` whose first policy is
``pilotfish.lb.v1.LatencyAware`` (a type Envoy does not know) and whose
second is least request. Envoy must skip the first, take the second, ACK the
update and route.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.demo.backends import Backends, Client, free_ports
from controlplane.demo.envoy import sidecar_metadata, wait_for
from tests.interop.conftest import (
    ControlPlaneThread,
    load_example,
    relocate,
    start_envoy,
    write_docs,
)

pytestmark = pytest.mark.slow

HELLO = ("hello-1", "hello-2", "hello-3")


@pytest.fixture
def backends() -> Iterator[Backends]:
    with Backends(HELLO) as started:
        yield started


def test_envoy_acks_a_latency_aware_cluster_and_routes_by_least_request(
    envoy_binary: str, backends: Backends, tmp_path: Path
) -> None:
    (port, gateway_port) = free_ports(2)
    docs = relocate(
        load_example("hello-world", "hello.yaml"),
        service_ports={8080: port},
        gateway_ports={8080: gateway_port},
        workload_ports={name: backends.port(name) for name in HELLO},
    )
    (rule,) = [d for d in docs if d["kind"] == "DestinationRule"]
    rule["metadata"]["annotations"] = {
        "pilotfish.io/load-balancer": "latency-aware",
        "pilotfish.io/latency-decay": "5s",
    }
    del rule["spec"]["trafficPolicy"]
    write_docs(tmp_path / "config" / "hello.yaml", docs)
    cluster_name = f"outbound|{port}||hello.default.svc.cluster.local"
    with (
        ControlPlaneThread(tmp_path / "config") as plane,
        start_envoy(envoy_binary, tmp_path, plane.port, "sidecar", sidecar_metadata()) as envoy,
    ):
        assert not [d for d in plane.plane.store.diagnostics if d.is_error]
        wait_for(lambda: cluster_name in envoy.dynamic_cluster_names(), 15, "the hello cluster")
        dump = envoy.config_dump("dynamic_active_clusters")
        (cluster,) = [c["cluster"] for c in dump["configs"] if c["cluster"]["name"] == cluster_name]
        policies = cluster["load_balancing_policy"]["policies"]
        assert [p["typed_extension_config"]["name"] for p in policies] == [
            "pilotfish.lb.latency_aware",
            "envoy.load_balancing_policies.least_request",
        ]
        assert policies[0]["typed_extension_config"]["typed_config"] == {
            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
            "type_url": "type.googleapis.com/pilotfish.lb.v1.LatencyAware",
            "value": {"decay": "5s"},
        }
        rejected = envoy.stats(r"update_rejected$")
        assert rejected["cluster_manager.cds.update_rejected"] == 0
        assert rejected[f"cluster.{cluster_name}.update_rejected"] == 0
        client = Client(port)
        sequence = [client.get("/", host="hello").backend for _ in range(60)]
        assert set(sequence) == set(HELLO), sequence
        # Round robin (Envoy's default) would rotate; least request draws at random.
        assert sequence[3:] != sequence[:-3], sequence
        assert "Didn't find a registered" not in envoy.log_tail(400)
