"""A translator with an encoder keeps each output only encoded, once for every class.

The server's translator encodes every message into its xDS resource
(``Resource.from_message``) as soon as it is built; these tests count the
encodings and compare the snapshots with a fresh, unmemoized translation.
"""

from __future__ import annotations

import gc
import os
import time
import weakref
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyClass,
    ProxyRole,
    route_configs,
    translate,
)
from controlplane.translate import translator as translator_module
from controlplane.translate.names import BLACKHOLE_CLUSTER
from controlplane.translate.protos import Message
from controlplane.translate.translator import Translator
from controlplane.xds import Snapshot
from controlplane.xds.snapshot import Resource
from tests.fresh_interpreter import in_fresh_interpreter
from tests.translate.support import kitchen_sink_mesh, reweighted

SIDECAR = ProxyClass()
GATEWAY = ProxyClass(role=ProxyRole.GATEWAY, labels=(("app", "edge"),))
GRPC = ProxyClass(role=ProxyRole.GRPC)
TARGET = "web.shop.svc.cluster.local"


class CountingEncoder:
    """``Resource.from_message``, counting what it encodes by ``(type_url, name)``."""

    def __init__(self) -> None:
        self.encoded: Counter[tuple[str, str]] = Counter()

    def __call__(self, message: Message) -> Resource:
        resource = Resource.from_message(message)
        self.encoded[(resource.type_url, resource.name)] += 1
        return resource


def wire(snapshot: Snapshot) -> dict[str, list[tuple[str, str, bytes]]]:
    """Every resource in the order it goes out, with its hash and bytes."""
    return {
        url: [(name, r.hash, r.value) for name, r in snapshot.resources(url).items()]
        for url in snapshot.type_urls
    }


def assert_as_translated(snapshot: Snapshot, mesh: object, proxy: ProxyClass) -> None:
    fresh = Snapshot.from_resources(translate(mesh, proxy))  # type: ignore[arg-type]
    assert wire(snapshot) == wire(fresh)
    assert snapshot.versions == fresh.versions


def of_target(name: str) -> bool:
    return name.rsplit("|", 1)[-1] == TARGET


def test_two_classes_get_the_very_same_resource_of_a_service_encoded_once() -> None:
    encode = CountingEncoder()
    translator = Translator(encode=encode)
    mesh = kitchen_sink_mesh()
    sidecar = Snapshot(translator.translate(mesh, SIDECAR))
    gateway = Snapshot(translator.translate(mesh, GATEWAY))

    assert_as_translated(sidecar, mesh, SIDECAR)
    assert_as_translated(gateway, mesh, GATEWAY)
    for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        assert len(sidecar.resources(url)) > 3
        assert sidecar.resources(url).keys() == gateway.resources(url).keys()
        assert all(
            resource is gateway.resources(url)[name]
            for name, resource in sidecar.resources(url).items()
        )
        assert all(encode.encoded[(url, name)] == 1 for name in sidecar.resources(url))
    # Routes and listeners are each class's own (some share a name, not a content).
    assert sum(encode.encoded.values()) == sum(
        len(snapshot.resources(url))
        for snapshot in (sidecar, gateway)
        for url in (ROUTE_TYPE, LISTENER_TYPE)
    ) + len(sidecar.resources(CLUSTER_TYPE)) + len(sidecar.resources(ENDPOINT_TYPE))


def test_an_edit_encodes_only_the_changed_service_and_reuses_the_rest_for_every_class() -> None:
    encode = CountingEncoder()
    translator = Translator(encode=encode)
    mesh = kitchen_sink_mesh()
    before = {proxy: Snapshot(translator.translate(mesh, proxy)) for proxy in (SIDECAR, GATEWAY)}
    encode.encoded.clear()
    edited = reweighted(mesh, TARGET)
    after = {proxy: Snapshot(translator.translate(edited, proxy)) for proxy in (SIDECAR, GATEWAY)}

    targets = {
        (url, name)
        for url in (CLUSTER_TYPE, ENDPOINT_TYPE)
        for name in after[SIDECAR].resources(url)
        if of_target(name)
    }
    assert {url for url, _ in targets} == {CLUSTER_TYPE, ENDPOINT_TYPE}
    assert encode.encoded == Counter(dict.fromkeys(targets, 1))
    for proxy, snapshot in after.items():
        assert_as_translated(snapshot, edited, proxy)
        for url in snapshot.type_urls:
            old = before[proxy].resources(url)
            for name, resource in snapshot.resources(url).items():
                assert (resource is old[name]) is not ((url, name) in targets)
        assert snapshot.version(ENDPOINT_TYPE) != before[proxy].version(ENDPOINT_TYPE)
        assert snapshot.version(CLUSTER_TYPE) == before[proxy].version(CLUSTER_TYPE)
        assert snapshot.version(ROUTE_TYPE) == before[proxy].version(ROUTE_TYPE)
    for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        assert all(
            resource is after[GATEWAY].resources(url)[name]
            for name, resource in after[SIDECAR].resources(url).items()
        )


@dataclass(frozen=True, eq=False)
class Boxed:
    """An encoded output that a weak reference can watch."""

    resource: Resource

    @property
    def name(self) -> str:
        return self.resource.name


def test_forgetting_a_class_frees_its_encoded_routes_and_listeners() -> None:
    translator = Translator(encode=lambda message: Boxed(Resource.from_message(message)))
    mesh = kitchen_sink_mesh()
    kept = translator.translate(mesh, SIDECAR)
    out = translator.translate(mesh, GATEWAY)
    watched = [weakref.ref(box) for url in (ROUTE_TYPE, LISTENER_TYPE) for box in out[url]]
    assert watched
    del out
    gc.collect()
    assert all(ref() is not None for ref in watched)

    translator.forget(GATEWAY.key)
    gc.collect()
    assert all(ref() is None for ref in watched)
    assert translator.translate(mesh, SIDECAR)[ROUTE_TYPE] is kept[ROUTE_TYPE]


def test_a_grpc_class_gets_its_own_resources_encoded_as_translated() -> None:
    encode = CountingEncoder()
    translator = Translator(encode=encode)
    mesh = kitchen_sink_mesh()
    translator.translate(mesh, SIDECAR)
    encode.encoded.clear()
    grpc = Snapshot(translator.translate(mesh, GRPC))

    assert_as_translated(grpc, mesh, GRPC)
    grpc.check_consistency()
    assert sum(encode.encoded.values()) == sum(len(grpc.resources(u)) for u in grpc.type_urls)
    # Not memoized: another translation encodes everything again, into equal resources.
    again = Snapshot(translator.translate(mesh, GRPC))
    assert wire(again) == wire(grpc)
    assert sum(encode.encoded.values()) == 2 * sum(len(grpc.resources(u)) for u in grpc.type_urls)


def test_a_translation_forked_onto_two_cores_is_the_translation_on_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not in_fresh_interpreter(request):
        return
    mesh = kitchen_sink_mesh()
    parent = os.getpid()
    encoded_here: list[str] = []
    mark = tmp_path / "child-began"

    def encode(message: Message) -> Resource:
        resource = Resource.from_message(message)
        if os.getpid() != parent:
            mark.touch()
        elif resource.name != BLACKHOLE_CLUSTER:
            if not encoded_here:
                # Once the child (from the back) has begun, it answers the last
                # service while the parent is still at the first.
                deadline = time.monotonic() + 10
                while not mark.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(0.2)
            encoded_here.append(resource.name)
        return resource

    monkeypatch.setattr(translator_module, "FORK_CHUNK", 1)
    forked = Translator(encode=encode, fork_from=1)
    snapshot = Snapshot(forked.translate(mesh, SIDECAR))

    assert_as_translated(snapshot, mesh, SIDECAR)
    last = mesh.services[-1].host
    assert not [name for name in encoded_here if last in name]
    # The resources the child made are remembered like any others.
    encoded_here.clear()
    assert_as_translated(Snapshot(forked.translate(mesh, SIDECAR)), mesh, SIDECAR)
    assert encoded_here == []


def test_a_translator_forks_only_from_the_given_number_of_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mesh = kitchen_sink_mesh()
    calls: list[int] = []

    def counting_map(fn: Any, items: Any, chunk: int) -> list[Any]:
        if fn.__name__ == "_encoded_upstreams":
            calls.append(len(items))
        return [fn(item) for item in items]

    monkeypatch.setattr(translator_module, "forked_map", counting_map)
    Translator(encode=Resource.from_message, fork_from=len(mesh.services) + 1).translate(
        mesh, SIDECAR
    )
    Translator(encode=Resource.from_message).translate(mesh, SIDECAR)
    assert calls == []
    Translator(encode=Resource.from_message, fork_from=len(mesh.services)).translate(mesh, SIDECAR)
    assert calls == [len(mesh.services)]


def test_a_translator_forks_a_sidecar_s_virtual_host_routes_from_the_given_number_of_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mesh = kitchen_sink_mesh()
    hosts = [
        v.name
        for config in translate(mesh, SIDECAR)[ROUTE_TYPE]
        for v in config.virtual_hosts  # type: ignore[attr-defined]
    ]
    calls: list[int] = []

    def counting_map(fn: Any, items: Any, chunk: int) -> list[Any]:
        if fn.__name__ == "host_routes":
            calls.append(len(items))
        return [fn(item) for item in items]

    monkeypatch.setattr(translator_module, "forked_map", counting_map)
    for fork_from in (None, len(hosts) + 1):
        Translator(encode=Resource.from_message, fork_from=fork_from).translate(mesh, SIDECAR)
    assert calls == []
    forked = Translator(encode=Resource.from_message, fork_from=len(hosts))
    assert_as_translated(Snapshot(forked.translate(mesh, SIDECAR)), mesh, SIDECAR)
    assert calls == [len(hosts)]


def test_a_virtual_service_edit_computes_the_routes_of_the_hosts_it_routes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mesh = kitchen_sink_mesh()
    computed: list[str] = []
    original = route_configs.host_routes

    def counting(source: Any) -> bytes:
        context, service, _ = source
        computed.append(f"{service.host}:{context.port}")
        return original(source)

    monkeypatch.setattr(route_configs, "host_routes", counting)
    translator = Translator(encode=Resource.from_message)
    translator.translate(mesh, SIDECAR)
    assert len(computed) > 2
    computed.clear()
    web = next(vs for vs in mesh.virtual_services if vs.hosts == (TARGET,))
    edited = replace(
        mesh,
        virtual_services=tuple(
            replace(vs, http=vs.http[1:]) if vs is web else vs for vs in mesh.virtual_services
        ),
    )
    snapshot = Snapshot(translator.translate(edited, SIDECAR))
    assert computed == [f"{TARGET}:80", f"{TARGET}:9090"]
    assert_as_translated(snapshot, edited, SIDECAR)
