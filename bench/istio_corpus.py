"""Istio's own networking YAML, validated by Pilotfish: how often do the two agree?

``PATH`` is a checkout of istio/istio (fetched by the user; nothing of it is
copied into this repository). The script finds the YAML files under

* ``samples/``, ``tests/testdata/config/``, ``tests/testdata/networking/``,
* ``pkg/config/validation/testdata/crds/`` (Istio's validation cases: one
  case per document, since each document is a test of its own),
* ``pilot/pkg/xds/testdata/`` and ``tests/integration/**/testdata/``,

and keeps those holding an Istio networking resource Pilotfish reads
(VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry).
Files with Go templates (``{{``) are counted as skipped: they are not YAML
until rendered.

Each case is validated the way a user's directory would be: the case's
documents (without the ``_err`` key Istio's validation tests add to each)
go into a fresh directory together with ``context.yaml``, which supplies
what the case references and nothing defines: a Service (or, for a host
outside the cluster, a ServiceEntry) for every destination and
DestinationRule host, with the ports the routes name; a DestinationRule
with the subsets they name; a Gateway for every gateway they are bound to.
Then :func:`controlplane.config.store.validate_directory` runs, as
``pilotfish validate`` does.

A case is expected invalid when its file name ends in ``-invalid.yaml`` or
its path contains ``invalid``. The table counts valid cases accepted (clean,
or with warnings), valid cases falsely rejected, invalid cases rejected, and
invalid cases wrongly accepted; valid cases that ask for TLS, which Pilotfish
refuses until it implements TLS (``PF123``), are counted apart (an error
that follows from such a refusal, such as a subset of a refused rule, is
part of it). Wrongly accepted cases are split by whether Pilotfish warned
that it ignores a field of the case (``PF111``: the invalid part may be in a
field Pilotfish does not read) or not. Every miss is listed with its file
(and document) and the first error.

Usage: ``python bench/istio_corpus.py PATH [--list]`` (``--list`` prints every case).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.config.diagnostics import Diagnostic
from controlplane.config.store import validate_directory

ROOTS = (
    "samples",
    "tests/testdata/config",
    "tests/testdata/networking",
    "pkg/config/validation/testdata/crds",
    "pilot/pkg/xds/testdata",
)
PER_DOCUMENT = "pkg/config/validation/testdata/crds"
READ_KINDS = frozenset(
    {"VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry"}
)
ISTIO_GROUP = "networking.istio.io/"
CLUSTER_SUFFIX = ".svc.cluster.local"

VALID_CLEAN = "valid, accepted clean"
VALID_WARNED = "valid, accepted with warnings"
FALSELY_REJECTED = "valid, falsely rejected"
REFUSED_TLS = "valid, refused: asks for TLS (PF123, until TLS is implemented)"
INVALID_REJECTED = "invalid, rejected"
WRONGLY_ACCEPTED_IGNORED = "invalid, accepted (Pilotfish ignores a field of it: PF111)"
WRONGLY_ACCEPTED = "invalid, wrongly accepted"
OUTCOMES = (
    VALID_CLEAN,
    VALID_WARNED,
    REFUSED_TLS,
    FALSELY_REJECTED,
    INVALID_REJECTED,
    WRONGLY_ACCEPTED_IGNORED,
    WRONGLY_ACCEPTED,
)
MISSES = (FALSELY_REJECTED, WRONGLY_ACCEPTED)


@dataclass(frozen=True)
class Case:
    """Documents validated together; ``name`` is the file, with ``#n`` for one document.

    ``text`` is what Pilotfish reads (the file's own text, or the document's,
    without ``_err`` lines); ``documents`` are the same as PyYAML reads them,
    used only to work out the context.
    """

    name: str
    text: str
    documents: tuple[dict[str, Any], ...]
    expected_invalid: bool


@dataclass
class Corpus:
    cases: list[Case] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def expected_invalid(relative: str) -> bool:
    """Istio's naming: ``*-invalid.yaml`` files and ``invalid`` directories hold invalid cases."""
    return relative.endswith("-invalid.yaml") or "invalid" in relative


def candidate_files(root: Path) -> Iterator[Path]:
    """The YAML files of the corpus, in path order."""
    found: set[Path] = set()
    for top in ROOTS:
        base = root / top
        if base.is_dir():
            found.update(p for p in base.rglob("*") if p.suffix in (".yaml", ".yml"))
    integration = root / "tests" / "integration"
    if integration.is_dir():
        for testdata in integration.rglob("testdata"):
            found.update(p for p in testdata.rglob("*") if p.suffix in (".yaml", ".yml"))
    yield from sorted(p for p in found if p.is_file())


def reads(document: object) -> bool:
    """True for a networking.istio.io document of a kind Pilotfish reads."""
    return (
        isinstance(document, dict)
        and document.get("kind") in READ_KINDS
        and str(document.get("apiVersion", "")).startswith(ISTIO_GROUP)
    )


_SEPARATOR = re.compile(r"(?m)^---[ \t]*(?:#.*)?$")
_TEST_KEY = re.compile(r"(?m)^_err:.*(?:\n|$)")


def find_cases(root: Path) -> Corpus:
    corpus = Corpus()
    for path in candidate_files(root):
        relative = path.relative_to(root).as_posix()
        text = _TEST_KEY.sub("", path.read_text(encoding="utf-8", errors="replace"))
        if "{{" in text:
            if "networking.istio.io" in text:
                corpus.skipped.append((relative, "a Go template"))
            continue
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            if "networking.istio.io" in text:
                corpus.skipped.append((relative, f"not YAML: {str(exc).splitlines()[0]}"))
            continue
        if not any(reads(d) for d in documents):
            continue
        invalid = expected_invalid(relative)
        if relative.startswith(PER_DOCUMENT + "/"):
            for index, chunk in enumerate(_SEPARATOR.split(text)):
                document = yaml.safe_load(chunk)
                if reads(document):
                    case = Case(f"{relative}#{index}", chunk.lstrip("\n"), (document,), invalid)
                    corpus.cases.append(case)
        else:
            corpus.cases.append(Case(relative, text, tuple(documents), invalid))
    return corpus


# -- context: what a user's directory would hold besides the case ----------------------


@dataclass
class _Needs:
    ports: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    subsets: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    gateways: set[tuple[str, str]] = field(default_factory=set)


def _namespace(document: dict[str, Any]) -> str:
    meta = document.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    return ns if isinstance(ns, str) and ns else "default"


def _host_key(host: str, namespace: str) -> tuple[str, str]:
    """(name or host, namespace) of the service a host names; namespace "" when external."""
    if host.endswith(CLUSTER_SUFFIX):
        host = host[: -len(CLUSTER_SUFFIX)]
    elif host.endswith(".svc"):
        host = host[: -len(".svc")]
    parts = host.split(".")
    if len(parts) == 1:
        return host, namespace
    if len(parts) == 2 and "." not in parts[1]:
        return parts[0], parts[1]
    return host, ""


def _destinations(spec: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    for kind in ("http", "tcp", "tls"):
        for rule in spec.get(kind) or ():
            if not isinstance(rule, dict):
                continue
            for route in rule.get("route") or ():
                if isinstance(route, dict) and isinstance(route.get("destination"), dict):
                    yield route["destination"], kind
            for key in ("mirror",):
                if isinstance(rule.get(key), dict):
                    yield rule[key], kind
            for mirror in rule.get("mirrors") or ():
                if isinstance(mirror, dict) and isinstance(mirror.get("destination"), dict):
                    yield mirror["destination"], kind


def _defined(documents: Iterable[dict[str, Any]]) -> tuple[set[tuple[str, str]], set[str]]:
    """(services and SE hosts defined, DestinationRule host keys) of the case."""
    services: set[tuple[str, str]] = set()
    rules: set[str] = set()
    for document in documents:
        if not isinstance(document, dict):
            continue
        spec = document.get("spec") if isinstance(document.get("spec"), dict) else {}
        ns = _namespace(document)
        kind = document.get("kind")
        meta = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
        if kind == "Service" and isinstance(meta.get("name"), str):
            services.add((meta["name"], ns))
        elif kind == "ServiceEntry":
            for host in spec.get("hosts") or ():
                if isinstance(host, str):
                    services.add(_host_key(host, ns))
        elif kind == "DestinationRule" and isinstance(spec.get("host"), str):
            rules.add("/".join(_host_key(spec["host"], ns)))
    return services, rules


def context_documents(documents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the case references and does not define, as a user's directory would hold it."""
    documents = [d for d in documents if isinstance(d, dict)]
    services, rules = _defined(documents)
    needs = _Needs()
    for document in documents:
        spec = document.get("spec")
        if not isinstance(spec, dict) or not reads(document):
            continue
        ns = _namespace(document)
        if document.get("kind") == "VirtualService":
            for gateway in spec.get("gateways") or ():
                if isinstance(gateway, str) and gateway != "mesh":
                    gw_ns, _, name = gateway.rpartition("/")
                    needs.gateways.add((name, gw_ns or ns))
            for destination, kind in _destinations(spec):
                host = destination.get("host")
                if not isinstance(host, str) or host.startswith("*"):
                    continue
                key = _host_key(host, ns)
                port = (destination.get("port") or {}).get("number")
                protocol = "http" if kind == "http" else "tcp"
                ports = needs.ports.setdefault(key, {})
                if isinstance(port, int) and 0 < port < 65536:
                    ports.setdefault(port, protocol)
                subset = destination.get("subset")
                if isinstance(subset, str):
                    needs.subsets.setdefault(key, set()).add(subset)
        elif document.get("kind") == "DestinationRule":
            host = spec.get("host")
            if isinstance(host, str) and not host.startswith("*"):
                needs.ports.setdefault(_host_key(host, ns), {})
    out: list[dict[str, Any]] = []
    for key, ports in sorted(needs.ports.items()):
        if key in services:
            continue
        out.append(_service(key, ports or {80: "http"}))
    for key, subsets in sorted(needs.subsets.items()):
        if "/".join(key) in rules:
            continue
        name, ns = key
        out.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": f"context-{_dns(name)}", "namespace": ns or "default"},
                "spec": {
                    "host": name if not ns else f"{name}.{ns}{CLUSTER_SUFFIX}",
                    "subsets": [
                        {"name": s, "labels": {"version": _dns(s)}} for s in sorted(subsets)
                    ],
                },
            }
        )
    defined_gateways = {
        (d.get("metadata", {}).get("name"), _namespace(d))
        for d in documents
        if d.get("kind") == "Gateway" and isinstance(d.get("metadata"), dict)
    }
    for name, ns in sorted(needs.gateways - defined_gateways):
        out.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "selector": {"istio": "ingressgateway"},
                    "servers": [
                        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
                    ],
                },
            }
        )
    return out


def _dns(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned[:63] or "x"


def _service(key: tuple[str, str], ports: dict[int, str]) -> dict[str, Any]:
    name, ns = key
    if ns:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": {"app": name},
                "ports": [
                    {"name": f"{protocol}-{number}", "port": number}
                    for number, protocol in sorted(ports.items())
                ],
            },
        }
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": f"context-{_dns(name)}", "namespace": "default"},
        "spec": {
            "hosts": [name],
            "location": "MESH_EXTERNAL",
            "resolution": "DNS",
            "ports": [
                {"number": number, "name": f"{protocol}-{number}", "protocol": protocol.upper()}
                for number, protocol in sorted(ports.items())
            ],
        },
    }


# -- validation and classification ----------------------------------------------------


def classify(invalid: bool, diagnostics: Iterable[Diagnostic]) -> str:
    """The outcome of a case expected ``invalid`` (or not) given its diagnostics."""
    found = list(diagnostics)
    rejected = any(d.is_error for d in found)
    if invalid:
        if rejected:
            return INVALID_REJECTED
        ignored = any(d.code == "PF111" for d in found)
        return WRONGLY_ACCEPTED_IGNORED if ignored else WRONGLY_ACCEPTED
    if any(d.code == "PF123" for d in found):
        return REFUSED_TLS
    if rejected:
        return FALSELY_REJECTED
    return VALID_WARNED if found else VALID_CLEAN


def validate_case(case: Case) -> list[Diagnostic]:
    with tempfile.TemporaryDirectory(prefix="istio-case-") as tmp:
        root = Path(tmp)
        (root / "case.yaml").write_text(case.text, encoding="utf-8")
        context = context_documents(case.documents)
        if context:
            (root / "context.yaml").write_text(
                yaml.safe_dump_all(context, sort_keys=False), encoding="utf-8"
            )
        # The context has no workloads, so its subsets warn that they select none: that
        # says nothing about the case.
        return [d for d in validate_directory(root) if d.is_error or d.file != "context.yaml"]


def run(root: Path) -> tuple[Corpus, list[tuple[Case, str, list[Diagnostic]]]]:
    corpus = find_cases(root)
    results = []
    for case in corpus.cases:
        diagnostics = validate_case(case)
        results.append((case, classify(case.expected_invalid, diagnostics), diagnostics))
    return corpus, results


def report(
    corpus: Corpus, results: list[tuple[Case, str, list[Diagnostic]]], *, every: bool = False
) -> str:
    counts = Counter(outcome for _, outcome, _ in results)
    width = max(len(o) for o in OUTCOMES)
    lines = [f"{len(results)} cases ({len(corpus.skipped)} files skipped)", ""]
    lines += [f"| {'outcome'.ljust(width)} | cases |", f"| {'-' * width} | ----: |"]
    lines += [f"| {outcome.ljust(width)} | {counts[outcome]:5d} |" for outcome in OUTCOMES]
    for outcome in (*MISSES, WRONGLY_ACCEPTED_IGNORED):
        listed = [(case, diags) for case, o, diags in results if o == outcome]
        if listed:
            lines += ["", f"{outcome}:"]
            for case, diagnostics in listed:
                first = next((d for d in diagnostics if d.is_error), None)
                why = f"  {first.code} {first.message}" if first is not None else ""
                lines.append(f"  {case.name}{why}")
    if every:
        lines += ["", "every case:"]
        lines += [f"  {outcome:{width}}  {case.name}" for case, outcome, _ in results]
    if corpus.skipped:
        lines += ["", "skipped:"] + [f"  {name}: {why}" for name, why in corpus.skipped]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", type=Path, help="a checkout of istio/istio")
    parser.add_argument("--list", action="store_true", help="print the outcome of every case")
    args = parser.parse_args(argv)
    if not (args.path / "samples").is_dir() and not (args.path / "tests").is_dir():
        print(f"error: {args.path} is not a checkout of istio/istio", file=sys.stderr)
        return 2
    corpus, results = run(args.path)
    print(report(corpus, results, every=args.list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
