"""What a `pilotfish serve` process imports: the server and nothing of the other commands."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.agents.live_support import free_port

ROOT = Path(__file__).resolve().parents[2]

# Runs `pilotfish serve` in-process; once its xDS port accepts connections, prints
# which of the modules it must not hold it has imported, then stops it (SIGTERM).
CHILD = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time

    FORBIDDEN = tuple(f"{m}." for m in ("controlplane.demo", "agents", "selenium", "pytest"))

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
                   "--xds-address", f"127.0.0.1:{port}", "--admin-address", "127.0.0.1:0"]))
    """
)


def test_serve_imports_neither_the_demo_nor_the_agents_nor_test_tools(tmp_path):
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(config_dir), str(tmp_path / "state"), str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    assert json.loads(lines[-1]) == []
