"""The memoizing translator gives what translate() gives, and reuses what did not change."""

from __future__ import annotations

from controlplane.model import Mesh
from controlplane.translate import CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, ProxyClass, translate
from controlplane.translate.proxy import ProxyRole
from controlplane.translate.translator import Translator
from controlplane.xds.snapshot import Resource, Snapshot
from tests.translate.support import bookinfo_mesh, kitchen_sink_mesh, reweighted

SIDECAR = ProxyClass()
GATEWAY = ProxyClass(role=ProxyRole.GATEWAY, labels=(("istio", "ingressgateway"),))


def _bytes(resources: dict[str, list[object]]) -> dict[str, list[bytes]]:
    return {
        url: [m.SerializeToString(deterministic=True) for m in messages]  # type: ignore[attr-defined]
        for url, messages in resources.items()
    }


def test_the_translator_gives_exactly_what_translate_gives_across_changes() -> None:
    translator = Translator()
    for mesh in (bookinfo_mesh(), kitchen_sink_mesh(), bookinfo_mesh(), Mesh()):
        for proxy in (SIDECAR, GATEWAY):
            assert _bytes(translator.translate(mesh, proxy)) == _bytes(translate(mesh, proxy))
        changed = reweighted(mesh, mesh.services[0].host) if mesh.services else mesh
        for proxy in (SIDECAR, GATEWAY):
            assert _bytes(translator.translate(changed, proxy)) == _bytes(translate(changed, proxy))


def test_an_endpoint_change_rebuilds_only_that_services_clusters_and_assignments() -> None:
    translator = Translator()
    mesh = bookinfo_mesh()
    before = translator.translate(mesh, SIDECAR)
    target = mesh.services[0].host
    after = translator.translate(reweighted(mesh, target), SIDECAR)
    rebuilt = {
        url: sorted(
            str(getattr(m, "cluster_name", "") or m.name)
            for m in after[url]
            if not any(m is old for old in before[url])
        )
        for url in (CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE)
    }
    assert all(target in name for name in rebuilt[CLUSTER_TYPE] + rebuilt[ENDPOINT_TYPE])
    assert rebuilt[ENDPOINT_TYPE]
    assert rebuilt[ROUTE_TYPE] == []


def test_an_encoding_translator_reuses_the_encoded_routes_of_an_unchanged_view() -> None:
    translator = Translator(encode=Resource.from_message)
    mesh = bookinfo_mesh()
    first = Snapshot(translator.translate(mesh, SIDECAR))
    second = Snapshot(translator.translate(reweighted(mesh, mesh.services[0].host), SIDECAR))
    same = [
        name
        for name, resource in second.resources(ROUTE_TYPE).items()
        if resource is first.resources(ROUTE_TYPE)[name]
    ]
    assert same == sorted(first.resources(ROUTE_TYPE))
    assert second.version(ROUTE_TYPE) == first.version(ROUTE_TYPE)
    assert second.version(ENDPOINT_TYPE) != first.version(ENDPOINT_TYPE)


def test_classes_that_share_a_view_get_the_same_messages_in_lists_of_their_own() -> None:
    translator = Translator()
    mesh = kitchen_sink_mesh()
    sidecar = translator.translate(mesh, SIDECAR)
    gateway = translator.translate(mesh, GATEWAY)
    for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        assert sidecar[url] is not gateway[url]
        assert len(sidecar[url]) == len(gateway[url]) > 0
        assert all(a is b for a, b in zip(sidecar[url], gateway[url], strict=True))
    sidecar[CLUSTER_TYPE].clear()
    again = translator.translate(mesh, GATEWAY)
    assert _bytes(again) == _bytes(translate(mesh, GATEWAY))
