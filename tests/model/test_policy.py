"""Traffic policy resolution (host, subset, port) and label selectors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.model import (
    ConnectionPool,
    DestinationPolicy,
    Labels,
    LoadBalancer,
    LoadBalancerKind,
    OutlierDetection,
    PortTrafficPolicy,
    Subset,
    TcpConnectionPool,
    TrafficPolicy,
    labels_match,
)

HOST = "reviews.default.svc.cluster.local"
ROUND_ROBIN = LoadBalancer(LoadBalancerKind.ROUND_ROBIN)
RANDOM = LoadBalancer(LoadBalancerKind.RANDOM)
LEAST_REQUEST = LoadBalancer(LoadBalancerKind.LEAST_REQUEST)
OUTLIER = OutlierDetection(consecutive_5xx_errors=5, interval=timedelta(seconds=10))
SUBSET_OUTLIER = OutlierDetection(consecutive_5xx_errors=1)
POOL = ConnectionPool(tcp=TcpConnectionPool(max_connections=100))
PORT_POOL = ConnectionPool(tcp=TcpConnectionPool(max_connections=7))


def policy(traffic: TrafficPolicy, *subsets: Subset) -> DestinationPolicy:
    return DestinationPolicy(HOST, "default", "reviews", traffic, subsets)


def test_without_a_subset_or_port_level_settings_the_host_policy_applies() -> None:
    host = TrafficPolicy(load_balancer=LEAST_REQUEST, outlier_detection=OUTLIER)
    assert policy(host).effective(9080) == host
    assert DestinationPolicy(HOST, "default", "reviews").effective(9080) == TrafficPolicy()


def test_a_port_level_setting_overrides_the_host_policy_for_its_port_only() -> None:
    host = TrafficPolicy(
        load_balancer=LEAST_REQUEST,
        connection_pool=POOL,
        outlier_detection=OUTLIER,
        port_level=(PortTrafficPolicy(9090, load_balancer=RANDOM, connection_pool=PORT_POOL),),
    )
    assert policy(host).effective(9090) == TrafficPolicy(
        load_balancer=RANDOM, connection_pool=PORT_POOL, outlier_detection=OUTLIER
    )
    assert policy(host).effective(9080) == TrafficPolicy(
        load_balancer=LEAST_REQUEST, connection_pool=POOL, outlier_detection=OUTLIER
    )


def test_a_subset_policy_overrides_the_host_policy_field_by_field() -> None:
    host = TrafficPolicy(load_balancer=LEAST_REQUEST, outlier_detection=OUTLIER)
    v3 = Subset("v3", (("version", "v3"),), TrafficPolicy(load_balancer=ROUND_ROBIN))
    v1 = Subset("v1", (("version", "v1"),))
    rule = policy(host, v1, v3)
    assert rule.effective(9080, "v3") == TrafficPolicy(
        load_balancer=ROUND_ROBIN, outlier_detection=OUTLIER
    )
    assert rule.effective(9080, "v1") == host
    assert rule.effective(9080, "v9") == host
    assert rule.effective(9080) == host


def test_a_subset_port_level_setting_overrides_the_subset_and_the_host() -> None:
    host = TrafficPolicy(
        load_balancer=LEAST_REQUEST,
        outlier_detection=OUTLIER,
        port_level=(PortTrafficPolicy(9090, connection_pool=PORT_POOL),),
    )
    canary = Subset(
        "canary",
        (("track", "canary"),),
        TrafficPolicy(
            load_balancer=ROUND_ROBIN,
            port_level=(PortTrafficPolicy(9090, load_balancer=RANDOM),),
        ),
    )
    rule = policy(host, canary)
    assert rule.effective(9090, "canary") == TrafficPolicy(
        load_balancer=RANDOM, connection_pool=PORT_POOL, outlier_detection=OUTLIER
    )
    assert rule.effective(9080, "canary") == TrafficPolicy(
        load_balancer=ROUND_ROBIN, outlier_detection=OUTLIER
    )


def test_a_subset_policy_overrides_the_host_port_level_setting_as_in_istio() -> None:
    host = TrafficPolicy(
        load_balancer=LEAST_REQUEST,
        port_level=(PortTrafficPolicy(9090, load_balancer=RANDOM, connection_pool=PORT_POOL),),
    )
    v3 = Subset("v3", (("version", "v3"),), TrafficPolicy(load_balancer=ROUND_ROBIN))
    rule = policy(host, v3)
    assert rule.effective(9090) == TrafficPolicy(load_balancer=RANDOM, connection_pool=PORT_POOL)
    assert rule.effective(9090, "v3") == TrafficPolicy(
        load_balancer=ROUND_ROBIN, connection_pool=PORT_POOL
    )


def test_subset_port_level_settings_do_not_hide_the_host_port_level_settings() -> None:
    host = TrafficPolicy(port_level=(PortTrafficPolicy(9080, connection_pool=PORT_POOL),))
    v2 = Subset(
        "v2",
        (("version", "v2"),),
        TrafficPolicy(port_level=(PortTrafficPolicy(9090, load_balancer=RANDOM),)),
    )
    rule = policy(host, v2)
    assert rule.effective(9080, "v2") == TrafficPolicy(connection_pool=PORT_POOL)
    assert rule.effective(9090, "v2") == TrafficPolicy(load_balancer=RANDOM)


def test_the_effective_policy_never_carries_port_level_settings() -> None:
    host = TrafficPolicy(port_level=(PortTrafficPolicy(9090, load_balancer=RANDOM),))
    sub = Subset("s", (), TrafficPolicy(port_level=(PortTrafficPolicy(9091, RANDOM),)))
    rule = policy(host, sub)
    for port in (9080, 9090, 9091):
        assert rule.effective(port).port_level == ()
        assert rule.effective(port, "s").port_level == ()


def test_subsets_are_found_by_name() -> None:
    v1 = Subset("v1", (("version", "v1"),))
    v2 = Subset("v2", (("version", "v2"),))
    rule = policy(TrafficPolicy(), v1, v2)
    assert rule.subset("v2") is v2
    assert rule.subset("v3") is None


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ((), (), True),
        ((), (("app", "reviews"),), True),
        ((("app", "reviews"),), (("app", "reviews"), ("version", "v1")), True),
        (
            (("app", "reviews"), ("version", "v1")),
            (("app", "reviews"), ("version", "v1")),
            True,
        ),
        ((("app", "reviews"), ("version", "v1")), (("app", "reviews"),), False),
        ((("version", "v1"),), (("app", "reviews"), ("version", "v2")), False),
        ((("app", "reviews"),), (), False),
        ((("app", ""),), (), False),
        ((("app", ""),), (("app", ""),), True),
    ],
)
def test_labels_match_when_every_selector_pair_is_present(
    selector: Labels, labels: Labels, expected: bool
) -> None:
    assert labels_match(selector, labels) is expected
