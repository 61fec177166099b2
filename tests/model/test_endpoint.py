"""Endpoint's hand-written ``__init__`` keeps it a plain frozen dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.model import Endpoint, Locality


def test_an_endpoint_made_by_position_or_keyword_has_the_same_fields_and_defaults() -> None:
    zone = Locality("eu", "eu-1")
    by_position = Endpoint("10.0.0.1", 8080, (("app", "a"),), 3, zone)
    by_keyword = Endpoint(
        locality=zone, weight=3, labels=(("app", "a"),), port=8080, address="10.0.0.1"
    )
    assert by_position == by_keyword
    assert hash(by_position) == hash(by_keyword)
    assert dataclasses.astuple(by_position) == (
        "10.0.0.1",
        8080,
        (("app", "a"),),
        3,
        ("eu", "eu-1", ""),
    )
    bare = Endpoint("10.0.0.2", 80)
    assert (bare.labels, bare.weight, bare.locality) == ((), 1, Locality())
    assert repr(bare) == (
        "Endpoint(address='10.0.0.2', port=80, labels=(), weight=1, "
        "locality=Locality(region='', zone='', subzone=''))"
    )


def test_an_endpoint_is_frozen_and_replace_makes_a_new_one() -> None:
    endpoint = Endpoint("10.0.0.1", 8080)
    with pytest.raises(dataclasses.FrozenInstanceError):
        endpoint.port = 9090  # type: ignore[misc]
    moved = dataclasses.replace(endpoint, port=9090)
    assert (moved.address, moved.port, endpoint.port) == ("10.0.0.1", 9090, 8080)
