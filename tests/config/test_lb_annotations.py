"""The DestinationRule annotations that select Pilotfish's latency-aware load balancer."""

from __future__ import annotations

from datetime import timedelta

from controlplane.model import DestinationPolicy, LoadBalancer, LoadBalancerKind
from tests.config.helpers import brief, diagnose, spec_of


def rule(annotations: str, traffic_policy: str = "") -> str:
    """A DestinationRule with ``annotations`` (lines indented 4) and a spec part (indented 2)."""
    return (
        "apiVersion: networking.istio.io/v1\n"
        "kind: DestinationRule\n"
        "metadata:\n"
        "  name: web\n"
        "  annotations:\n"
        f"{annotations}\n"
        "spec:\n"
        "  host: web\n"
        f"{traffic_policy}"
    )


def test_the_annotation_selects_the_latency_aware_balancer_with_its_decay() -> None:
    policy = spec_of(
        rule("    pilotfish.io/load-balancer: latency-aware\n    pilotfish.io/latency-decay: 2.5s")
    )
    assert isinstance(policy, DestinationPolicy)
    assert policy.traffic_policy.load_balancer == LoadBalancer(
        LoadBalancerKind.LATENCY_AWARE, latency_decay=timedelta(seconds=2.5)
    )


def test_without_decay_the_agent_default_applies() -> None:
    policy = spec_of(rule("    pilotfish.io/load-balancer: latency-aware"))
    assert isinstance(policy, DestinationPolicy)
    assert policy.traffic_policy.load_balancer == LoadBalancer(LoadBalancerKind.LATENCY_AWARE)


def test_other_annotations_change_nothing() -> None:
    policy = spec_of(rule("    team: payments"))
    assert isinstance(policy, DestinationPolicy)
    assert policy.traffic_policy.load_balancer is None


def test_an_unknown_balancer_is_an_error_at_the_annotation() -> None:
    found = diagnose(rule("    pilotfish.io/load-balancer: fastest"))
    assert brief(found) == [("PF114", 6, 5, "metadata.annotations.pilotfish.io/load-balancer")]
    assert "'fastest' is not a load balancer Pilotfish provides; use latency-aware" in (
        found[0].message
    )


def test_a_bad_decay_is_an_error_and_a_decay_alone_a_warning() -> None:
    bad = diagnose(
        rule("    pilotfish.io/load-balancer: latency-aware\n    pilotfish.io/latency-decay: soon")
    )
    assert [(d.code, d.field) for d in bad] == [
        ("PF114", "metadata.annotations.pilotfish.io/latency-decay")
    ]
    alone = diagnose(rule("    pilotfish.io/latency-decay: 3s"))
    assert [(d.code, d.severity.value) for d in alone] == [("PF111", "warning")]


def test_the_annotation_replaces_the_spec_balancer_with_a_warning() -> None:
    text = rule(
        "    pilotfish.io/load-balancer: latency-aware",
        "  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM",
    )
    found = diagnose(text)
    assert [(d.code, d.field) for d in found] == [("PF111", "spec.trafficPolicy.loadBalancer")]
