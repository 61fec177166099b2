"""Slotted dataclasses pickled as their rebuild function unpickle to the same records."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field

import pytest

from controlplane.config import slot_pickle
from controlplane.config.slot_pickle import SlotPickler


@dataclass(frozen=True, slots=True)
class Empty:
    pass


@dataclass(frozen=True, slots=True)
class One:
    value: int


@dataclass(frozen=True, slots=True)
class Base:
    name: str
    extra: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Derived(Base):
    parts: tuple[object, ...] = ()

    @dataclass(frozen=True, slots=True)
    class Inner:
        text: str


def _dumps(value: object) -> bytes:
    buffer = io.BytesIO()
    SlotPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def test_records_with_no_one_and_inherited_slots_come_back_with_every_slot() -> None:
    shared = One(7)
    value = [
        Empty(),
        shared,
        Derived("d", ("not compared",), (shared, Derived.Inner("x"), shared)),
    ]

    back = pickle.loads(_dumps(value))

    assert back == value
    assert back[2].extra == ("not compared",)
    assert back[2].parts[0] is back[2].parts[2] is back[1]  # shared as it was
    assert type(back[2].parts[1]) is Derived.Inner


def test_a_record_is_pickled_as_its_rebuild_function_not_its_class() -> None:
    data = _dumps(Derived("d"))

    assert b"_rebuild:tests/config/test_slot_pickle:Derived" in data
    assert b"__setstate__" not in data and b"copyreg" not in data


@pytest.mark.parametrize(
    "name",
    [
        "_rebuild:os:getcwd",  # not a class
        "_rebuild:controlplane/config/store:ReloadResult",  # a dataclass without slots
        "_rebuild:controlplane/config/store:Missing",
        "_rebuild:controlplane/nothing:Missing",
        "_rebuild",
        "other",
    ],
)
def test_a_rebuild_name_of_anything_but_a_slotted_dataclass_is_no_attribute(name: str) -> None:
    with pytest.raises(AttributeError):
        getattr(slot_pickle, name)
