"""A response the driver could not send (over the message limit) is withdrawn: the
client still holds what it had, and the next response makes up for it."""

from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds import ENDPOINT
from controlplane.xds.delta import DeltaStream
from controlplane.xds.sotw import SotwStream
from tests.xds.resources import NODE, mesh, names


def test_a_withdrawn_delta_response_is_answered_again_with_the_next_snapshot():
    def snapshot(a: str, b: str) -> Any:
        return mesh({"a": (a,), "b": (b,)})

    first = snapshot("10.0.0.1:80", "10.0.0.2:80")
    stream = DeltaStream(lambda node: first)
    stream.on_request(
        discovery_pb2.DeltaDiscoveryRequest(
            node=NODE, type_url=ENDPOINT, resource_names_subscribe=["a", "b"]
        )
    )
    (withheld,) = stream.on_snapshot(snapshot("10.0.0.9:80", "10.0.0.2:80"))
    stream.withdraw(withheld)
    (after,) = stream.on_snapshot(snapshot("10.0.0.9:80", "10.0.0.8:80"))
    assert sorted(r.name for r in after.resources) == ["a", "b"]


def test_a_withdrawn_sotw_response_is_sent_in_full_with_the_next_snapshot():
    def snapshot(a: str, b: str) -> Any:
        return mesh({"a": (a,), "b": (b,)})

    first = snapshot("10.0.0.1:80", "10.0.0.2:80")
    stream = SotwStream(lambda node: first)
    stream.on_request(
        discovery_pb2.DiscoveryRequest(node=NODE, type_url=ENDPOINT, resource_names=["a", "b"])
    )
    (withheld,) = stream.on_snapshot(snapshot("10.0.0.9:80", "10.0.0.2:80"))
    stream.withdraw(withheld)
    (after,) = stream.on_snapshot(snapshot("10.0.0.9:80", "10.0.0.8:80"))
    assert names(after.message) == ["a", "b"]
