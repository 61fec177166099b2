"""ConfigStore: the last known good model of a config directory, per file."""

from __future__ import annotations

import errno
import os
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.config import store as store_module
from controlplane.config.diagnostics import Diagnostic, Severity
from controlplane.config.store import ConfigStore, ReloadResult
from controlplane.model import Mesh

REVIEWS_HOST = "reviews.default.svc.cluster.local"
RATINGS_HOST = "ratings.default.svc.cluster.local"


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


class Directory:
    """A config directory whose every write gets a new modification time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = 1_700_000_000_000_000_000

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(yaml(text))
        return self.touch(rel)

    def touch(self, rel: str) -> Path:
        path = self.root / rel
        self.clock += 1_000_000_000
        os.utime(path, ns=(self.clock, self.clock))
        return path

    def delete(self, rel: str) -> None:
        (self.root / rel).unlink()


@pytest.fixture
def config(tmp_path: Path) -> Directory:
    return Directory(tmp_path)


def service(name: str, port: int = 9080) -> str:
    # Ten lines; metadata.name is on line 4.
    return f"""
    apiVersion: v1
    kind: Service
    metadata:
      name: {name}
    spec:
      selector:
        app: {name}
      ports:
      - name: http
        port: {port}
    """


def workload(name: str, address: str, app: str) -> str:
    return f"""
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {{name: {name}}}
    spec: {{address: {address}, labels: {{app: {app}}}}}
    """


ROUTE_TO_REVIEWS = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata:
      name: reviews
    spec:
      hosts:
      - reviews
      http:
      - route:
        - destination:
            host: reviews
    """

# Line 8 holds the misspelt field.
MISSPELT_REVIEWS = """
    apiVersion: v1
    kind: Service
    metadata:
      name: reviews
    spec:
      selector:
        app: reviews
      prots:
      - name: http
        port: 9080
    """

MISSPELT_DIAGNOSTIC = Diagnostic(
    Severity.ERROR,
    "PF110",
    "reviews.yaml",
    8,
    3,
    "Service default/reviews",
    "spec.prots",
    "unknown field 'prots' in ServiceSpec; did you mean 'ports'?",
)


def hosts(mesh: Mesh) -> list[str]:
    return [s.host for s in mesh.services]


def ports(mesh: Mesh, host: str) -> list[int]:
    found = mesh.service(host)
    assert found is not None
    return [p.port for p in found.ports]


def addresses(mesh: Mesh, host: str, port: int = 9080) -> list[str]:
    found = mesh.service(host)
    assert found is not None
    return [e.address for e in found.endpoints_for(port)]


def outcome(result: ReloadResult) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    return result.changed, result.applied, result.rejected


def test_the_first_reload_of_a_valid_directory_applies_every_file(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    config.write("workloads.yaml", workload("reviews-1", "10.0.0.1", "reviews"))
    store = ConfigStore(config.root)
    assert store.mesh == Mesh()
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml", "routing.yaml", "workloads.yaml"), ())
    assert result.diagnostics == ()
    assert result.errors == ()
    assert result.mesh is store.mesh
    assert hosts(store.mesh) == [REVIEWS_HOST]
    assert addresses(store.mesh, REVIEWS_HOST) == ["10.0.0.1"]
    assert [vs.name for vs in store.mesh.virtual_services] == ["reviews"]
    assert store.diagnostics == ()


def test_an_empty_directory_serves_an_empty_mesh(config: Directory) -> None:
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (False, (), ())
    assert result.diagnostics == ()
    assert store.mesh == Mesh()


def test_a_directory_that_does_not_exist_serves_an_empty_mesh(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "missing")
    assert outcome(store.reload()) == (False, (), ())
    assert store.mesh == Mesh()


def test_an_invalid_directory_at_start_serves_its_valid_files_and_reports_the_rest(
    config: Directory,
) -> None:
    config.write("ratings.yaml", service("ratings"))
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (True, ("ratings.yaml",), ("reviews.yaml",))
    assert hosts(store.mesh) == [RATINGS_HOST]
    assert result.diagnostics == (MISSPELT_DIAGNOSTIC,)
    assert result.errors == (MISSPELT_DIAGNOSTIC,)
    assert store.diagnostics == (MISSPELT_DIAGNOSTIC,)


def test_a_file_that_was_never_valid_contributes_nothing_not_even_its_good_documents(
    config: Directory,
) -> None:
    config.write("mixed.yaml", yaml(service("ratings")) + "---\n" + yaml(MISSPELT_REVIEWS))
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (False, (), ("mixed.yaml",))
    assert store.mesh == Mesh()
    assert [(d.code, d.file, d.line, d.column) for d in result.diagnostics] == [
        ("PF110", "mixed.yaml", 19, 3)
    ]


def test_an_edit_with_an_error_is_not_applied_and_fixing_it_applies_it(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    store.reload()
    before = store.mesh

    config.write("reviews.yaml", MISSPELT_REVIEWS)
    broken = store.reload()
    assert outcome(broken) == (False, (), ("reviews.yaml",))
    assert store.mesh == before
    assert ports(store.mesh, REVIEWS_HOST) == [9080]
    assert broken.diagnostics == (MISSPELT_DIAGNOSTIC,)

    config.write("reviews.yaml", service("reviews", port=9090))
    fixed = store.reload()
    assert outcome(fixed) == (True, ("reviews.yaml",), ())
    assert fixed.diagnostics == ()
    assert ports(store.mesh, REVIEWS_HOST) == [9090]


def test_a_rejected_edit_stays_reported_until_it_changes(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    store.reload()
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    rejected = store.reload()
    again = store.reload()
    assert outcome(again) == (False, (), ())
    assert again.mesh is rejected.mesh
    assert again.diagnostics == (MISSPELT_DIAGNOSTIC,)


def test_reverting_a_rejected_edit_clears_its_diagnostics(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    first = store.reload()
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    store.reload()
    config.write("reviews.yaml", service("reviews"))
    reverted = store.reload()
    assert outcome(reverted) == (False, (), ())
    assert reverted.diagnostics == ()
    assert store.mesh == first.mesh


def test_a_yaml_syntax_error_is_reported_at_its_position(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    store.reload()
    config.write("reviews.yaml", "kind: Service\nmetadata: [\n")
    result = store.reload()
    assert outcome(result) == (False, (), ("reviews.yaml",))
    assert hosts(store.mesh) == [REVIEWS_HOST]
    assert result.diagnostics == (
        Diagnostic(
            Severity.ERROR,
            "PF100",
            "reviews.yaml",
            3,
            1,
            "",
            "",
            "YAML syntax: did not find expected node content",
        ),
    )


def test_of_two_changed_files_only_the_valid_one_is_applied(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    store = ConfigStore(config.root)
    store.reload()

    config.write("ratings.yaml", service("ratings", port=9091))
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    result = store.reload()
    assert outcome(result) == (True, ("ratings.yaml",), ("reviews.yaml",))
    assert ports(store.mesh, RATINGS_HOST) == [9091]
    assert ports(store.mesh, REVIEWS_HOST) == [9080]
    assert result.diagnostics == (MISSPELT_DIAGNOSTIC,)


def test_deleting_a_service_that_an_unchanged_file_routes_to_is_rejected(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    config.write("workloads.yaml", workload("reviews-1", "10.0.0.1", "reviews"))
    store = ConfigStore(config.root)
    store.reload()

    config.delete("reviews.yaml")
    config.write("workloads.yaml", workload("reviews-1", "10.0.0.2", "reviews"))
    result = store.reload()
    assert outcome(result) == (True, ("workloads.yaml",), ("reviews.yaml",))
    assert hosts(store.mesh) == [REVIEWS_HOST]
    assert addresses(store.mesh, REVIEWS_HOST) == ["10.0.0.2"]
    assert result.diagnostics == (
        Diagnostic(
            Severity.ERROR,
            "PF200",
            "routing.yaml",
            11,
            9,
            "VirtualService default/reviews",
            "spec.http[0].route[0].destination.host",
            f"destination host {REVIEWS_HOST} is not a Service or ServiceEntry; "
            "define it or fix the name",
        ),
    )

    # Nothing new: the rejected deletion is not retried.
    again = store.reload()
    assert outcome(again) == (False, (), ())
    assert again.mesh is result.mesh

    # Once the route goes too, the deletion applies.
    config.delete("routing.yaml")
    both = store.reload()
    assert outcome(both) == (True, ("reviews.yaml", "routing.yaml"), ())
    assert both.diagnostics == ()
    assert hosts(store.mesh) == []
    assert store.mesh.virtual_services == ()


def test_deleting_a_file_nothing_depends_on_applies(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    store = ConfigStore(config.root)
    store.reload()
    config.delete("ratings.yaml")
    result = store.reload()
    assert outcome(result) == (True, ("ratings.yaml",), ())
    assert hosts(store.mesh) == [REVIEWS_HOST]


def test_a_duplicate_resource_in_a_new_file_rejects_only_the_new_file(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    store.reload()

    config.write("copy.yaml", service("reviews", port=9999))
    config.write("ratings.yaml", service("ratings"))
    result = store.reload()
    assert outcome(result) == (True, ("ratings.yaml",), ("copy.yaml",))
    assert hosts(store.mesh) == [RATINGS_HOST, REVIEWS_HOST]
    assert ports(store.mesh, REVIEWS_HOST) == [9080]
    assert result.diagnostics == (
        Diagnostic(
            Severity.ERROR,
            "PF208",
            "copy.yaml",
            4,
            3,
            "Service default/reviews",
            "metadata.name",
            "Service default/reviews is defined twice: here and at reviews.yaml:1; "
            "rename or remove one",
        ),
    )


def test_warnings_are_reported_but_do_not_block_a_change(config: Directory) -> None:
    config.write(
        "rules.yaml",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
        """,
    )
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (True, ("rules.yaml",), ())
    assert store.mesh.policy(REVIEWS_HOST) is not None
    assert result.errors == ()
    assert [(d.severity, d.code, d.file, d.line, d.column) for d in result.diagnostics] == [
        (Severity.WARNING, "PF209", "rules.yaml", 6, 3)
    ]


def test_a_reload_without_changes_returns_the_same_mesh_object(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    first = store.reload()
    second = store.reload()
    assert outcome(second) == (False, (), ())
    assert second.mesh is first.mesh
    assert store.mesh is first.mesh


def test_touching_a_file_without_changing_its_content_changes_nothing(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    first = store.reload()
    config.touch("reviews.yaml")
    config.write("reviews.yaml", service("reviews"))
    result = store.reload()
    assert outcome(result) == (False, (), ())
    assert result.mesh is first.mesh


def test_a_file_that_is_not_utf8_is_reported_as_pf105(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("latin1.yaml", b"metadata:\n  name: caf\xe9\n")
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml",), ("latin1.yaml",))
    assert result.diagnostics == (
        Diagnostic(
            Severity.ERROR,
            "PF105",
            "latin1.yaml",
            1,
            1,
            "",
            "",
            "the file is not UTF-8: invalid continuation byte",
        ),
    )


def test_nested_directories_and_yml_files_are_read_and_hidden_and_editor_files_ignored(
    config: Directory,
) -> None:
    config.write("a/b/reviews.yml", service("reviews"))
    config.write("a/ratings.yaml", service("ratings"))
    for ignored in (
        ".hidden.yaml",
        ".git/config.yaml",
        "a/.reviews.yaml.swp",
        "a/ratings.yaml~",
        "a/ratings.yaml.swp",
        "notes.txt",
        "..data/details.yaml",
    ):
        config.write(ignored, "this: [is not valid")
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (True, ("a/b/reviews.yml", "a/ratings.yaml"), ())
    assert result.diagnostics == ()
    assert hosts(store.mesh) == [RATINGS_HOST, REVIEWS_HOST]


def test_a_file_moved_to_another_directory_keeps_serving_its_resources(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    store = ConfigStore(config.root)
    store.reload()
    (config.root / "services").mkdir()
    (config.root / "reviews.yaml").rename(config.root / "services" / "reviews.yaml")
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml", "services/reviews.yaml"), ())
    assert result.diagnostics == ()
    assert hosts(store.mesh) == [REVIEWS_HOST]


def test_a_cross_resource_error_at_start_rejects_the_file_it_is_in(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS.replace("host: reviews", "host: ratings"))
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml",), ("routing.yaml",))
    assert hosts(store.mesh) == [REVIEWS_HOST]
    assert store.mesh.virtual_services == ()
    assert [(d.code, d.file, d.line, d.column, d.field) for d in result.diagnostics] == [
        ("PF200", "routing.yaml", 11, 9, "spec.http[0].route[0].destination.host")
    ]


def test_a_new_file_that_conflicts_with_an_accepted_one_is_rejected_even_if_it_sorts_first(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    store = ConfigStore(config.root)
    store.reload()

    config.write("a-routing.yaml", ROUTE_TO_REVIEWS)
    result = store.reload()
    assert outcome(result) == (False, (), ("a-routing.yaml",))
    assert result.diagnostics == (
        Diagnostic(
            Severity.ERROR,
            "PF208",
            "a-routing.yaml",
            4,
            3,
            "VirtualService default/reviews",
            "metadata.name",
            "VirtualService default/reviews is defined twice: here and at routing.yaml:1; "
            "rename or remove one",
        ),
    )


def test_a_second_sidecar_virtual_service_for_a_host_is_applied_and_the_first_in_file_order_wins(
    config: Directory,
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    store = ConfigStore(config.root)
    store.reload()

    config.write("a-routing.yaml", ROUTE_TO_REVIEWS.replace("name: reviews", "name: early"))
    result = store.reload()
    assert outcome(result) == (True, ("a-routing.yaml",), ())
    assert [vs.name for vs in store.mesh.virtual_services] == ["early", "reviews"]
    assert [(d.severity, d.code, d.file) for d in result.diagnostics] == [
        (Severity.WARNING, "PF206", "routing.yaml")
    ]
    restarted = ConfigStore(config.root)
    assert [(d.code, d.file) for d in restarted.reload().diagnostics] == [("PF206", "routing.yaml")]


def test_a_config_directory_that_vanishes_keeps_the_last_good_mesh_served(tmp_path: Path) -> None:
    root = tmp_path / "config"
    root.mkdir()
    (root / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {ports: [{name: http, port: 80}]}\n"
    )
    store = ConfigStore(root)
    first = store.reload()
    assert [s.host for s in first.mesh.services] == ["web.default.svc.cluster.local"]
    (root / "svc.yaml").unlink()
    root.rmdir()
    again = store.reload()
    assert again.changed is False
    assert again.mesh is first.mesh
    assert store.mesh is first.mesh


def refuse_to_read(monkeypatch: pytest.MonkeyPatch, name: str, error: OSError) -> None:
    """Make reading the file called ``name`` fail with ``error`` (root can read mode 000)."""
    real = store_module._read_bytes

    def read(path: Path, max_bytes: int) -> bytes:
        if path.name == name:
            raise error
        return real(path, max_bytes)

    monkeypatch.setattr(store_module, "_read_bytes", read)


def unreadable(file: str, reason: str) -> Diagnostic:
    return Diagnostic(
        Severity.ERROR, "PF105", file, 1, 1, "", "", f"cannot read the file: {reason}"
    )


def test_an_unreadable_file_is_an_error_and_its_accepted_version_stays_in_force(
    config: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    store = ConfigStore(config.root)
    first = store.reload()

    config.write("reviews.yaml", service("reviews", port=9999))
    refuse_to_read(monkeypatch, "reviews.yaml", PermissionError(13, "Permission denied"))
    result = store.reload()
    assert outcome(result) == (False, (), ("reviews.yaml",))
    assert result.mesh is first.mesh
    assert ports(store.mesh, REVIEWS_HOST) == [9080]
    assert result.diagnostics == (unreadable("reviews.yaml", "Permission denied"),)

    # Fixed with chmod: the stamp is unchanged, but the file is read again.
    monkeypatch.undo()
    fixed = store.reload()
    assert outcome(fixed) == (True, ("reviews.yaml",), ())
    assert ports(store.mesh, REVIEWS_HOST) == [9999]
    assert fixed.diagnostics == ()


def test_an_input_output_error_is_reported_with_the_os_reason(
    config: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    refuse_to_read(monkeypatch, "ratings.yaml", OSError(errno.EIO, "Input/output error"))
    store = ConfigStore(config.root)
    result = store.reload()
    assert outcome(result) == (True, ("reviews.yaml",), ("ratings.yaml",))
    assert hosts(store.mesh) == [REVIEWS_HOST]
    assert result.diagnostics == (unreadable("ratings.yaml", "Input/output error"),)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files of mode 000")
def test_a_file_of_mode_000_is_unreadable_not_deleted(config: Directory) -> None:
    path = config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    first = store.reload()
    path.chmod(0)
    try:
        result = store.reload()
    finally:
        path.chmod(0o644)
    assert outcome(result) == (False, (), ("reviews.yaml",))
    assert result.mesh is first.mesh
    assert result.diagnostics == (unreadable("reviews.yaml", "Permission denied"),)


def refuse_to_list(monkeypatch: pytest.MonkeyPatch, directory: Path, error: OSError) -> None:
    """Make listing ``directory`` fail with ``error``."""
    real = os.scandir

    def scandir(path: str) -> object:
        if Path(path) == directory:
            raise error
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_files_in_a_directory_that_cannot_be_listed_keep_their_accepted_versions(
    config: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("sub/ratings.yaml", service("ratings"))
    store = ConfigStore(config.root)
    first = store.reload()
    refuse_to_list(monkeypatch, config.root / "sub", OSError(errno.EIO, "Input/output error"))
    with capture_logs() as logs:
        result = store.reload()
    assert outcome(result) == (False, (), ("sub/ratings.yaml",))
    assert result.mesh is first.mesh
    assert result.diagnostics == (
        Diagnostic(
            Severity.ERROR,
            "PF105",
            "sub/ratings.yaml",
            1,
            1,
            "",
            "",
            "cannot read its directory sub/: Input/output error",
        ),
    )
    assert [
        (e["directory"], e["error"]) for e in logs if e["event"] == "config_dir_unreadable"
    ] == [("sub/", "Input/output error")]
    monkeypatch.undo()
    back = store.reload()
    assert (outcome(back), back.diagnostics) == ((False, (), ()), ())
    assert hosts(store.mesh) == [RATINGS_HOST, REVIEWS_HOST]
