"""bench/istio_corpus.py: finding cases, supplying their context, classifying outcomes.

The tree is made here, by the test; none of Istio's files are used.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench.istio_corpus import (
    FALSELY_REJECTED,
    INVALID_REJECTED,
    REFUSED_TLS,
    VALID_CLEAN,
    VALID_WARNED,
    WRONGLY_ACCEPTED,
    WRONGLY_ACCEPTED_IGNORED,
    expected_invalid,
    main,
    run,
)

ROUTE = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews, namespace: shop}
    spec:
      hosts: [reviews.example.com]
      gateways: [edge]
      http:
      - route:
        - destination: {host: reviews, subset: v1, port: {number: 9080}}
          weight: 80
        - destination: {host: ratings.other.svc.cluster.local}
          weight: 10
        - destination: {host: api.example.org}
          weight: 10
    """

INVALID_ENTRIES = """
    _err: "hostname cannot be wildcard"
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: star}
    spec:
      hosts: ["*"]
    ---
    # Invalid only in a field Pilotfish ignores.
    _err: "subjectAltNames"
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: sans}
    spec:
      hosts: [a.example.com]
      subjectAltNames: [""]
    ---
    _err: "not caught"
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: fine}
    spec:
      hosts: [b.example.com]
    """

FILES = {
    "samples/shop/route.yaml": ROUTE,
    "samples/shop/deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    "samples/shop/chart.yaml": "apiVersion: networking.istio.io/v1\nkind: Gateway\n"
    "metadata: {name: {{ .Name }}}\n",
    "pkg/config/validation/testdata/crds/serviceentry-invalid.yaml": INVALID_ENTRIES,
    "tests/testdata/config/tls.yaml": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: web}
        spec:
          host: web
          trafficPolicy: {tls: {mode: SIMPLE}}
        """,
    "tests/integration/pilot/testdata/typo.yaml": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: web}
        spec: {host: web, trafficPolicy: {loadBalancr: {simple: RANDOM}}}
        """,
    "tests/integration/pilot/notdata/ignored.yaml": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: web}
        spec: {host: web}
        """,
    "tests/testdata/networking/warned.yaml": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: web}
        spec: {host: web, trafficPolicy: {tls: {mode: DISABLE}}}
        """,
}


def tree(root: Path) -> Path:
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def test_istio_names_invalid_cases_by_file_or_directory() -> None:
    assert expected_invalid("pkg/x/serviceentry-invalid.yaml")
    assert expected_invalid("pilot/testdata/invalid/vs.yaml")
    assert not expected_invalid("pkg/x/serviceentry-valid.yaml")


def test_every_case_is_found_given_its_context_and_classified(tmp_path: Path) -> None:
    corpus, results = run(tree(tmp_path))
    assert {case.name: outcome for case, outcome, _ in results} == {
        "pkg/config/validation/testdata/crds/serviceentry-invalid.yaml#0": INVALID_REJECTED,
        "pkg/config/validation/testdata/crds/serviceentry-invalid.yaml#1": (
            WRONGLY_ACCEPTED_IGNORED
        ),
        "pkg/config/validation/testdata/crds/serviceentry-invalid.yaml#2": WRONGLY_ACCEPTED,
        # The Service for reviews (port 9080) and ratings, the ServiceEntry for
        # api.example.org, the subset v1 and the Gateway edge come from the context.
        "samples/shop/route.yaml": VALID_CLEAN,
        "tests/integration/pilot/testdata/typo.yaml": FALSELY_REJECTED,
        "tests/testdata/config/tls.yaml": REFUSED_TLS,
        "tests/testdata/networking/warned.yaml": VALID_WARNED,
    }
    assert corpus.skipped == [("samples/shop/chart.yaml", "a Go template")]


def test_the_report_is_a_table_listing_every_miss_with_its_file(
    tmp_path: Path, capsys: object
) -> None:
    assert main([str(tree(tmp_path))]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "| valid, accepted clean" in out
    assert "| invalid, rejected" in out
    assert "  tests/integration/pilot/testdata/typo.yaml  PF110 unknown field 'loadBalancr'" in out
    assert "  pkg/config/validation/testdata/crds/serviceentry-invalid.yaml#2\n" in out


def test_a_path_that_is_no_istio_checkout_is_a_one_line_error(
    tmp_path: Path, capsys: object
) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.count("\n") == 1 and "is not a checkout of istio/istio" in err
