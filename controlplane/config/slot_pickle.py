"""Pickling frozen, slotted dataclasses so that unpickling them is cheap.

The read helper (:mod:`~controlplane.config.parallel_read`) answers with
pickled ``FileVersion`` objects, about fifty records per file, and the
reading process pays for unpickling every one of them. A dataclass's own
``__reduce__``/``__setstate__`` looks its fields up again for every object;
:class:`SlotPickler` pickles such a record as a *rebuild function* of its
class and the values of its slots instead. The rebuild function is made for
the class once per process (:func:`rebuilder`, generated code as
``dataclasses`` generates ``__init__``): it takes the values positionally
and sets each slot through its descriptor, one call per object with nothing
looked up, about half the cost of the generic way.

A pickle names a function by module and name, so each rebuild function is an
attribute of this module, ``_rebuild:<module>:<class>`` (dots written ``/``,
because a pickle looks a dotted name up part by part). The unpickling
process has not made it yet: this module's ``__getattr__`` makes it on
demand, from the class the name gives, and only for a slotted dataclass. It
lives in a module of its own because a module ``__getattr__`` lets a type
checker accept any name imported from the module.
"""

from __future__ import annotations

import importlib
import operator
import pickle
from collections.abc import Callable
from typing import Any

_PREFIX = "_rebuild:"
Rebuilder = tuple[Callable[..., Any], Callable[[Any], tuple[Any, ...]]]
_REBUILDERS: dict[type, Rebuilder] = {}


class SlotPickler(pickle.Pickler):
    """A pickler that writes frozen, slotted dataclasses as their rebuild function and slots."""

    def reducer_override(self, obj: Any) -> Any:
        known = _REBUILDERS.get(type(obj))
        if known is None:
            if not _is_slotted_dataclass(type(obj)):
                return NotImplemented
            known = rebuilder(type(obj))
        rebuild, values = known
        return rebuild, values(obj)


def _is_slotted_dataclass(cls: Any) -> bool:
    return (
        isinstance(cls, type)
        and "__dataclass_fields__" in cls.__dict__
        and "__slots__" in cls.__dict__
    )


def rebuilder(cls: type) -> Rebuilder:
    """The function that makes a ``cls`` from its slot values, and the one that gives them."""
    known = _REBUILDERS.get(cls)
    if known is not None:
        return known
    names = [
        name
        for base in reversed(cls.__mro__)
        for name in base.__dict__.get("__slots__", ())
        if name not in ("__weakref__", "__dict__")
    ]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = []
    for index, name in enumerate(names):
        namespace[f"_set{index}"] = getattr(cls, name).__set__
        body.append(f"    _set{index}(self, v{index})\n")
    source = "".join(
        [
            f"def rebuild({', '.join(f'v{index}' for index in range(len(names)))}):\n",
            "    self = _new(_cls)\n",
            *body,
            "    return self\n",
        ]
    )
    exec(source, namespace)  # generated from the class's own slots, as dataclasses does
    rebuild = namespace["rebuild"]
    rebuild.__module__ = __name__
    rebuild.__name__ = rebuild.__qualname__ = (
        f"{_PREFIX}{cls.__module__}:{cls.__qualname__}".replace(".", "/")
    )
    values: Callable[[Any], tuple[Any, ...]]
    if len(names) > 1:
        values = operator.attrgetter(*names)
    elif names:
        getter = operator.attrgetter(names[0])
        values = lambda obj: (getter(obj),)  # noqa: E731 - attrgetter gives no tuple for one name
    else:
        values = lambda obj: ()  # noqa: E731
    known = _REBUILDERS[cls] = (rebuild, values)
    # Found as an attribute from now on, without __getattr__.
    globals()[rebuild.__name__] = rebuild
    return known


def __getattr__(name: str) -> Any:
    """The rebuild function a pickle names (see :func:`rebuilder`), made when first needed."""
    if name.startswith(_PREFIX):
        module, _, qualname = name[len(_PREFIX) :].replace("/", ".").partition(":")
        try:
            found: Any = importlib.import_module(module)
        except ImportError:
            found = None
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if _is_slotted_dataclass(found):
            return rebuilder(found)[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
