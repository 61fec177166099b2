"""ConfigStore: a reload that would withdraw too much of the mesh at once waits out a grace."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.config.state import StateDir
from controlplane.config.store import ConfigStore
from tests.config.test_store import Directory, hosts, outcome, service

GRACE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config(tmp_path: Path) -> Directory:
    (tmp_path / "config").mkdir()
    return Directory(tmp_path / "config")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def host(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


NAMES = ("a", "b", "c", "d")


def store_of(config: Directory, clock: Clock, names: tuple[str, ...] = NAMES) -> ConfigStore:
    for name in names:
        config.write(f"{name}.yaml", service(name))
    store = ConfigStore(config.root, withdraw_grace=GRACE, clock=clock)
    store.reload()
    assert hosts(store.mesh) == [host(n) for n in names]
    return store


def test_emptying_the_directory_withdraws_nothing_during_the_grace(
    config: Directory, clock: Clock
) -> None:
    store = store_of(config, clock)
    served = store.mesh
    for name in NAMES:
        config.delete(f"{name}.yaml")
    with capture_logs() as logs:
        result = store.reload()
    assert outcome(result) == (False, (), ())
    assert result.held == ("a.yaml", "b.yaml", "c.yaml", "d.yaml")
    assert result.recheck_at == clock.now + GRACE
    assert result.mesh is served
    (held,) = [e for e in logs if e["event"] == "config_withdrawal_held"]
    assert {k: held[k] for k in ("withdrawn", "resources", "files", "grace_seconds")} == {
        "withdrawn": 4,
        "resources": 4,
        "files": 4,
        "grace_seconds": GRACE,
    }
    assert held["log_level"] == "warning"
    assert held["until"].endswith("+00:00")

    clock.now += GRACE / 2
    still = store.reload()
    assert (still.held, still.recheck_at, still.mesh) == (result.held, result.recheck_at, served)


def test_files_back_within_the_grace_were_never_withdrawn(config: Directory, clock: Clock) -> None:
    store = store_of(config, clock)
    served = store.mesh
    for name in NAMES:
        config.delete(f"{name}.yaml")
    store.reload()
    clock.now += GRACE - 1
    for name in NAMES:
        config.write(f"{name}.yaml", service(name))
    with capture_logs() as logs:
        result = store.reload()
    assert outcome(result) == (False, (), ())
    assert (result.held, result.recheck_at, result.mesh) == ((), None, served)
    assert [e["event"] for e in logs] == ["config_withdrawal_cancelled"]
    # And the grace is not still running for a later deletion.
    clock.now += GRACE
    assert store.reload().mesh is served


def test_a_withdrawal_still_wanted_after_the_grace_is_applied(
    config: Directory, clock: Clock
) -> None:
    store = store_of(config, clock)
    for name in NAMES:
        config.delete(f"{name}.yaml")
    store.reload()
    clock.now += GRACE
    with capture_logs() as logs:
        result = store.reload()
    assert outcome(result) == (True, ("a.yaml", "b.yaml", "c.yaml", "d.yaml"), ())
    assert (result.held, result.recheck_at, hosts(result.mesh)) == ((), None, [])
    applied = [e for e in logs if e["event"] == "config_withdrawal_applied"]
    assert [(e["withdrawn"], e["resources"], e["log_level"]) for e in applied] == [
        (4, 4, "warning")
    ]


def test_removing_files_one_by_one_applies_at_once_until_the_last(
    config: Directory, clock: Clock
) -> None:
    store = store_of(config, clock)
    for index, name in enumerate(NAMES[:-1]):
        config.delete(f"{name}.yaml")
        result = store.reload()
        assert outcome(result) == (True, (f"{name}.yaml",), ())
        assert hosts(store.mesh) == [host(n) for n in NAMES[index + 1 :]]
    # Deleting the last file withdraws everything: held.
    config.delete("d.yaml")
    assert store.reload().held == ("d.yaml",)
    assert hosts(store.mesh) == [host("d")]


def test_more_than_half_at_once_is_held_but_the_rest_of_the_change_applies(
    config: Directory, clock: Clock
) -> None:
    store = store_of(config, clock)
    for name in ("a", "b", "c"):
        config.delete(f"{name}.yaml")
    config.write("e.yaml", service("e"))
    result = store.reload()
    assert outcome(result) == (True, ("e.yaml",), ())
    assert result.held == ("a.yaml", "b.yaml", "c.yaml")
    assert hosts(store.mesh) == [host(n) for n in ("a", "b", "c", "d", "e")]


def test_half_at_once_applies(config: Directory, clock: Clock) -> None:
    store = store_of(config, clock)
    config.delete("a.yaml")
    config.delete("b.yaml")
    result = store.reload()
    assert (outcome(result), result.held) == ((True, ("a.yaml", "b.yaml"), ()), ())


def test_a_file_emptied_in_place_counts_as_a_withdrawal(config: Directory, clock: Clock) -> None:
    config.write("all.yaml", "\n---\n".join(service(n) for n in NAMES))
    store = ConfigStore(config.root, withdraw_grace=GRACE, clock=clock)
    store.reload()
    config.write("all.yaml", "")
    result = store.reload()
    assert result.held == ("all.yaml",)
    assert len(store.mesh.services) == 4


def test_resources_moved_between_files_are_not_a_withdrawal(
    config: Directory, clock: Clock
) -> None:
    store = store_of(config, clock)
    for name in NAMES:
        config.delete(f"{name}.yaml")
    config.write("all.yaml", "\n---\n".join(service(n) for n in NAMES))
    result = store.reload()
    assert (result.held, len(result.applied)) == ((), 5)
    assert hosts(store.mesh) == [host(n) for n in NAMES]


def test_the_share_is_configurable(config: Directory, clock: Clock) -> None:
    for name in NAMES:
        config.write(f"{name}.yaml", service(name))
    store = ConfigStore(config.root, withdraw_grace=GRACE, max_withdraw_share=0.2, clock=clock)
    store.reload()
    config.delete("a.yaml")
    assert store.reload().held == ("a.yaml",)


def test_without_a_grace_everything_applies_at_once(config: Directory, clock: Clock) -> None:
    for name in NAMES:
        config.write(f"{name}.yaml", service(name))
    store = ConfigStore(config.root, clock=clock)
    store.reload()
    for name in NAMES:
        config.delete(f"{name}.yaml")
    result = store.reload()
    assert (len(result.applied), result.held, hosts(result.mesh)) == (4, (), [])


def test_a_directory_that_vanishes_during_the_grace_is_kept_without_rechecks(
    config: Directory, clock: Clock
) -> None:
    store = store_of(config, clock)
    served = store.mesh
    for name in NAMES:
        config.delete(f"{name}.yaml")
    assert store.reload().recheck_at == clock.now + GRACE
    config.root.rmdir()
    clock.now += GRACE
    result = store.reload()
    assert (result.recheck_at, result.mesh) == (None, served)


def test_an_empty_directory_at_start_serves_the_record_for_the_grace(
    config: Directory, clock: Clock, tmp_path: Path
) -> None:
    state_path = tmp_path / "state"
    for name in NAMES:
        config.write(f"{name}.yaml", service(name))
    first = ConfigStore(config.root, state=StateDir(state_path, config.root))
    first.reload()
    first.close()
    texts = {name: (config.root / f"{name}.yaml").read_text() for name in NAMES}
    for name in NAMES:
        config.delete(f"{name}.yaml")

    store = ConfigStore(
        config.root, state=StateDir(state_path, config.root), withdraw_grace=GRACE, clock=clock
    )
    result = store.reload()
    assert result.held == tuple(f"{n}.yaml" for n in NAMES)
    assert hosts(store.mesh) == [host(n) for n in NAMES]
    for name, text in texts.items():
        config.write(f"{name}.yaml", text.encode())
    back = store.reload()
    assert (back.held, back.recheck_at, back.mesh) == ((), None, result.mesh)
    store.close()
