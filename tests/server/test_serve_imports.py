"""What a `pilotfish serve` process imports: the server and nothing of the other commands,
nor, while every file takes the fast path and is valid, what only the exact YAML path
(PyYAML, controlplane.config.yamlexact), a diagnostic's suggestion (difflib) or the
dashboard's page (importlib.resources) needs."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.agents.live_support import free_port

ROOT = Path(__file__).resolve().parents[2]

# Runs `pilotfish serve` in-process; once its xDS port accepts connections, prints
# which of the packages named in argv[4] it has imported, then stops it (SIGTERM).
CHILD = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time

    FORBIDDEN = tuple(f"{m}." for m in json.loads(sys.argv[4]))

    def report(port):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        held = sorted(m for m in sys.modules if f"{m}.".startswith(FORBIDDEN))
        print(json.dumps(held), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    config_dir, state_dir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    threading.Thread(target=report, args=(port,), daemon=True).start()
    from controlplane.cli import main
    sys.exit(main(["serve", "--config-dir", config_dir, "--state-dir", state_dir,
                   "--xds-address", f"127.0.0.1:{port}", "--admin-address", sys.argv[5]]))
    """
)


SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 8080
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-0
  namespace: shop
spec:
  address: 10.0.0.1
  labels:
    app: web
"""


def held_by_serve(
    tmp_path: Path, files: dict[str, str], packages: list[str], admin: str = "127.0.0.1:0"
) -> list[str]:
    """Which of ``packages`` (and their submodules) a serve of ``files`` has imported."""
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    for name, text in files.items():
        (config_dir / name).write_text(text)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(config_dir),
            str(tmp_path / "state"),
            str(free_port()),
            json.dumps(packages),
            admin,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    held: list[str] = json.loads(lines[-1])
    return held


def test_serve_imports_neither_the_demo_nor_the_agents_nor_test_tools(tmp_path):
    assert held_by_serve(tmp_path, {}, ["controlplane.demo", "agents", "selenium", "pytest"]) == []


# Imported on first use only (see the module docstring).
LAZY = ["yaml", "controlplane.config.yamlexact", "difflib", "importlib.resources"]


def test_serve_of_valid_files_on_the_fast_path_imports_none_of_the_lazy_modules(tmp_path):
    assert held_by_serve(tmp_path, {"web.yaml": SERVICE}, LAZY) == []


def test_a_file_only_the_exact_path_reads_imports_pyyaml(tmp_path):
    # An anchor sends the file the exact way: the check above can see PyYAML.
    anchored = SERVICE.replace("    app: web\n  ports", "    app: &app web\n  ports", 1)
    held = held_by_serve(tmp_path, {"web.yaml": anchored}, LAZY)
    assert set(held) & set(LAZY) == {"controlplane.config.yamlexact", "yaml"}


def test_a_misspelt_field_imports_what_its_diagnostic_needs(tmp_path):
    # The suggestion ("did you mean 'ports'?") and the diagnostic's line (the exact path).
    misspelt = SERVICE.replace("  ports:", "  prots:", 1)
    held = held_by_serve(tmp_path, {"web.yaml": misspelt}, LAZY)
    assert set(held) & set(LAZY) == {"controlplane.config.yamlexact", "difflib", "yaml"}


def test_serve_without_the_admin_imports_no_http_server_nor_prometheus_client(tmp_path):
    http = [
        "h11",
        "controlplane.server.http11",
        "controlplane.server.http_admin",
        "prometheus_client",
    ]
    assert held_by_serve(tmp_path, {"web.yaml": SERVICE}, http, admin="off") == []
    (tmp_path / "on").mkdir()
    assert set(held_by_serve(tmp_path / "on", {"web.yaml": SERVICE}, http)) >= set(http)


def test_serve_with_the_admin_imports_no_aiohttp(tmp_path):
    # aiohttp's import alone was 10.6 MiB of the server's memory (docs/performance.md).
    assert held_by_serve(tmp_path, {"web.yaml": SERVICE}, ["aiohttp"]) == []
