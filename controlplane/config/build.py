"""Validated resources -> the mesh model, with the checks that span resources.

:class:`MeshBuilder` joins Services with the WorkloadEntries they select
(through a label index, so a mesh of 100,000 workloads does not compare every
Service with every workload), resolves host names (:func:`canonical_host`),
DestinationRules and Gateways, and checks what no single document can:
destination hosts, subsets and ports exist, Gateways named by VirtualServices
exist, no two VirtualServices claim the same host on the same gateway, rules
after a catch-all are unreachable, and no resource is defined twice.

The result is a pure function of the resources given. A builder also
*remembers*: its tables of definitions and its workload index are kept up to
date file by file, and each Service and each resource's checks are memoized
on the identity of their inputs (resources are immutable and a file that did not
change keeps its resource objects). So the builder a
:class:`~controlplane.config.store.ConfigStore` keeps redoes only the work a
change touches, which is what makes a one-file edit in a 10,000-service mesh
cheap. :func:`build_mesh` is the same computation with a fresh builder.

A cold build is linear in the resources and keeps per-resource work small:
a key defined once is read straight from the definition table (only keys
defined more than once are resolved one by one), a selector reads the
smallest index bucket of its pairs, and a VirtualService already spelled
canonically is kept as written. The definition table and the workload index
follow each file in one pass, and until a Service reads the index (a cold
build) the buckets it fills are not named. The mesh's collections keep their
sorted order from build to build and are sorted again only when members
come, go or move.

Where a problem involves two places (a duplicate), the finding is put on the
one that is *newer* (in ``changed``), else on the later in file order, so
that the last-known-good logic can reject the change that introduced it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    Locality,
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


def _file_changes(
    known: dict[str, Sequence[Resource]], files: Mapping[str, Sequence[Resource]]
) -> Iterator[tuple[Sequence[Resource] | None, Sequence[Resource] | None]]:
    """``(old, new)`` resources of each file that went, came or changed; ``known`` follows.

    A file that did not change keeps its resource objects, so it is passed over
    on identity alone.
    """
    for path in [p for p in known if p not in files]:
        yield known.pop(path), None
    for path, resources in files.items():
        old = known.get(path)
        if old is not resources:
            known[path] = resources
            yield old, resources


class _WorkloadIndex:
    """WorkloadEntries per namespace and per label pair, kept in step with the files.

    A bucket maps ``id(resource)`` to the resource. A workload sits in the
    bucket of its namespace and in one per label pair, read as
    :func:`~controlplane.model.labels_match` reads labels (as a mapping), so
    the workloads a selector matches are those in every bucket of its pairs.
    """

    def __init__(self) -> None:
        self._files: dict[str, Sequence[Resource]] = {}  # for sync() alone
        self._buckets: defaultdict[object, dict[int, Resource]] = defaultdict(dict)

    def sync(self, files: Mapping[str, Sequence[Resource]]) -> set[object]:
        """Follow ``files``; returns the names of the buckets that changed.

        The builder follows its files with :meth:`apply` instead, in one pass
        with its definition table.
        """
        changed: set[object] = set()
        for old, new in _file_changes(self._files, files):
            self.apply(old, new, changed)
        return changed

    def apply(
        self,
        old: Sequence[Resource] | None,
        new: Sequence[Resource] | None,
        changed: set[object],
        track: bool = True,
    ) -> None:
        """Take a file's ``old`` resources out and its ``new`` ones in.

        The names of the buckets that change go into ``changed``; without
        ``track`` (nothing reads the buckets yet: a cold build) not those of
        the buckets added to.
        """
        if old is not None:
            self._remove(old, changed)
        if new is not None:
            self._add(new, changed if track else None)

    def _add(self, resources: Sequence[Resource], changed: set[object] | None) -> None:
        buckets = self._buckets
        for resource in resources:
            meta = resource.meta
            if meta.kind != "WorkloadEntry":
                continue
            ident = id(resource)
            ns = meta.namespace
            buckets[ns][ident] = resource
            if changed is not None:
                changed.add(ns)
            for k, v in dict(resource.spec.labels).items():  # type: ignore[union-attr]
                name = (ns, k, v)
                buckets[name][ident] = resource
                if changed is not None:
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

    def select(
        self, namespace: str, selector: Labels, unique_names: bool = False
    ) -> tuple[Resource, ...]:
        """Workloads of ``namespace`` whose labels match ``selector``, sorted by name.

        Workloads of one name (a key defined twice) are sorted by file and
        document; ``unique_names`` says there are none, so the name alone is
        the key, which is cheaper.
        """
        buckets = self._buckets
        if not selector:
            found = list(buckets.get(namespace, _NO_WORKLOADS).values())
        elif len(selector) == 1:
            ((k, v),) = selector
            found = list(buckets.get((namespace, k, v), _NO_WORKLOADS).values())
        else:
            smallest, *others = sorted(
                [buckets.get((namespace, k, v), _NO_WORKLOADS) for k, v in selector], key=len
            )
            found = [r for i, r in smallest.items() if all([i in other for other in others])]
        found.sort(key=_workload_name if unique_names else _workload_order)
        return tuple(found)


_NO_WORKLOADS: Mapping[int, Resource] = {}
_workload_order = attrgetter("meta.name", "meta.file", "meta.doc")
_workload_name = attrgetter("meta.name")


def bucket_names(workload: Resource) -> list[object]:
    """The index buckets a WorkloadEntry sits in: its namespace and each of its label pairs."""
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


MAX_LOCALITY_WEIGHT = 2**32 - 1
"""Envoy sums the weights of a locality's endpoints into a uint32 and rejects more."""


def _weight_overflows(
    resource: Resource,
    selected: Sequence[Resource],
    service: Service,
    changed: frozenset[str] | None,
) -> list[Finding]:
    """PF213 for each locality of ``service`` whose endpoints' weights sum past
    :data:`MAX_LOCALITY_WEIGHT`, blamed on the heaviest endpoint's document (one in
    the change being applied first): Envoy would reject the whole EDS update."""
    spec = resource.spec
    inline = spec.endpoints if isinstance(spec, ServiceEntrySpec) else ()
    # Nearly every service is far below the limit whatever its ports and localities.
    workloads = _workload_specs(selected)
    bound = sum(max(w.weight, 1) for w in inline) + sum(max(w.weight, 1) for w in workloads)
    if bound <= MAX_LOCALITY_WEIGHT:
        return []
    sources: list[tuple[WorkloadSpec, Meta, Path]] = [
        (w, resource.meta, ("spec", "endpoints", i, "weight")) for i, w in enumerate(inline)
    ]
    sources += [(w, r.meta, ("spec", "weight")) for w, r in zip(workloads, selected, strict=True)]
    findings: dict[tuple[str, int, Path], Finding] = {}
    for port, endpoints in service.endpoints:
        sums: dict[Locality, int] = defaultdict(int)
        counts: dict[Locality, int] = defaultdict(int)
        for endpoint in endpoints:
            sums[endpoint.locality] += max(endpoint.weight, 1)
            counts[endpoint.locality] += 1
        for locality, total in sums.items():
            if total <= MAX_LOCALITY_WEIGHT:
                continue
            addresses = {e.address for e in endpoints if e.locality == locality}
            weight, meta, path = min(
                (
                    (w.weight, meta, path)
                    for w, meta, path in sources
                    if w.locality == locality and w.address in addresses
                ),
                key=lambda c: (
                    changed is not None and c[1].file not in changed,
                    -c[0],
                    c[1].file,
                    c[1].doc,
                    repr(c[2]),
                ),
            )
            findings.setdefault(
                (meta.file, meta.doc, path),
                _finding(
                    "PF213",
                    meta,
                    path,
                    f"the weights of the {counts[locality]} endpoints of {service.host} port "
                    f"{port} in locality {str(locality) or '(none)'} sum to {total}, past "
                    f"{MAX_LOCALITY_WEIGHT}: Envoy would reject the whole update; this "
                    f"endpoint's weight is {weight}",
                ),
            )
    return list(findings.values())


_CLUSTER_SUFFIX = ".svc.cluster.local"


class _Hosts:
    """The known hosts: exact names and ``*.suffix`` wildcards."""

    def __init__(self, services: Mapping[str, Service], wildcards: tuple[str, ...]) -> None:
        self.services = services
        self.wildcards = wildcards  # the suffixes of the ``*.suffix`` hosts, sorted

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
    names = {dest.host for route in vs.http for dest in route.destinations}
    names.update(vs.hosts)
    for route in vs.http:
        if route.mirror is not None:
            names.add(route.mirror.host)
    for tcp in vs.tcp:
        names.update([dest.host for dest in tcp.destinations])
    return names


class _ResourceTable:
    """Every definition of every (kind, namespace, name), kept in step with the files.

    A key defined once maps to its resource in ``defined``; a key defined more
    than once is in ``duplicates`` with all of its definitions, and is resolved
    per build (which one is blamed depends on what changed).
    """

    def __init__(self) -> None:
        self.defined: dict[Key, Resource] = {}
        self.duplicates: dict[Key, list[Resource]] = {}

    def apply(
        self,
        old: Sequence[Resource] | None,
        new: Sequence[Resource] | None,
        changed: dict[str, set[Key]],
    ) -> None:
        """Take a file's ``old`` resources out and its ``new`` ones in.

        The keys whose definitions change go into ``changed``, per kind, but
        for WorkloadEntries: the builder follows those through the workload
        index, and they are most of a large mesh's resources.
        """
        if old is not None:
            self._remove(old, changed)
        if new is not None:
            self._add(new, changed)

    def _add(self, resources: Sequence[Resource], changed: dict[str, set[Key]]) -> None:
        defined, duplicates = self.defined, self.duplicates
        for resource in resources:
            key = resource.meta.key
            if key[0] != "WorkloadEntry":
                changed[key[0]].add(key)
            held = defined.get(key)
            if held is not None:
                del defined[key]
                duplicates[key] = [held, resource]
            elif duplicates and key in duplicates:
                duplicates[key].append(resource)
            else:
                defined[key] = resource

    def _remove(self, resources: Sequence[Resource], changed: dict[str, set[Key]]) -> None:
        defined, duplicates = self.defined, self.duplicates
        for resource in resources:
            key = resource.meta.key
            if key[0] != "WorkloadEntry":
                changed[key[0]].add(key)
            defs = duplicates.get(key)
            if defs is None:
                del defined[key]
                continue
            defs.remove(resource)
            if len(defs) == 1:
                del duplicates[key]
                defined[key] = defs[0]


# Resources a build must drop (and more than it keeps) for the builder to start afresh.
_FRESH_START_AFTER = 10_000


class MeshBuilder:
    """Builds meshes from files of resources, redoing only what a change touches.

    State carried from one :meth:`build` to the next is derived from the files
    of the previous build alone; each phase works out what its inputs changed
    (resources, index buckets, hosts, policies, gateways) and recomputes just
    the dependent parts. ``tests/config/test_build_incremental.py`` checks that
    any sequence of builds gives exactly what a fresh builder gives;
    ``tests/config/test_build_index.py`` covers the cases no file change
    announces (duplicates resolved anew, order of documents).
    """

    def __init__(self) -> None:
        self._resources = 0
        self._reset()

    def _reset(self) -> None:
        self._files: dict[str, Sequence[Resource]] = {}
        self._table = _ResourceTable()
        self._index = _WorkloadIndex()
        self._winners: dict[Key, Resource] = {}  # per key defined more than once
        # services: per Service/ServiceEntry key, then per host
        self._svc_built: dict[Key, tuple[Resource, tuple[Resource, ...], tuple[Service, ...]]] = {}
        self._svc_reads: dict[Key, list[object]] = {}
        self._readers: dict[object, set[Key]] = defaultdict(set)
        self._host_candidates: dict[str, dict[Key, Service]] = defaultdict(dict)
        self._services: dict[str, Service] = {}
        self._host_conflicts: dict[str, list[Finding]] = {}
        self._weight_findings: dict[Key, list[Finding]] = {}
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
        # the mesh, and the order of its collections (None: to sort again)
        self._mesh = Mesh()
        self._host_order: list[str] | None = None
        self._policy_order: list[str] | None = None
        self._vs_order: list[Key] | None = None

    def build(
        self, files: Mapping[str, Sequence[Resource]], changed: frozenset[str] | None = None
    ) -> BuildResult:
        """The mesh of ``files`` (path -> that file's resources, in document order)."""
        resources = sum(map(len, files.values()))
        if self._resources - resources > max(_FRESH_START_AFTER, resources):
            # Most of the mesh went (a large file deleted). Dicts never shrink, and the
            # per-host and per-bucket entries of what went stay: start afresh, as a new
            # builder would, so that their memory goes back too. Rebuilding what is left
            # costs less than removing what went did.
            self._reset()
        self._resources = resources
        dirty, buckets = self._follow(files)
        shifted, dup_findings = self._resolve_definitions(dirty, changed)
        for resource in shifted:
            if resource.meta.kind == "WorkloadEntry":
                buckets.update(bucket_names(resource))
        service_keys = dirty["Service"] | dirty["ServiceEntry"]
        readers = self._readers
        for bucket in buckets:
            keys = readers.get(bucket)
            if keys:
                service_keys |= keys
        hosts_touched = self._update_services(service_keys, changed)
        changed_hosts, membership = self._resolve_hosts(hosts_touched, changed)
        wildcards = self._wildcards
        if membership:
            wildcards = tuple(sorted(h[1:] for h in self._services if h.startswith("*.")))
        hosts = _Hosts(self._services, wildcards)
        everything = wildcards != self._wildcards
        self._wildcards = wildcards
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
        dr_by_raw = self._dr_by_raw
        for name in raw_names:
            if name in dr_by_raw:
                dr_keys |= dr_by_raw[name]
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
        vs_by_host = self._vs_by_host
        for name in changed_hosts | changed_policies | raw_names | membership:
            if name in vs_by_host:
                vs_keys |= vs_by_host[name]
        for name in gateway_names_changed:
            vs_keys |= self._vs_by_gateway.get(name, set())
        claims_touched = self._update_virtual_services(vs_keys, hosts)
        self._resolve_claims(claims_touched)

        findings = list(dup_findings)
        for group in (
            self._host_conflicts,
            self._weight_findings,
            self._policy_conflicts,
            self._policy_checks,
            self._vs_findings,
            self._claim_conflicts,
        ):
            for items in group.values():  # type: ignore[attr-defined]
                findings.extend(items)
        findings.sort(key=lambda f: (f.file, f.doc, repr(f.path), f.code, f.message))
        if membership:
            self._host_order = None
        self._mesh = self._assemble(
            bool(changed_hosts or membership),
            bool(changed_policies or policy_hosts),
            bool(vs_keys),
            bool(gateway_names_changed or dirty["Gateway"]),
        )
        return BuildResult(self._mesh, tuple(findings))

    # -- definitions ---------------------------------------------------------------------

    def _follow(
        self, files: Mapping[str, Sequence[Resource]]
    ) -> tuple[dict[str, set[Key]], set[object]]:
        """Bring the definition table and the workload index in step with ``files``.

        Returns the keys whose definitions changed, per kind (WorkloadEntries
        left out), and the names of the index buckets that changed. Both follow
        a file in one pass: its resources are still in the processor's cache
        for the second. Nothing reads the buckets before the first Service
        selects workloads (a cold build), so until then those added to are not
        named.
        """
        keys: dict[str, set[Key]] = defaultdict(set)
        buckets: set[object] = set()
        table, index, track = self._table, self._index, bool(self._readers)
        for old, new in _file_changes(self._files, files):
            table.apply(old, new, keys)
            index.apply(old, new, buckets, track)
        return keys, buckets

    def _resolve_definitions(
        self, dirty: dict[str, set[Key]], changed: frozenset[str] | None
    ) -> tuple[list[Resource], list[Finding]]:
        """Settle which definition of each key is in effect.

        A key defined once has that definition in effect; of a key defined more
        than once, the first in file order unless the change being applied is
        blamed (``_winners``). Adds to ``dirty`` (the keys whose definitions
        changed, per kind) the keys whose definition in effect may have changed
        (a superset: recomputing a key that did not change gives the same
        objects). Returns the resources that may have taken or lost effect while
        their key was defined more than once (the index does not see those:
        their files may not have changed), and the PF208 findings.
        """
        table = self._table
        winners = self._winners
        # Keys defined more than once before or after following the files.
        duplicated = winners.keys() | table.duplicates.keys()
        for keys in dirty.values():
            keys -= duplicated
        shifted: list[Resource] = []
        findings: list[Finding] = []
        for key in duplicated:
            old = winners.pop(key, None)
            defs = table.duplicates.get(key)
            if defs is None:
                winner = table.defined.get(key)
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
                winners[key] = winner
            if old is None:
                # Defined once before (or not at all): which one was in effect is
                # no longer known, but it is one of these or its file changed.
                shifted.extend(defs or ())
            elif winner is old:
                continue
            else:
                shifted.append(old)
            if winner is not None:
                shifted.append(winner)
            dirty[key[0]].add(key)
        return shifted, findings

    def _resolved(self, key: Key) -> Resource | None:
        """The definition of ``key`` in effect."""
        return self._table.defined.get(key) or self._winners.get(key)

    # -- services ------------------------------------------------------------------------

    def _update_services(self, keys: set[Key], changed: frozenset[str] | None) -> set[str]:
        touched: set[str] = set()
        resolved = self._resolved
        # Without duplicates every indexed workload is the one definition of its key,
        # so the only workload of its name in its namespace.
        check_selected = bool(self._winners)
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
            resource = resolved(key)
            if resource is None:
                self._weight_findings.pop(key, None)
                continue
            spec = resource.spec
            selector = (
                spec.selector if isinstance(spec, KubeServiceSpec) else spec.workload_selector  # type: ignore[union-attr]
            )
            selected: tuple[Resource, ...] = ()
            if selector is not None:
                ns = resource.meta.namespace
                selected = select(ns, selector, not check_selected)
                reads = selector_buckets(ns, selector)
                if check_selected:
                    selected = tuple(r for r in selected if resolved(r.meta.key) is r)
                svc_reads[key] = reads
                for bucket in reads:
                    readers[bucket].add(key)
            if old is not None and old[0] is resource and old[1] == selected:
                built = old[2]
            elif isinstance(spec, KubeServiceSpec):
                built = (_kube_service(resource, selected),)
            else:
                built = _entry_services(resource, selected)
            # Every host of a ServiceEntry has the same endpoints: one check covers them.
            overflows = _weight_overflows(resource, selected, built[0], changed) if built else []
            if overflows:
                self._weight_findings[key] = overflows
            else:
                self._weight_findings.pop(key, None)
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
            if len(candidates) == 1:
                ((holder, service),) = candidates.items()
                self._host_conflicts.pop(host, None)
                if service is not old:
                    self._services[host] = service
                    changed_hosts.add(host)
                    if old is None:
                        membership.add(host)
                continue
            ordered = sorted(candidates, key=lambda k: _position(self._svc_built[k][0]))
            holder = ordered[0]
            found: list[Finding] = []
            if _combinable([self._svc_built[k][0].meta for k in ordered]):
                service = _combined([(self._svc_built[k][0], candidates[k]) for k in ordered])
                first = self._svc_built[holder][0]
                ignored = [
                    _finding(
                        "PF210",
                        self._svc_built[key][0].meta,
                        ("spec", "hosts"),
                        f"host {host} is also defined by {first.meta.label} at "
                        f"{_where(first.meta)} with another resolution, labels or "
                        "workloadSelector; as in Istio, this ServiceEntry is ignored for it",
                        warning=True,
                    )
                    for key in ordered[1:]
                    if not _mergeable(first, self._svc_built[key][0])
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
                held, new = self._svc_built[holder][0].meta, self._svc_built[key][0].meta
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
            resource = self._resolved(key)
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

    def _dr_position(self, key: Key) -> tuple[str, int]:
        return _position(self._dr[key][0])

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
                    self._policy_order = None
                continue
            holder, *rest = keys if len(keys) == 1 else sorted(keys, key=self._dr_position)
            found: list[Finding] = []
            for key in rest:
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
                if old is None:
                    self._policy_order = None
        return changed_hosts

    # -- gateways and virtual services ---------------------------------------------------

    def _update_gateways(self, keys: set[Key]) -> set[str]:
        names: set[str] = set()
        for key in keys:
            resource = self._resolved(key)
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
        built, vs_reads, vs_findings = self._vs, self._vs_reads, self._vs_findings
        by_host, by_gateway, claims = self._vs_by_host, self._vs_by_gateway, self._claims
        canonical = hosts.canonical
        for key in keys:
            old = built.pop(key, None)
            if old is not None:
                for name in vs_reads.pop(key, set()):
                    by_host[name].discard(key)
                for gateway in old[1].gateways:
                    by_gateway[gateway].discard(key)
                    for host in old[1].hosts:
                        claims[(host, gateway)].pop(key, None)
                        touched.add((host, gateway))
            vs_findings.pop(key, None)
            resource = self._resolved(key)
            if old is None or resource is None or _position(old[0]) != _position(resource):
                self._vs_order = None
            if resource is None:
                continue
            written = resource.spec
            assert isinstance(written, VirtualService)
            names = _host_names(written)
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
                vs_findings[key] = found
            built[key] = (resource, vs)
            reads = names.union(renamed)
            vs_reads[key] = reads
            for name in reads:
                by_host[name].add(key)
            for gateway in vs.gateways:
                by_gateway[gateway].add(key)
                for index, host in enumerate(vs.hosts):
                    claims[(host, gateway)].setdefault(key, index)
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
        """The mesh with the collections that changed made again (in their sorted order)."""
        mesh = self._mesh
        if not (services or policies or virtual_services or gateways):
            return mesh
        if services:
            if self._host_order is None:
                self._host_order = sorted(self._services)
            mesh_services = tuple(map(self._services.__getitem__, self._host_order))
        if policies:
            if self._policy_order is None:
                self._policy_order = sorted(self._policies)
            mesh_policies = tuple(map(self._policies.__getitem__, self._policy_order))
        if virtual_services:
            if self._vs_order is None:
                # In file order; no two VirtualServices share a file and document.
                placed = [(r.meta.file, r.meta.doc, key) for key, (r, _) in self._vs.items()]
                placed.sort()
                self._vs_order = [key for _, _, key in placed]
            mesh_vs = tuple([self._vs[k][1] for k in self._vs_order])
        return Mesh(
            services=mesh_services if services else mesh.services,
            destination_policies=mesh_policies if policies else mesh.destination_policies,
            virtual_services=mesh_vs if virtual_services else mesh.virtual_services,
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
        if not _selects_any(subset.labels, service):
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


def _selects_any(selector: Labels, service: Service) -> bool:
    for _, endpoints in service.endpoints:
        for endpoint in endpoints:
            if labels_match(selector, endpoint.labels):
                return True
    return False


def _check_destination(
    dest: RouteDestination,
    path: Path,
    meta: Meta,
    hosts: _Hosts,
    policies: Mapping[str, DestinationPolicy],
    vs: VirtualService,
) -> list[Finding]:
    """Problems of one destination of ``vs``.

    A destination may leave out the port of a service with several: on a
    sidecar the route applies per listener port (:func:`_listener_ports`),
    each going to the service's port of the same number, so it is enough that
    one of them exists. Bound to a gateway, whose port says nothing about the
    service's, it must name the port.
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
    if dest.port is None and len(service.ports) < 2:
        return found
    numbers = [p.port for p in service.ports]
    if dest.port is None:
        listener_ports = _listener_ports(vs, hosts)
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
                    dest, (*here, "route", d_index, "destination"), meta, hosts, policies, vs
                )
            )
        if route.mirror is not None:
            found.extend(
                _check_destination(route.mirror, (*here, "mirror"), meta, hosts, policies, vs)
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
                    vs,
                )
            )
    return found
