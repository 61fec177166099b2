"""Host names: expanding what a resource writes, and the names a client may use."""

from __future__ import annotations

import pytest

from controlplane.model import DEFAULT_DOMAIN, canonical_host, fqdn, host_aliases


def test_the_default_domain_is_the_kubernetes_service_domain() -> None:
    assert DEFAULT_DOMAIN == "svc.cluster.local"


@pytest.mark.parametrize(
    ("host", "namespace", "expected"),
    [
        ("reviews", "shop", "reviews.shop.svc.cluster.local"),
        ("reviews", "default", "reviews.default.svc.cluster.local"),
        ("reviews.shop", "web", "reviews.shop"),
        ("reviews.shop.svc.cluster.local", "web", "reviews.shop.svc.cluster.local"),
        ("reviews.shop.svc", "web", "reviews.shop.svc"),
        ("api.example.com", "web", "api.example.com"),
        ("*", "web", "*"),
        ("*.example.com", "web", "*.example.com"),
        ("*.shop", "web", "*.shop"),
    ],
)
def test_fqdn_expands_short_names_and_keeps_dotted_ones(
    host: str, namespace: str, expected: str
) -> None:
    assert fqdn(host, namespace) == expected


def test_a_two_label_external_host_is_taken_as_written() -> None:
    assert fqdn("httpbin.org", "default") == "httpbin.org"


@pytest.mark.parametrize(
    ("host", "known", "expected"),
    [
        ("reviews.shop", {"reviews.shop.svc.cluster.local"}, "reviews.shop.svc.cluster.local"),
        ("httpbin.org", {"httpbin.org"}, "httpbin.org"),
        ("httpbin.org", set(), "httpbin.org"),
        (
            "httpbin.org",
            {"httpbin.org", "httpbin.org.svc.cluster.local"},
            "httpbin.org",
        ),
        ("a.b.c", {"a.b.c.svc.cluster.local"}, "a.b.c"),
        ("reviews.shop.svc.cluster.local", set(), "reviews.shop.svc.cluster.local"),
    ],
)
def test_canonical_host_resolves_name_namespace_pairs_to_known_cluster_services(
    host: str, known: set[str], expected: str
) -> None:
    assert canonical_host(host, known) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (
            "reviews.shop.svc.cluster.local",
            ("reviews.shop.svc.cluster.local", "reviews.shop.svc", "reviews.shop", "reviews"),
        ),
        ("api.example.com", ("api.example.com",)),
        ("a.b.c.svc.cluster.local", ("a.b.c.svc.cluster.local",)),
        ("shop.svc.cluster.local", ("shop.svc.cluster.local",)),
        ("svc.cluster.local", ("svc.cluster.local",)),
        ("*.example.com", ("*.example.com",)),
    ],
)
def test_host_aliases_are_the_fqdn_the_svc_name_the_namespaced_and_the_short_name(
    host: str, expected: tuple[str, ...]
) -> None:
    assert host_aliases(host) == expected


def test_every_alias_expands_back_to_the_host_in_its_namespace() -> None:
    host = "reviews.shop.svc.cluster.local"
    known = {host}
    written = [alias for alias in host_aliases(host) if not alias.endswith(".svc")]
    assert {canonical_host(fqdn(alias, "shop"), known) for alias in written} == known
    assert canonical_host(fqdn("reviews.shop", "elsewhere"), known) == host
