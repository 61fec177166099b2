"""What one subscription selects from one snapshot, shared by every stream that asks.

Thousands of streams of one proxy class hold the same subscription and see
the same snapshots. Working out, per stream, which resources a subscription
selects and how that differs from what the stream already holds would cost
O(resources) per stream per push, seconds for 10,000 streams. Instead:

* :func:`select` computes a :class:`Selection` once per (snapshot, type,
  subscription) and keeps it on the snapshot, so every stream of the class
  gets the same object;
* :meth:`Selection.changes_since` computes the difference between two
  selections once per pair and keeps it (weakly keyed) on the newer one, so
  every stream that held the same selection gets the same answer;
* :meth:`Selection.restricted` narrows a selection to a subscription that
  lost names, again once per pair;
* :func:`changes_between` lists what changed between two snapshots once per
  pair, for delta streams, whose per-stream state cannot be shared.

A push then costs each stream O(what changed). Selections are immutable.

Subscriptions come from clients, and each new one would leave its selection
(and its name set, the memo key) on the snapshot until the next edit: the
selections a snapshot keeps are bounded by :data:`SELECTION_BUDGET` estimated
bytes, oldest out first (a dropped selection is made again if asked for).
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from controlplane.xds.interning import NAME_COST, MiB, names_cost
from controlplane.xds.snapshot import Resource, Snapshot

SelectionKey = tuple[bool, frozenset[str]]
"""A subscription as a hashable value: (wildcard, explicit names)."""

_EMPTY: frozenset[str] = frozenset()

SELECTION_BUDGET = 64 * MiB
"""Estimated bytes of selections, and of the name sets they are kept under, per snapshot."""
RESTRICTED_LIMIT = 64
"""Narrowed selections kept per selection."""


class Selection:
    """The resources of one type that one subscription selects, in name order."""

    __slots__ = (
        "__weakref__",
        "_changes",
        "_ordered",
        "_restricted",
        "hashes",
        "key",
        "resources",
        "type_url",
    )

    def __init__(
        self, type_url: str, resources: Mapping[str, Resource], key: SelectionKey | None = None
    ) -> None:
        self.type_url = type_url
        self.key = key
        """The subscription this selection was made for, if any."""
        self.resources: Mapping[str, Resource] = resources
        self.hashes: dict[str, str] = {name: r.hash for name, r in resources.items()}
        self._changes: dict[int, tuple[weakref.ref[Selection], list[Resource], frozenset[str]]]
        self._changes = {}
        self._restricted: dict[SelectionKey, Selection] = {}
        self._ordered: list[Resource] | None = None

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def ordered(self) -> list[Resource]:
        """Every selected resource in name order: one list, shared (do not modify)."""
        if self._ordered is None:
            self._ordered = sorted(self.resources.values(), key=_name)
        return self._ordered

    def changes_since(self, held: Selection | None) -> tuple[list[Resource], frozenset[str]]:
        """(resources new or different since ``held``, sorted by name; names no longer selected)."""
        if held is None:
            return self.ordered, _EMPTY
        if held is self:
            return [], _EMPTY
        cached = self._changes.get(id(held))
        if cached is not None and cached[0]() is held:
            return cached[1], cached[2]
        old = held.hashes
        changed = sorted(
            (r for name, r in self.resources.items() if old.get(name) != r.hash), key=_name
        )
        removed = frozenset(name for name in old if name not in self.hashes)
        if len(self._changes) > 64:
            self._changes = {k: v for k, v in self._changes.items() if v[0]() is not None}
        self._changes[id(held)] = (weakref.ref(held), changed, removed)
        return changed, removed

    def restricted(self, key: SelectionKey, wants: Callable[[str], bool]) -> Selection:
        """This selection without the names ``wants`` (the subscription ``key``) drops."""
        if key is self.key or key[0] or self.hashes.keys() <= key[1]:
            return self
        narrowed = self._restricted.get(key)
        if narrowed is None:
            narrowed = Selection(
                self.type_url, {n: r for n, r in self.resources.items() if wants(n)}, key
            )
            if len(self._restricted) >= RESTRICTED_LIMIT:
                self._restricted.clear()
            self._restricted[key] = narrowed
        return narrowed


def select(snapshot: Snapshot, type_url: str, key: SelectionKey) -> Selection:
    """What the subscription ``key`` selects of ``type_url``, sorted by name."""
    memo = snapshot.selections
    found = memo.get((type_url, key))
    if found is None:
        resources = snapshot.resources(type_url)
        wildcard, names = key
        if wildcard:
            chosen = sorted(resources)
        elif len(names) < len(resources):
            chosen = sorted(n for n in names if n in resources)
        else:
            chosen = sorted(n for n in resources if n in names)
        found = Selection(type_url, {name: resources[name] for name in chosen}, key)
        memo[(type_url, key)] = found
        _kept(memo).add(memo, (type_url, key), names_cost(names) + NAME_COST * len(chosen))
    return found


class _Kept:
    """The selection keys of one snapshot's memo, oldest first, with their costs."""

    def __init__(self) -> None:
        self._costs: collections.OrderedDict[Any, int] = collections.OrderedDict()
        self.size = 0

    def add(self, memo: dict[Any, Any], key: Any, cost: int) -> None:
        self._costs[key] = cost
        self.size += cost
        while self.size > SELECTION_BUDGET and len(self._costs) > 1:
            oldest, dropped = self._costs.popitem(last=False)
            self.size -= dropped
            memo.pop(oldest, None)


def _kept(memo: dict[Any, Any]) -> _Kept:
    found = memo.get(_Kept)
    if found is None:
        found = memo[_Kept] = _Kept()
    return found  # type: ignore[no-any-return]


def changes_between(
    previous: Snapshot, snapshot: Snapshot, type_url: str
) -> tuple[frozenset[str], frozenset[str]]:
    """(names new or changed, names removed) of ``type_url`` from ``previous`` to ``snapshot``.

    Kept on ``snapshot`` under ``previous``'s version of the type: versions are
    content digests, so every stream coming from that content shares the answer.
    """
    key = ("changes", type_url, previous.version(type_url))
    memo = snapshot.selections
    found = memo.get(key)
    if found is None:
        old = previous.resources(type_url)
        new = snapshot.resources(type_url)
        changed = frozenset(
            name for name, r in new.items() if (o := old.get(name)) is None or o.hash != r.hash
        )
        found = (changed, frozenset(name for name in old if name not in new))
        memo[key] = found
    result: tuple[frozenset[str], frozenset[str]] = found
    return result


def _name(resource: Resource) -> str:
    return resource.name
