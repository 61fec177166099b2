"""Host names, the way Istio reads them.

A host written in a resource may be a short name (``reviews``), a
``name.namespace`` pair or a fully qualified name. A short name is relative to
the namespace of the resource that wrote it and expands to
``<name>.<namespace>.svc.cluster.local`` (:func:`fqdn`). Anything with a dot
is taken as written, as Istio does, so that external hosts such as
``httpbin.org`` stay themselves; :func:`canonical_host` then resolves a
``name.namespace`` pair to the cluster service it names, once the set of known
hosts is known.
"""

from __future__ import annotations

from collections.abc import Container

DEFAULT_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """Expand ``host`` as written in a resource of ``namespace``."""
    if host == "*" or host.startswith("*."):
        return host
    if "." not in host:
        return f"{host}.{namespace}.{DEFAULT_DOMAIN}"
    return host


def canonical_host(host: str, known: Container[str]) -> str:
    """``host`` as the name of a known service: ``reviews.default`` -> its FQDN.

    A host that is known as written (an external ``httpbin.org``) stays itself;
    a ``name.namespace`` pair becomes the cluster FQDN when that is known.
    """
    if host in known or host.count(".") != 1:
        return host
    expanded = f"{host}.{DEFAULT_DOMAIN}"
    return expanded if expanded in known else host


def host_aliases(host: str) -> tuple[str, ...]:
    """Every name a client may use for ``host``, as Istio serves them as HTTP domains:
    the FQDN, ``name.namespace.svc``, ``name.namespace`` and the short name (the
    last three are what a pod's DNS search path completes).

    Hosts outside the cluster domain (ServiceEntry hosts) have only themselves.
    """
    suffix = "." + DEFAULT_DOMAIN
    if not host.endswith(suffix):
        return (host,)
    short_ns = host[: -len(suffix)]
    if short_ns.count(".") != 1:
        return (host,)
    short = short_ns.split(".", 1)[0]
    return (host, f"{short_ns}.svc", short_ns, short)
