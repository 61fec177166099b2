"""Run ``pilotfish`` under cProfile, every thread included (bench/propagation.py --profile).

``PILOTFISH_CPROFILE=out.prof python bench/cprofile_serve.py serve ...`` profiles the
main thread (the event loop: streams, pushes) and every thread started later (the
directory watcher: reloads and translation), and writes one merged ``pstats``
file when the command returns (``SIGTERM`` or Ctrl-C stop ``serve`` gracefully).
The fallback of ``--profile`` when py-spy is not installed; it covers the whole run.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.cli import main

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_run = threading.Thread.run


def _profiled_run(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _run(self, *args, **kwargs)
    finally:
        profile.disable()


def run() -> int:
    out = os.environ.get("PILOTFISH_CPROFILE")
    if not out:
        return main(sys.argv[1:])
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main(sys.argv[1:])
    finally:
        profile.disable()
        with _lock:
            others = list(_profiles)
        for other in others:
            other.disable()
        stats = pstats.Stats(profile)
        for other in others:
            other.create_stats()
            if other.stats:  # type: ignore[attr-defined]
                stats.add(other)
        stats.dump_stats(out)


if __name__ == "__main__":
    raise SystemExit(run())
