"""What one side of a stream wants of one resource type.

A subscription is a set of explicit names plus a wildcard flag. Both the
server core and the client core keep one per type and apply the same rules:

* ``"*"`` in the name list is the explicit wildcard; with other names it means
  wildcard *and* those names.
* Legacy wildcard: a client that has never named a resource and sends an empty
  list is on wildcard. Once it has sent any non-empty list, an empty list means
  "unsubscribe everything".
* State of the world replaces: every request's list is the whole subscription.

Names that do not exist are kept; they are served once they appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.xds.interning import Interner, MiB, names_cost
from controlplane.xds.types import WILDCARD

_NAMES: Interner[frozenset[str]] = Interner(64 * MiB, names_cost)
_INTERNED: Interner[tuple[bool, frozenset[str]]] = Interner(64 * MiB, lambda k: names_cost(k[1]))


def intern_names(names: frozenset[str]) -> frozenset[str]:
    """One shared object per distinct name set (thousands of streams list the same names),
    within a byte budget (see :mod:`~controlplane.xds.interning`)."""
    return _NAMES.intern(names)


def intern_key(wildcard: bool, names: frozenset[str]) -> tuple[bool, frozenset[str]]:
    """One shared ``(wildcard, names)`` object per distinct subscription.

    State-of-the-world and delta streams of one class hold equal subscriptions;
    with one object per value (and one object for its names), the memos keyed by
    subscriptions compare by identity instead of comparing thousands of names.
    """
    return _INTERNED.intern((wildcard, intern_names(names)))


@dataclass(slots=True)
class Subscription:
    names: frozenset[str] = frozenset()
    """Explicit names, interned: streams with the same list share one object."""
    wildcard: bool = False
    named_before: bool = False
    """The client has sent a non-empty name list, which ends legacy wildcard."""
    _key: tuple[bool, frozenset[str]] | None = field(default=None, repr=False, compare=False)
    _listed: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def replace(self, resource_names: Iterable[str]) -> None:
        """Apply a state-of-the-world name list."""
        listed = frozenset(resource_names)
        if self._key is not None and listed == self._listed:
            # Every ACK repeats the whole list (thousands of EDS names): the common
            # case is "unchanged", decided here with C-level set operations only.
            return
        self._listed = intern_names(listed)
        if listed:
            self.named_before = True
        wildcard = WILDCARD in listed
        self._key = intern_key(
            wildcard or (not listed and not self.named_before),
            listed - {WILDCARD} if wildcard else self._listed,
        )
        self.wildcard, self.names = self._key

    @property
    def key(self) -> tuple[bool, frozenset[str]]:
        """The subscription as a hashable value, for sharing work between streams.

        Equal keys are the same object (interned), so looking one up in a memo
        compares by identity instead of comparing thousands of names.
        """
        if self._key is None:
            self._key = intern_key(self.wildcard, self.names)
        return self._key

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def sotw_names(self) -> list[str]:
        """The name list that expresses this subscription on the wire."""
        if self.wildcard and not self.named_before:
            return []
        return ([WILDCARD] if self.wildcard else []) + sorted(self.names)

    @property
    def empty(self) -> bool:
        return not self.wildcard and not self.names
