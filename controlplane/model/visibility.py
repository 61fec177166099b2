"""Visibility: which namespaces see a resource (Istio's ``exportTo``).

A Service, DestinationRule or VirtualService carries the namespaces it is
exported to as :data:`ExportTo`: namespace names, or :data:`EVERYWHERE`
(``"*"``); the config layer has already resolved ``"."`` to the resource's
own namespace, and an empty tuple is Istio's ``"~"`` (exported to nobody).
A proxy sees a resource when it is exported to the proxy's namespace;
:meth:`controlplane.model.Mesh.seen_from` gives a namespace's view of the mesh.
"""

from __future__ import annotations

ExportTo = tuple[str, ...]

EVERYWHERE = "*"
EXPORTED_EVERYWHERE: ExportTo = (EVERYWHERE,)

DEFAULT_NAMESPACE = "default"
"""The namespace of a proxy whose node does not say (see controlplane.translate.proxy)."""


def visible(export_to: ExportTo, namespace: str) -> bool:
    """True when a resource exported to ``export_to`` is seen from ``namespace``."""
    return EVERYWHERE in export_to or namespace in export_to


def overlap(a: ExportTo, b: ExportTo) -> bool:
    """True when some namespace sees both ``a`` and ``b``."""
    if not a or not b:
        return False
    return EVERYWHERE in a or EVERYWHERE in b or not set(a).isdisjoint(b)
