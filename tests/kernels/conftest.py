"""Shared by the kernel tests: the dispatch paths this CPU has, and a fixture forcing each."""

from __future__ import annotations

import pytest

from kernels import ops

PATHS = [p for p in ("scalar", "avx2", "avx512") if ops.set_isa(p) == p]
ops.set_isa("auto")


@pytest.fixture(params=PATHS)
def isa(request):
    ops.set_isa(request.param)
    yield request.param
    ops.set_isa("auto")
