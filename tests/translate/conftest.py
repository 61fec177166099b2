"""Fixtures: the bookinfo-like mesh, built directly from model values."""

from __future__ import annotations

import pytest

from controlplane.model import Mesh
from tests.translate.support import bookinfo_mesh


@pytest.fixture
def bookinfo() -> Mesh:
    return bookinfo_mesh()
