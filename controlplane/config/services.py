"""Service, WorkloadEntry and ServiceEntry documents -> resource records.

Port protocols are chosen the way Istio chooses them: ``appProtocol`` (for a
ServiceEntry, ``protocol``) first, then the port name (``http``, ``http-web``,
``grpc-api`` ...). A port with no hint is TCP: Pilotfish does not sniff
protocols, so name your HTTP ports.

Values are checked as Istio's validation checks them where Pilotfish reads
the field: Kubernetes label syntax (and no ``*`` in a selector), port names
that are DNS labels, ``unix://`` addresses that are absolute socket paths
without ports, and what each ServiceEntry resolution allows (no endpoints
for ``NONE``, one at most for ``DNS_ROUND_ROBIN``, no CIDR for the DNS ones).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import replace
from typing import Any

from controlplane.config.report import Path, Reporter
from controlplane.config.resources import (
    KubePort,
    KubeServiceSpec,
    ServiceEntrySpec,
    WorkloadSpec,
    slot_constructor,
)
from controlplane.config.schema import is_clean
from controlplane.config.visibility import export_to, service_export_to
from controlplane.config.yamlsource import load_cache, share
from controlplane.model import (
    EXPORTED_EVERYWHERE,
    Labels,
    Locality,
    Protocol,
    Resolution,
    ServicePort,
)

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$"
)
_PROTOCOL_NAMES = {p.value.lower(): p for p in Protocol}
_PROTOCOL_NAMES.update(
    {"http1.1": Protocol.HTTP, "h2c": Protocol.HTTP2, "kubernetes.io/h2c": Protocol.HTTP2}
)


def protocol_of(app_protocol: str | None, name: str | None, protocol: str | None) -> Protocol:
    if app_protocol and app_protocol.lower() in _PROTOCOL_NAMES:
        return _PROTOCOL_NAMES[app_protocol.lower()]
    if name:
        prefix = name.lower().split("-", 1)[0]
        if prefix in _PROTOCOL_NAMES:
            return _PROTOCOL_NAMES[prefix]
    if protocol and protocol.lower() in _PROTOCOL_NAMES:
        return _PROTOCOL_NAMES[protocol.lower()]
    return Protocol.TCP


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
UNIX_PREFIX = "unix://"
_NO_LOCALITY = Locality()


# Valid strings met in this load, by what they are valid as: a directory repeats a few
# label keys and port names on thousands of documents, and label values (``v1``,
# ``app: reviews``) on many. Bounded within a load too, for a directory of ever new ones.
_LABEL_KEYS_SEEN: set[str] = load_cache(set())
_LABEL_VALUES_SEEN: set[str] = load_cache(set())
_PORT_NAMES_SEEN: set[str] = load_cache(set())
# Whole label sets and port maps, as written -> as held: one tuple for the many documents
# that repeat one (the workloads of a version, the subsets of every DestinationRule).
_LABEL_SETS: dict[tuple[tuple[Any, Any], ...], Labels] = load_cache({})
_PORT_SETS: dict[tuple[tuple[Any, Any], ...], tuple[tuple[str, int], ...]] = load_cache({})
MAX_SEEN = 100_000


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    valid = bool(_LABEL_NAME.match(name)) and (not prefix or bool(_HOSTNAME.match(prefix)))
    if valid and len(_LABEL_KEYS_SEEN) < MAX_SEEN:
        _LABEL_KEYS_SEEN.add(key)
    return valid


def _matches_and_seen(pattern: re.Pattern[str], seen: set[str], text: str) -> bool:
    """Whether ``pattern`` matches ``text``; a match is remembered in ``seen`` (bounded)."""
    if not pattern.match(text):
        return False
    if len(seen) < MAX_SEEN:
        seen.add(text)
    return True


_label_value_ok = functools.partial(_matches_and_seen, _LABEL_VALUE, _LABEL_VALUES_SEEN)
_port_name_ok = functools.partial(_matches_and_seen, _DNS_LABEL, _PORT_NAMES_SEEN)


def _label_ok(key: Any, value: Any) -> bool:
    return (
        type(key) is str
        and type(value) is str
        and (value in _LABEL_VALUES_SEEN or _label_value_ok(value))
        and (key in _LABEL_KEYS_SEEN or _label_key_ok(key))
    )


def labels_clean(labels: Any) -> bool:
    """Whether :func:`check_labels` (selector or not) would report nothing about ``labels``.

    A valid label name or value has no ``*``, so one answer covers selectors too.
    """
    if not isinstance(labels, dict):
        return True
    return all([_label_ok(key, value) for key, value in labels.items()])


def clean_labels(labels: Any) -> Labels | None:
    """``labels`` as a resource holds them (sorted pairs of shared strings), when
    :func:`labels_clean` accepts them; else None. None or empty: no labels.

    Shared (:func:`~controlplane.config.yamlsource.share`), because a
    directory repeats the same few keys and values on thousands of documents.
    """
    if not labels:
        return ()
    if type(labels) is not dict:
        return None
    # Only pairs of strings are ever stored, and nothing else is equal to a string.
    items = tuple(labels.items())
    try:
        known = _LABEL_SETS.get(items)
    except TypeError:  # an unhashable value, no label value
        return None
    if known is not None:
        return known
    pairs: list[tuple[str, str]] = []
    for key, value in labels.items():
        if not _label_ok(key, value):
            return None
        pairs.append((share(key), share(value)))
    if len(pairs) > 1:
        pairs.sort()
    result = tuple(pairs)
    if len(_LABEL_SETS) < MAX_SEEN:
        _LABEL_SETS[items] = result
    return result


def shared_labels(labels: dict[str, Any] | None) -> Labels:
    """``tuple(sorted(labels.items()))`` with its strings shared (see :func:`clean_labels`)."""
    if not labels:
        return ()
    return tuple(
        sorted(
            [
                (
                    share(key) if type(key) is str else key,
                    share(value) if type(value) is str else value,
                )
                for key, value in labels.items()
            ]
        )
    )


def check_labels(labels: Any, path: Path, report: Reporter, *, selector: bool = False) -> None:
    """Kubernetes label syntax, as Istio validates labels and selectors (no ``*``)."""
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        here = (*path, key)
        if selector and ("*" in str(key) or "*" in str(value)):
            report.error(
                "PF114", here, "a wildcard is not supported in a selector; name the label value"
            )
            continue
        prefix, _, name = str(key).rpartition("/")
        if not _LABEL_NAME.match(name) or (prefix and not _HOSTNAME.match(prefix)):
            report.error("PF114", here, f"{key!r} is not a valid label name")
        elif not isinstance(value, str) or not _LABEL_VALUE.match(value):
            report.error(
                "PF114",
                here,
                f"{value!r} is not a valid label value (up to 63 letters, digits, '-', '_', '.')",
            )


def check_port_name(name: str, path: Path, report: Reporter) -> None:
    """Istio's rule for port names: a DNS label (lowercase letters, digits, '-')."""
    if name and not _DNS_LABEL.match(name):
        report.error(
            "PF114",
            path,
            f"port name {name!r} is not a DNS label (lowercase letters, digits and '-')",
        )


def unix_address_problem(address: str) -> str | None:
    """Why a ``unix://`` address is not usable, as Istio decides it, or None."""
    path = address[len(UNIX_PREFIX) :]
    if not path:
        return "a unix address needs a path"
    if path.startswith("@"):
        return None  # an abstract socket
    if not path.startswith("/") or path.endswith("/"):
        return f"{address!r} is not an absolute path to a socket file"
    return None


def _check_port(number: Any, path: Path, report: Reporter) -> bool:
    if number is None:
        report.error("PF113", path, "a port number is required")
        return False
    if not 1 <= number <= 65535:
        report.error("PF114", path, f"port {number} is not 1-65535")
        return False
    return True


_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


def is_valid_address(address: str) -> bool:
    if _IPV4.match(address):
        return True
    if address.startswith("unix://"):
        return len(address) > len("unix://")
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(address))


def kube_service(spec: dict[str, Any], report: Reporter) -> KubeServiceSpec:
    ports: list[KubePort] = []
    raw = spec.get("ports") or []
    if not raw:
        report.error("PF113", ("spec", "ports"), "a Service needs at least one port")
    names: set[str] = set()
    # As in Kubernetes, one port number may serve both TCP and UDP, but not twice the same.
    numbers: set[tuple[int, str]] = set()
    for index, port in enumerate(raw):
        here: Path = ("spec", "ports", index)
        port = port or {}
        name = port.get("name") or ""
        if len(raw) > 1 and not name:
            report.error("PF113", (*here, "name"), "ports must be named when a Service has several")
        if name in names and name:
            report.error("PF114", (*here, "name"), f"port name {name!r} is used twice")
        names.add(name)
        if not _check_port(port.get("port"), (*here, "port"), report):
            continue
        number_and_protocol = (port["port"], port.get("protocol") or "TCP")
        if number_and_protocol in numbers:
            report.error(
                "PF114",
                (*here, "port"),
                f"port {number_and_protocol[0]}/{number_and_protocol[1]} is used twice; "
                "remove one or change its number",
            )
        numbers.add(number_and_protocol)
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            report.error("PF114", (*here, "targetPort"), f"targetPort {target} is not 1-65535")
        ports.append(
            KubePort(
                name=name,
                port=port["port"],
                target_port=target,
                protocol=protocol_of(port.get("appProtocol"), name, None)
                if (port.get("protocol") or "TCP") == "TCP"
                else Protocol.UDP,
            )
        )
    selector = spec.get("selector")
    if not labels_clean(selector):
        check_labels(selector, ("spec", "selector"), report, selector=True)
    return KubeServiceSpec(
        selector=tuple(sorted(selector.items())) if selector else None,
        ports=tuple(ports),
    )


def workload(
    spec: dict[str, Any], path: Path, report: Reporter, *, need_address: bool = True
) -> WorkloadSpec:
    address = spec.get("address") or ""
    network = spec.get("network") or ""
    if not address and need_address and network:
        # As in Istio: a workload on another network is reached through that network's
        # gateway, never at an address of its own. Pilotfish has one network.
        report.warn(
            "PF124",
            (*path, "network"),
            f"the workload has no address: it is on network {network!r}, reachable only "
            "through that network's gateway, which Pilotfish does not route to; "
            "it receives no traffic",
        )
    elif not address and need_address:
        report.error("PF113", (*path, "address"), "a workload needs an address")
    elif address.startswith(UNIX_PREFIX):
        problem = unix_address_problem(address)
        if problem:
            report.error("PF114", (*path, "address"), problem)
        if spec.get("ports"):
            report.error(
                "PF114",
                (*path, "ports"),
                f"the unix endpoint {address!r} cannot have ports: a socket has none",
            )
    elif address and not is_valid_address(address):
        report.error("PF114", (*path, "address"), f"{address!r} is not an IP address or host name")
    ports = spec.get("ports") or {}
    for name, number in ports.items():
        if (
            type(name) is str
            and _DNS_LABEL.match(name)
            and number is not None
            and 1 <= number <= 65535
        ):
            continue  # the common case: nothing to report, no path to build
        here = (*path, "ports", name)
        check_port_name(name, here, report)
        _check_port(number, here, report)
    labels = spec.get("labels")
    if not labels_clean(labels):
        check_labels(labels, (*path, "labels"), report)
    weight = spec.get("weight")
    if weight is not None and weight < 1:
        report.error("PF114", (*path, "weight"), "a weight must be at least 1 (omit it for 1)")
    return _workload_spec(address, ports, labels, weight, spec.get("locality"))


def _workload_spec(
    address: str, ports: dict[str, int], labels: Any, weight: Any, locality: Any
) -> WorkloadSpec:
    return WorkloadSpec(
        address=address,
        ports=tuple(sorted(ports.items())),
        labels=tuple(sorted((labels or {}).items())),
        weight=weight or 1,
        locality=Locality.parse(locality) if locality else _NO_LOCALITY,
    )


def clean_workload(spec: dict[str, Any], namespace: str, name: str) -> WorkloadSpec | None:
    """:func:`workload` of a WorkloadEntry spec it would report nothing about, else None.

    For a spec the schema check passed; unix addresses are left to :func:`workload`.
    """
    address = spec.get("address")
    if not address or address.startswith(UNIX_PREFIX) or not is_valid_address(address):
        return None
    ports = spec.get("ports")
    port_pairs = _clean_ports(ports) if ports else ()
    if port_pairs is None:
        return None
    weight = spec.get("weight")
    if weight is not None and weight < 1:
        return None
    labels = clean_labels(spec.get("labels"))
    if labels is None:
        return None
    locality = spec.get("locality")
    return WorkloadSpec(
        address,
        port_pairs,
        labels,
        weight or 1,
        Locality.parse(locality) if locality else _NO_LOCALITY,
    )


# The fields of the common WorkloadEntry, whose schema check clean_workload_entry makes
# itself, in the same pass: address (string), weight (uint32), ports (map:uint32) and
# labels (map:string). tests/config/test_clean_path.py pins these types to the schema.
PLAIN_WORKLOAD_FIELDS = frozenset({"address", "ports", "labels", "weight"})
_MAX_UINT32 = 2**32 - 1


def clean_workload_entry(spec: Any, namespace: str, name: str) -> WorkloadSpec | None:
    """:func:`clean_workload` of a WorkloadEntry spec that ``is_clean`` accepts, else None.

    The schema check and the conversion in one pass for a spec of
    :data:`PLAIN_WORKLOAD_FIELDS`; any other spec is checked by the schema first.
    """
    if type(spec) is not dict:
        return None
    if not spec.keys() <= PLAIN_WORKLOAD_FIELDS:
        return clean_workload(spec, namespace, name) if is_clean(spec, "WorkloadEntry") else None
    address = spec.get("address")
    if (
        type(address) is not str
        or not address
        or address.startswith(UNIX_PREFIX)
        or not is_valid_address(address)
    ):
        return None
    weight = spec.get("weight")
    if weight is not None and (type(weight) is not int or not 1 <= weight <= _MAX_UINT32):
        return None
    ports = spec.get("ports")
    if ports is not None and type(ports) is not dict:
        return None
    port_pairs = _clean_ports(ports) if ports else ()
    if port_pairs is None:
        return None
    labels = spec.get("labels")
    if labels is not None and type(labels) is not dict:
        return None
    label_pairs = clean_labels(labels)
    if label_pairs is None:
        return None
    return WorkloadSpec(address, port_pairs, label_pairs, weight or 1, _NO_LOCALITY)


def _clean_ports(ports: dict[str, Any]) -> tuple[tuple[str, int], ...] | None:
    """A workload's ``ports`` as held, when :func:`workload` would report nothing about them."""
    for number in ports.values():
        if type(number) is not int:
            return None  # before the lookup: true and 80.0 are equal to 1 and 80 as keys
    items = tuple(ports.items())
    try:
        known = _PORT_SETS.get(items)
    except TypeError:  # an unhashable port name
        return None
    if known is not None:
        return known
    pairs: list[tuple[str, int]] = []
    for port_name, number in items:
        if not (
            type(port_name) is str
            and (port_name in _PORT_NAMES_SEEN or _port_name_ok(port_name))
            and 1 <= number <= 65535
        ):
            return None
        pairs.append((share(port_name), number))
    if len(pairs) > 1:
        pairs.sort()
    result = tuple(pairs)
    if len(_PORT_SETS) < MAX_SEEN:
        _PORT_SETS[items] = result
    return result


_new_kube_port = slot_constructor(KubePort)
_new_kube_service = slot_constructor(KubeServiceSpec)


def clean_kube_service(spec: dict[str, Any], namespace: str, name: str) -> KubeServiceSpec | None:
    """:func:`kube_service` of a spec it would report nothing about, else None."""
    raw = spec.get("ports")
    if not raw:
        return None
    several = len(raw) > 1
    ports: list[KubePort] = []
    names: set[str] = set()
    numbers: set[tuple[int, str]] = set()
    for port in raw:
        if not port:
            return None
        port_name = port.get("name") or ""
        if port_name:
            if port_name in names:
                return None
            names.add(port_name)
        elif several:
            return None
        number = port.get("port")
        if number is None or not 1 <= number <= 65535:
            return None
        protocol = port.get("protocol") or "TCP"
        if (number, protocol) in numbers:
            return None
        numbers.add((number, protocol))
        target = port.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            return None
        ports.append(
            _new_kube_port(
                share(port_name),
                number,
                target,
                protocol_of(port.get("appProtocol"), port_name, None)
                if protocol == "TCP"
                else Protocol.UDP,
            )
        )
    selector = spec.get("selector")
    labels = clean_labels(selector)
    if labels is None:
        return None
    return _new_kube_service(labels if selector else None, tuple(ports), EXPORTED_EVERYWHERE)


def annotated_service(
    service: KubeServiceSpec, annotations: object, namespace: str, report: Reporter
) -> KubeServiceSpec:
    """``service`` exported as its ``networking.istio.io/exportTo`` annotation says."""
    exported = service_export_to(annotations, namespace, report)
    return service if exported == service.export_to else replace(service, export_to=exported)


def service_entry(
    spec: dict[str, Any], report: Reporter, namespace: str = "default"
) -> ServiceEntrySpec:
    hosts = spec.get("hosts") or []
    if not hosts:
        report.error("PF113", ("spec", "hosts"), "a ServiceEntry needs at least one host")
    for index, host in enumerate(hosts):
        if host == "*":
            report.error(
                "PF114",
                ("spec", "hosts", index),
                "host '*' is not allowed in a ServiceEntry; name the hosts (or '*.domain')",
            )
    ports: list[ServicePort] = []
    # Istio rejects a ServiceEntry that repeats a port number or name: each names a cluster.
    names: set[str] = set()
    numbers: set[int] = set()
    for index, port in enumerate(spec.get("ports") or ()):
        here: Path = ("spec", "ports", index)
        port = port or {}
        name = port.get("name")
        if name and name in names:
            report.error("PF114", (*here, "name"), f"port name {name!r} is used twice")
        names.add(name or "")
        if not _check_port(port.get("number"), (*here, "number"), report):
            continue
        if port["number"] in numbers:
            report.error(
                "PF114",
                (*here, "number"),
                f"port {port['number']} is used twice; remove one or change its number",
            )
        numbers.add(port["number"])
        if not name:
            report.error("PF113", (*here, "name"), "a ServiceEntry port needs a name")
        check_port_name(name or "", (*here, "name"), report)
        target = port.get("targetPort")
        if target is not None and not 1 <= target <= 65535:
            report.error("PF114", (*here, "targetPort"), f"targetPort {target} is not 1-65535")
        ports.append(
            ServicePort(
                name=port.get("name") or "",
                port=port["number"],
                protocol=protocol_of(port.get("protocol"), port.get("name"), None),
                target_port=port.get("targetPort"),
            )
        )
    if spec.get("endpoints") and spec.get("workloadSelector") is not None:
        report.error(
            "PF120",
            ("spec", "workloadSelector"),
            "use either endpoints or workloadSelector, not both",
        )
    resolution = (
        Resolution[spec.get("resolution") or "NONE"]
        if spec.get("resolution") != "DYNAMIC_DNS"
        else Resolution.DNS
    )
    endpoints = tuple(
        workload(ep or {}, ("spec", "endpoints", i), report)
        for i, ep in enumerate(spec.get("endpoints") or ())
    )
    raw_endpoints = spec.get("endpoints") or ()
    addresses = spec.get("addresses") or ()
    if resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        for i, address in enumerate(addresses):
            if isinstance(address, str) and "/" in address:
                report.error(
                    "PF114",
                    ("spec", "addresses", i),
                    f"CIDR {address!r} is allowed only with resolution NONE or STATIC",
                )
    if resolution is Resolution.NONE and raw_endpoints:
        report.error(
            "PF114",
            ("spec", "endpoints"),
            "resolution NONE takes no endpoints (traffic goes to the address the client asked "
            "for); remove them or set resolution STATIC or DNS",
        )
    if resolution is Resolution.DNS_ROUND_ROBIN and len(raw_endpoints) > 1:
        report.error(
            "PF114",
            ("spec", "endpoints", 1),
            "resolution DNS_ROUND_ROBIN takes at most one endpoint; use DNS for several",
        )
    if any(ep.address.startswith(UNIX_PREFIX) for ep in endpoints) and len(ports) != 1:
        report.error(
            "PF114",
            ("spec", "ports"),
            "a ServiceEntry with unix socket endpoints needs exactly one port",
        )
    if selector_labels := (spec.get("workloadSelector") or {}).get("labels"):
        check_labels(selector_labels, ("spec", "workloadSelector", "labels"), report, selector=True)
    if resolution is Resolution.STATIC:
        for i, ep in enumerate(endpoints):
            if ep.address and not _is_ip_or_unix(ep.address):
                report.error(
                    "PF114",
                    ("spec", "endpoints", i, "address"),
                    f"resolution STATIC needs IP addresses, not {ep.address!r} (use DNS)",
                )
    selector = spec.get("workloadSelector")
    return ServiceEntrySpec(
        hosts=tuple(hosts),
        addresses=tuple(spec.get("addresses") or ()),
        ports=tuple(ports),
        mesh_external=(spec.get("location") or "MESH_EXTERNAL") == "MESH_EXTERNAL",
        resolution=resolution,
        endpoints=endpoints,
        workload_selector=tuple(sorted((selector.get("labels") or {}).items()))
        if selector is not None
        else None,
        export_to=export_to(
            spec.get("exportTo") or (), namespace, ("spec", "exportTo"), report, allow_nobody=True
        ),
    )


def _is_ip_or_unix(address: str) -> bool:
    if address.startswith("unix://"):
        return True
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False
