"""Python entry points of the embedding-bag kernels (torch.ops.recsys_kernels.*).

Formats (byte-compatible with FBGEMM, so tables packed by FBGEMM's prepack ops load directly):

    int8: [D uint8 codes][fp32 scale][fp32 bias]               D + 8 bytes per row
    int4: [ceil(D/2) bytes, two codes each][fp16 scale][fp16 bias]   ceil(D/2) + 4 bytes

value = scale * code + bias. Pooling is a (weighted) sum or a mean over each bag; an empty bag
gives zeros. Bags are given by offsets (with or without the trailing end offset) or lengths;
indices and offsets are int32 or int64.

Quantization error (quantize_* then dequantize_*, per row with min m and max M):
    int8: |x - x'| <= (M - m) / 255 / 2, up to float32 rounding.
    int4: |x - x'| <= s / 2 + |m - fp16(m)|, s = fp16((M - m) / 15), plus the clamp of a code at
          15 when fp16 rounding of s makes 15 * s + fp16(m) < M (then <= M - 15 s - fp16(m)).
"""

from __future__ import annotations

import importlib.util

import torch


def _load_library() -> None:
    """Load the compiled operators (kernels/_C*.so); a clear error if they were never built."""
    spec = importlib.util.find_spec("kernels._C")
    if spec is None or spec.origin is None:
        raise ImportError(
            "recsys kernels are not built (kernels/_C*.so is missing): run `make install`, or "
            "`.venv/bin/pip install --no-deps --no-build-isolation -e .` from the repository root"
        )
    torch.ops.load_library(spec.origin)


_load_library()

_ops = torch.ops.recsys_kernels
MODES = {"sum": 0, "mean": 1}


def _bags(
    indices: torch.Tensor,
    offsets: torch.Tensor | None,
    lengths: torch.Tensor | None,
    include_last_offset: bool,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(indices, offsets, include_last) with offsets of the indices' dtype."""
    if (offsets is None) == (lengths is None):
        raise ValueError("give exactly one of offsets and lengths")
    if lengths is not None:
        ends = torch.cumsum(lengths.to(indices.dtype), 0).to(indices.dtype)
        offsets = torch.cat([ends.new_zeros(1), ends])
        include_last_offset = True
    return indices.contiguous(), offsets.to(indices.dtype).contiguous(), include_last_offset


def embedding_bag_int8(
    weight: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
    table: str = "",
) -> torch.Tensor:
    """Pooled rows of an int8 row-wise table: [num_bags, D] float32."""
    indices, offsets, last = _bags(indices, offsets, lengths, include_last_offset)
    return _ops.embedding_bag_byte(
        weight, indices, offsets, MODES[mode], per_sample_weights, last, table
    )


def embedding_bag_int4(
    weight: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor | None = None,
    *,
    lengths: torch.Tensor | None = None,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
    dim: int | None = None,
    table: str = "",
) -> torch.Tensor:
    """Pooled rows of an int4 row-wise table: [num_bags, D] float32 (D even unless given)."""
    indices, offsets, last = _bags(indices, offsets, lengths, include_last_offset)
    return _ops.embedding_bag_4bit(
        weight, indices, offsets, MODES[mode], per_sample_weights, last, -1 if dim is None else dim,
        table,
    )  # fmt: skip


def embedding_bags(
    tables: list[torch.Tensor],
    dims: list[int],
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    bits: int = 8,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    names: list[str] | None = None,
) -> torch.Tensor:
    """All of a model's tables in one call (TBE layout): offsets [T * B + 1] over the indices
    concatenated table after table; returns [B, sum(dims)] in table order."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    names = names if names is not None else [f"table{t}" for t in range(len(tables))]
    return _ops.embedding_bags_batched(
        tables, dims, bits, indices.contiguous(), offsets.to(indices.dtype).contiguous(),
        MODES[mode], per_sample_weights, names,
    )  # fmt: skip


def quantize_int8(weight: torch.Tensor) -> torch.Tensor:
    """fp32 [N, D] -> packed int8 rows [N, D + 8] (FBGEMM byte layout)."""
    w = weight.detach().float()
    lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
    scale = (hi - lo) / 255.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.clamp(torch.round((w - lo) / safe), 0, 255).to(torch.uint8)
    tail = torch.cat([scale, lo], 1).contiguous().view(torch.uint8)  # fp32 scale, fp32 bias
    return torch.cat([codes, tail], 1).contiguous()


def dequantize_int8(packed: torch.Tensor) -> torch.Tensor:
    d = packed.shape[1] - 8
    tail = packed[:, d:].contiguous().view(torch.float32)  # [N, 2]
    return packed[:, :d].float() * tail[:, :1] + tail[:, 1:]


def quantize_int4(weight: torch.Tensor) -> torch.Tensor:
    """fp32 [N, D] -> packed int4 rows [N, ceil(D/2) + 4] (FBGEMM 4-bit layout)."""
    w = weight.detach().float()
    lo = w.min(1, keepdim=True).values.half()
    hi = w.max(1, keepdim=True).values
    scale = ((hi - lo.float()) / 15.0).half()
    safe = torch.where(scale.float() > 0, scale.float(), torch.ones_like(hi))
    codes = torch.clamp(torch.round((w - lo.float()) / safe), 0, 15).to(torch.uint8)
    if codes.shape[1] % 2:
        codes = torch.cat([codes, codes.new_zeros(codes.shape[0], 1)], 1)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    tail = torch.cat([scale, lo], 1).contiguous().view(torch.uint8)  # fp16 scale, fp16 bias
    return torch.cat([packed, tail], 1).contiguous()


def dequantize_int4(packed: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    nbytes = packed.shape[1] - 4
    dim = 2 * nbytes if dim is None else dim
    tail = packed[:, nbytes:].contiguous().view(torch.float16).float()  # [N, 2]
    codes = torch.stack([packed[:, :nbytes] & 15, packed[:, :nbytes] >> 4], 2).flatten(1)
    return codes[:, :dim].float() * tail[:, :1] + tail[:, 1:]


def to_hugepages(table: torch.Tensor) -> torch.Tensor:
    """A copy of `table` on 2 MiB-aligned memory advised for transparent huge pages."""
    return _ops.hugepage_clone(table)


def set_isa(name: str) -> str:
    """Force a kernel path ('avx512', 'avx2', 'scalar' or 'auto'); never above what the CPU
    has. Returns the path in use. RECSYS_KERNELS_ISA sets the same at start-up."""
    return _ops.set_isa(name)


def current_isa() -> str:
    return _ops.current_isa()


def best_isa() -> str:
    """The best path this CPU supports (CPUID)."""
    return _ops.best_isa()


@torch.library.register_fake("recsys_kernels::embedding_bag_byte")
def _fake_byte(weight, indices, offsets, mode=0, per_sample_weights=None,
               include_last_offset=False, table=""):  # fmt: skip
    bags = offsets.shape[0] - (1 if include_last_offset else 0)
    return weight.new_empty((bags, weight.shape[1] - 8), dtype=torch.float32)


@torch.library.register_fake("recsys_kernels::embedding_bag_4bit")
def _fake_4bit(weight, indices, offsets, mode=0, per_sample_weights=None,
               include_last_offset=False, dim=-1, table=""):  # fmt: skip
    bags = offsets.shape[0] - (1 if include_last_offset else 0)
    d = dim if dim >= 0 else 2 * (weight.shape[1] - 4)
    return weight.new_empty((bags, d), dtype=torch.float32)


@torch.library.register_fake("recsys_kernels::embedding_bags_batched")
def _fake_batched(weights, dims, bits, indices, offsets, mode=0, per_sample_weights=None,
                  names=()):  # fmt: skip
    bags = (offsets.shape[0] - 1) // len(weights)
    return weights[0].new_empty((bags, sum(dims)), dtype=torch.float32)


@torch.library.register_fake("recsys_kernels::hugepage_clone")
def _fake_hugepage(t):
    return torch.empty_like(t)
