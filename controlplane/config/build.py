"""Validated resources -> the mesh model, with the checks that span resources.

:class:`MeshBuilder` joins Services with the WorkloadEntries they select
(through a label index, so a mesh of 100,000 workloads does not compare every
Service with every workload), resolves host names (:func:`canonical_host`),
DestinationRules and Gateways, and checks what no single document can:
destination hosts, subsets and ports exist, Gateways named by VirtualServices
exist, no two VirtualServices claim the same host on the same gateway, rules
after a catch-all are unreachable, and no resource is defined twice.

The result is a pure function of the resources given. A builder also
*remembers*: its workload index is kept up to date file by file, and each
Service, each selection and each resource's checks are memoized on the
identity of their inputs (resources are immutable and a file that did not
change keeps its resource objects). So the builder a
:class:`~controlplane.config.store.ConfigStore` keeps redoes only the work a
change touches, which is what makes a one-file edit in a 10,000-service mesh
cheap. :func:`build_mesh` is the same computation with a fresh builder.

Where a problem involves two places (a duplicate), the finding is put on the
one that is *newer* (in ``changed``), else on the later in file order, so
that the last-known-good logic can reject the change that introduced it.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from controlplane.config.diagnostics import Finding, Severity
from controlplane.config.resources import (
    KubeServiceSpec,
    Meta,
    Resource,
    ServiceEntrySpec,
    WorkloadSpec,
)
from controlplane.model import (
    DestinationPolicy,
    Endpoint,
    Gateway,
    Labels,
    Mesh,
    Resolution,
    RouteDestination,
    Service,
    ServicePort,
    VirtualService,
    canonical_host,
    labels_match,
)

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class BuildResult:
    mesh: Mesh
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.is_error for f in self.findings)


def _finding(code: str, meta: Meta, path: Path, message: str, warning: bool = False) -> Finding:
    return Finding(
        code,
        meta.file,
        meta.doc,
        path,
        meta.label,
        message,
        Severity.WARNING if warning else None,
    )


def _blame(held: Meta, new: Meta, changed: frozenset[str] | None) -> tuple[Meta, Meta]:
    """(the one to report on, the other) for two definitions in conflict.

    The later one in file order is blamed, unless only the earlier one is part of
    the change being applied. The survivor is always the other, so the outcome
    does not depend on the order in which conflicts are met.
    """
    first, second = (held, new) if (held.file, held.doc) <= (new.file, new.doc) else (new, held)
    if changed is not None and first.file in changed and second.file not in changed:
        return first, second
    return second, first


def _where(meta: Meta) -> str:
    return f"{meta.file}:{meta.line}"


class _WorkloadIndex:
    """WorkloadEntries per namespace and per label pair, kept in step with the files.

    Every bucket has a generation that changes whenever the bucket does, so a
    selection can be reused for as long as the buckets it read are unchanged.
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[Resource, ...]] = {}
        self._by_namespace: dict[str, dict[int, Resource]] = defaultdict(dict)
        self._by_label: dict[tuple[str, str, str], dict[int, Resource]] = defaultdict(dict)
        self._generation: dict[object, int] = defaultdict(int)
        self._clock = 0
        self._selections: dict[tuple[str, Labels], tuple[tuple[int, ...], tuple[Resource, ...]]]
        self._selections = {}

    def sync(self, files: Mapping[str, Sequence[Resource]]) -> None:
        for path in [p for p in self._files if p not in files]:
            self._change(self._files.pop(path), add=False)
        for path, resources in files.items():
            if self._files.get(path) is resources:
                continue
            self._change(self._files.get(path, ()), add=False)
            self._change(resources, add=True)
            self._files[path] = tuple(resources) if not isinstance(resources, tuple) else resources

    def _change(self, workloads: Iterable[Resource], *, add: bool) -> None:
        for resource in workloads:
            if resource.meta.kind != "WorkloadEntry":
                continue
            self._clock += 1
            ns = resource.meta.namespace
            buckets: list[tuple[object, dict[int, Resource]]] = [(ns, self._by_namespace[ns])]
            spec = resource.spec
            assert isinstance(spec, WorkloadSpec)
            for key, value in spec.labels:
                label = (ns, key, value)
                buckets.append((label, self._by_label[label]))
            for name, bucket in buckets:
                if add:
                    bucket[id(resource)] = resource
                else:
                    bucket.pop(id(resource), None)
                self._generation[name] = self._clock

    def select(self, namespace: str, selector: Labels) -> tuple[Resource, ...]:
        """Workloads of ``namespace`` whose labels match ``selector``, sorted by name."""
        names: list[object] = [(namespace, k, v) for k, v in selector] or [namespace]
        generations = tuple(self._generation[name] for name in names)
        key = (namespace, selector)
        cached = self._selections.get(key)
        if cached is not None and cached[0] == generations:
            return cached[1]
        if selector:
            candidates = min(
                (self._by_label.get((namespace, k, v), {}) for k, v in selector), key=len
            ).values()
            found = [r for r in candidates if labels_match(selector, r.spec.labels)]  # type: ignore[union-attr]
        else:
            found = list(self._by_namespace.get(namespace, {}).values())
        found.sort(key=lambda r: (r.meta.name, r.meta.file, r.meta.doc))
        result = tuple(found)
        self._selections[key] = (generations, result)
        return result


def _endpoint_port(
    workload: WorkloadSpec, name: str, target: int | str | None, port: int
) -> int | None:
    number = workload.port_named(name) if name else None
    if number is not None:
        return number
    if isinstance(target, str):
        return workload.port_named(target)
    return target or port


def _kube_service(resource: Resource, selected: Sequence[Resource]) -> Service:
    meta, spec = resource.meta, resource.spec
    assert isinstance(spec, KubeServiceSpec)
    ports: list[ServicePort] = []
    endpoints: list[tuple[int, tuple[Endpoint, ...]]] = []
    for port in spec.ports:
        ports.append(ServicePort(port.name, port.port, port.protocol, port.target_port))
        eps: list[Endpoint] = []
        for workload in selected:
            w = workload.spec
            assert isinstance(w, WorkloadSpec)
            number = _endpoint_port(w, port.name, port.target_port, port.port)
            if number is not None:
                eps.append(Endpoint(w.address, number, w.labels, w.weight, w.locality))
        eps.sort(key=lambda e: (e.address, e.port))
        endpoints.append((port.port, tuple(eps)))
    return Service(
        host=f"{meta.name}.{meta.namespace}.svc.cluster.local",
        namespace=meta.namespace,
        name=meta.name,
        ports=tuple(ports),
        endpoints=tuple(endpoints),
        source=meta.label,
    )


def _entry_services(resource: Resource, selected: Sequence[Resource]) -> tuple[Service, ...]:
    meta, spec = resource.meta, resource.spec
    assert isinstance(spec, ServiceEntrySpec)
    workloads: list[WorkloadSpec] = list(spec.endpoints)
    workloads.extend(r.spec for r in selected)  # type: ignore[misc]
    endpoints: list[tuple[int, tuple[Endpoint, ...]]] = []
    for port in spec.ports:
        eps = []
        for w in workloads:
            number = w.port_named(port.name)
            if number is None:
                number = port.target_port if isinstance(port.target_port, int) else port.port
            eps.append(Endpoint(w.address, number, w.labels, w.weight, w.locality))
        eps.sort(key=lambda e: (e.address, e.port))
        endpoints.append((port.port, tuple(eps)))
    return tuple(
        Service(
            host=host,
            namespace=meta.namespace,
            name=meta.name,
            ports=spec.ports,
            endpoints=tuple(endpoints),
            resolution=spec.resolution,
            addresses=spec.addresses,
            mesh_external=spec.mesh_external,
            source=meta.label,
        )
        for host in spec.hosts
    )


class _Hosts:
    """The known hosts: exact names and ``*.suffix`` wildcards."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.services = services
        self.wildcards = tuple(sorted(h[1:] for h in services if h.startswith("*.")))

    def canonical(self, host: str) -> str:
        return canonical_host(host, self.services)

    def known(self, host: str) -> bool:
        return host in self.services or any(host.endswith(s) for s in self.wildcards)


def _canonical_destination(dest: RouteDestination, hosts: _Hosts) -> RouteDestination:
    host = hosts.canonical(dest.host)
    return dest if host == dest.host else replace(dest, host=host)


def _canonical_virtual_service(vs: VirtualService, hosts: _Hosts) -> VirtualService:
    """``vs`` with every host spelled as the service it names (the same object if it is)."""
    vs_hosts = tuple(hosts.canonical(h) for h in vs.hosts)
    http = tuple(
        replace(
            route,
            destinations=tuple(_canonical_destination(d, hosts) for d in route.destinations),
            mirror=_canonical_destination(route.mirror, hosts) if route.mirror else None,
        )
        for route in vs.http
    )
    tcp = tuple(
        replace(
            route, destinations=tuple(_canonical_destination(d, hosts) for d in route.destinations)
        )
        for route in vs.tcp
    )
    if vs_hosts == vs.hosts and http == vs.http and tcp == vs.tcp:
        return vs
    return replace(vs, hosts=vs_hosts, http=http, tcp=tcp)


def _destination_hosts(vs: VirtualService) -> tuple[str, ...]:
    hosts: set[str] = set()
    for route in vs.http:
        hosts.update(d.host for d in route.destinations)
        if route.mirror is not None:
            hosts.add(route.mirror.host)
    for tcp in vs.tcp:
        hosts.update(d.host for d in tcp.destinations)
    return tuple(sorted(hosts))


class _ResourceTable:
    """Every definition of every (kind, namespace, name), kept in step with the files.

    Keys defined once map straight to their resource; keys defined more than
    once are listed in ``duplicates`` and resolved per build (which one is
    blamed depends on what changed).
    """

    def __init__(self) -> None:
        self._files: dict[str, Sequence[Resource]] = {}
        self.definitions: dict[tuple[str, str, str], list[Resource]] = {}
        self.single: dict[str, dict[tuple[str, str, str], Resource]] = defaultdict(dict)
        self.duplicates: set[tuple[str, str, str]] = set()

    def sync(self, files: Mapping[str, Sequence[Resource]]) -> None:
        for path in [p for p in self._files if p not in files]:
            self._remove(self._files.pop(path))
        for path, resources in files.items():
            old = self._files.get(path)
            if old is resources:
                continue
            if old is not None:
                self._remove(old)
            self._add(resources)
            self._files[path] = resources

    def _add(self, resources: Sequence[Resource]) -> None:
        for resource in resources:
            key = resource.meta.key
            defs = self.definitions.setdefault(key, [])
            defs.append(resource)
            if len(defs) == 1:
                self.single[key[0]][key] = resource
            else:
                self.single[key[0]].pop(key, None)
                self.duplicates.add(key)

    def _remove(self, resources: Sequence[Resource]) -> None:
        for resource in resources:
            key = resource.meta.key
            defs = self.definitions[key]
            defs.remove(resource)
            if not defs:
                del self.definitions[key]
                self.single[key[0]].pop(key, None)
                self.duplicates.discard(key)
            elif len(defs) == 1:
                self.single[key[0]][key] = defs[0]
                self.duplicates.discard(key)


class MeshBuilder:
    """Builds meshes from resources, reusing the work whose inputs did not change."""

    def __init__(self) -> None:
        self._table = _ResourceTable()
        self._index = _WorkloadIndex()
        self._services: dict[int, tuple[Resource, tuple[Resource, ...], tuple[Service, ...]]] = {}
        self._policy_checks: dict[
            int, tuple[Resource, tuple[object, ...], tuple[Finding, ...]]
        ] = {}
        self._route_checks: dict[
            int, tuple[Resource, list[object], VirtualService, tuple[Finding, ...]]
        ] = {}
        self._destinations: dict[int, tuple[VirtualService, tuple[str, ...]]] = {}

    def build(
        self, files: Mapping[str, Sequence[Resource]], changed: frozenset[str] | None = None
    ) -> BuildResult:
        """The mesh of ``files`` (path -> that file's resources, in document order)."""
        findings: list[Finding] = []
        table = self._table
        table.sync(files)
        winners_of: dict[tuple[str, str, str], Resource] = {}
        for key in sorted(table.duplicates):
            defs = sorted(table.definitions[key], key=lambda r: (r.meta.file, r.meta.doc))
            winner = defs[0]
            for resource in defs[1:]:
                blamed, other = _blame(winner.meta, resource.meta, changed)
                findings.append(
                    _finding(
                        "PF208",
                        blamed,
                        ("metadata", "name"),
                        f"{blamed.label} is defined twice: here and at {_where(other)}; "
                        "rename or remove one",
                    )
                )
                if blamed is winner.meta:
                    winner = resource
            winners_of[key] = winner

        def of_kind(kind: str) -> list[Resource]:
            found = list(table.single[kind].values())
            found.extend(r for k, r in winners_of.items() if k[0] == kind)
            return found

        workload_duplicates = any(k[0] == "WorkloadEntry" for k in winners_of)

        def winners(selected: tuple[Resource, ...]) -> tuple[Resource, ...]:
            if not workload_duplicates:
                return selected
            return tuple(
                r for r in selected if r.meta.key not in winners_of or winners_of[r.meta.key] is r
            )

        self._index.sync(files)
        services_memo: dict[int, tuple[Resource, tuple[Resource, ...], tuple[Service, ...]]] = {}
        services: dict[str, Service] = {}
        origin: dict[str, Meta] = {}
        for resource in of_kind("Service") + of_kind("ServiceEntry"):
            spec = resource.spec
            if isinstance(spec, KubeServiceSpec):
                selector = spec.selector
            else:
                assert isinstance(spec, ServiceEntrySpec)
                selector = spec.workload_selector
            selected = (
                winners(self._index.select(resource.meta.namespace, selector))
                if selector is not None
                else ()
            )
            cached = self._services.get(id(resource))
            if cached is not None and cached[0] is resource and cached[1] is selected:
                built = cached[2]
            elif isinstance(spec, KubeServiceSpec):
                built = (_kube_service(resource, selected),)
            else:
                built = _entry_services(resource, selected)
            services_memo[id(resource)] = (resource, selected, built)
            for service in built:
                if service.host in services:
                    blamed, other = _blame(origin[service.host], resource.meta, changed)
                    findings.append(
                        _finding(
                            "PF210",
                            blamed,
                            ("spec", "hosts")
                            if blamed.kind == "ServiceEntry"
                            else ("metadata", "name"),
                            f"host {service.host} is already defined by {other.label} "
                            f"at {_where(other)}",
                        )
                    )
                    if blamed is resource.meta:
                        continue
                services[service.host] = service
                origin[service.host] = resource.meta
        self._services = services_memo
        hosts = _Hosts(services)

        policies: dict[str, DestinationPolicy] = {}
        policy_source: dict[str, Resource] = {}
        for resource in of_kind("DestinationRule"):
            policy = resource.spec
            assert isinstance(policy, DestinationPolicy)
            host = hosts.canonical(policy.host)
            if host != policy.host:
                policy = replace(policy, host=host)
            if host in policies:
                blamed, other = _blame(policy_source[host].meta, resource.meta, changed)
                findings.append(
                    _finding(
                        "PF211",
                        blamed,
                        ("spec", "host"),
                        f"host {host} already has {other.label} at {_where(other)}; "
                        "merge the two into one DestinationRule",
                    )
                )
                if blamed is resource.meta:
                    continue
            policies[host] = policy
            policy_source[host] = resource
        policy_memo: dict[int, tuple[Resource, tuple[object, ...], tuple[Finding, ...]]] = {}
        for host, resource in policy_source.items():
            policy_inputs = (policies[host], services.get(host), hosts.wildcards)
            cached_check = self._policy_checks.get(id(resource))
            if (
                cached_check is not None
                and cached_check[0] is resource
                and _same(cached_check[1], policy_inputs)
            ):
                found = cached_check[2]
            else:
                found = tuple(_check_policy(policies[host], resource.meta, hosts))
            policy_memo[id(resource)] = (resource, policy_inputs, found)
            findings.extend(found)
        self._policy_checks = policy_memo

        gateway_resources = of_kind("Gateway")
        gateways = {f"{r.meta.namespace}/{r.meta.name}" for r in gateway_resources}
        claims: dict[tuple[str, str], tuple[Meta, int]] = {}
        virtual_services: list[VirtualService] = []
        route_memo: dict[
            int, tuple[Resource, list[object], VirtualService, tuple[Finding, ...]]
        ] = {}
        destinations_memo: dict[int, tuple[VirtualService, tuple[str, ...]]] = {}
        for resource in of_kind("VirtualService"):
            written = resource.spec
            assert isinstance(written, VirtualService)
            meta = resource.meta
            known = self._destinations.get(id(resource))
            dest_hosts = (
                known[1]
                if known is not None and known[0] is written
                else _destination_hosts(written)
            )
            destinations_memo[id(resource)] = (written, dest_hosts)
            inputs: list[object] = [hosts.wildcards]
            for host in (*dest_hosts, *written.hosts):
                canonical = hosts.canonical(host)
                inputs += (services.get(canonical), policies.get(canonical))
            cached_route = self._route_checks.get(id(resource))
            if (
                cached_route is not None
                and cached_route[0] is resource
                and _same(cached_route[1], inputs)
            ):
                vs, found = cached_route[2], cached_route[3]
            else:
                vs = _canonical_virtual_service(written, hosts)
                found = tuple(_check_routes(vs, meta, hosts, policies))
            route_memo[id(resource)] = (resource, inputs, vs, found)
            findings.extend(found)
            for g_index, gateway in enumerate(vs.gateways):
                if gateway != "mesh" and gateway not in gateways:
                    findings.append(
                        _finding(
                            "PF204",
                            meta,
                            ("spec", "gateways", g_index),
                            f"Gateway {gateway} does not exist; define it or fix the name",
                        )
                    )
                for h_index, host in enumerate(vs.hosts):
                    claim = claims.get((host, gateway))
                    if claim is None:
                        claims[(host, gateway)] = (meta, h_index)
                        continue
                    blamed, other = _blame(claim[0], meta, changed)
                    findings.append(
                        _finding(
                            "PF206",
                            blamed,
                            ("spec", "hosts", h_index if blamed is meta else claim[1]),
                            f"host {host} on gateway {gateway} is already routed by "
                            f"{other.label} at {_where(other)}; merge the two VirtualServices",
                        )
                    )
                    if blamed is not meta:
                        claims[(host, gateway)] = (meta, h_index)
            virtual_services.append(vs)
        self._route_checks = route_memo
        self._destinations = destinations_memo

        virtual_services.sort(key=lambda v: (v.namespace, v.name))
        gateway_list: list[Gateway] = [r.spec for r in gateway_resources]  # type: ignore[misc]
        gateway_list.sort(key=lambda g: (g.namespace, g.name))
        mesh = Mesh(
            services=tuple(services[h] for h in sorted(services)),
            destination_policies=tuple(policies[h] for h in sorted(policies)),
            virtual_services=tuple(virtual_services),
            gateways=tuple(gateway_list),
        )
        findings.sort(key=lambda f: (f.file, f.doc, repr(f.path), f.code, f.message))
        return BuildResult(mesh, tuple(findings))


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    """Element-wise identity: memo inputs are model objects, equal only when the same."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


def build_mesh(resources: Iterable[Resource], changed: frozenset[str] | None = None) -> BuildResult:
    """Join ``resources`` into a :class:`Mesh` and check them against each other."""
    files: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        files[resource.meta.file].append(resource)
    for items in files.values():
        items.sort(key=lambda r: r.meta.doc)
    return MeshBuilder().build(files, changed)


def _check_policy(policy: DestinationPolicy, meta: Meta, hosts: _Hosts) -> list[Finding]:
    found: list[Finding] = []
    service = hosts.services.get(policy.host)
    if service is None:
        if not hosts.known(policy.host):
            found.append(
                _finding(
                    "PF209",
                    meta,
                    ("spec", "host"),
                    f"no Service or ServiceEntry defines host {policy.host}; "
                    "the rule applies to nothing",
                    warning=True,
                )
            )
        return found
    if service.resolution is not Resolution.STATIC and not any(eps for _, eps in service.endpoints):
        return found
    for index, subset in enumerate(policy.subsets):
        if not any(
            labels_match(subset.labels, e.labels) for _, eps in service.endpoints for e in eps
        ):
            selector = ",".join(f"{k}={v}" for k, v in subset.labels) or "(no labels)"
            found.append(
                _finding(
                    "PF205",
                    meta,
                    ("spec", "subsets", index, "labels"),
                    f"subset {subset.name!r} ({selector}) selects no workload of {policy.host}",
                    warning=True,
                )
            )
    return found


def _check_destination(
    dest: RouteDestination,
    path: Path,
    meta: Meta,
    hosts: _Hosts,
    policies: Mapping[str, DestinationPolicy],
) -> list[Finding]:
    service = hosts.services.get(dest.host)
    if service is None:
        if hosts.known(dest.host):
            return []
        return [
            _finding(
                "PF200",
                meta,
                (*path, "host"),
                f"destination host {dest.host} is not a Service or ServiceEntry; "
                "define it or fix the name",
            )
        ]
    found: list[Finding] = []
    if dest.subset is not None:
        policy = policies.get(dest.host)
        if policy is None or policy.subset(dest.subset) is None:
            defined = ", ".join(s.name for s in policy.subsets) if policy else ""
            found.append(
                _finding(
                    "PF201",
                    meta,
                    (*path, "subset"),
                    f"subset {dest.subset!r} of {dest.host} is not defined by any "
                    "DestinationRule" + (f" (defined: {defined})" if defined else ""),
                )
            )
    numbers = [p.port for p in service.ports]
    if dest.port is None:
        if len(numbers) > 1:
            found.append(
                _finding(
                    "PF202",
                    meta,
                    (*path, "port"),
                    f"{dest.host} has ports {', '.join(map(str, numbers))}: "
                    "set destination.port.number",
                )
            )
    elif dest.port not in numbers:
        found.append(
            _finding(
                "PF203",
                meta,
                (*path, "port", "number"),
                f"{dest.host} does not expose port {dest.port} "
                f"(it exposes {', '.join(map(str, numbers)) or 'no ports'})",
            )
        )
    return found


def _check_routes(
    vs: VirtualService,
    meta: Meta,
    hosts: _Hosts,
    policies: Mapping[str, DestinationPolicy],
) -> list[Finding]:
    found: list[Finding] = []
    catch_all: int | None = None
    for index, route in enumerate(vs.http):
        here: Path = ("spec", "http", index)
        if catch_all is not None:
            found.append(
                _finding(
                    "PF207",
                    meta,
                    here,
                    f"this rule is never used: spec.http[{catch_all}] before it matches "
                    "every request",
                    warning=True,
                )
            )
        elif route.is_catch_all:
            catch_all = index
        for d_index, dest in enumerate(route.destinations):
            found.extend(
                _check_destination(
                    dest, (*here, "route", d_index, "destination"), meta, hosts, policies
                )
            )
        if route.mirror is not None:
            found.extend(_check_destination(route.mirror, (*here, "mirror"), meta, hosts, policies))
    for index, tcp in enumerate(vs.tcp):
        for d_index, dest in enumerate(tcp.destinations):
            found.extend(
                _check_destination(
                    dest,
                    ("spec", "tcp", index, "route", d_index, "destination"),
                    meta,
                    hosts,
                    policies,
                )
            )
    return found
