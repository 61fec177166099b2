"""ConfigStore with a verification hook: a model that cannot be served is held back (PF212)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.config.diagnostics import Diagnostic, Severity
from controlplane.config.store import ConfigStore
from controlplane.model import Mesh
from tests.config.test_store import (
    RATINGS_HOST,
    REVIEWS_HOST,
    ROUTE_TO_REVIEWS,
    Directory,
    hosts,
    outcome,
    ports,
    service,
)

BAD_HOST = "bad.default.svc.cluster.local"


@pytest.fixture
def config(tmp_path: Path) -> Directory:
    return Directory(tmp_path)


class Verifier:
    """Fails every model that has the host ``bad``, or a port 7777."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, mesh: Mesh) -> str | None:
        self.calls += 1
        if mesh.service(BAD_HOST) is not None:
            return "duplicate Cluster resource name 'outbound|80||bad'"
        if any(p.port == 7777 for s in mesh.services for p in s.ports):
            raise ValueError("port 7777 breaks the translator")
        return None


def translation_failed(file: str, problem: str, line: int = 1, column: int = 1) -> Diagnostic:
    return Diagnostic(
        Severity.ERROR,
        "PF212",
        file,
        line,
        column,
        "",
        "",
        f"the file's resources could not be translated: {problem}; the last good version is served",
    )


def test_a_file_whose_model_fails_verification_is_held_back_and_the_rest_applies(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root, verify=Verifier())
    first = store.reload()

    config.write("bad.yaml", service("bad"))
    config.write("ratings.yaml", service("ratings"))
    with capture_logs() as logs:
        result = store.reload()
    assert outcome(result) == (True, ("ratings.yaml",), ("bad.yaml",))
    assert hosts(store.mesh) == [RATINGS_HOST, REVIEWS_HOST]
    problem = "duplicate Cluster resource name 'outbound|80||bad'"
    assert result.diagnostics == (translation_failed("bad.yaml", problem),)
    failed = [e for e in logs if e["event"] == "config_translation_failed"]
    assert failed == [
        {
            "event": "config_translation_failed",
            "log_level": "error",
            "file": "bad.yaml",
            "resources": ["Service default/bad"],
            "problem": translation_failed("bad.yaml", problem).message,
        }
    ]
    assert first.mesh.service(REVIEWS_HOST) is store.mesh.service(REVIEWS_HOST)


def test_an_edit_that_fails_verification_keeps_the_last_good_version(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root, verify=Verifier())
    first = store.reload()
    config.write("reviews.yaml", service("reviews", port=7777))
    result = store.reload()
    assert outcome(result) == (False, (), ("reviews.yaml",))
    assert result.mesh is first.mesh
    assert ports(store.mesh, REVIEWS_HOST) == [9080]
    assert result.diagnostics == (
        translation_failed("reviews.yaml", "ValueError: port 7777 breaks the translator"),
    )
    # Fixing it applies it.
    config.write("reviews.yaml", service("reviews", port=8000))
    assert outcome(store.reload()) == (True, ("reviews.yaml",), ())
    assert ports(store.mesh, REVIEWS_HOST) == [8000]


def test_a_file_that_fails_at_start_contributes_nothing(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("bad.yaml", service("bad"))
    store = ConfigStore(config.root, verify=Verifier())
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml",), ("bad.yaml",))
    assert hosts(store.mesh) == [REVIEWS_HOST]


def test_changes_that_depend_on_each_other_still_apply_together(config: Directory) -> None:
    config.write("ratings.yaml", service("ratings"))
    store = ConfigStore(config.root, verify=Verifier())
    store.reload()
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    config.write("bad.yaml", service("bad"))
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml", "routing.yaml"), ("bad.yaml",))
    assert [vs.name for vs in store.mesh.virtual_services] == ["reviews"]


def test_a_model_is_verified_once(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    verifier = Verifier()
    store = ConfigStore(config.root, verify=verifier)
    store.reload()
    calls = verifier.calls
    config.touch("reviews.yaml")
    store.reload()
    config.write("bad.yaml", service("bad"))
    store.reload()
    store.reload()
    assert verifier.calls == calls + 1


def test_a_check_that_fails_every_model_blocks_nothing_and_says_so(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    store = ConfigStore(config.root, verify=lambda mesh: "the translator is broken")
    with capture_logs() as logs:
        result = store.reload()
    assert outcome(result) == (True, ("ratings.yaml", "reviews.yaml"), ())
    assert [(e["event"], e["file"]) for e in logs if e["log_level"] == "error"] == [
        ("config_translation_failed", None)
    ]
