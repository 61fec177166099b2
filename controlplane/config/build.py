"""Validated resources -> the mesh model, with the checks that span resources.

:func:`build_mesh` is a pure function of the accepted resources. It joins
Services with the WorkloadEntries they select (through a label index, so a
mesh of 100,000 workloads does not compare every Service with every
workload), resolves DestinationRules and Gateways, and checks what no single
document can: destination hosts, subsets and ports exist, Gateways named by
VirtualServices exist, no two VirtualServices claim the same host on the same
gateway, rules after a catch-all are unreachable, and no resource is defined
twice.

Where a problem involves two places (a duplicate), the finding is put on the
one that is *newer* (in ``changed``), else on the later in file order, so
that the last-known-good logic can reject the change that introduced it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
    Labels,
    Mesh,
    Resolution,
    RouteDestination,
    Service,
    ServicePort,
    VirtualService,
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


class _Findings:
    def __init__(self) -> None:
        self.items: list[Finding] = []

    def add(self, code: str, meta: Meta, path: Path, message: str, warning: bool = False) -> None:
        self.items.append(
            Finding(
                code,
                meta.file,
                meta.doc,
                path,
                meta.label,
                message,
                Severity.WARNING if warning else None,
            )
        )


def _order(resource: Resource) -> tuple[str, int]:
    return (resource.meta.file, resource.meta.doc)


def _blame(first: Meta, second: Meta, changed: frozenset[str] | None) -> tuple[Meta, Meta]:
    """(the one to report on, the other) for a pair in conflict; ``first`` < ``second``."""
    if changed is not None and first.file in changed and second.file not in changed:
        return first, second
    return second, first


def _where(meta: Meta) -> str:
    return f"{meta.file}:{meta.line}"


class _WorkloadIndex:
    """WorkloadEntries per namespace, indexed by label pair for selector queries."""

    def __init__(self, workloads: Iterable[Resource]) -> None:
        self.by_namespace: dict[str, list[Resource]] = defaultdict(list)
        self.by_label: dict[tuple[str, str, str], list[Resource]] = defaultdict(list)
        for resource in workloads:
            ns = resource.meta.namespace
            self.by_namespace[ns].append(resource)
            spec = resource.spec
            assert isinstance(spec, WorkloadSpec)
            for key, value in spec.labels:
                self.by_label[(ns, key, value)].append(resource)

    def select(self, namespace: str, selector: Labels) -> list[Resource]:
        if not selector:
            return list(self.by_namespace.get(namespace, ()))
        candidates = min((self.by_label.get((namespace, k, v), []) for k, v in selector), key=len)
        return [
            r
            for r in candidates
            if labels_match(selector, r.spec.labels)  # type: ignore[union-attr]
        ]


def _kube_service(resource: Resource, index: _WorkloadIndex) -> Service:
    meta, spec = resource.meta, resource.spec
    assert isinstance(spec, KubeServiceSpec)
    selected = (
        sorted(
            index.select(meta.namespace, spec.selector),
            key=lambda r: (r.meta.namespace, r.meta.name),
        )
        if spec.selector is not None
        else []
    )
    ports: list[ServicePort] = []
    endpoints: list[tuple[int, tuple[Endpoint, ...]]] = []
    for port in spec.ports:
        ports.append(ServicePort(port.name, port.port, port.protocol, port.target_port))
        eps: list[Endpoint] = []
        for workload in selected:
            w = workload.spec
            assert isinstance(w, WorkloadSpec)
            number = w.port_named(port.name) if port.name else None
            if number is None:
                if isinstance(port.target_port, str):
                    number = w.port_named(port.target_port)
                    if number is None:
                        continue
                else:
                    number = port.target_port or port.port
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


def _entry_services(resource: Resource, index: _WorkloadIndex) -> list[Service]:
    meta, spec = resource.meta, resource.spec
    assert isinstance(spec, ServiceEntrySpec)
    workloads: list[WorkloadSpec] = list(spec.endpoints)
    if spec.workload_selector is not None:
        for selected in index.select(meta.namespace, spec.workload_selector):
            assert isinstance(selected.spec, WorkloadSpec)
            workloads.append(selected.spec)
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
    return [
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
    ]


def _host_known(host: str, services: Mapping[str, Service], wildcards: list[str]) -> bool:
    return host in services or any(host.endswith(suffix) for suffix in wildcards)


def build_mesh(resources: Iterable[Resource], changed: frozenset[str] | None = None) -> BuildResult:
    """Join ``resources`` into a :class:`Mesh` and check them against each other."""
    findings = _Findings()
    unique: dict[tuple[str, str, str], Resource] = {}
    for resource in sorted(resources, key=_order):
        first = unique.get(resource.meta.key)
        if first is not None:
            blamed, other = _blame(first.meta, resource.meta, changed)
            findings.add(
                "PF208",
                blamed,
                ("metadata", "name"),
                f"{blamed.label} is defined twice: here and at {_where(other)}; "
                "rename or remove one",
            )
            if blamed is first.meta:
                unique[resource.meta.key] = resource
            continue
        unique[resource.meta.key] = resource
    by_kind: dict[str, list[Resource]] = defaultdict(list)
    for key in sorted(unique):
        by_kind[key[0]].append(unique[key])

    index = _WorkloadIndex(by_kind["WorkloadEntry"])
    services: dict[str, Service] = {}
    origin: dict[str, Meta] = {}
    wildcards: list[str] = []
    candidates: list[tuple[Resource, Service]] = [
        (r, _kube_service(r, index)) for r in by_kind["Service"]
    ]
    for r in by_kind["ServiceEntry"]:
        candidates.extend((r, s) for s in _entry_services(r, index))
    for resource, service in candidates:
        if service.host in services:
            blamed, other = _blame(origin[service.host], resource.meta, changed)
            findings.add(
                "PF210",
                blamed,
                ("spec", "hosts") if blamed.kind == "ServiceEntry" else ("metadata", "name"),
                f"host {service.host} is already defined by {other.label} at {_where(other)}",
            )
            if blamed is not origin[service.host]:
                continue
        services[service.host] = service
        origin[service.host] = resource.meta
        if service.host.startswith("*."):
            wildcards.append(service.host[1:])

    policies: dict[str, DestinationPolicy] = {}
    policy_meta: dict[str, Meta] = {}
    for resource in by_kind["DestinationRule"]:
        policy = resource.spec
        assert isinstance(policy, DestinationPolicy)
        if policy.host in policies:
            blamed, other = _blame(policy_meta[policy.host], resource.meta, changed)
            findings.add(
                "PF211",
                blamed,
                ("spec", "host"),
                f"host {policy.host} already has {other.label} at {_where(other)}; "
                "merge the two into one DestinationRule",
            )
            if blamed is not policy_meta[policy.host]:
                continue
        policies[policy.host] = policy
        policy_meta[policy.host] = resource.meta
    for host, policy in policies.items():
        _check_policy(policy, policy_meta[host], services, wildcards, findings)

    gateways = {f"{r.meta.namespace}/{r.meta.name}": r for r in by_kind["Gateway"]}
    claims: dict[tuple[str, str], Meta] = {}
    virtual_services: list[VirtualService] = []
    for resource in by_kind["VirtualService"]:
        vs = resource.spec
        assert isinstance(vs, VirtualService)
        meta = resource.meta
        for g_index, gateway in enumerate(vs.gateways):
            if gateway != "mesh" and gateway not in gateways:
                findings.add(
                    "PF204",
                    meta,
                    ("spec", "gateways", g_index),
                    f"Gateway {gateway} does not exist; define it or fix the name",
                )
            for h_index, host in enumerate(vs.hosts):
                claim = claims.get((host, gateway))
                if claim is not None:
                    blamed, other = _blame(claim, meta, changed)
                    findings.add(
                        "PF206",
                        blamed,
                        ("spec", "hosts", h_index if blamed is meta else 0),
                        f"host {host} on gateway {gateway} is already routed by {other.label} "
                        f"at {_where(other)}; merge the two VirtualServices",
                    )
                else:
                    claims[(host, gateway)] = meta
        _check_routes(vs, meta, services, wildcards, policies, findings)
        virtual_services.append(vs)

    mesh = Mesh(
        services=tuple(services[h] for h in sorted(services)),
        destination_policies=tuple(policies[h] for h in sorted(policies)),
        virtual_services=tuple(virtual_services),
        gateways=tuple(r.spec for r in by_kind["Gateway"]),  # type: ignore[misc]
    )
    return BuildResult(mesh, tuple(findings.items))


def _check_policy(
    policy: DestinationPolicy,
    meta: Meta,
    services: Mapping[str, Service],
    wildcards: list[str],
    findings: _Findings,
) -> None:
    service = services.get(policy.host)
    if service is None:
        if not _host_known(policy.host, services, wildcards):
            findings.add(
                "PF209",
                meta,
                ("spec", "host"),
                f"no Service or ServiceEntry defines host {policy.host}; "
                "the rule applies to nothing",
                warning=True,
            )
        return
    if service.resolution is not Resolution.STATIC and not any(eps for _, eps in service.endpoints):
        return
    for index, subset in enumerate(policy.subsets):
        if not any(
            labels_match(subset.labels, e.labels) for _, eps in service.endpoints for e in eps
        ):
            selector = ",".join(f"{k}={v}" for k, v in subset.labels) or "(no labels)"
            findings.add(
                "PF205",
                meta,
                ("spec", "subsets", index, "labels"),
                f"subset {subset.name!r} ({selector}) selects no workload of {policy.host}",
                warning=True,
            )


def _check_destination(
    dest: RouteDestination,
    path: Path,
    meta: Meta,
    services: Mapping[str, Service],
    wildcards: list[str],
    policies: Mapping[str, DestinationPolicy],
    findings: _Findings,
) -> None:
    service = services.get(dest.host)
    if service is None:
        if not _host_known(dest.host, services, wildcards):
            findings.add(
                "PF200",
                meta,
                (*path, "host"),
                f"destination host {dest.host} is not a Service or ServiceEntry; "
                "define it or fix the name",
            )
        return
    if dest.subset is not None:
        policy = policies.get(dest.host)
        if policy is None or policy.subset(dest.subset) is None:
            defined = ", ".join(s.name for s in policy.subsets) if policy else ""
            findings.add(
                "PF201",
                meta,
                (*path, "subset"),
                f"subset {dest.subset!r} of {dest.host} is not defined by any DestinationRule"
                + (f" (defined: {defined})" if defined else ""),
            )
    numbers = [p.port for p in service.ports]
    if dest.port is None:
        if len(numbers) > 1:
            findings.add(
                "PF202",
                meta,
                (*path, "port"),
                f"{dest.host} has ports {', '.join(map(str, numbers))}: "
                "set destination.port.number",
            )
    elif dest.port not in numbers:
        findings.add(
            "PF203",
            meta,
            (*path, "port", "number"),
            f"{dest.host} does not expose port {dest.port} "
            f"(it exposes {', '.join(map(str, numbers)) or 'no ports'})",
        )


def _check_routes(
    vs: VirtualService,
    meta: Meta,
    services: Mapping[str, Service],
    wildcards: list[str],
    policies: Mapping[str, DestinationPolicy],
    findings: _Findings,
) -> None:
    catch_all: int | None = None
    for index, route in enumerate(vs.http):
        here: Path = ("spec", "http", index)
        if catch_all is not None:
            findings.add(
                "PF207",
                meta,
                here,
                f"this rule is never used: spec.http[{catch_all}] before it matches every request",
                warning=True,
            )
        elif route.is_catch_all:
            catch_all = index
        for d_index, dest in enumerate(route.destinations):
            _check_destination(
                dest,
                (*here, "route", d_index, "destination"),
                meta,
                services,
                wildcards,
                policies,
                findings,
            )
        if route.mirror is not None:
            _check_destination(
                route.mirror, (*here, "mirror"), meta, services, wildcards, policies, findings
            )
    for index, tcp in enumerate(vs.tcp):
        for d_index, dest in enumerate(tcp.destinations):
            _check_destination(
                dest,
                ("spec", "tcp", index, "route", d_index, "destination"),
                meta,
                services,
                wildcards,
                policies,
                findings,
            )
