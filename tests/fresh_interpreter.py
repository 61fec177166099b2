"""Running one test again in a fresh interpreter: for tests that rely on a forked child.

gRPC installs fork handlers once it has run, and they run in every forked child;
by the time these tests run, the test process has run gRPC servers and
channels, and a child may then be stopped by gRPC before it answers (the
server forks only before gRPC runs, at its cold start). A test that needs its
child to answer starts with ``if not in_fresh_interpreter(request): return``:
in the test process that runs the same test in a new pytest process and checks
that it passed; in that process it returns True and the test goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ISOLATED = "PILOTFISH_TEST_ISOLATED"


def in_fresh_interpreter(request: pytest.FixtureRequest) -> bool:
    nodeid = request.node.nodeid
    if os.environ.get(ISOLATED) == nodeid:
        return True
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid],
        cwd=request.config.rootpath,
        env={**os.environ, ISOLATED: nodeid},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout, result.stdout[-2000:]
    return False
