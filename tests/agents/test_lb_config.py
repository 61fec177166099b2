"""parse_lb and parse_outlier: every form the translator emits, Envoy's defaults, rejections."""

from __future__ import annotations

from datetime import timedelta

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (
    client_side_weighted_round_robin_pb2 as cswrr_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from google.protobuf import duration_pb2, message
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from agents.errors import ConfigRejected
from agents.lb_config import LbConfig, OutlierConfig, parse_lb, parse_outlier
from controlplane.config.build import build_mesh
from controlplane.config.document import read_text
from controlplane.model import (
    ConsistentHash,
    DestinationPolicy,
    Endpoint,
    LoadBalancer,
    LoadBalancerKind,
    OutlierDetection,
    TrafficPolicy,
)
from controlplane.translate import CLUSTER_TYPE, ProxyClass, translate
from controlplane.translate.clusters import build_clusters
from pilotfish.lb.v1 import latency_aware_pb2
from tests.translate.support import REVIEWS, http_service, mesh_of

Cluster = cluster_pb2.Cluster
NAME = f"outbound|9080||{REVIEWS}"


def translated(policy: TrafficPolicy) -> cluster_pb2.Cluster:
    service = http_service("reviews", (Endpoint("10.0.0.1", 9080),))
    mesh = mesh_of(
        service,
        destination_policies=(DestinationPolicy(service.host, "default", "reviews", policy),),
    )
    (cluster,) = [c for c in build_clusters(mesh) if c.name == NAME]
    return cluster  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("balancer", "expected"),
    [
        (None, LbConfig()),
        (LoadBalancer(LoadBalancerKind.ROUND_ROBIN), LbConfig()),
        (LoadBalancer(LoadBalancerKind.RANDOM), LbConfig(kind="random")),
        (LoadBalancer(LoadBalancerKind.LEAST_REQUEST), LbConfig(kind="least_request")),
        (
            LoadBalancer(
                LoadBalancerKind.CONSISTENT_HASH,
                ConsistentHash(http_header_name="x-user", minimum_ring_size=2048),
            ),
            LbConfig(kind="ring_hash", min_ring_size=2048),
        ),
        (
            LoadBalancer(LoadBalancerKind.CONSISTENT_HASH, ConsistentHash(use_source_ip=True)),
            LbConfig(kind="ring_hash"),
        ),
        (LoadBalancer(LoadBalancerKind.PASSTHROUGH), LbConfig()),
        (LoadBalancer(LoadBalancerKind.LATENCY_AWARE), LbConfig(kind="latency_aware")),
        (
            LoadBalancer(LoadBalancerKind.LATENCY_AWARE, latency_decay=timedelta(seconds=2.5)),
            LbConfig(kind="latency_aware", decay=2.5),
        ),
    ],
)
def test_every_balancer_the_translator_emits_parses(
    balancer: LoadBalancer | None, expected: LbConfig
) -> None:
    assert parse_lb(translated(TrafficPolicy(load_balancer=balancer))) == expected


def typed(name: str, config: message.Message) -> cluster_pb2.Cluster:
    cluster = Cluster(name="c")
    policy = cluster.load_balancing_policy.policies.add().typed_extension_config
    policy.name = name
    policy.typed_config.Pack(config)
    return cluster


def test_typed_policies_parse_with_their_settings() -> None:
    least = least_request_pb2.LeastRequest()
    least.choice_count.value = 3
    least.active_request_bias.default_value = 0.5
    least.locality_lb_config.locality_weighted_lb_config.SetInParent()
    assert parse_lb(typed("lr", least)) == LbConfig(
        kind="least_request", choice_count=3, active_request_bias=0.5, locality_weighted=True
    )
    ring = ring_hash_pb2.RingHash()
    ring.minimum_ring_size.value = 64
    ring.maximum_ring_size.value = 4096
    assert parse_lb(typed("rh", ring)) == LbConfig(
        kind="ring_hash", min_ring_size=64, max_ring_size=4096
    )
    maglev = maglev_pb2.Maglev()
    maglev.table_size.value = 1021
    assert parse_lb(typed("m", maglev)) == LbConfig(kind="maglev", table_size=1021)
    assert parse_lb(typed("r", random_pb2.Random())) == LbConfig(kind="random")
    assert parse_lb(typed("rr", round_robin_pb2.RoundRobin())) == LbConfig()
    latency = latency_aware_pb2.LatencyAware(decay=duration_pb2.Duration(seconds=4))
    assert parse_lb(typed("la", latency)) == LbConfig(kind="latency_aware", decay=4.0)


def test_the_first_supported_policy_wins_and_unknown_ones_are_skipped() -> None:
    cluster = typed("cswrr", cswrr_pb2.ClientSideWeightedRoundRobin())
    second = cluster.load_balancing_policy.policies.add().typed_extension_config
    second.name = "random"
    second.typed_config.Pack(random_pb2.Random())
    assert parse_lb(cluster) == LbConfig(kind="random")
    wrapper = typed_struct_pb2.TypedStruct(type_url="type.googleapis.com/acme.Fancy")
    unknown = typed("fancy", wrapper)
    third = unknown.load_balancing_policy.policies.add().typed_extension_config
    third.typed_config.Pack(maglev_pb2.Maglev())
    assert parse_lb(unknown).kind == "maglev"


def test_legacy_settings_parse_with_their_configs() -> None:
    cluster = Cluster(name="c", lb_policy=Cluster.MAGLEV)
    cluster.maglev_lb_config.table_size.value = 251
    cluster.common_lb_config.healthy_panic_threshold.value = 0
    assert parse_lb(cluster) == LbConfig(kind="maglev", table_size=251, panic_threshold=0)
    cluster = Cluster(name="c", lb_policy=Cluster.LEAST_REQUEST)
    cluster.least_request_lb_config.choice_count.value = 4
    cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    assert parse_lb(cluster) == LbConfig(
        kind="least_request", choice_count=4, locality_weighted=True
    )


def test_unsupported_balancers_are_rejected_naming_cluster_and_field() -> None:
    with pytest.raises(ConfigRejected) as raised:
        parse_lb(Cluster(name="c", lb_policy=Cluster.CLUSTER_PROVIDED, type=Cluster.EDS))
    assert str(raised.value) == (
        "Cluster c: lb_policy: CLUSTER_PROVIDED is not supported; use ROUND_ROBIN, RANDOM, "
        "LEAST_REQUEST, RING_HASH, MAGLEV or load_balancing_policy"
    )
    with pytest.raises(ConfigRejected) as raised:
        parse_lb(typed("cswrr", cswrr_pb2.ClientSideWeightedRoundRobin()))
    assert str(raised.value) == (
        "Cluster c: load_balancing_policy: no supported policy among "
        "envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3."
        "ClientSideWeightedRoundRobin; the agent supports round robin, random, least request, "
        "ring hash, maglev and pilotfish.lb.v1.LatencyAware"
    )
    maglev = maglev_pb2.Maglev()
    maglev.table_size.value = 1000
    with pytest.raises(ConfigRejected) as raised:
        parse_lb(typed("m", maglev))
    assert str(raised.value) == (
        "Cluster c: load_balancing_policy.policies[0].typed_config.table_size: "
        "1000 is not a prime up to 5000011"
    )
    latency = latency_aware_pb2.LatencyAware(decay=duration_pb2.Duration(seconds=0))
    latency.decay.SetInParent()
    with pytest.raises(ConfigRejected) as raised:
        parse_lb(typed("la", latency))
    assert str(raised.value) == (
        "Cluster c: load_balancing_policy.policies[0].typed_config.decay: "
        "0s is not a positive duration"
    )
    with pytest.raises(ConfigRejected, match="choice_count: 1 is less than 2"):
        cluster = Cluster(name="c", lb_policy=Cluster.LEAST_REQUEST)
        cluster.least_request_lb_config.choice_count.value = 1
        parse_lb(cluster)


def test_outlier_detection_the_translator_emits_parses_with_envoy_defaults() -> None:
    assert parse_outlier(translated(TrafficPolicy())) is None
    outlier = OutlierDetection(
        consecutive_5xx_errors=0,
        consecutive_gateway_errors=3,
        interval=timedelta(seconds=2),
        base_ejection_time=timedelta(seconds=15),
        max_ejection_percent=40,
    )
    assert parse_outlier(translated(TrafficPolicy(outlier_detection=outlier))) == OutlierConfig(
        consecutive_5xx=5,
        enforcing_consecutive_5xx=0,
        consecutive_gateway_failure=3,
        enforcing_consecutive_gateway_failure=100,
        interval=2.0,
        base_ejection_time=15.0,
        max_ejection_time=300.0,
        max_ejection_percent=40,
    )
    only = OutlierDetection(consecutive_5xx_errors=7)
    assert parse_outlier(translated(TrafficPolicy(outlier_detection=only))) == OutlierConfig(
        consecutive_5xx=7
    )


def test_bad_outlier_settings_are_rejected() -> None:
    cluster = Cluster(name="c")
    cluster.outlier_detection.max_ejection_percent.value = 150
    with pytest.raises(ConfigRejected) as raised:
        parse_outlier(cluster)
    assert str(raised.value) == (
        "Cluster c: outlier_detection.max_ejection_percent: 150 is not a percentage 0-100"
    )
    cluster = Cluster(name="c")
    cluster.outlier_detection.base_ejection_time.SetInParent()
    with pytest.raises(ConfigRejected, match="base_ejection_time: 0s is not a positive"):
        parse_outlier(cluster)


def latency_struct(value: dict[str, object]) -> cluster_pb2.Cluster:
    wrapper = typed_struct_pb2.TypedStruct(
        type_url="type.googleapis.com/pilotfish.lb.v1.LatencyAware"
    )
    wrapper.value.update(value)
    return typed("pilotfish.lb.latency_aware", wrapper)


def test_the_latency_aware_typed_struct_ignores_new_fields_and_rejects_bad_values() -> None:
    assert parse_lb(latency_struct({"decay": "0.5s", "future": 1})) == LbConfig(
        kind="latency_aware", decay=0.5
    )
    with pytest.raises(ConfigRejected) as raised:
        parse_lb(latency_struct({"decay": "soon"}))
    assert str(raised.value).startswith(
        "Cluster c: load_balancing_policy.policies[0].typed_config.value: "
    )


def test_the_legacy_udpa_typed_struct_is_understood_too() -> None:
    wrapper = udpa_typed_struct_pb2.TypedStruct(
        type_url="type.googleapis.com/pilotfish.lb.v1.LatencyAware"
    )
    wrapper.value.update({"decay": "7s"})
    assert parse_lb(typed("la", wrapper)) == LbConfig(kind="latency_aware", decay=7.0)


HELLO_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: hello-1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: hello}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: hello
  namespace: default
  annotations: {pilotfish.io/load-balancer: latency-aware, pilotfish.io/latency-decay: 3s}
spec:
  host: hello
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, maxEjectionPercent: 50}
"""


def test_the_annotation_in_yaml_reaches_the_agent_as_a_latency_aware_balancer() -> None:
    result = read_text("hello.yaml", HELLO_YAML)
    assert result.findings == ()
    built = build_mesh(result.resources)
    assert built.ok
    (cluster,) = [
        c
        for c in translate(built.mesh, ProxyClass())[CLUSTER_TYPE]
        if c.name == "outbound|8080||hello.default.svc.cluster.local"
    ]
    assert parse_lb(cluster) == LbConfig(kind="latency_aware", decay=3.0)
    assert parse_outlier(cluster) == OutlierConfig(consecutive_5xx=2, max_ejection_percent=50)
