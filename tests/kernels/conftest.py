"""Shared by the kernel tests: the dispatch paths this CPU has, a fixture forcing each, and a
packer per table format."""

from __future__ import annotations

import pytest
import torch

from kernels import ops, quant

PATHS = [p for p in ("scalar", "avx2", "avx512") if ops.set_isa(p) == p]
ops.set_isa("auto")


@pytest.fixture(params=PATHS)
def isa(request):
    ops.set_isa(request.param)
    yield request.param
    ops.set_isa("auto")


# fp32 table -> packed rows, per format name (int8: FBGEMM's own prepack, the layout it defines).
PACKERS = {
    "int8": torch.ops.quantized.embedding_bag_byte_prepack,
    "int8_half": quant.quantize_int8_half,
    "int4": quant.quantize_int4,
}
