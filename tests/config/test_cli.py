"""The ``pilotfish validate`` command: exit codes, text and JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controlplane import __version__
from controlplane.cli import main
from controlplane.config import store as store_module

# Line 8 has a misspelt field: an error.
BROKEN = """\
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

# A DestinationRule for a host nobody defines: a warning (spec.host is on line 6).
ORPHAN_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
"""

GOOD = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Service
    metadata:
      name: details
    spec:
      ports:
      - name: http
        port: 9080
    """
)

BROKEN_MESSAGE = "unknown field 'prots' in ServiceSpec; did you mean 'ports'?"
ORPHAN_MESSAGE = (
    "no Service or ServiceEntry defines host ratings.default.svc.cluster.local; "
    "the rule applies to nothing"
)


def make(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_clean_directory_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path, {"details.yaml": GOOD})
    assert main(["validate", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "0 error(s), 0 warning(s)\n"


def test_warnings_alone_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make(tmp_path, {"details.yaml": GOOD, "rules.yaml": ORPHAN_RULE})
    assert main(["validate", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"{tmp_path}/rules.yaml:6:3: warning[PF209] {ORPHAN_MESSAGE} "
        "(DestinationRule default/ratings, spec.host)\n"
    )
    assert captured.err == "0 error(s), 1 warning(s)\n"


def test_errors_exit_1_and_print_one_compiler_style_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(
        tmp_path,
        {
            "details.yaml": GOOD,
            "rules.yaml": ORPHAN_RULE,
            "sub/reviews.yaml": BROKEN,
            "binary.yaml": "",
        },
    )
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe")
    assert main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{tmp_path}/binary.yaml:1:1: error[PF105] the file is not UTF-8: invalid start byte",
        f"{tmp_path}/rules.yaml:6:3: warning[PF209] {ORPHAN_MESSAGE} "
        "(DestinationRule default/ratings, spec.host)",
        f"{tmp_path}/sub/reviews.yaml:8:3: error[PF110] {BROKEN_MESSAGE} "
        "(Service default/reviews, spec.prots)",
    ]
    assert captured.err == "2 error(s), 1 warning(s)\n"


def test_an_unreadable_file_is_an_error_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"details.yaml": GOOD, "locked.yaml": GOOD.replace("details", "locked")})
    real = store_module._read_bytes

    def read(path: Path, max_bytes: int) -> bytes:
        if path.name == "locked.yaml":
            raise PermissionError(13, "Permission denied")
        return real(path, max_bytes)

    monkeypatch.setattr(store_module, "_read_bytes", read)
    assert main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == (
        f"{tmp_path}/locked.yaml:1:1: error[PF105] cannot read the file: Permission denied\n"
    )
    assert captured.err == "1 error(s), 0 warning(s)\n"


def test_a_directory_that_cannot_be_listed_is_an_error_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"details.yaml": GOOD, "sub/locked.yaml": GOOD})
    real = os.scandir

    def scandir(path: str) -> object:
        if Path(path) == tmp_path / "sub":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path}/sub/:1:1: error[PF105] cannot read the directory: Permission denied\n"
    )


@pytest.mark.parametrize("argument", ["config", "config/", "./config"])
def test_paths_are_joined_to_the_directory_as_a_path(
    argument: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make(tmp_path / "config", {"reviews.yaml": BROKEN})
    monkeypatch.chdir(tmp_path)
    assert main(["validate", argument]) == 1
    assert capsys.readouterr().out == (
        f"config/reviews.yaml:8:3: error[PF110] {BROKEN_MESSAGE} "
        "(Service default/reviews, spec.prots)\n"
    )


def test_json_output_lists_every_message_with_all_its_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"reviews.yaml": BROKEN, "rules.yaml": ORPHAN_RULE})
    assert main(["validate", "-o", "json", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    data = json.loads(captured.out)
    assert data == {
        "messages": [
            {
                "severity": "error",
                "code": "PF110",
                "file": f"{tmp_path}/reviews.yaml",
                "line": 8,
                "column": 3,
                "resource": "Service default/reviews",
                "field": "spec.prots",
                "message": BROKEN_MESSAGE,
            },
            {
                "severity": "warning",
                "code": "PF209",
                "file": f"{tmp_path}/rules.yaml",
                "line": 6,
                "column": 3,
                "resource": "DestinationRule default/ratings",
                "field": "spec.host",
                "message": ORPHAN_MESSAGE,
            },
        ]
    }
    assert [list(m) for m in data["messages"]] == [
        ["severity", "code", "file", "line", "column", "resource", "field", "message"]
    ] * 2


def test_json_output_of_a_clean_directory_is_an_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"details.yaml": GOOD})
    assert main(["validate", "--output", "json", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"messages": []}


def test_no_arguments_prints_the_full_help_on_stdout_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith(
        "usage: pilotfish [-h] [--version]\n"
        "                 {validate,serve,demo,status,config,agent}"
    )
    assert "    validate            check a config directory and report every problem\n" in (
        captured.out
    )
    assert captured.out.endswith("Run 'pilotfish COMMAND --help' for a command's flags.\n")


def test_an_empty_directory_is_an_error_saying_nothing_was_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"README.md": "not config", ".hidden/a.yaml": GOOD})
    assert main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"pilotfish validate: no config files found in {tmp_path} (looked for *.yaml and *.yml)\n"
    )


def test_an_empty_directory_in_json_is_an_empty_list_and_the_warning_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-o", "json", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"messages": []}
    assert captured.err == (
        f"pilotfish validate: no config files found in {tmp_path} (looked for *.yaml and *.yml)\n"
    )


def test_a_directory_with_only_a_yml_file_is_not_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"details.yml": GOOD})
    assert main(["validate", str(tmp_path)]) == 0
    assert capsys.readouterr().err == "0 error(s), 0 warning(s)\n"


def test_validate_help_describes_output_and_lists_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "  -o {text,json}, --output {text,json}\n                        text: one" in out
    assert out.endswith(
        "exit codes:\n"
        "  0  no errors (warnings may have been printed)\n"
        "  1  at least one error, or no config files found in DIRECTORY\n"
        "  2  used wrongly: bad flags, or DIRECTORY is not a directory\n"
    )


def test_validate_without_a_directory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "usage: pilotfish validate [flags] directory; 'pilotfish validate --help' lists them\n"
        "pilotfish validate: error: the following arguments are required: directory\n"
    )


def test_a_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert main(["validate", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"pilotfish validate: {missing} is not a directory\n"


def test_a_file_instead_of_a_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path, {"details.yaml": GOOD}) / "details.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == f"pilotfish validate: {path} is not a directory\n"


def test_an_unknown_output_format_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "-o", "xml", str(tmp_path)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1].startswith(
        "pilotfish validate: error: argument -o/--output: invalid choice: 'xml'"
    )


def test_python_dash_m_controlplane_runs_the_command_line(tmp_path: Path) -> None:
    make(tmp_path, {"reviews.yaml": BROKEN})
    completed = subprocess.run(
        [sys.executable, "-m", "controlplane", "validate", "-o", "json", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert [
        (m["code"], m["file"], m["line"]) for m in json.loads(completed.stdout)["messages"]
    ] == [("PF110", f"{tmp_path}/reviews.yaml", 8)]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"pilotfish {__version__}\n"


def test_serve_passes_the_settle_and_the_event_loop_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane import cli

    seen: dict[str, object] = {}

    def run_until_signalled(options: object, grace: float) -> object:
        seen["options"] = options

        async def serve() -> None:
            pass

        return serve()

    def run(main: object, loop: str = "auto") -> None:
        seen["loop"] = loop
        main.close()  # type: ignore[attr-defined]

    # The real logging set-up caches loggers for good, which capture_logs elsewhere
    # cannot see through.
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setattr(cli, "_run_until_signalled", run_until_signalled)
    monkeypatch.setattr(cli.event_loop, "run", run)
    argv = ["serve", "--config-dir", str(tmp_path), "--settle", "5ms", "--event-loop", "asyncio"]
    assert main(argv) == 0
    assert seen["loop"] == "asyncio"
    options = seen["options"]
    assert (options.settle, options.debounce) == (0.005, 0.1)  # type: ignore[attr-defined]


def test_serve_refuses_an_unknown_event_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config-dir", str(tmp_path), "--event-loop", "trio"])
    assert exit_.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err


def serve_options(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> object:
    """The ControlPlaneOptions ``pilotfish serve argv`` would run with."""
    from controlplane import cli

    seen: dict[str, object] = {}

    def run_until_signalled(options: object, grace: float) -> object:
        seen["options"] = options

        async def serve() -> None:
            pass

        return serve()

    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setattr(cli, "_run_until_signalled", run_until_signalled)
    monkeypatch.setattr(cli.event_loop, "run", lambda main, loop="auto": main.close())
    assert main(["serve", *argv]) == 0
    return seen["options"]


def test_serve_passes_the_state_dir_and_the_withdrawal_settings_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make(tmp_path / "config", {})
    argv = ["--config-dir", str(config), "--state-dir", str(tmp_path / "state")]
    argv += ["--withdraw-grace", "2s", "--max-withdraw-share", "0.25"]
    options = serve_options(monkeypatch, argv)
    assert (options.state_dir, options.withdraw_grace, options.max_withdraw_share) == (  # type: ignore[attr-defined]
        tmp_path / "state",
        2.0,
        0.25,
    )


def test_serve_keeps_state_under_xdg_state_home_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make(tmp_path / "config", {})
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    options = serve_options(monkeypatch, ["--config-dir", str(config)])
    assert options.state_dir.parent == tmp_path / "xdg" / "pilotfish"  # type: ignore[attr-defined]
    assert (options.withdraw_grace, options.max_withdraw_share) == (30.0, 0.5)  # type: ignore[attr-defined]


def test_serve_refuses_a_state_dir_inside_the_config_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--config-dir", str(tmp_path), "--state-dir", str(tmp_path / "state")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"pilotfish serve: --state-dir {tmp_path / 'state'} is inside the config directory; "
        "keep it where operators do not edit\n"
    )


@pytest.mark.parametrize("share", ["0", "1.5", "half"])
def test_serve_refuses_a_withdraw_share_outside_0_to_1(
    share: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config-dir", str(tmp_path), "--max-withdraw-share", share])
    assert exit_.value.code == 2
    assert f"{share!r} is not a share between 0 (excluded) and 1" in capsys.readouterr().err


def test_validate_applies_the_input_limits_given_as_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"details.yaml": GOOD})
    assert main(["validate", "--max-file-bytes", "64KiB", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["validate", "--max-file-bytes", "99", str(tmp_path)]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path}/details.yaml:1:1: error[PF106] the file is {len(GOOD)} bytes, "
        "more than the limit of 99 bytes; split the file\n"
    )


def test_validate_stops_a_yaml_alias_bomb_with_an_error_on_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.config.test_limits import billion_laughs

    make(tmp_path, {"bomb.yaml": billion_laughs(9)})
    assert main(["validate", "--max-alias-nodes", "1000", str(tmp_path)]) == 1
    assert capsys.readouterr().out.startswith(
        f"{tmp_path}/bomb.yaml:4:1: error[PF109] aliases expand this document past "
    )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-file-bytes", "0", "'0' is not a size like 65536, 64KiB or 1.5MiB"),
        ("--max-document-bytes", "16MB", "'16MB' is not a size like 65536, 64KiB or 1.5MiB"),
        ("--max-documents-per-file", "-1", "'-1' is not a positive whole number"),
        ("--max-alias-nodes", "many", "'many' is not a positive whole number"),
    ],
)
def test_a_bad_limit_is_a_one_line_usage_error(
    flag: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", f"{flag}={value}", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"pilotfish validate: error: argument {flag}: {message}"
    )


def test_serve_passes_the_input_limits_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.config.limits import ConfigLimits

    argv = ["--config-dir", str(tmp_path), "--state-dir", str(tmp_path.parent / "state")]
    argv += ["--max-file-bytes", "1MiB"]
    argv += ["--max-documents-per-file", "500", "--max-document-bytes", "256KiB"]
    argv += ["--max-alias-nodes", "1000", "--max-string-bytes", "4KiB"]
    options = serve_options(monkeypatch, argv)
    assert options.limits == ConfigLimits(  # type: ignore[attr-defined]
        max_file_bytes=1024 * 1024,
        max_documents_per_file=500,
        max_document_bytes=256 * 1024,
        max_alias_nodes=1000,
        max_string_bytes=4096,
    )


def test_serve_passes_the_load_report_interval_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make(tmp_path / "config", {})
    argv = ["--config-dir", str(config), "--load-report-interval", "2500ms"]
    options = serve_options(monkeypatch, argv)
    assert options.server.load_report_interval == 2.5  # type: ignore[attr-defined]
    default = serve_options(monkeypatch, ["--config-dir", str(config)])
    assert default.server.load_report_interval == 10.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("interval", ["0s", "soon"])
def test_serve_refuses_a_load_report_interval_that_is_not_a_positive_duration(
    interval: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config-dir", str(tmp_path), "--load-report-interval", interval])
    assert exit_.value.code == 2
    assert f"{interval!r} is not" in capsys.readouterr().err


def test_validate_strict_makes_skipped_kinds_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make(tmp_path, {"app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"})
    assert main(["validate", str(tmp_path)]) == 0
    assert main(["validate", "--strict", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    message = (
        "kind 'ConfigMap' (v1) is not one Pilotfish reads; the document is skipped "
        "and the rest of the file is used (ConfigMap, kind)"
    )
    assert lines == [
        f"{tmp_path}/app.yaml:2:1: warning[PF122] {message}",
        f"{tmp_path}/app.yaml:2:1: error[PF122] {message}",
    ]
