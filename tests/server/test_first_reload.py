"""The first load of the directory leaves the model frozen, out of the collector's reach."""

from __future__ import annotations

import gc
from pathlib import Path

from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_first_reload_freezes_the_model_before_the_collector_runs_again() -> None:
    plane = ControlPlane(ControlPlaneOptions(EXAMPLES / "bookinfo", xds_address="127.0.0.1:0"))
    enabled = gc.isenabled()
    gc.enable()
    gc.unfreeze()
    try:
        gc.disable()  # nothing may collect between the reload and the check
        result = plane._first_reload()
        frozen = gc.get_freeze_count()
        service = result.mesh.services[0]
        assert gc.is_tracked(service)
        assert not any(o is service for o in gc.get_objects())
        assert frozen > 0
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
