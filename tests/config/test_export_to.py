"""exportTo read and validated as Istio does, on every kind that has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config.build import build_mesh
from controlplane.config.document import read_text
from controlplane.config.store import validate_directory
from tests.config.helpers import FILE, brief, dedent, diagnose, doc

VS = "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web}\n"
SE = "hosts: [api.example.com]\nports: [{number: 80, name: http}]\nresolution: DNS\n"


def spec_of(text: str) -> object:
    result = read_text(FILE, dedent(text))
    assert [f for f in result.findings if f.is_error] == []
    [resource] = result.resources
    return resource.spec


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ("[]", ("*",)),
        ("['*']", ("*",)),
        ("['.']", ("shop",)),
        ("['.', other, third]", ("other", "shop", "third")),
    ],
)
@pytest.mark.parametrize(
    ("kind", "spec"),
    [("VirtualService", VS), ("DestinationRule", "host: web\n"), ("ServiceEntry", SE)],
)
def test_export_to_is_resolved_against_the_resource_namespace(
    kind: str, spec: str, entries: str, expected: tuple[str, ...]
) -> None:
    text = doc(kind, spec + f"exportTo: {entries}\n", namespace="shop")
    assert spec_of(text).export_to == expected  # type: ignore[attr-defined]


def test_a_service_entry_may_be_exported_to_nobody() -> None:
    assert spec_of(doc("ServiceEntry", SE + "exportTo: ['~']\n")).export_to == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "spec", "entries", "field", "message"),
    [
        (
            "VirtualService",
            VS,
            "['~']",
            "spec.exportTo[0]",
            "'~' (exported to nobody) is allowed only for a ServiceEntry or a Service",
        ),
        (
            "DestinationRule",
            "host: web\n",
            "[Shop]",
            "spec.exportTo[0]",
            "exportTo entry 'Shop' is not '.', '*' or a namespace name",
        ),
        (
            "ServiceEntry",
            SE,
            "[a/b]",
            "spec.exportTo[0]",
            "exportTo entry 'a/b' is not '.', '*', '~' or a namespace name",
        ),
        (
            "VirtualService",
            VS,
            "[a, a]",
            "spec.exportTo[1]",
            "exportTo lists 'a' twice; remove one",
        ),
        (
            "VirtualService",
            VS,
            "['.', default]",
            "spec.exportTo[1]",
            "exportTo lists both '.' and 'default', the same namespace; remove one",
        ),
        (
            "VirtualService",
            VS,
            "[a, '*']",
            "spec.exportTo[1]",
            "exportTo '*' must stand alone, not with other entries",
        ),
        (
            "ServiceEntry",
            SE,
            "['~', a]",
            "spec.exportTo[0]",
            "exportTo '~' must stand alone, not with other entries",
        ),
    ],
)
def test_invalid_export_to_is_an_error_as_in_istio(
    kind: str, spec: str, entries: str, field: str, message: str
) -> None:
    diagnostics = [d for d in diagnose(doc(kind, spec + f"exportTo: {entries}\n")) if d.is_error]
    assert [(d.code, d.field, d.message) for d in diagnostics] == [("PF114", field, message)]


def service(annotation: str) -> str:
    return dedent(
        f"""
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
          annotations: {{networking.istio.io/exportTo: "{annotation}"}}
        spec:
          ports: [{{name: http, port: 80}}]
        """
    )


def test_a_service_is_exported_as_its_annotation_says() -> None:
    assert spec_of(service(". , other")).export_to == ("other", "shop")  # type: ignore[attr-defined]
    assert spec_of(service("~")).export_to == ()  # type: ignore[attr-defined]


def test_an_invalid_service_annotation_is_an_error_on_the_annotation() -> None:
    assert brief(diagnose(service("*,shop"))) == [
        ("PF114", 6, 17, "metadata.annotations.networking.istio.io/exportTo")
    ]


def test_the_model_carries_export_to_for_services_entries_rules_and_routes() -> None:
    text = "\n---\n".join(
        [
            service("."),
            doc("ServiceEntry", SE + "exportTo: ['~']\n", name="api", namespace="shop"),
            doc("DestinationRule", "host: web\nexportTo: [a]\n", name="web", namespace="shop"),
            doc("VirtualService", VS + "exportTo: [b]\n", name="web", namespace="shop"),
        ]
    )
    built = build_mesh(read_text(FILE, text).resources)
    assert built.ok
    assert {s.host: s.export_to for s in built.mesh.services} == {
        "web.shop.svc.cluster.local": ("shop",),
        "api.example.com": (),
    }
    assert [p.export_to for p in built.mesh.destination_policies] == [("a",)]
    assert [v.export_to for v in built.mesh.virtual_services] == [("b",)]


def route(name: str, export: str) -> str:
    return doc("VirtualService", VS + f"exportTo: {export}\n", name=name)


def test_sidecar_virtual_services_no_namespace_sees_together_do_not_conflict(
    tmp_path: Path,
) -> None:
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {ports: [{name: http, port: 80}]}\n"
    )
    (tmp_path / "a.yaml").write_text(route("a", "[a]"))
    (tmp_path / "b.yaml").write_text(route("b", "[b]"))
    (tmp_path / "c.yaml").write_text(route("c", "['*']"))
    assert [
        (d.code, d.file, d.message.split(" by ")[1].split(",")[0])
        for d in validate_directory(tmp_path)
    ] == [("PF206", "c.yaml", "VirtualService default/a at a.yaml:1")]


@pytest.mark.parametrize(
    ("entries", "rejected"),
    [("[]", False), ("['.']", False), ("[shop]", False), ("['*']", True), ("[a]", True)],
)
def test_a_rule_with_a_workload_selector_is_exported_only_to_its_own_namespace(
    entries: str, rejected: bool
) -> None:
    text = doc(
        "DestinationRule",
        f"host: web\nworkloadSelector: {{matchLabels: {{app: a}}}}\nexportTo: {entries}\n",
        namespace="shop",
    )
    errors = [(d.code, d.field) for d in diagnose(text) if d.is_error]
    assert errors == ([("PF114", "spec.exportTo")] if rejected else [])
