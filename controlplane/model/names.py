"""Host names, the way Istio reads them.

A host written in a resource may be a short name (``reviews``), a
``name.namespace`` pair or a fully qualified name. Short and two-label names
are relative to the namespace of the resource that wrote them and expand to
``<name>.<namespace>.svc.cluster.local``. Anything with three or more labels
is taken as written (``httpbin.org``, ``reviews.default.svc.cluster.local``).
"""

from __future__ import annotations

DEFAULT_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """Expand ``host`` as written in a resource of ``namespace``."""
    if host == "*" or host.startswith("*."):
        return host
    labels = host.count(".")
    if labels == 0:
        return f"{host}.{namespace}.{DEFAULT_DOMAIN}"
    if labels == 1:
        return f"{host}.{DEFAULT_DOMAIN}"
    return host


def host_aliases(host: str) -> tuple[str, ...]:
    """Every name a client may use for ``host``: FQDN, ``name.namespace`` and short name.

    Hosts outside the cluster domain (ServiceEntry hosts) have only themselves.
    """
    suffix = "." + DEFAULT_DOMAIN
    if not host.endswith(suffix):
        return (host,)
    short_ns = host[: -len(suffix)]
    if short_ns.count(".") != 1:
        return (host,)
    short = short_ns.split(".", 1)[0]
    return (host, short_ns, short)
