"""translate(): the whole output, its order, its determinism and its closure."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from controlplane.model import Mesh
from controlplane.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    TYPE_URLS,
    ProxyClass,
    ProxyRole,
    resource_name,
    translate,
)
from tests.translate.support import bookinfo_mesh, kitchen_sink_mesh, unpack

MESHES: dict[str, Callable[[], Mesh]] = {
    "empty": Mesh,
    "bookinfo": bookinfo_mesh,
    "kitchen-sink": kitchen_sink_mesh,
}
PROXIES = {
    "sidecar": ProxyClass(),
    "ingress": ProxyClass(ProxyRole.GATEWAY, (("istio", "ingressgateway"),)),
    "edge": ProxyClass(ProxyRole.GATEWAY, (("app", "edge"),), "10.0.0.1"),
}

each_mesh = pytest.mark.parametrize("build", MESHES.values(), ids=MESHES.keys())
each_proxy = pytest.mark.parametrize("proxy", PROXIES.values(), ids=PROXIES.keys())


def serialized(resources: dict[str, list[Any]]) -> dict[str, list[bytes]]:
    return {
        type_url: [r.SerializeToString(deterministic=True) for r in items]
        for type_url, items in resources.items()
    }


def test_the_output_is_keyed_by_the_four_type_urls() -> None:
    assert list(translate(Mesh(), ProxyClass())) == [
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ]
    assert list(TYPE_URLS) == [CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, LISTENER_TYPE]


def test_an_empty_mesh_has_only_the_black_hole() -> None:
    resources = translate(Mesh(), ProxyClass())
    assert [c.name for c in resources[CLUSTER_TYPE]] == ["BlackHoleCluster"]
    assert resources[ENDPOINT_TYPE] == []
    assert resources[ROUTE_TYPE] == []
    assert resources[LISTENER_TYPE] == []


@each_proxy
@each_mesh
def test_every_list_is_sorted_by_resource_name(
    build: Callable[[], Mesh], proxy: ProxyClass
) -> None:
    for items in translate(build(), proxy).values():
        names = [resource_name(r) for r in items]
        assert names == sorted(names)
        assert len(set(names)) == len(names)


@each_proxy
@each_mesh
def test_translating_twice_gives_the_same_bytes(
    build: Callable[[], Mesh], proxy: ProxyClass
) -> None:
    assert serialized(translate(build(), proxy)) == serialized(translate(build(), proxy))


DIGEST = """
import hashlib
from controlplane.translate import ProxyClass, ProxyRole, translate
from tests.translate.support import kitchen_sink_mesh
digest = hashlib.sha256()
for proxy in (ProxyClass(), ProxyClass(ProxyRole.GATEWAY, (("app", "edge"),))):
    for items in translate(kitchen_sink_mesh(), proxy).values():
        for item in items:
            digest.update(item.SerializeToString(deterministic=True))
print(digest.hexdigest())
"""


def test_the_output_does_not_depend_on_the_string_hash_seed() -> None:
    def digest(seed: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", DIGEST],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        )
        return result.stdout.strip()

    assert digest("1") == digest("2")


def referenced_clusters(resources: dict[str, list[Any]]) -> set[str]:
    names: set[str] = set()
    for config in resources[ROUTE_TYPE]:
        for vhost in config.virtual_hosts:
            for route in vhost.routes:
                action = route.route
                if action.cluster:
                    names.add(action.cluster)
                names.update(c.name for c in action.weighted_clusters.clusters)
                names.update(m.cluster for m in action.request_mirror_policies)
    for listener in resources[LISTENER_TYPE]:
        for chain in listener.filter_chains:
            for network in chain.filters:
                if network.name == "envoy.filters.network.tcp_proxy":
                    proxy = unpack(network.typed_config, tcp_proxy_pb2.TcpProxy)
                    if proxy.cluster:
                        names.add(proxy.cluster)
                    names.update(c.name for c in proxy.weighted_clusters.clusters)
    return names


def referenced_route_configs(resources: dict[str, list[Any]]) -> set[str]:
    names = set()
    for listener in resources[LISTENER_TYPE]:
        for chain in listener.filter_chains:
            for network in chain.filters:
                if network.name == "envoy.filters.network.http_connection_manager":
                    manager = unpack(network.typed_config, hcm_pb2.HttpConnectionManager)
                    names.add(manager.rds.route_config_name)
    return names


@each_proxy
@each_mesh
def test_every_referenced_resource_is_in_the_output(
    build: Callable[[], Mesh], proxy: ProxyClass
) -> None:
    resources = translate(build(), proxy)
    clusters = {c.name for c in resources[CLUSTER_TYPE]}
    assert referenced_clusters(resources) <= clusters
    eds = {
        c.eds_cluster_config.service_name
        for c in resources[CLUSTER_TYPE]
        if c.type == cluster_pb2.Cluster.EDS
    }
    assert eds == {a.cluster_name for a in resources[ENDPOINT_TYPE]}
    assert referenced_route_configs(resources) == {r.name for r in resources[ROUTE_TYPE]}


def test_the_kitchen_sink_references_what_it_is_meant_to() -> None:
    sidecar = referenced_clusters(translate(kitchen_sink_mesh(), ProxyClass()))
    assert sidecar == {
        "BlackHoleCluster",
        "outbound|443||vault.example.com",
        "outbound|6379|primary|cache.shop.svc.cluster.local",
        "outbound|6379|replica|cache.shop.svc.cluster.local",
        "outbound|8080||legacy.shop.svc.cluster.local",
        "outbound|80|canary|web.shop.svc.cluster.local",
        "outbound|80|stable|web.shop.svc.cluster.local",
        "outbound|80||web.other.svc.cluster.local",
        "outbound|80||web.shop.svc.cluster.local",
        "outbound|9090|canary|web.shop.svc.cluster.local",
        "outbound|9090|stable|web.shop.svc.cluster.local",
        "outbound|9090||web.shop.svc.cluster.local",
    }


def test_gateways_and_sidecars_share_clusters_and_load_assignments() -> None:
    mesh = bookinfo_mesh()
    sidecar = serialized(translate(mesh, ProxyClass()))
    gateway = serialized(translate(mesh, PROXIES["ingress"]))
    assert sidecar[CLUSTER_TYPE] == gateway[CLUSTER_TYPE]
    assert sidecar[ENDPOINT_TYPE] == gateway[ENDPOINT_TYPE]
    assert sidecar[LISTENER_TYPE] != gateway[LISTENER_TYPE]


def test_resource_name_is_the_cluster_name_for_a_load_assignment() -> None:
    resources = translate(bookinfo_mesh(), ProxyClass())
    assignment = resources[ENDPOINT_TYPE][0]
    assert resource_name(assignment) == "outbound|27017||mongodb.default.svc.cluster.local"
    assert resource_name(resources[LISTENER_TYPE][0]) == "0.0.0.0_27017"
