"""A config directory with hostile files still starts and serves the rest."""

from __future__ import annotations

from pathlib import Path

from controlplane.config.limits import ConfigLimits
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from tests.config.test_limits import billion_laughs, host, service


async def test_a_server_starts_with_an_alias_bomb_and_a_too_large_file_and_serves_the_rest(
    tmp_path: Path,
) -> None:
    (tmp_path / "bomb.yaml").write_text(billion_laughs(9))
    (tmp_path / "large.yaml").write_text(service("large") + "# padding\n" * 200)
    (tmp_path / "web.yaml").write_text(service("web"))
    options = ControlPlaneOptions(
        tmp_path, xds_address="127.0.0.1:0", limits=ConfigLimits(max_file_bytes=1024)
    )
    plane = ControlPlane(options)
    await plane.start()
    try:
        assert plane.port > 0
        assert [s.host for s in plane.store.mesh.services] == [host("web")]
        assert [(d.code, d.file, d.line) for d in plane.store.diagnostics] == [
            ("PF109", "bomb.yaml", 6),
            ("PF106", "large.yaml", 1),
        ]
    finally:
        await plane.stop(grace=0.1)
