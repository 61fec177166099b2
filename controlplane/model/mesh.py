"""The whole mesh at one moment: what one good configuration says.

:class:`Mesh` is the single value handed from the config layer to
translation. Its collections are tuples sorted by key; the lookup helpers
build their indexes lazily once per instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from controlplane.model.gateway import Gateway
from controlplane.model.policy import DestinationPolicy
from controlplane.model.routing import VirtualService
from controlplane.model.service import Labels, Service, labels_match
from controlplane.model.visibility import EVERYWHERE, visible


@dataclass(frozen=True)
class Mesh:
    services: tuple[Service, ...] = ()
    destination_policies: tuple[DestinationPolicy, ...] = ()
    virtual_services: tuple[VirtualService, ...] = ()
    gateways: tuple[Gateway, ...] = ()

    @cached_property
    def services_by_host(self) -> Mapping[str, Service]:
        return {s.host: s for s in self.services}

    @cached_property
    def policies_by_host(self) -> Mapping[str, DestinationPolicy]:
        return {p.host: p for p in self.destination_policies}

    @cached_property
    def gateways_by_key(self) -> Mapping[str, Gateway]:
        return {g.key: g for g in self.gateways}

    @cached_property
    def restricted_namespaces(self) -> frozenset[str] | None:
        """None when every resource is exported everywhere, else the namespaces named.

        Every namespace outside this set sees the same view: the resources
        exported everywhere.
        """
        found: set[str] = set()
        restricted = False
        for items in (self.services, self.destination_policies, self.virtual_services):
            for item in items:
                if EVERYWHERE not in item.export_to:
                    restricted = True
                    found.update(item.export_to)
        return frozenset(found) if restricted else None

    @cached_property
    def _views(self) -> dict[str, Mesh]:
        return {}

    def view_name(self, namespace: str) -> str:
        """``namespace`` if something is exported to it by name, else ``*``: namespaces
        with the same view name see the same mesh."""
        restricted = self.restricted_namespaces
        return namespace if restricted is not None and namespace in restricted else EVERYWHERE

    def seen_from(self, namespace: str) -> Mesh:
        """The mesh as a proxy of ``namespace`` sees it: what is exported there.

        ``self`` when nothing is hidden from it; otherwise a mesh of the same
        objects (so translation caches keyed by identity still hit), computed
        once per namespace and shared by every namespace that sees the same.
        """
        if self.restricted_namespaces is None:
            return self
        key = self.view_name(namespace)
        view = self._views.get(key)
        if view is None:
            view = Mesh(
                services=tuple(s for s in self.services if visible(s.export_to, key)),
                destination_policies=tuple(
                    p for p in self.destination_policies if visible(p.export_to, key)
                ),
                virtual_services=tuple(
                    v for v in self.virtual_services if visible(v.export_to, key)
                ),
                gateways=self.gateways,
            )
            self._views[key] = view
        return view

    def service(self, host: str) -> Service | None:
        return self.services_by_host.get(host)

    def policy(self, host: str) -> DestinationPolicy | None:
        return self.policies_by_host.get(host)

    @cached_property
    def _bound(self) -> Mapping[str, tuple[VirtualService, ...]]:
        bound: dict[str, list[VirtualService]] = {}
        for vs in self.virtual_services:
            for gateway in vs.gateways:
                bound.setdefault(gateway, []).append(vs)
        return {gateway: tuple(items) for gateway, items in bound.items()}

    @cached_property
    def _bound_by_host(self) -> Mapping[tuple[str, str], tuple[VirtualService, ...]]:
        by_host: dict[tuple[str, str], list[VirtualService]] = {}
        for vs in self.virtual_services:
            for gateway in vs.gateways:
                for host in dict.fromkeys(vs.hosts):
                    by_host.setdefault((gateway, host), []).append(vs)
        return {key: tuple(items) for key, items in by_host.items()}

    def virtual_services_for_gateway(self, gateway: str) -> tuple[VirtualService, ...]:
        """VirtualServices bound to ``gateway`` (``"mesh"`` or ``"namespace/name"``)."""
        return self._bound.get(gateway, ())

    def virtual_services_naming(self, gateway: str, host: str) -> tuple[VirtualService, ...]:
        """VirtualServices bound to ``gateway`` that list ``host`` itself among their hosts."""
        return self._bound_by_host.get((gateway, host), ())

    def gateways_for(self, node_labels: Labels) -> tuple[Gateway, ...]:
        """Gateways whose selector matches a gateway proxy with ``node_labels``."""
        return tuple(
            g for g in self.gateways if g.selector and labels_match(g.selector, node_labels)
        )
