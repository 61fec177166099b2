import hashlib
import pickle

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import InconsistentSnapshotError
from controlplane.translate.wire import Serialized
from controlplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    Resource,
    Snapshot,
    encoding,
    resource_references,
)
from tests.xds.resources import (
    api_listener,
    base_mesh,
    default_chain_listener,
    eds_cluster,
    load_assignment,
    rds_listener,
    route_config,
    static_cluster,
    tcp_listener,
)

EMPTY_VERSION = hashlib.sha256(b"").hexdigest()[:16]


def test_resource_serializes_deterministically_once_into_an_any():
    cluster = eds_cluster("a")
    resource = Resource.from_message(cluster)
    data = cluster.SerializeToString(deterministic=True)
    assert resource.name == "a"
    assert resource.type_url == CLUSTER
    assert resource.body.type_url == CLUSTER
    assert resource.body.value == data
    assert resource.hash == hashlib.sha256(data).hexdigest()


def test_wire_entries_are_the_bytes_protobuf_writes_for_the_any():
    for message in (
        eds_cluster("a"),
        load_assignment("svc", "10.0.0.1:80"),
        rds_listener("l", "r"),
    ):
        resource = Resource.from_message(message)
        sotw = discovery_pb2.DiscoveryResponse(resources=[resource.body]).SerializeToString()
        assert encoding.sotw_entry(resource) == sotw
        delta = discovery_pb2.DeltaDiscoveryResponse(
            resources=[
                discovery_pb2.Resource(
                    version=resource.hash, resource=resource.body, name=resource.name
                )
            ]
        ).SerializeToString()
        assert encoding.delta_entry(resource) == delta


def test_a_resource_keeps_bytes_not_a_message_and_builds_a_fresh_any_on_demand():
    resource = Resource.from_message(eds_cluster("a"))
    assert type(resource.value) is bytes
    assert resource.body is not resource.body
    assert resource.body == resource.body


def test_a_resource_pickles_as_its_fields_and_comes_back_equal():
    for message in (eds_cluster("a"), rds_listener("l", "r")):
        resource = Resource.from_message(message)
        back = pickle.loads(pickle.dumps(resource, pickle.HIGHEST_PROTOCOL))
        assert resource.__reduce__() == (
            Resource,
            (resource.name, resource.type_url, resource.hash, resource.value, resource.references),
        )
        assert (back.name, back.type_url, back.hash, back.value, back.references) == (
            resource.name,
            resource.type_url,
            resource.hash,
            resource.value,
            resource.references,
        )


def test_load_assignment_is_named_by_its_cluster_name():
    assert Resource.from_message(load_assignment("svc", "10.0.0.1:80")).name == "svc"


def test_version_is_the_sha256_prefix_of_sorted_name_hash_pairs():
    snapshot = Snapshot.from_resources({CLUSTER: [static_cluster("b"), static_cluster("a")]})
    hashes = snapshot.name_hashes(CLUSTER)
    expected = hashlib.sha256(f"a\x00{hashes['a']}\nb\x00{hashes['b']}\n".encode()).hexdigest()[:16]
    assert snapshot.version(CLUSTER) == expected


def test_every_known_type_is_present_and_empty_types_share_one_version():
    snapshot = Snapshot.from_resources({CLUSTER: [static_cluster("a")]})
    assert snapshot.type_urls == PUSH_ORDER
    assert snapshot.version(LISTENER) == EMPTY_VERSION
    assert snapshot.version(ROUTE) == EMPTY_VERSION
    assert dict(snapshot.resources(ENDPOINT)) == {}


def test_same_resources_in_another_order_give_equal_versions():
    one = Snapshot.from_resources({CLUSTER: [static_cluster("a"), static_cluster("b")]})
    two = Snapshot.from_resources({CLUSTER: [static_cluster("b"), static_cluster("a")]})
    assert one.versions == two.versions
    assert one == two


def test_changing_one_type_changes_only_that_types_version():
    before = base_mesh()
    after = base_mesh(clusters={"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",)})
    changed = {url for url in PUSH_ORDER if before.version(url) != after.version(url)}
    assert changed == {ENDPOINT}


def test_renaming_a_resource_changes_the_version():
    one = Snapshot.from_resources({CLUSTER: [static_cluster("a")]})
    two = Snapshot.from_resources({CLUSTER: [static_cluster("z")]})
    assert one.version(CLUSTER) != two.version(CLUSTER)


def test_duplicate_names_are_rejected():
    with pytest.raises(InconsistentSnapshotError) as caught:
        Snapshot.from_resources({CLUSTER: [static_cluster("a"), static_cluster("a")]})
    assert str(caught.value) == f"duplicate {CLUSTER} resource name 'a'"


def test_message_filed_under_another_type_is_rejected():
    with pytest.raises(InconsistentSnapshotError, match="filed under"):
        Snapshot.from_resources({LISTENER: [static_cluster("a")]})


def test_eds_cluster_references_its_service_name_or_its_own_name():
    assert resource_references(eds_cluster("a")) == {(ENDPOINT, "a")}
    assert resource_references(eds_cluster("a", service_name="svc")) == {(ENDPOINT, "svc")}
    assert resource_references(static_cluster("a")) == frozenset()


def test_listener_references_rds_names_in_chains_default_chain_and_api_listener():
    assert resource_references(rds_listener("l", "r1")) == {(ROUTE, "r1")}
    assert resource_references(default_chain_listener("l", "r2")) == {(ROUTE, "r2")}
    assert resource_references(api_listener("l", "r3")) == {(ROUTE, "r3")}
    assert resource_references(tcp_listener("l")) == frozenset()


def test_complete_snapshot_is_consistent():
    base_mesh().check_consistency()


def test_static_cluster_needs_no_load_assignment():
    Snapshot.from_resources({CLUSTER: [static_cluster("a")]}).check_consistency()


def test_eds_cluster_without_its_load_assignment_is_inconsistent():
    snapshot = Snapshot.from_resources({CLUSTER: [eds_cluster("a", service_name="svc")]})
    with pytest.raises(InconsistentSnapshotError) as caught:
        snapshot.check_consistency()
    assert str(caught.value) == "Cluster 'a' needs missing ClusterLoadAssignment 'svc'"


def test_eds_cluster_is_satisfied_by_its_service_name():
    Snapshot.from_resources(
        {CLUSTER: [eds_cluster("a", service_name="svc")], ENDPOINT: [load_assignment("svc")]}
    ).check_consistency()


@pytest.mark.parametrize("listener", [rds_listener, default_chain_listener, api_listener])
def test_listener_naming_a_missing_route_configuration_is_inconsistent(listener):
    snapshot = Snapshot.from_resources({LISTENER: [listener("l", "r1")]})
    with pytest.raises(InconsistentSnapshotError) as caught:
        snapshot.check_consistency()
    assert str(caught.value) == "Listener 'l' needs missing RouteConfiguration 'r1'"


def test_orphan_load_assignment_and_route_configuration_are_inconsistent():
    snapshot = Snapshot.from_resources(
        {ENDPOINT: [load_assignment("lonely")], ROUTE: [route_config("unused")]}
    )
    with pytest.raises(InconsistentSnapshotError) as caught:
        snapshot.check_consistency()
    assert str(caught.value) == (
        "ClusterLoadAssignment 'lonely' is referenced by nothing; "
        "RouteConfiguration 'unused' is referenced by nothing"
    )


def test_static_cluster_does_not_adopt_a_load_assignment_of_its_name():
    snapshot = Snapshot.from_resources(
        {
            CLUSTER: [cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.STRICT_DNS)],
            ENDPOINT: [load_assignment("a")],
        }
    )
    with pytest.raises(InconsistentSnapshotError, match="'a' is referenced by nothing"):
        snapshot.check_consistency()


def test_a_resource_written_as_bytes_is_the_resource_of_its_message() -> None:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name="outbound|80||a.default")
    assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.address = (
        "10.0.0.1"
    )
    data = assignment.SerializeToString(deterministic=True)
    written = Resource.from_message(Serialized(ENDPOINT, "outbound|80||a.default", data))
    made = Resource.from_message(assignment)
    assert (written.name, written.type_url, written.hash, written.value, written.references) == (
        made.name,
        made.type_url,
        made.hash,
        made.value,
        made.references,
    )


def test_a_cluster_written_as_bytes_keeps_its_reference_to_its_load_assignment() -> None:
    cluster = cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.EDS)
    written = Resource.from_message(Serialized(CLUSTER, "c", cluster.SerializeToString()))
    assert written.references == ((ENDPOINT, "c"),)


def _resources(*messages: object) -> list[Resource]:
    return [Resource.from_message(message) for message in messages]


def test_a_type_of_the_same_resource_objects_takes_over_the_lenders_table_and_version() -> None:
    clusters = _resources(eds_cluster("a"), eds_cluster("b"))
    assignments = _resources(load_assignment("a"), load_assignment("b"))
    lender = Snapshot(
        {CLUSTER: clusters, ENDPOINT: assignments, LISTENER: _resources(rds_listener("l", "r1"))}
    )
    routes = _resources(route_config("r2"))
    listeners = _resources(rds_listener("l", "r2"))
    borrower = Snapshot(
        {CLUSTER: list(clusters), ENDPOINT: list(assignments), ROUTE: routes, LISTENER: listeners},
        share=[lender],
    )
    assert borrower.resources(CLUSTER) is lender.resources(CLUSTER)
    assert borrower.resources(ENDPOINT) is lender.resources(ENDPOINT)
    assert borrower.resources(LISTENER) is not lender.resources(LISTENER)
    fresh = Snapshot({CLUSTER: clusters, ENDPOINT: assignments, ROUTE: routes, LISTENER: listeners})
    assert borrower.versions == fresh.versions
    assert {url: dict(borrower.resources(url)) for url in borrower.type_urls} == {
        url: dict(fresh.resources(url)) for url in fresh.type_urls
    }


def test_a_type_whose_resources_are_other_objects_or_in_another_order_is_indexed_anew() -> None:
    clusters = _resources(eds_cluster("a"), eds_cluster("b"))
    lender = Snapshot({CLUSTER: clusters})
    for other in (list(reversed(clusters)), _resources(eds_cluster("a"), eds_cluster("b"))):
        borrower = Snapshot({CLUSTER: other}, share=[lender])
        assert borrower.resources(CLUSTER) is not lender.resources(CLUSTER)
        assert list(borrower.resources(CLUSTER).values()) == other
        assert borrower.versions == lender.versions


def test_a_borrowed_type_is_still_checked_against_the_borrowers_own_types() -> None:
    clusters = _resources(eds_cluster("a"), eds_cluster("b"))
    lender = Snapshot(
        {CLUSTER: clusters, ENDPOINT: _resources(load_assignment("a"), load_assignment("b"))}
    )
    lender.check_consistency()
    missing = Snapshot(
        {CLUSTER: clusters, ENDPOINT: _resources(load_assignment("a"))}, share=[lender]
    )
    with pytest.raises(InconsistentSnapshotError) as caught:
        missing.check_consistency()
    assert str(caught.value) == "Cluster 'b' needs missing ClusterLoadAssignment 'b'"
    orphan = Snapshot(
        {CLUSTER: clusters[:1], ENDPOINT: _resources(load_assignment("a"), load_assignment("b"))},
        share=[lender],
    )
    with pytest.raises(InconsistentSnapshotError) as caught:
        orphan.check_consistency()
    assert str(caught.value) == "ClusterLoadAssignment 'b' is referenced by nothing"


def test_links_are_followed_once_per_table_and_a_consistent_snapshot_is_not_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    followed: list[str] = []
    links_of = Snapshot._links_of

    def counting(self: Snapshot, parent_url: str) -> object:
        asked.append(parent_url.rsplit(".", 1)[-1])
        if parent_url not in self._links:
            followed.append(parent_url.rsplit(".", 1)[-1])
        return links_of(self, parent_url)

    monkeypatch.setattr(Snapshot, "_links_of", counting)
    clusters = _resources(eds_cluster("a"))
    assignments = _resources(load_assignment("a"))
    lender = Snapshot({CLUSTER: clusters, ENDPOINT: assignments})
    lender.check_consistency()
    lender.check_consistency()
    assert asked == followed == ["Cluster", "Listener"]
    borrower = Snapshot(
        {
            CLUSTER: clusters,
            ENDPOINT: assignments,
            ROUTE: _resources(route_config("r")),
            LISTENER: _resources(rds_listener("l", "r")),
        },
        share=[lender],
    )
    borrower.check_consistency()
    assert asked == ["Cluster", "Listener", "Cluster", "Listener"]
    assert followed == ["Cluster", "Listener", "Listener"]


def test_a_cluster_refers_to_its_load_assignment_by_its_own_name_string() -> None:
    # A mesh holds one reference per cluster: a tuple, and no second copy of the name.
    name = "outbound|80||a.default"
    for cluster in (eds_cluster(name), eds_cluster(name, service_name=name)):
        resource = Resource.from_message(cluster)
        assert resource.references == ((ENDPOINT, name),)
        assert resource.references[0][1] is resource.name
    assert Resource.from_message(eds_cluster(name, service_name="svc")).references == (
        (ENDPOINT, "svc"),
    )
