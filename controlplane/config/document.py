"""One file in, validated resources and findings out.

:func:`read_text` parses a file's text and turns every document into a
:class:`~controlplane.config.resources.Resource`: first the envelope
(apiVersion, kind, metadata), then the structural schema check, then the
kind's converter. A document with errors yields no resource; the file as a
whole is usable only when it has no errors at all (see
:class:`FileResult.ok`). Everything here depends on the file's text alone,
so results are cached by content and can be computed in worker processes.

Most documents of a large directory are valid, so :func:`read_document`
first tries :func:`_read_clean`: one pass over the envelope, the schema's
clean check (:func:`~controlplane.config.schema.is_clean`) and the kind's
converter without paths or reporter (``clean_*`` in the kind's module, or
the converter itself on a scratch reporter). It returns a resource only when
the exact reading would report nothing at all; on anything else it stands
aside and :func:`_read` reads the document again and reports, so every
diagnostic comes from one place (``tests/config/test_clean_path.py``).

The input limits (:class:`~controlplane.config.limits.ConfigLimits`) come
first: a file, document or string over them is reported and goes no further,
so no validator ever sees it.

Real directories hold whole manifests, so a document of a kind Pilotfish does
not read (a ``Deployment``, an ``AuthorizationPolicy``, a Kubernetes Gateway
API ``HTTPRoute``) is skipped with a ``PF122`` warning, one per kind and file,
and the rest of the file is used. Only a kind that looks like a misspelling of
one of ours (``VirtualSevice``) and is no kind known elsewhere stays a
``PF102`` error, as it would otherwise vanish without effect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from controlplane.config import gateways, policies, routing, services
from controlplane.config.diagnostics import Finding
from controlplane.config.istio_schema import KINDS, TOP_LEVEL_FIELDS
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits, describe_bytes
from controlplane.config.report import Reporter
from controlplane.config.resources import Meta, Resource, Spec
from controlplane.config.schema import (
    CleanTable,
    check_message,
    clean_table,
    is_clean,
    is_clean_by,
    suggest,
)
from controlplane.config.services import shared_labels
from controlplane.config.yamlsource import (
    Document,
    YamlLimitError,
    YamlSyntaxError,
    load_cache,
    parse,
    share,
)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_NAMESPACE = "default"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

# Kinds that sit next to Istio networking config in real manifests. They are
# skipped even when their name is close to one of ours (ServiceAccount, WorkloadGroup).
OTHER_KINDS = frozenset(
    {
        # Kubernetes
        "APIService",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CronJob",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "EndpointSlice",
        "Endpoints",
        "HorizontalPodAutoscaler",
        "Ingress",
        "IngressClass",
        "Job",
        "LimitRange",
        "List",
        "MutatingWebhookConfiguration",
        "Namespace",
        "NetworkPolicy",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Pod",
        "PodDisruptionBudget",
        "PriorityClass",
        "ReplicaSet",
        "ResourceQuota",
        "Role",
        "RoleBinding",
        "Secret",
        "ServiceAccount",
        "StatefulSet",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        # Istio kinds Pilotfish does not read
        "AuthorizationPolicy",
        "EnvoyFilter",
        "IstioOperator",
        "PeerAuthentication",
        "ProxyConfig",
        "RequestAuthentication",
        "Sidecar",
        "Telemetry",
        "WasmPlugin",
        "WorkloadGroup",
    }
)


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file's text says: its resources and the findings against it."""

    file: str
    resources: tuple[Resource, ...]
    findings: tuple[Finding, ...]
    syntax_error: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return not any(f.is_error for f in self.findings)


def _convert_service(spec: dict[str, Any], ns: str, name: str, report: Reporter) -> Spec:
    return services.kube_service(spec, report)


def _convert_workload(spec: dict[str, Any], ns: str, name: str, report: Reporter) -> Spec:
    return services.workload(spec, ("spec",), report)


def _convert_service_entry(spec: dict[str, Any], ns: str, name: str, report: Reporter) -> Spec:
    return services.service_entry(spec, report, ns)


_CONVERTERS: dict[str, Callable[[dict[str, Any], str, str, Reporter], Spec]] = {
    "Service": _convert_service,
    "WorkloadEntry": _convert_workload,
    "ServiceEntry": _convert_service_entry,
    "VirtualService": routing.virtual_service,
    "DestinationRule": policies.destination_rule,
    "Gateway": gateways.gateway,
}


# Converters of the common case, without reporter: None means "not sure" (see _read_clean).
_CLEAN_CONVERTERS: dict[str, Callable[[dict[str, Any], str, str], Spec | None]] = {
    "Service": services.clean_kube_service,
    "VirtualService": routing.clean_virtual_service,
    "DestinationRule": policies.clean_destination_rule,
    "WorkloadEntry": services.clean_workload_entry,
}
# Those that make the schema's clean check of the spec themselves, in the same pass.
_CHECKING_CONVERTERS = frozenset({"WorkloadEntry"})


@dataclass(frozen=True, slots=True)
class _Kind:
    """What :func:`_read_clean` needs of a kind, in one lookup (``spec``: None when
    ``clean`` checks the spec against the schema itself)."""

    name: str
    versions: tuple[str, ...]
    spec: CleanTable | None
    clean: Callable[[dict[str, Any], str, str], Spec | None] | None


_CLEAN_KINDS = {
    kind: _Kind(
        kind,
        tuple(versions),
        None if kind in _CHECKING_CONVERTERS else clean_table(message),
        _CLEAN_CONVERTERS.get(kind),
    )
    for kind, (versions, message) in KINDS.items()
}
_OBJECT_META = clean_table("ObjectMeta")
_NAME_ONLY = frozenset({"name", "namespace"})
# Valid namespaces met in this load, each as its shared self: a directory names a few
# on thousands of documents. Bounded within a load too, for a directory of ever new ones.
_NAMESPACES_SEEN: dict[str, str] = load_cache({})
_MAX_NAMESPACES_SEEN = 100_000


def read_text(file: str, text: str, limits: ConfigLimits = DEFAULT_LIMITS) -> FileResult:
    """Parse and validate every document of ``text`` (the content of ``file``)."""
    size = len(text)
    if (
        size > limits.max_file_bytes // 4
        and (size := len(text.encode("utf-8", "surrogatepass"))) > limits.max_file_bytes
    ):
        return file_too_large(file, size, limits)
    try:
        documents = parse(text, limits)
    except YamlSyntaxError as exc:
        code = exc.code if isinstance(exc, YamlLimitError) else "PF100"
        finding = Finding(code, file, 0, (), "", str(exc))
        return FileResult(file, (), (finding,), (exc.line, exc.column))
    resources: list[Resource] = []
    findings: list[Finding] = []
    clean_below = limits.max_string_bytes
    for document in documents:
        # read_document's first step, here: most documents go no further.
        resource = _read_clean(file, document) if document.size <= clean_below else None
        if resource is None:
            resource = _read_reported(file, document, findings, limits)
        if resource is not None:
            resources.append(resource)
    return FileResult(file, tuple(resources), _one_skip_per_kind(findings))


def _one_skip_per_kind(findings: list[Finding]) -> tuple[Finding, ...]:
    """Keep the first ``PF122`` of each kind, counting the documents it stands for."""
    counts: dict[str, int] = {}
    for finding in findings:
        if finding.code == "PF122":
            counts[finding.message] = counts.get(finding.message, 0) + 1
    if not counts:
        return tuple(findings)
    out: list[Finding] = []
    for finding in findings:
        if finding.code != "PF122":
            out.append(finding)
        elif (count := counts.pop(finding.message, 0)) > 0:
            suffix = f" ({count} documents)" if count > 1 else ""
            out.append(replace(finding, message=finding.message + suffix))
    return tuple(out)


def _skip(kind: str, api_version: object, report: Reporter) -> None:
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    report.resource = kind
    if group == GATEWAY_API_GROUP:
        message = (
            f"{kind} is a Kubernetes Gateway API object ({GATEWAY_API_GROUP}); Pilotfish "
            "does not read the Gateway API, only Istio's networking.istio.io Gateway and "
            "VirtualService: the document is skipped"
        )
    else:
        where = f" ({api_version})" if isinstance(api_version, str) and api_version else ""
        message = (
            f"kind {kind!r}{where} is not one Pilotfish reads; the document is skipped "
            "and the rest of the file is used"
        )
    report.warn("PF122", ("kind",), message)


def file_too_large(file: str, size: int, limits: ConfigLimits) -> FileResult:
    """The result for a file over ``limits.max_file_bytes``: one error, at line 1."""
    message = (
        f"the file is {size:,} bytes, more than the limit of "
        f"{describe_bytes(limits.max_file_bytes)}; split the file"
    )
    return FileResult(file, (), (Finding("PF106", file, 0, (), "", message),), (1, 1))


def read_document(
    file: str,
    document: Document,
    findings: list[Finding],
    limits: ConfigLimits = DEFAULT_LIMITS,
) -> Resource | None:
    # Only a document longer than the limit can hold a string over it.
    if document.size <= limits.max_string_bytes:
        resource = _read_clean(file, document)
        if resource is not None:
            return resource
    return _read_reported(file, document, findings, limits)


def _read_reported(
    file: str, document: Document, findings: list[Finding], limits: ConfigLimits
) -> Resource | None:
    """:func:`read_document` by the exact reading, whose findings go to ``findings``."""
    data = document.data
    report = Reporter(file, document.index, "")
    try:
        # Only a document longer than the limit can hold a string over it.
        if document.size > limits.max_string_bytes:
            report.resource = _resource_of(data, limits.max_string_bytes)
            _check_strings(data, (), limits.max_string_bytes, report)
            if report.failed:
                return None
        return _read(data, document, report)
    finally:
        findings.extend(report.findings)


_MAX_LONG_STRINGS = 10


def _resource_of(data: Any, limit: int) -> str:
    """``Kind namespace/name`` as far as the document says it, for findings before validation."""
    if not isinstance(data, dict):
        return ""
    kind, metadata = data.get("kind"), data.get("metadata")
    if not isinstance(kind, str) or len(kind) > 100:
        return ""
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or len(name) > 253:
        return kind
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE  # type: ignore[union-attr]
    return (
        f"{kind} {namespace}/{name}"
        if isinstance(namespace, str) and len(namespace) <= 63
        else kind
    )


def _check_strings(data: Any, path: tuple[str | int, ...], limit: int, report: Reporter) -> None:
    """Report every string (key or value) over ``limit`` bytes, up to a few per document."""
    items: Any
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return
    for key, value in items:
        if len(report.findings) >= _MAX_LONG_STRINGS:
            return
        here = (*path, key)
        if isinstance(key, str) and _too_long(key, limit, report, path, "a key here"):
            here = (*path, key[:40] + "...")
        if isinstance(value, str):
            _too_long(value, limit, report, here, "the value")
        else:
            _check_strings(value, here, limit, report)


def _too_long(
    text: str, limit: int, report: Reporter, path: tuple[str | int, ...], what: str
) -> bool:
    if 4 * len(text) <= limit:
        return False
    size = len(text) if len(text) > limit else len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return False
    report.error(
        "PF121",
        path,
        f"{what} is {size:,} bytes, more than the limit of "
        f"{describe_bytes(limit)} for one string; shorten it",
    )
    return True


_TOP_LEVEL_KEYS = frozenset(TOP_LEVEL_FIELDS)


def _read_clean(file: str, document: Document) -> Resource | None:
    """The resource of a document :func:`_read` would report nothing about, else None.

    The common case, taken in one pass: a kind Pilotfish reads, a valid
    envelope, a spec :func:`is_clean` accepts and a conversion without
    findings. None means only "not sure": :func:`_read` then reads the
    document again, and reports. The strings a directory repeats (kind,
    namespace, name, labels) are shared (:func:`~controlplane.config.yamlsource.share`).
    """
    data = document.data
    if type(data) is not dict:
        return None
    kind = data.get("kind")
    found = _CLEAN_KINDS.get(kind) if type(kind) is str else None
    if found is None or data.get("apiVersion") not in found.versions:
        return None
    if not data.keys() <= _TOP_LEVEL_KEYS:
        return None
    metadata = data.get("metadata")
    if type(metadata) is not dict:
        return None
    if not metadata.keys() <= _NAME_ONLY and not is_clean_by(metadata, _OBJECT_META):
        return None
    name = metadata.get("name")
    if type(name) is not str or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return None
    namespace = metadata.get("namespace")
    if type(namespace) is str and namespace:
        seen = _NAMESPACES_SEEN.get(namespace)
        if seen is None:
            if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
                return None
            seen = share(namespace)
            if len(_NAMESPACES_SEEN) < _MAX_NAMESPACES_SEEN:
                _NAMESPACES_SEEN[seen] = seen
        namespace = seen
    elif namespace is None or namespace == "":
        namespace = DEFAULT_NAMESPACE
    else:
        return None
    spec = data.get("spec")
    if spec is None or (found.spec is not None and not is_clean_by(spec, found.spec)):
        return None
    kind = found.name
    name = share(name)
    clean = found.clean
    converted = clean(spec, namespace, name) if clean is not None else None
    annotations = metadata.get("annotations")
    if converted is not None and not annotations:
        return Resource(_meta(kind, namespace, name, file, document, metadata), converted)
    if converted is None and found.spec is None:
        return None  # the spec may not even pass the schema's check: the exact path decides
    report = Reporter(file, document.index, "")
    if converted is None:
        converted = _CONVERTERS[kind](spec, namespace, name, report)
    if annotations and kind == "DestinationRule":
        converted = policies.annotated_policy(converted, annotations, report)  # type: ignore[arg-type]
    elif annotations and kind == "Service":
        converted = services.annotated_service(
            converted,  # type: ignore[arg-type]
            annotations,
            namespace,
            report,
        )
    if report.findings:
        return None
    return Resource(_meta(kind, namespace, name, file, document, metadata), converted)


def _meta(
    kind: str, namespace: str, name: str, file: str, document: Document, metadata: dict[str, Any]
) -> Meta:
    return Meta(
        kind,
        namespace,
        name,
        file,
        document.index,
        document.line,
        shared_labels(metadata.get("labels")),
    )


def _read(data: Any, document: Document, report: Reporter) -> Resource | None:
    if not isinstance(data, dict):
        report.error("PF101", (), "a document must be a mapping with apiVersion, kind and metadata")
        return None
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        report.error(
            "PF101", ("kind",), "the document has no kind; add one, for example kind: Service"
        )
        return None
    if isinstance(api_version, str) and api_version.startswith(GATEWAY_API_GROUP + "/"):
        _skip(kind, api_version, report)
        return None
    if kind not in KINDS and (kind in OTHER_KINDS or not suggest(kind, list(KINDS))):
        _skip(kind, api_version, report)
        return None
    if kind not in KINDS:
        report.error(
            "PF102",
            ("kind",),
            f"unknown kind {kind!r}; Pilotfish reads {', '.join(sorted(KINDS))}"
            f"{suggest(kind, list(KINDS))}",
        )
        return None
    versions, message = KINDS[kind]
    if not isinstance(api_version, str) or not api_version:
        report.error(
            "PF101",
            ("apiVersion",),
            f"the document has no apiVersion; add apiVersion: {versions[0]}",
        )
        return None
    if api_version not in versions:
        report.error(
            "PF103",
            ("apiVersion",),
            f"apiVersion {api_version!r} is not valid for {kind}; use {' or '.join(versions)}",
        )
        return None
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    namespace = (
        metadata.get("namespace") if isinstance(metadata, dict) else None
    ) or DEFAULT_NAMESPACE
    report.resource = f"{kind} {namespace}/{name}" if isinstance(name, str) else kind
    for key in data:
        if key not in TOP_LEVEL_FIELDS:
            report.error(
                "PF110",
                (key,),
                f"unknown top-level field {key!r}"
                f"{suggest(key, list(TOP_LEVEL_FIELDS)) or '; remove it'}",
            )
    if metadata is None:
        report.error("PF104", ("metadata",), "the document has no metadata; add metadata.name")
        return None
    if not is_clean(metadata, "ObjectMeta"):
        check_message(metadata, "ObjectMeta", ("metadata",), report)
    if report.failed:
        return None
    if name is None:
        report.error("PF104", ("metadata", "name"), "metadata has no name; add metadata.name")
    elif not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        report.error(
            "PF104",
            ("metadata", "name"),
            f"metadata.name {name!r} must be a lowercase DNS name (a-z, 0-9, '-', '.')",
        )
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63:
        report.error(
            "PF104",
            ("metadata", "namespace"),
            f"metadata.namespace {namespace!r} must be a lowercase DNS label (a-z, 0-9, '-')",
        )
    spec = data.get("spec")
    if spec is None:
        report.error("PF113", ("spec",), f"a {kind} needs a spec")
        return None
    if not is_clean(spec, message):
        check_message(spec, message, ("spec",), report)
    if report.failed:
        return None
    converted = _CONVERTERS[kind](spec, namespace, name, report)  # type: ignore[arg-type]
    if kind == "DestinationRule" and metadata.get("annotations"):
        converted = policies.annotated_policy(
            converted,  # type: ignore[arg-type]
            metadata["annotations"],
            report,
        )
    if kind == "Service" and metadata.get("annotations"):
        converted = services.annotated_service(
            converted,  # type: ignore[arg-type]
            metadata["annotations"],
            namespace,
            report,
        )
    if report.failed:
        return None
    labels = metadata.get("labels") or {}
    meta = Meta(
        kind=kind,
        namespace=namespace,
        name=name,  # type: ignore[arg-type]
        file=report.file,
        doc=document.index,
        line=document.line,
        labels=tuple(sorted(labels.items())),
    )
    return Resource(meta, converted)
