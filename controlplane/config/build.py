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

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter

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
    overlap,
)

Path = tuple[str | int, ...]
Key = tuple[str, str, str]


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

    A bucket maps ``id(resource)`` to the resource; the workloads a selector
    picks are those in every bucket of its pairs (read from the smallest).
    Every bucket has a generation that changes whenever the bucket does, so a
    selection can be reused for as long as the buckets it read are unchanged.
    """

    def __init__(self) -> None:
        self._files: dict[str, Sequence[Resource]] = {}
        self._buckets: dict[object, dict[int, Resource]] = {}
        self._generation: dict[object, int] = {}
        self._clock = 0
        self._selections: dict[tuple[str, Labels], tuple[tuple[int, ...], tuple[Resource, ...]]]
        self._selections = {}

    def sync(self, files: Mapping[str, Sequence[Resource]]) -> set[object]:
        """Follow ``files``; returns the names of the buckets that changed."""
        changed: set[object] = set()
        for path in [p for p in self._files if p not in files]:
            self._remove(self._files.pop(path), changed)
        for path, resources in files.items():
            old = self._files.get(path)
            if old is resources:
                continue
            if old is not None:
                self._remove(old, changed)
            self._add(resources, changed)
            self._files[path] = resources
        if changed:
            # Selections are made between syncs, so one tick per sync tells every
            # changed bucket from what any selection read.
            self._clock += 1
            clock = self._clock
            generation = self._generation
            for name in changed:
                generation[name] = clock
        return changed

    def _add(self, resources: Sequence[Resource], changed: set[object]) -> None:
        buckets = self._buckets
        for resource in resources:
            if resource.meta.kind != "WorkloadEntry":
                continue
            for name in bucket_names(resource):
                bucket = buckets.get(name)
                if bucket is None:
                    bucket = buckets[name] = {}
                bucket[id(resource)] = resource
                changed.add(name)

    def _remove(self, resources: Sequence[Resource], changed: set[object]) -> None:
        buckets = self._buckets
        for resource in resources:
            if resource.meta.kind != "WorkloadEntry":
                continue
            for name in bucket_names(resource):
                bucket = buckets.get(name)
                if bucket is not None:
                    bucket.pop(id(resource), None)
                    if not bucket:
                        del buckets[name]
                changed.add(name)

    def select(self, namespace: str, selector: Labels) -> tuple[list[object], tuple[Resource, ...]]:
        """The buckets read, and the workloads of ``namespace`` whose labels match
        ``selector``, sorted by name."""
        names = selector_buckets(namespace, selector)
        generation = self._generation
        generations = tuple([generation.get(name, 0) for name in names])
        key = (namespace, selector)
        cached = self._selections.get(key)
        if cached is not None and cached[0] == generations:
            return names, cached[1]
        buckets = self._buckets
        if len(names) == 1:
            found = list(buckets.get(names[0], _NO_WORKLOADS).values())
        else:
            smallest, *others = sorted(
                [buckets.get(name, _NO_WORKLOADS) for name in names], key=len
            )
            found = [r for i, r in smallest.items() if all([i in other for other in others])]
        found.sort(key=_workload_order)
        result = tuple(found)
        self._selections[key] = (generations, result)
        return names, result


_NO_WORKLOADS: Mapping[int, Resource] = {}
_workload_order = attrgetter("meta.name", "meta.file", "meta.doc")


def bucket_names(workload: Resource) -> list[object]:
    """The index buckets a WorkloadEntry sits in: its namespace and each of its label pairs.

    A pair is read as :func:`~controlplane.model.labels_match` reads labels (as a
    mapping), so sitting in the buckets of a selector's pairs is matching it.
    """
    ns = workload.meta.namespace
    spec = workload.spec
    assert isinstance(spec, WorkloadSpec)
    return [ns, *[(ns, k, v) for k, v in dict(spec.labels).items()]]


def selector_buckets(namespace: str, selector: Labels) -> list[object]:
    """The buckets a selection reads (the namespace bucket for an empty selector)."""
    return [(namespace, k, v) for k, v in selector] or [namespace]


def _kube_service(resource: Resource, selected: Sequence[Resource]) -> Service:
    meta, spec = resource.meta, resource.spec
    assert isinstance(spec, KubeServiceSpec)
    # Workloads without an address are on another network (PF124).
    workloads = [w for w in _workload_specs(selected) if w.address]
    ports: list[ServicePort] = []
    endpoints: list[tuple[int, tuple[Endpoint, ...]]] = []
    for port in spec.ports:
        ports.append(ServicePort(port.name, port.port, port.protocol, port.target_port))
        name, target = port.name, port.target_port
        # A named targetPort is looked up per workload; a number (or none) is the same for all.
        target_name = target if isinstance(target, str) else None
        target_number = None if isinstance(target, str) else target or port.port
        eps: list[Endpoint] = []
        for w in workloads:
            number = w.port_named(name) if name else None
            if number is None:
                number = target_number if target_name is None else w.port_named(target_name)
            if number is not None:
                eps.append(Endpoint(w.address, number, w.labels, w.weight, w.locality))
        eps.sort(key=_endpoint_order)
        endpoints.append((port.port, tuple(eps)))
    return Service(
        host=f"{meta.name}.{meta.namespace}.svc.cluster.local",
        namespace=meta.namespace,
        name=meta.name,
        ports=tuple(ports),
        endpoints=tuple(endpoints),
        source=meta.label,
        export_to=spec.export_to,
    )


def _workload_specs(selected: Sequence[Resource]) -> list[WorkloadSpec]:
    return [r.spec for r in selected]  # type: ignore[misc]


_endpoint_order = attrgetter("address", "port")


def _entry_services(resource: Resource, selected: Sequence[Resource]) -> tuple[Service, ...]:
    meta, spec = resource.meta, resource.spec
    assert isinstance(spec, ServiceEntrySpec)
    workloads: list[WorkloadSpec] = [*spec.endpoints, *_workload_specs(selected)]
    endpoints: list[tuple[int, tuple[Endpoint, ...]]] = []
    for port in spec.ports:
        eps = []
        for w in workloads:
            if not w.address:
                continue  # on another network (PF124)
            number = w.port_named(port.name)
            if number is None:
                number = port.target_port if isinstance(port.target_port, int) else port.port
            eps.append(Endpoint(w.address, number, w.labels, w.weight, w.locality))
        eps.sort(key=_endpoint_order)
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
            export_to=spec.export_to,
        )
        for host in spec.hosts
    )


_CLUSTER_SUFFIX = ".svc.cluster.local"


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


def _host_names(vs: VirtualService) -> set[str]:
    """Every host ``vs`` names: its own and those of its destinations and mirrors."""
    names = set(vs.hosts)
    for route in vs.http:
        for dest in route.destinations:
            names.add(dest.host)
        if route.mirror is not None:
            names.add(route.mirror.host)
    for tcp in vs.tcp:
        for dest in tcp.destinations:
            names.add(dest.host)
    return names


class _ResourceTable:
    """Every definition of every (kind, namespace, name), kept in step with the files.

    Keys defined more than once are listed in ``duplicates`` and resolved per
    build (which one is blamed depends on what changed).
    """

    def __init__(self) -> None:
        self._files: dict[str, Sequence[Resource]] = {}
        self.definitions: dict[tuple[str, str, str], list[Resource]] = {}
        self.duplicates: set[tuple[str, str, str]] = set()

    def sync(self, files: Mapping[str, Sequence[Resource]]) -> set[Key]:
        """Follow ``files``; returns the keys whose definitions changed."""
        changed: set[Key] = set()
        for path in [p for p in self._files if p not in files]:
            self._remove(self._files.pop(path), changed)
        for path, resources in files.items():
            old = self._files.get(path)
            if old is resources:
                continue
            if old is not None:
                self._remove(old, changed)
            self._add(resources, changed)
            self._files[path] = resources
        return changed

    def _add(self, resources: Sequence[Resource], changed: set[Key]) -> None:
        definitions = self.definitions
        for resource in resources:
            key = resource.meta.key
            changed.add(key)
            defs = definitions.get(key)
            if defs is None:
                definitions[key] = [resource]
            else:
                defs.append(resource)
                self.duplicates.add(key)

    def _remove(self, resources: Sequence[Resource], changed: set[Key]) -> None:
        for resource in resources:
            key = resource.meta.key
            changed.add(key)
            defs = self.definitions[key]
            defs.remove(resource)
            if not defs:
                del self.definitions[key]
                self.duplicates.discard(key)
            elif len(defs) == 1:
                self.duplicates.discard(key)


# Resources a build must drop (and more than it keeps) for the builder to start afresh.
_FRESH_START_AFTER = 10_000


class MeshBuilder:
    """Builds meshes from files of resources, redoing only what a change touches.

    State carried from one :meth:`build` to the next is derived from the files
    of the previous build alone; each phase works out what its inputs changed
    (resources, index buckets, hosts, policies, gateways) and recomputes just
    the dependent parts. ``tests/config/test_build_incremental.py`` checks that
    any sequence of builds gives exactly what a fresh builder gives.
    """

    def __init__(self) -> None:
        self._resources = 0
        self._reset()

    def _reset(self) -> None:
        self._table = _ResourceTable()
        self._index = _WorkloadIndex()
        self._effective: dict[Key, Resource] = {}
        self._dup_keys: set[Key] = set()
        # services: per Service/ServiceEntry key, then per host
        self._svc_built: dict[Key, tuple[Resource, tuple[Resource, ...], tuple[Service, ...]]] = {}
        self._svc_reads: dict[Key, list[object]] = {}
        self._readers: dict[object, set[Key]] = defaultdict(set)
        self._host_candidates: dict[str, dict[Key, Service]] = defaultdict(dict)
        self._services: dict[str, Service] = {}
        self._host_conflicts: dict[str, list[Finding]] = {}
        self._wildcards: tuple[str, ...] = ()
        # destination rules: per key, then per canonical host
        self._dr: dict[Key, tuple[Resource, DestinationPolicy]] = {}
        self._dr_by_raw: dict[str, set[Key]] = defaultdict(set)
        self._policy_candidates: dict[str, set[Key]] = defaultdict(set)
        self._policies: dict[str, DestinationPolicy] = {}
        self._policy_source: dict[str, Resource] = {}
        self._policy_conflicts: dict[str, list[Finding]] = {}
        self._policy_checks: dict[str, list[Finding]] = {}
        # gateways and virtual services
        self._gateways: dict[Key, Gateway] = {}
        self._vs: dict[Key, tuple[Resource, VirtualService]] = {}
        self._vs_findings: dict[Key, list[Finding]] = {}
        self._vs_reads: dict[Key, set[str]] = {}
        self._vs_by_host: dict[str, set[Key]] = defaultdict(set)
        self._vs_by_gateway: dict[str, set[Key]] = defaultdict(set)
        self._claims: dict[tuple[str, str], dict[Key, int]] = defaultdict(dict)
        self._claim_conflicts: dict[tuple[str, str], list[Finding]] = {}
        self._mesh = Mesh()

    def build(
        self, files: Mapping[str, Sequence[Resource]], changed: frozenset[str] | None = None
    ) -> BuildResult:
        """The mesh of ``files`` (path -> that file's resources, in document order)."""
        resources = sum(map(len, files.values()))
        if self._resources - resources > max(_FRESH_START_AFTER, resources):
            # Most of the mesh went (a large file deleted). Dicts never shrink, and index
            # buckets of labels no longer used stay: start afresh, as a new builder would,
            # so that their memory goes back too. Rebuilding what is left costs less
            # than removing what went did.
            self._reset()
        self._resources = resources
        dirty, shifted, dup_findings = self._resolve_definitions(files, changed)
        buckets = self._index.sync(files)
        for resource in shifted:
            if resource.meta.kind == "WorkloadEntry":
                buckets.update(bucket_names(resource))
        service_keys = dirty["Service"] | dirty["ServiceEntry"]
        readers = self._readers
        for bucket in buckets:
            keys = readers.get(bucket)
            if keys:
                service_keys |= keys
        hosts_touched = self._update_services(service_keys)
        changed_hosts, membership = self._resolve_hosts(hosts_touched, changed)
        hosts = _Hosts(self._services)
        everything = hosts.wildcards != self._wildcards
        self._wildcards = hosts.wildcards
        raw_names = set(membership)
        for host in membership:
            if host.endswith(_CLUSTER_SUFFIX):
                short = host[: -len(_CLUSTER_SUFFIX)]
                if short.count(".") == 1:
                    raw_names.add(short)

        dr_keys = (
            set(self._dr) | dirty["DestinationRule"]
            if everything
            else set(dirty["DestinationRule"])
        )
        for name in raw_names:
            dr_keys |= self._dr_by_raw.get(name, set())
        policy_hosts = self._update_policies(dr_keys, hosts)
        changed_policies = self._resolve_policies(policy_hosts, changed)
        recheck = policy_hosts | changed_policies | changed_hosts | membership
        if everything:
            recheck |= set(self._policies) | set(self._policy_checks)
        for host in recheck:
            policy = self._policies.get(host)
            found = (
                _check_policy(policy, self._policy_source[host].meta, hosts)
                if policy is not None
                else []
            )
            if found:
                self._policy_checks[host] = found
            else:
                self._policy_checks.pop(host, None)

        gateway_names_changed = self._update_gateways(dirty["Gateway"])
        vs_keys = set(dirty["VirtualService"])
        if everything:
            vs_keys |= set(self._vs)
        for name in changed_hosts | changed_policies | raw_names | membership:
            vs_keys |= self._vs_by_host.get(name, set())
        for name in gateway_names_changed:
            vs_keys |= self._vs_by_gateway.get(name, set())
        claims_touched = self._update_virtual_services(vs_keys, hosts)
        self._resolve_claims(claims_touched)

        findings = list(dup_findings)
        for group in (
            self._host_conflicts,
            self._policy_conflicts,
            self._policy_checks,
            self._vs_findings,
            self._claim_conflicts,
        ):
            for items in group.values():  # type: ignore[attr-defined]
                findings.extend(items)
        findings.sort(key=lambda f: (f.file, f.doc, repr(f.path), f.code, f.message))
        self._mesh = self._assemble(
            bool(changed_hosts or membership),
            bool(changed_policies or policy_hosts),
            bool(vs_keys),
            bool(gateway_names_changed or dirty["Gateway"]),
        )
        return BuildResult(self._mesh, tuple(findings))

    # -- definitions ---------------------------------------------------------------------

    def _resolve_definitions(
        self, files: Mapping[str, Sequence[Resource]], changed: frozenset[str] | None
    ) -> tuple[dict[str, set[Key]], list[Resource], list[Finding]]:
        """Settle which definition of each touched key is in effect.

        Returns the keys whose effective resource changed, per kind; the
        resources that took or lost effect without their file changing (when
        duplicates are resolved anew: the index's sync does not see those);
        and the PF208 findings.
        """
        table = self._table
        duplicated = table.duplicates | self._dup_keys
        touched = table.sync(files)
        duplicated |= table.duplicates
        touched |= duplicated
        self._dup_keys = set(table.duplicates)
        definitions = table.definitions
        effective = self._effective
        dirty: dict[str, set[Key]] = defaultdict(set)
        shifted: list[Resource] = []
        findings: list[Finding] = []
        for key in touched:
            defs = definitions.get(key)
            winner: Resource | None = None
            if defs is None:
                pass
            elif len(defs) == 1:
                winner = defs[0]
            else:
                ordered = sorted(defs, key=_position)
                winner = ordered[0]
                for resource in ordered[1:]:
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
            old = effective.get(key)
            if winner is old:
                continue
            if winner is None:
                del effective[key]
            else:
                effective[key] = winner
            dirty[key[0]].add(key)
            if key in duplicated:
                shifted.extend(r for r in (old, winner) if r is not None)
        return dirty, shifted, findings

    # -- services ------------------------------------------------------------------------

    def _update_services(self, keys: set[Key]) -> set[str]:
        touched: set[str] = set()
        effective = self._effective
        built_before = self._svc_built
        candidates = self._host_candidates
        readers = self._readers
        svc_reads = self._svc_reads
        select = self._index.select
        for key in keys:
            old = built_before.pop(key, None)
            if old is not None:
                for service in old[2]:
                    candidates[service.host].pop(key, None)
                    touched.add(service.host)
            for bucket in svc_reads.pop(key, ()):
                readers[bucket].discard(key)
            resource = effective.get(key)
            if resource is None:
                continue
            spec = resource.spec
            selector = (
                spec.selector if isinstance(spec, KubeServiceSpec) else spec.workload_selector  # type: ignore[union-attr]
            )
            selected: tuple[Resource, ...] = ()
            if selector is not None:
                reads, selected = select(resource.meta.namespace, selector)
                for workload in selected:
                    if effective.get(workload.meta.key) is not workload:
                        selected = tuple(r for r in selected if effective.get(r.meta.key) is r)
                        break
                svc_reads[key] = reads
                for bucket in reads:
                    readers[bucket].add(key)
            if old is not None and old[0] is resource and old[1] == selected:
                built = old[2]
            elif isinstance(spec, KubeServiceSpec):
                built = (_kube_service(resource, selected),)
            else:
                built = _entry_services(resource, selected)
            built_before[key] = (resource, selected, built)
            for service in built:
                candidates[service.host][key] = service
                touched.add(service.host)
        return touched

    def _resolve_hosts(
        self, touched: set[str], changed: frozenset[str] | None
    ) -> tuple[set[str], set[str]]:
        """Settle who defines each touched host; returns (changed hosts, added/removed hosts)."""
        changed_hosts: set[str] = set()
        membership: set[str] = set()
        for host in touched | set(self._host_conflicts):
            candidates = self._host_candidates.get(host)
            old = self._services.get(host)
            if not candidates:
                self._host_candidates.pop(host, None)
                self._host_conflicts.pop(host, None)
                if old is not None:
                    del self._services[host]
                    changed_hosts.add(host)
                    membership.add(host)
                continue
            ordered = sorted(candidates, key=lambda k: _position(self._effective[k]))
            holder = ordered[0]
            found: list[Finding] = []
            if _combinable([self._effective[k].meta for k in ordered]):
                service = _combined([(self._effective[k], candidates[k]) for k in ordered])
                first = self._effective[holder]
                ignored = [
                    _finding(
                        "PF210",
                        self._effective[key].meta,
                        ("spec", "hosts"),
                        f"host {host} is also defined by {first.meta.label} at "
                        f"{_where(first.meta)} with another resolution, labels or "
                        "workloadSelector; as in Istio, this ServiceEntry is ignored for it",
                        warning=True,
                    )
                    for key in ordered[1:]
                    if not _mergeable(first, self._effective[key])
                ]
                if ignored:
                    self._host_conflicts[host] = ignored
                else:
                    self._host_conflicts.pop(host, None)
                if service != old:
                    self._services[host] = service
                    changed_hosts.add(host)
                    if old is None:
                        membership.add(host)
                continue
            for key in ordered[1:]:
                held, new = self._effective[holder].meta, self._effective[key].meta
                blamed, other = _blame(held, new, changed)
                found.append(
                    _finding(
                        "PF210",
                        blamed,
                        ("spec", "hosts")
                        if blamed.kind == "ServiceEntry"
                        else ("metadata", "name"),
                        f"host {host} is already defined by {other.label} at {_where(other)}",
                    )
                )
                if blamed is held:
                    holder = key
            if found:
                self._host_conflicts[host] = found
            else:
                self._host_conflicts.pop(host, None)
            service = candidates[holder]
            if service is not old:
                self._services[host] = service
                changed_hosts.add(host)
                if old is None:
                    membership.add(host)
        return changed_hosts, membership

    # -- destination rules ---------------------------------------------------------------

    def _update_policies(self, keys: set[Key], hosts: _Hosts) -> set[str]:
        touched: set[str] = set()
        for key in keys:
            old = self._dr.pop(key, None)
            if old is not None:
                old_policy = old[1]
                self._policy_candidates[old_policy.host].discard(key)
                self._dr_by_raw[old[0].spec.host].discard(key)  # type: ignore[union-attr]
                touched.add(old_policy.host)
            resource = self._effective.get(key)
            if resource is None:
                continue
            written = resource.spec
            assert isinstance(written, DestinationPolicy)
            host = hosts.canonical(written.host)
            if old is not None and old[0] is resource and old[1].host == host:
                policy = old[1]
            else:
                policy = written if host == written.host else replace(written, host=host)
            self._dr[key] = (resource, policy)
            self._dr_by_raw[written.host].add(key)
            self._policy_candidates[host].add(key)
            touched.add(host)
        return touched

    def _resolve_policies(self, touched: set[str], changed: frozenset[str] | None) -> set[str]:
        changed_hosts: set[str] = set()
        for host in touched | set(self._policy_conflicts):
            keys = self._policy_candidates.get(host)
            old = self._policies.get(host)
            if not keys:
                self._policy_candidates.pop(host, None)
                self._policy_conflicts.pop(host, None)
                if old is not None:
                    del self._policies[host]
                    del self._policy_source[host]
                    changed_hosts.add(host)
                continue
            ordered = sorted(keys, key=lambda k: _position(self._dr[k][0]))
            holder = ordered[0]
            found: list[Finding] = []
            for key in ordered[1:]:
                held, new = self._dr[holder][0].meta, self._dr[key][0].meta
                blamed, other = _blame(held, new, changed)
                found.append(
                    _finding(
                        "PF211",
                        blamed,
                        ("spec", "host"),
                        f"host {host} already has {other.label} at {_where(other)}; "
                        "merge the two into one DestinationRule",
                    )
                )
                if blamed is held:
                    holder = key
            if found:
                self._policy_conflicts[host] = found
            else:
                self._policy_conflicts.pop(host, None)
            resource, policy = self._dr[holder]
            self._policy_source[host] = resource
            if policy is not old:
                self._policies[host] = policy
                changed_hosts.add(host)
        return changed_hosts

    # -- gateways and virtual services ---------------------------------------------------

    def _update_gateways(self, keys: set[Key]) -> set[str]:
        names: set[str] = set()
        for key in keys:
            resource = self._effective.get(key)
            existed = key in self._gateways
            if resource is None:
                self._gateways.pop(key, None)
            else:
                self._gateways[key] = resource.spec  # type: ignore[assignment]
            if existed != (resource is not None):
                names.add(f"{key[1]}/{key[2]}")
        return names

    def _update_virtual_services(self, keys: set[Key], hosts: _Hosts) -> set[tuple[str, str]]:
        touched: set[tuple[str, str]] = set()
        gateway_names = {f"{k[1]}/{k[2]}" for k in self._gateways}
        for key in keys:
            old = self._vs.pop(key, None)
            if old is not None:
                for name in self._vs_reads.pop(key, set()):
                    self._vs_by_host[name].discard(key)
                for gateway in old[1].gateways:
                    self._vs_by_gateway[gateway].discard(key)
                    for host in old[1].hosts:
                        self._claims[(host, gateway)].pop(key, None)
                        touched.add((host, gateway))
            self._vs_findings.pop(key, None)
            resource = self._effective.get(key)
            if resource is None:
                continue
            written = resource.spec
            assert isinstance(written, VirtualService)
            names = _host_names(written)
            canonical = hosts.canonical
            renamed = [c for name in names if (c := canonical(name)) != name]
            if not renamed:
                vs = written  # every host is spelled as the service it names
            else:
                vs = _canonical_virtual_service(written, hosts)
                if old is not None and old[0] is resource and old[1] == vs:
                    vs = old[1]
            meta = resource.meta
            found = _check_routes(vs, meta, hosts, self._policies)
            for index, gateway in enumerate(vs.gateways):
                if gateway != "mesh" and gateway not in gateway_names:
                    found.append(
                        _finding(
                            "PF204",
                            meta,
                            ("spec", "gateways", index),
                            f"Gateway {gateway} does not exist; define it or fix the name",
                        )
                    )
            if found:
                self._vs_findings[key] = found
            self._vs[key] = (resource, vs)
            reads = names.union(renamed)
            self._vs_reads[key] = reads
            for name in reads:
                self._vs_by_host[name].add(key)
            for gateway in vs.gateways:
                self._vs_by_gateway[gateway].add(key)
                for index, host in enumerate(vs.hosts):
                    self._claims[(host, gateway)].setdefault(key, index)
                    touched.add((host, gateway))
        return touched

    def _resolve_claims(self, touched: set[tuple[str, str]]) -> None:
        for claim in touched | set(self._claim_conflicts):
            holders = self._claims.get(claim)
            if not holders or len(holders) == 1:
                if not holders:
                    self._claims.pop(claim, None)
                self._claim_conflicts.pop(claim, None)
                continue
            host, gateway = claim
            if gateway != "mesh":
                # As Istio does, the VirtualServices of one gateway host are merged; file
                # order stands in for creation order (see Mesh.virtual_services).
                self._claim_conflicts.pop(claim, None)
                continue
            # As Istio does for sidecars, the first VirtualService for a host wins and the
            # others are ignored for it. File order stands in for creation time, so the
            # outcome is the same whichever file changed and after a restart.
            ordered = sorted(holders, key=lambda k: _position(self._vs[k][0]))
            found: list[Finding] = []
            for index, key in enumerate(ordered):
                later = self._vs[key]
                # Only a namespace that sees both has a conflict (exportTo).
                earlier = next(
                    (
                        self._vs[k][0].meta
                        for k in ordered[:index]
                        if overlap(self._vs[k][1].export_to, later[1].export_to)
                    ),
                    None,
                )
                if earlier is None:
                    continue
                found.append(
                    _finding(
                        "PF206",
                        later[0].meta,
                        ("spec", "hosts", holders[key]),
                        f"host {host} is already routed for sidecars by {earlier.label} at "
                        f"{_where(earlier)}, which comes first in file order and wins; this "
                        "VirtualService's rules are ignored for the host (merge the two)",
                        warning=True,
                    )
                )
            self._claim_conflicts[claim] = found

    # -- the mesh ------------------------------------------------------------------------

    def _assemble(
        self, services: bool, policies: bool, virtual_services: bool, gateways: bool
    ) -> Mesh:
        mesh = self._mesh
        if not (services or policies or virtual_services or gateways):
            return mesh
        return Mesh(
            services=tuple(self._services[h] for h in sorted(self._services))
            if services
            else mesh.services,
            destination_policies=tuple(self._policies[h] for h in sorted(self._policies))
            if policies
            else mesh.destination_policies,
            virtual_services=tuple(
                vs for _, vs in sorted(self._vs.values(), key=lambda item: _position(item[0]))
            )
            if virtual_services
            else mesh.virtual_services,
            gateways=tuple(self._gateways[k] for k in sorted(self._gateways))
            if gateways
            else mesh.gateways,
        )


def _combinable(metas: Sequence[Meta]) -> bool:
    """True when several ServiceEntries of one namespace define a host: Istio combines them."""
    return len(metas) > 1 and all(
        m.kind == "ServiceEntry" and m.namespace == metas[0].namespace for m in metas
    )


def _combined(entries: Sequence[tuple[Resource, Service]]) -> Service:
    """One host of several ServiceEntries of a namespace, combined by Istio's rules.

    The service is the oldest one's (here the first in file order). A later
    one that agrees with it on resolution, labels and workload selector is
    merged into it, as Istio's sidecar scope merges them: it adds the port
    numbers the first does not have, and its endpoints join (Istio indexes
    endpoints by host and namespace). One that does not agree is ignored, as
    Istio ignores it: its endpoints might not even fit the resolution.
    """
    (first_resource, first), *rest = entries
    merged = [
        first,
        *(service for resource, service in rest if _mergeable(first_resource, resource)),
    ]
    ports = list(first.ports)
    for service in merged[1:]:
        known = {p.port for p in ports}
        ports.extend(p for p in service.ports if p.port not in known)
    endpoints = []
    for port in dict.fromkeys(p.port for p in ports):
        joined: dict[Endpoint, None] = {}
        for service in merged:
            joined.update(dict.fromkeys(service.endpoints_for(port)))
        endpoints.append((port, tuple(sorted(joined, key=lambda e: (e.address, e.port)))))
    return replace(
        first,
        ports=tuple(ports),
        endpoints=tuple(endpoints),
        source=", ".join(dict.fromkeys(s.source for s in merged)),
    )


def _mergeable(first: Resource, other: Resource) -> bool:
    a, b = first.spec, other.spec
    assert isinstance(a, ServiceEntrySpec) and isinstance(b, ServiceEntrySpec)
    return (
        a.resolution is b.resolution
        and a.export_to == b.export_to
        and a.workload_selector == b.workload_selector
        and first.meta.labels == other.meta.labels
    )


def _position(resource: Resource) -> tuple[str, int]:
    return (resource.meta.file, resource.meta.doc)


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
    listener_ports: frozenset[int] | None,
) -> list[Finding]:
    """Problems of one destination; ``listener_ports`` are the ports its route applies on.

    A destination may leave out the port of a service with several: on a
    sidecar the route applies per listener port, each going to the service's
    port of the same number, so it is enough that one of them exists.
    ``listener_ports`` is None when the route is bound to a gateway, whose
    port says nothing about the service's.
    """
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
    if dest.port is None and len(numbers) > 1:
        if listener_ports is None:
            found.append(
                _finding(
                    "PF202",
                    meta,
                    (*path, "port"),
                    f"{dest.host} has ports {', '.join(map(str, numbers))} and a gateway "
                    "cannot take the port from its listener: set destination.port.number",
                )
            )
        elif listener_ports.isdisjoint(numbers):
            applies_on = ", ".join(map(str, sorted(listener_ports))) or "none known"
            found.append(
                _finding(
                    "PF202",
                    meta,
                    (*path, "port"),
                    f"{dest.host} has ports {', '.join(map(str, numbers))}, none of them a "
                    f"port the route applies on ({applies_on}): set destination.port.number",
                )
            )
    elif dest.port is not None and dest.port not in numbers:
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


def _listener_ports(vs: VirtualService, hosts: _Hosts) -> frozenset[int] | None:
    """The sidecar listener ports ``vs`` applies on; None when it is bound to a gateway."""
    if any(gateway != "mesh" for gateway in vs.gateways):
        return None
    return frozenset(
        port.port
        for host in vs.hosts
        if (service := hosts.services.get(host)) is not None
        for port in service.ports
    )


def _check_routes(
    vs: VirtualService,
    meta: Meta,
    hosts: _Hosts,
    policies: Mapping[str, DestinationPolicy],
) -> list[Finding]:
    found: list[Finding] = []
    catch_all: int | None = None
    ports = _listener_ports(vs, hosts)
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
                    dest, (*here, "route", d_index, "destination"), meta, hosts, policies, ports
                )
            )
        if route.mirror is not None:
            found.extend(
                _check_destination(route.mirror, (*here, "mirror"), meta, hosts, policies, ports)
            )
    for index, tcp in enumerate(vs.tcp):
        for d_index, dest in enumerate(tcp.destinations):
            found.extend(
                _check_destination(
                    dest,
                    ("spec", "tcp", index, "route", d_index, "destination"),
                    meta,
                    hosts,
                    policies,
                    ports,
                )
            )
    return found
