"""PF213: a locality whose endpoint weights sum past Envoy's uint32 is an error, with its place.

Envoy adds the weights of one locality's endpoints into a uint32 and rejects the
whole EDS update when they do not fit. Each weight is checked alone when a file
is read (1 to 4294967295); the sum spans documents, so the build checks it and
blames the heaviest endpoint (one in the change being applied first). `validate`
and `serve` report the same, and the store holds that file back.
"""

from __future__ import annotations

from pathlib import Path

from controlplane.config.build import MAX_LOCALITY_WEIGHT
from controlplane.config.store import ConfigStore
from tests.config.test_build import build, error, validate, yaml

HOST = "big.default.svc.cluster.local"

SERVICE = """
    apiVersion: v1
    kind: Service
    metadata: {name: big}
    spec:
      selector: {app: big}
      ports: [{name: http, port: 80}, {name: admin, port: 81}]
    """


def workload(name: str, address: str, weight: int, locality: str = "") -> str:
    where = f", locality: {locality}" if locality else ""
    return f"""
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {{name: {name}}}
    spec: {{address: {address}, labels: {{app: big}}, weight: {weight}{where}}}
    """


def test_weights_summing_past_uint32_in_one_locality_are_an_error_on_the_heaviest(
    tmp_path: Path,
) -> None:
    files = {
        "a.yaml": SERVICE,
        "b.yaml": workload("light", "10.0.0.1", 2),
        "c.yaml": workload("heavy", "10.0.0.2", MAX_LOCALITY_WEIGHT),
    }
    message = (
        f"the weights of the 2 endpoints of {HOST} port {{port}} in locality (none) sum to "
        f"4294967297, past 4294967295: Envoy would reject the whole update; this endpoint's "
        "weight is 4294967295"
    )
    # One finding per place, however many ports overflow.
    assert validate(tmp_path, files) == [
        error(
            "PF213",
            "c.yaml",
            4,
            47,
            "WorkloadEntry default/heavy",
            "spec.weight",
            message.format(port=80),
        )
    ]
    assert not build(files).ok


def test_the_same_weights_in_two_localities_fit(tmp_path: Path) -> None:
    files = {
        "a.yaml": SERVICE,
        "b.yaml": workload("light", "10.0.0.1", 2, "eu/west"),
        "c.yaml": workload("heavy", "10.0.0.2", MAX_LOCALITY_WEIGHT, "us/east"),
    }
    assert validate(tmp_path, files) == []
    service = build(files).mesh.service(HOST)
    assert service is not None
    assert [e.weight for e in service.endpoints_for(80)] == [2, MAX_LOCALITY_WEIGHT]


def test_weights_summing_to_exactly_uint32_fit(tmp_path: Path) -> None:
    files = {
        "a.yaml": SERVICE,
        "b.yaml": workload("light", "10.0.0.1", 1),
        "c.yaml": workload("heavy", "10.0.0.2", MAX_LOCALITY_WEIGHT - 1),
    }
    assert validate(tmp_path, files) == []


def test_a_service_entry_s_own_endpoints_are_blamed_by_their_index(tmp_path: Path) -> None:
    files = {
        "a.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ext}
            spec:
              hosts: [ext.example.com]
              ports: [{number: 443, name: tls, protocol: TLS}]
              resolution: STATIC
              endpoints:
              - {address: 10.1.0.1, weight: 4000000000}
              - {address: 10.1.0.2, weight: 300000000}
            """
    }
    assert validate(tmp_path, files) == [
        error(
            "PF213",
            "a.yaml",
            9,
            25,
            "ServiceEntry default/ext",
            "spec.endpoints[0].weight",
            "the weights of the 2 endpoints of ext.example.com port 443 in locality (none) "
            "sum to 4300000000, past 4294967295: Envoy would reject the whole update; this "
            "endpoint's weight is 4000000000",
        )
    ]


def test_the_store_holds_back_the_change_that_overflows_and_serves_the_rest(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(yaml(SERVICE))
    (tmp_path / "b.yaml").write_text(yaml(workload("heavy", "10.0.0.1", MAX_LOCALITY_WEIGHT)))
    store = ConfigStore(tmp_path)
    assert store.reload().errors == ()
    (tmp_path / "c.yaml").write_text(yaml(workload("light", "10.0.0.2", 5)))
    second = store.reload()
    # The change is c.yaml: it is blamed although b.yaml's weight is the larger.
    assert [(d.code, Path(d.file).name, d.field) for d in second.errors] == [
        ("PF213", "c.yaml", "spec.weight")
    ]
    assert second.rejected == ("c.yaml",)
    service = second.mesh.service(HOST)
    assert service is not None
    assert [e.address for e in service.endpoints_for(80)] == ["10.0.0.1"]
    (tmp_path / "c.yaml").unlink()
    assert store.reload().errors == ()
