"""``exportTo`` as Istio validates and reads it.

A VirtualService, DestinationRule or ServiceEntry lists in ``spec.exportTo``
the namespaces that see it; a Kubernetes Service lists them, comma
separated, in the ``networking.istio.io/exportTo`` annotation. Each entry is
``.`` (the resource's own namespace), ``*`` (every namespace), a namespace
name, or, for a ServiceEntry or a Service only, ``~`` (nobody). As in
Istio's validation, an entry may not repeat (``.`` counts as the own
namespace), ``*`` and ``~`` stand alone, and an empty or missing list means
every namespace. :func:`export_to` returns the resolved
:data:`~controlplane.model.ExportTo`: names, ``("*",)``, or ``()`` for ``~``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from controlplane.config.report import Path, Reporter
from controlplane.model import EVERYWHERE, EXPORTED_EVERYWHERE, ExportTo

SERVICE_ANNOTATION = "networking.istio.io/exportTo"
OWN_NAMESPACE = "."
NOBODY = "~"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def export_to(
    values: Sequence[object],
    namespace: str,
    path: Path,
    report: Reporter,
    *,
    allow_nobody: bool,
    entry_paths: bool = True,
) -> ExportTo:
    """The namespaces ``values`` export to; problems are PF114 errors on ``path``.

    ``entry_paths`` places each problem on its entry (``path[i]``); a Service
    annotation is one string, so its problems go on ``path`` itself.
    """
    if not values:
        return EXPORTED_EVERYWHERE
    seen: dict[str, int] = {}
    ok = True
    allowed = "'.', '*'" + (", '~'" if allow_nobody else "") + " or a namespace name"
    for index, value in enumerate(values):
        here = (*path, index) if entry_paths else path
        text = value if isinstance(value, str) else ""
        key = namespace if text == OWN_NAMESPACE else text
        if text not in (OWN_NAMESPACE, EVERYWHERE) and not (
            (allow_nobody and text == NOBODY) or (_DNS_LABEL.match(text) and len(text) <= 63)
        ):
            why = (
                "'~' (exported to nobody) is allowed only for a ServiceEntry or a Service"
                if text == NOBODY
                else f"exportTo entry {text!r} is not {allowed}"
            )
            report.error("PF114", here, why)
            ok = False
            continue
        if key in seen:
            message = (
                f"exportTo lists {text!r} twice; remove one"
                if values[seen[key]] == text
                else f"exportTo lists both '.' and {namespace!r}, the same namespace; remove one"
            )
            report.error("PF114", here, message)
            ok = False
            continue
        seen[key] = index
    if ok and len(values) > 1 and (EVERYWHERE in seen or NOBODY in seen):
        alone = EVERYWHERE if EVERYWHERE in seen else NOBODY
        report.error(
            "PF114",
            (*path, seen[alone]) if entry_paths else path,
            f"exportTo {alone!r} must stand alone, not with other entries",
        )
        ok = False
    if not ok:
        return EXPORTED_EVERYWHERE
    if NOBODY in seen:
        return ()
    if EVERYWHERE in seen:
        return EXPORTED_EVERYWHERE
    return tuple(sorted(seen))


def service_export_to(annotations: object, namespace: str, report: Reporter) -> ExportTo:
    """A Service's ``networking.istio.io/exportTo`` annotation, resolved."""
    if not isinstance(annotations, dict):
        return EXPORTED_EVERYWHERE
    text = annotations.get(SERVICE_ANNOTATION)
    if not isinstance(text, str):
        return EXPORTED_EVERYWHERE
    entries = [part.strip() for part in text.split(",") if part.strip()]
    return export_to(
        entries,
        namespace,
        ("metadata", "annotations", SERVICE_ANNOTATION),
        report,
        allow_nobody=True,
        entry_paths=False,
    )
