"""Tables that share one object per distinct value, within a byte budget.

Thousands of streams of a class send the same name lists; sharing one object
per distinct list (and per distinct encoding of it) keeps their memory and
lets memos compare by identity. But the values come from clients: every new
list a client invents would stay in a plain table for good (100,000 names are
about 20 MB). An :class:`Interner` holds its values by their estimated size and
drops the least recently used ones beyond its budget. A dropped value stays
alive only as long as a stream or memo still refers to it; a later equal value
simply becomes the new shared object.

:func:`names_cost` estimates a name set: a short ``str`` and its slot in a set
come to about :data:`NAME_COST` bytes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Hashable
from typing import Generic, TypeVar

V = TypeVar("V", bound=Hashable)

MiB = 1024 * 1024
NAME_COST = 192
"""Estimated bytes per name of an interned name set."""


def names_cost(names: Collection[str]) -> int:
    return NAME_COST * len(names) + 256


class Interner(Generic[V]):
    """One shared object per distinct value, least recently used out beyond ``budget`` bytes."""

    def __init__(self, budget: int, cost: Callable[[V], int]) -> None:
        self.budget = budget
        self._cost = cost
        self._values: collections.OrderedDict[V, tuple[V, int]] = collections.OrderedDict()
        self.size = 0
        """Estimated bytes held."""

    def __len__(self) -> int:
        return len(self._values)

    def intern(self, value: V) -> V:
        found = self._values.get(value)
        if found is not None:
            self._values.move_to_end(value)
            return found[0]
        cost = self._cost(value)
        self._values[value] = (value, cost)
        self.size += cost
        while self.size > self.budget and len(self._values) > 1:
            _, (_, dropped) = self._values.popitem(last=False)
            self.size -= dropped
        return value

    def clear(self) -> None:
        self._values.clear()
        self.size = 0
