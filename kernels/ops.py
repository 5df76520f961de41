"""Python entry points of the embedding-bag kernels (torch.ops.recsys_kernels.*).

Row formats (`format=`), byte-compatible with FBGEMM where named so tables packed by FBGEMM's
prepack ops load directly:

    int8      : [D uint8 codes][fp32 scale][fp32 bias]              D + 8 bytes (FBGEMM byte)
    int8_half : [D uint8 codes][fp16 scale][fp16 bias]              D + 4 bytes (compact)
    int4      : [ceil(D/2) bytes, two codes each][fp16 scale][fp16 bias]  (FBGEMM 4-bit)

value = scale * code + bias. Pooling is a (weighted) sum or a mean over each bag; an empty bag
gives zeros. Bags are given by offsets (with or without the trailing end offset) or lengths;
indices and offsets are int32 or int64. `kernels.quant` packs fp32 tables (error bounds there).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from types import ModuleType

import torch


def _load_library() -> ModuleType:
    """Import the compiled extension (kernels/_C*.so): loading it registers the operators
    (torch.ops.recsys_kernels.*) and gives their direct bindings. A clear error if it was never
    built."""
    try:
        return importlib.import_module("kernels._C")
    except ModuleNotFoundError as e:
        raise ImportError(
            "recsys kernels are not built (kernels/_C*.so is missing): run `make install`, or "
            "`.venv/bin/pip install --no-deps --no-build-isolation -e .` from the repository root"
        ) from e


_direct = _load_library()
_ops = torch.ops.recsys_kernels


# The operator's codes of the format and mode names, from the one list of them (bindings.cpp).
_FORMATS = {name: code for code, name in enumerate(_direct.format_names)}
_MODES = {name: code for code, name in enumerate(_direct.mode_names)}

_Tensor = torch.Tensor
_is_tracing = torch._C._is_tracing
_is_compiling = torch.compiler.is_compiling
_is_dynamo_compiling = torch.compiler.is_dynamo_compiling


def _code(codes: dict[str, int], name: str, refuse: Callable[[str], int]) -> int:
    """The code of a format or mode name; an unknown one is refused by the eager path's own
    check (`refuse`: a ValueError naming the choices)."""
    return codes[name] if name in codes else refuse(name)


def _offsets_of(indices: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Offsets [B + 1] (with the trailing end) of bags given by their lengths."""
    ends = torch.cumsum(lengths, 0, dtype=indices.dtype)
    return torch.cat([ends.new_zeros(1), ends])


def embedding_bag(
    weight: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor | None = None,
    *,
    format: str = "int8",
    lengths: torch.Tensor | None = None,
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    include_last_offset: bool = False,
    dim: int | None = None,
    table: str = "",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Pooled rows of one packed table: [num_bags, D] (float32 unless out_dtype).

    `format` is "int8" (FBGEMM byte layout), "int8_half" (fp16 scale/bias) or "int4" (FBGEMM
    4-bit layout); `dim` is needed only for an odd int4 dim. Bags come from offsets (with or
    without the trailing end) or lengths; indices and offsets may be int32 or int64, mixed.
    """
    if (offsets is None) == (lengths is None):
        raise ValueError("give exactly one of offsets and lengths")
    if lengths is not None:
        offsets, include_last_offset = _offsets_of(indices, lengths), True
    if not _is_dynamo_compiling():  # dynamo folds it to True while it traces: the operator
        out = _direct.embedding_bag_eager(
            weight, indices, offsets, format, dim, mode, per_sample_weights, include_last_offset,
            table, out_dtype,
        )  # fmt: skip
        if out is not None:
            return out
    # Not plain tensors in eager mode (see bindings.cpp, eager_plain): the registered operator.
    return _ops.embedding_bag(
        weight, indices, offsets, _code(_FORMATS, format, _direct.format_code),
        -1 if dim is None else dim, _code(_MODES, mode, _direct.mode_code), per_sample_weights,
        include_last_offset, table, out_dtype,
    )  # fmt: skip


def embedding_bag_int8(weight: torch.Tensor, indices: torch.Tensor,
                       offsets: torch.Tensor | None = None, **kwargs) -> torch.Tensor:  # fmt: skip
    """`embedding_bag` of an FBGEMM byte-rowwise table (D + 8 bytes per row)."""
    return embedding_bag(weight, indices, offsets, format="int8", **kwargs)


def embedding_bag_int4(weight: torch.Tensor, indices: torch.Tensor,
                       offsets: torch.Tensor | None = None, **kwargs) -> torch.Tensor:  # fmt: skip
    """`embedding_bag` of an FBGEMM 4-bit table (ceil(D/2) + 4 bytes per row)."""
    return embedding_bag(weight, indices, offsets, format="int4", **kwargs)


def embedding_bags(
    tables: list[torch.Tensor],
    dims: list[int],
    indices: torch.Tensor,
    offsets: torch.Tensor,
    *,
    format: str = "int8",
    mode: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    names: list[str] | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """All of a model's tables in one call (TBE layout): offsets [T * B + 1] over the indices
    concatenated table after table; returns [B, sum(dims)] in table order, the interaction
    layer's input."""
    names = names if names is not None else [f"table{t}" for t in range(len(tables))]
    if not _is_dynamo_compiling():  # as in embedding_bag
        out = _direct.embedding_bags_eager(
            tables, dims, indices, offsets, format, mode, per_sample_weights, names, out_dtype
        )  # fmt: skip
        if out is not None:
            return out
    return _ops.embedding_bags_batched(
        tables, dims, _code(_FORMATS, format, _direct.format_code), indices, offsets,
        _code(_MODES, mode, _direct.mode_code), per_sample_weights, names, out_dtype,
    )  # fmt: skip


def to_hugepages(table: torch.Tensor) -> torch.Tensor:
    """A copy of `table` on 2 MiB-aligned memory advised for transparent huge pages."""
    return _ops.hugepage_clone(table)


def gather_probe(
    table: torch.Tensor,
    indices: torch.Tensor,
    prefetch_distance: int = 16,
    level: str = "L1",
    out_row_bytes: int = 0,
    ids_per_row: int = 1,
    reads: bool = True,
) -> int:
    """Benchmark only: a flat random gather of the cache lines that lookups of `indices` touch
    (no bags, no arithmetic), the row `prefetch_distance` ids ahead prefetched into `level`
    ("L1" or "L2"), over torch's threads: this machine's limit for the lookups. With
    `out_row_bytes`, it also writes an output row of that many bytes after every `ids_per_row`
    ids into a fresh buffer, as a lookup with bags of that many ids does. Returns a checksum
    (the sum of each row's first byte per cache line and its last byte). With `reads=False`,
    nothing is read: every line of every id's row is only prefetched into `level` (the
    benchmark's "fetch only": how fast the lines arrive with nothing else to do); returns the
    number of lines prefetched."""
    if level not in ("L1", "L2"):
        raise ValueError(f"gather_probe: level must be 'L1' or 'L2', got {level!r}")
    hint = 0 if level == "L1" else 1
    args = (prefetch_distance, hint, out_row_bytes, ids_per_row, reads)
    return int(_direct.gather_probe(table, indices.contiguous(), *args))


def dot_interaction(
    dense: torch.Tensor,
    sparse: torch.Tensor,
    self_terms: bool = False,
    out_dtype: torch.dtype | None = None,
    out_width: int = -1,
) -> torch.Tensor:
    """DLRM's dot interaction, fused: dense [B, D] and sparse [B, F, D] float32 (each vector
    contiguous) -> [B, D + P]: the dense vector, then dot(t_i, t_j) for i < j (i <= j with
    self terms) over t_0 = dense, t_f = sparse[:, f - 1], row-major (torchrec's order).
    Computed in fp32; `out_dtype=torch.bfloat16` rounds the output rows as `.to(bfloat16)`
    would, without an fp32 [B, D + P] tensor in memory. `out_width` > D + P: each row followed
    by zeros up to that many columns (an error when narrower)."""
    return _ops.dot_interaction(dense, sparse, self_terms, out_dtype, out_width)


def dot_pairs(
    dense: torch.Tensor,
    sparse: torch.Tensor,
    self_terms: bool = False,
    out_dtype: torch.dtype | None = None,
    out_width: int = -1,
) -> torch.Tensor:
    """`dot_interaction` as one autograd node built in C++ (its backward is
    `dot_interaction_backward`, run by the autograd engine without Python; the padding
    columns' gradient is dropped). Plain tensors in eager mode take the direct binding, the
    rest the operator."""
    plain = type(dense) is _Tensor and type(sparse) is _Tensor
    op = _direct if plain and not _is_tracing() and not _is_compiling() else _ops
    return op.dot_pairs(dense, sparse, self_terms, out_dtype, out_width)


def dot_interaction_backward(
    grad: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor, self_terms: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `dot_interaction` for the output gradient `grad` [B, D + P] (float32 or
    bfloat16): (d_dense, d_sparse) in float32, the dense vector's pass-through included."""
    return _ops.dot_interaction_backward(grad, dense, sparse, self_terms)


def relu_bias_grad(grad: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of `relu(x @ W^T + b)` up to the GEMMs, in one pass: (grad where `out` > 0 (or
    NaN) else 0, in grad's dtype; its column sums, the bias gradient, in fp32). grad and out:
    [B, N] float32 or bfloat16. The sums run over fixed 64-row blocks added in order, so they
    do not depend on the thread count."""
    return _ops.relu_bias_grad(grad, out)


def relu_bias_grad_(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`relu_bias_grad` writing the masked gradient over `grad` (contiguous) instead of a new
    tensor: for a gradient nothing else holds. Returns the bias gradient."""
    return _ops.relu_bias_grad_(grad, out)


def bias_grad(grad: torch.Tensor) -> torch.Tensor:
    """Column sums of grad [B, N] (float32 or bfloat16) in fp32: a Linear layer's bias
    gradient; same summation order as `relu_bias_grad`."""
    return _ops.bias_grad(grad)


def bias_act_(out: torch.Tensor, bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """`out += bias` (broadcast over rows), then ReLU when `relu`, in place, in one pass: a fp32
    layer's epilogue after its GEMM. out: contiguous [B, N] float32; bias: [N]."""
    return _ops.bias_act_(out, bias, relu)


def mlp_head_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A width-1 Linear layer, `x @ weight.T + bias` for x [B, K] (float32 or bfloat16) and
    weight [1, K]: one dot product per row, summed in fp32; [B, 1] in x's dtype."""
    return _ops.mlp_head_forward(x, weight, bias)


def mlp_head_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, relu: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of `mlp_head_forward` for its output gradient `grad` [B, 1] (x's dtype), in one
    pass over x: (grad_x [B, K] in x's dtype, zero where `relu` and x <= 0, i.e. the gradient
    through the ReLU of the layer that produced x; its column sums in fp32, that layer's bias
    gradient; the weight gradient [1, K] in fp32). The head's own bias gradient is
    `bias_grad(grad)`."""
    return _ops.mlp_head_backward(grad, x, weight, relu)


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def mlp(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    relu_last: bool,
    bf16: bool,
    head: bool,
    sgd_lr: float | None = None,
    sgd_weight_decay: float = 0.0,
) -> torch.Tensor:
    """A stack of Linear layers with ReLU between them (and after the last when `relu_last`),
    computed in bf16 (oneDNN, bias and ReLU in the GEMM) or fp32 (MKL's GEMM, then
    `bias_act_`), a width-1 last layer on `mlp_head_forward` when `head`, as one autograd node
    built in C++ (the operator `mlp_forward`, whose saved activations `mlp_backward` takes in
    the backward, run by the autograd engine without Python); autocast is off inside. Plain
    tensors in eager mode take the direct binding, the rest the operator.

    With `sgd_lr`, the backward takes torch.optim.SGD's step (no momentum) on every weight and
    bias that requires a gradient, in place, p <- (1 - lr * weight_decay) p - lr * grad (an fp32
    weight inside its gradient GEMM), and leaves their `.grad` untouched: the update a dense
    SGD optimizer would make after the backward, without writing or reading the gradients."""
    plain = type(x) is _Tensor and all(type(t) in _PLAIN_TENSORS for t in (*weights, *biases))
    op = _direct if plain and not _is_tracing() and not _is_compiling() else _ops
    return op.mlp(x, weights, biases, relu_last, bf16, head, sgd_lr, sgd_weight_decay)


def bce_with_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean binary cross-entropy of float32 CPU logits [B] against labels [B] (ATen's
    formula; the mean summed in double), as one autograd node built in C++ whose backward is one
    multiply: `F.binary_cross_entropy_with_logits` is ~13 small ops forward and backward."""
    plain = type(logits) is _Tensor and type(labels) is _Tensor
    op = _direct if plain and not _is_tracing() and not _is_compiling() else _ops
    return op.bce_with_logits(logits, labels)


def tbe_lookup(
    placeholder: torch.Tensor,
    weights: torch.Tensor,
    weights_offsets: torch.Tensor,
    D_offsets: torch.Tensor,  # noqa: N803  (fbgemm's name)
    total_D: int,  # noqa: N803
    hash_size_cumsum: torch.Tensor,
    indices: torch.Tensor,
    offsets: torch.Tensor,
    pooling_mode: int,
    momentum1_host: torch.Tensor,
    momentum1_offsets: torch.Tensor,
    learning_rate: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """A training lookup in fbgemm's CPU table-batched layout (the buffers of a
    `SplitTableBatchedEmbeddingBagsCodegen`) as one autograd node built in C++: ids checked
    (inside their tables, offsets non-decreasing), the pooled rows (fbgemm's CPU forward bit for
    bit, rows prefetched), and in the backward the fused update of the tables in place -
    row-wise Adagrad when `momentum1_host` is not empty, else SGD - at the lr in
    `learning_rate`. `placeholder` must require grad (autograd records the node through it);
    no gradient is returned for anything."""
    op = _direct if not _is_tracing() and not _is_compiling() else _ops
    return op.tbe_lookup(
        placeholder, weights, weights_offsets, D_offsets, total_D, hash_size_cumsum, indices,
        offsets, pooling_mode, momentum1_host, momentum1_offsets, learning_rate, eps,
    )  # fmt: skip


def dlrm_forward_loss(
    dense: torch.Tensor,
    labels: torch.Tensor,
    bottom: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], bool, bool],
    top: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], bool, bool],
    sgd_lr: float | None,
    sgd_weight_decay: float,
    num_features: int,
    self_terms: bool,
    lookup: tuple,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A DLRM training forward and its loss in one call: `mlp` on the dense features (`bottom`
    = (weights, biases, relu_last, head)), `tbe_lookup(*lookup)` -> [B, num_features * D],
    `dot_pairs` of the two, `mlp` on that (`top`), then the mean binary cross-entropy of the
    logits [B] against `labels` -> (logits, loss), with the autograd nodes those operators
    build; fp32, no autocast. Eager mode only (no registered operator: tracing and compiling
    take the model's modules)."""
    return _direct.dlrm_forward_loss(
        dense, labels, *bottom, *top, sgd_lr, sgd_weight_decay, num_features, self_terms,
        *lookup,
    )  # fmt: skip


def mlp_backward(
    grad: torch.Tensor,
    acts: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    relu_last: bool,
    head: bool,
    needs: Sequence[bool],
    need_x: bool,
    param_dtype: torch.dtype,
    x_dtype: torch.dtype,
) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """Backward of the operator `torch.ops.recsys_kernels.mlp_forward` (which returns the
    output, [x, each layer's output] in the working dtype and the weights cast to it): (input
    gradient in x_dtype or None unless `need_x`, [weight 0, bias 0, weight 1, ...] gradients in
    param_dtype, None where `needs` is False). Bias gradients are fp32 sums (`relu_bias_grad`);
    weight gradients the GEMMs autograd runs."""
    return _ops.mlp_backward(
        grad, acts, weights, relu_last, head, [int(b) for b in needs], need_x, param_dtype, x_dtype
    )


def set_isa(name: str) -> str:
    """Force a kernel path ('avx512', 'avx2', 'scalar' or 'auto'); never above what the CPU
    has. Returns the path in use. RECSYS_KERNELS_ISA sets the same at start-up."""
    return _ops.set_isa(name)


def current_isa() -> str:
    """The path in use (through the direct binding: the fused layers ask on every call)."""
    return _direct.current_isa()


def best_isa() -> str:
    """The best path this CPU supports (CPUID)."""
    return _ops.best_isa()


def set_index_checks(enabled: bool) -> bool:
    """Switch the id range checks of the SIMD paths (only to measure their cost); returns the
    previous setting. Never switch them off in serving: a bad id would read out of bounds."""
    return _ops.set_index_checks(enabled)


def set_prefetch_distance(rows: int) -> int:
    """Rows ahead whose cache lines are prefetched into L1 (default 24; 0 turns prefetch off) in
    calls whose tables add up to less than the far size (`set_far_prefetch`); returns the old
    distance."""
    return _ops.set_prefetch_distance(rows)


def set_prefetch_lead(near: int, far: int) -> tuple[int, int]:
    """Rows by which a row's first cache line is prefetched before its other lines, for rows of
    3 or more lines, in calls with the near and the far plan (defaults 4 and 16; 0: all lines
    at once; a lead not below the distance is ignored); returns the previous pair."""
    old = _ops.set_prefetch_lead(near, far)
    return int(old[0]), int(old[1])


def set_far_prefetch(distance: int, min_table_bytes: int) -> tuple[int, int]:
    """Calls whose tables add up to at least `min_table_bytes` (default: half the last-level
    cache, so most rows come from DRAM) prefetch rows `distance` ids ahead (default 64; 0: none)
    into L2 instead of L1. Returns the previous (distance, min_table_bytes)."""
    old = _ops.set_far_prefetch(distance, min_table_bytes)
    return int(old[0]), int(old[1])


def set_mid_prefetch(min_table_bytes: int, near: int) -> tuple[int, int]:
    """Calls whose tables add up to at least `min_table_bytes` (default: twice the L2 cache,
    4 MiB here) but less than the far size take the mid plan: the far plan's prefetch into L2,
    and every line of the row `near` ids ahead (default 8) into L1 as well (0: the far plan
    alone). Beyond the far size rows of 3 or more cache lines keep that L1 half too, and so do
    runs of small bags (`set_far_near_bags`). Returns the previous (min_table_bytes, near)."""
    old = _ops.set_mid_prefetch(min_table_bytes, near)
    return int(old[0]), int(old[1])


def set_far_near_bags(ids: int) -> int:
    """Calls beyond the far size take the mid plan's L1 half (rows `near` ids ahead into L1 as
    well) on rows of 3 or more cache lines, and on narrower rows in runs of at most `ids` ids per
    bag on average (default 3; 0: none, 1: one-id bags). On 10M-row tables of 16- and 64-wide
    int8 rows it gained up to 23 % on bags of 1-3 ids and lost up to 15 % on bags of 5-10 (AMD
    Zen 3). Returns the previous setting."""
    if isinstance(ids, bool) or not isinstance(ids, int):
        raise TypeError(f"set_far_near_bags takes an int, got {ids!r}")
    return int(_ops.set_far_near_bags(ids))


def _switch(name: str, enabled: bool) -> bool:
    """Sets the on/off kernel setting `name` (an operator of that name); returns the previous."""
    if not isinstance(enabled, bool):  # torch's bool argument would take 2 or None as well
        raise TypeError(f"{name} takes True or False, got {enabled!r}")
    return bool(getattr(_ops, name)(enabled))


def set_prefetch_ids(enabled: bool) -> bool:
    """Switch the prefetch of the ids ahead (on by default): while a run of bags pools, the ids
    of the next run (which its index check reads first) are prefetched into L2. Only to measure
    it; returns the previous setting."""
    return _switch("set_prefetch_ids", enabled)


def set_far_split(enabled: bool) -> bool:
    """Switch the column blocks of wide rows in calls beyond the far size (on by default): there
    the AVX2 path pools int8 rows of 97-128 columns in two passes of 64 (bags of 10M x 128 rows
    at pooling 20 and 100: 1.03-1.43x as fast on AMD Zen 3); one-id bags, int4 rows and cached
    rows keep one pass, and so does the AVX-512 path up to 256 columns. Only to measure it;
    returns the previous setting."""
    return _switch("set_far_split", enabled)


def mkl_bf16_available() -> bool:
    """True when this torch carries MKL's bf16 GEMM (the MLP's small-batch bf16 products)."""
    return bool(_ops.mkl_bf16_available())


@functools.cache
def bf16_mlp_available() -> bool:
    """True when `mlp(..., bf16=True)` can run here: oneDNN has bf16 kernels for this CPU (AVX-512
    or newer) or this torch carries MKL's bf16 GEMM (then every bf16 product runs on MKL)."""
    return bool(_ops.bf16_mlp_available())


def mm_bf16_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [M, K] @ b [K, N] for bf16 matrices (plain or transposed views) into a new fp32 [M, N],
    on MKL's bf16 GEMM (needs `mkl_bf16_available()`)."""
    return _ops.mm_bf16_f32(a, b)


def set_mkl_bf16_max_rows(rows: int) -> int:
    """bf16 MLP products with fewer rows than `rows` run on MKL's bf16 GEMM, the others on
    oneDNN (0: all on oneDNN; default 1024); returns the old value."""
    return _ops.set_mkl_bf16_max_rows(rows)


@torch.library.register_fake("recsys_kernels::embedding_bag")
def _fake_bag(weight, indices, offsets, format=0, dim=-1, mode=0, per_sample_weights=None,
              include_last_offset=False, table="", out_dtype=None):  # fmt: skip
    bags = offsets.shape[0] - (1 if include_last_offset else 0)
    if dim < 0:
        dim = (weight.shape[1] - 4) * 2 if format == 2 else weight.shape[1] - (8 - 4 * format)
    return weight.new_empty((bags, dim), dtype=out_dtype or torch.float32)


@torch.library.register_fake("recsys_kernels::embedding_bags_batched")
def _fake_batched(weights, dims, format, indices, offsets, mode=0, per_sample_weights=None,
                  names=(), out_dtype=None):  # fmt: skip
    bags = (offsets.shape[0] - 1) // len(weights)
    return weights[0].new_empty((bags, sum(dims)), dtype=out_dtype or torch.float32)


@torch.library.register_fake("recsys_kernels::hugepage_clone")
def _fake_hugepage(t):
    return torch.empty_like(t)


@torch.library.register_fake("recsys_kernels::dot_interaction")
def _fake_dot(dense, sparse, self_terms=False, out_dtype=None, out_width=-1):
    n = sparse.shape[1] + 1
    pairs = n * (n + 1) // 2 if self_terms else n * (n - 1) // 2
    width = max(dense.shape[1] + pairs, out_width)
    return dense.new_empty((dense.shape[0], width), dtype=out_dtype)


@torch.library.register_fake("recsys_kernels::dot_pairs")
def _fake_dot_pairs(dense, sparse, self_terms=False, out_dtype=None, out_width=-1):
    return _fake_dot(dense, sparse, self_terms, out_dtype, out_width)


@torch.library.register_fake("recsys_kernels::dot_interaction_backward")
def _fake_dot_backward(grad, dense, sparse, self_terms=False):
    return torch.empty_like(dense), torch.empty_like(sparse)


@torch.library.register_fake("recsys_kernels::relu_bias_grad")
def _fake_relu_bias_grad(grad, out):
    return torch.empty_like(grad), grad.new_empty((grad.shape[1],), dtype=torch.float32)


@torch.library.register_fake("recsys_kernels::relu_bias_grad_")
def _fake_relu_bias_grad_(grad, out):
    return grad.new_empty((grad.shape[1],), dtype=torch.float32)


@torch.library.register_fake("recsys_kernels::mlp_forward")
def _fake_mlp_forward(x, weights, biases, relu_last, bf16, head):
    work = torch.bfloat16 if bf16 else torch.float32
    acts = [x.new_empty(x.shape, dtype=work)]
    acts += [x.new_empty((x.shape[0], w.shape[0]), dtype=work) for w in weights]
    return acts[-1].clone(), acts, [w.new_empty(w.shape, dtype=work) for w in weights]


@torch.library.register_fake("recsys_kernels::mlp")
def _fake_mlp(x, weights, biases, relu_last, bf16, head, sgd_lr=None, sgd_weight_decay=0.0):
    dtype = torch.bfloat16 if bf16 else torch.float32
    return x.new_empty((x.shape[0], weights[-1].shape[0]), dtype=dtype)


@torch.library.register_fake("recsys_kernels::tbe_lookup")
def _fake_tbe_lookup(placeholder, weights, weights_offsets, D_offsets, total_D,  # noqa: N803
                     hash_size_cumsum, indices, offsets, pooling_mode, momentum1_host,
                     momentum1_offsets, learning_rate, eps):  # fmt: skip
    batch = (offsets.shape[0] - 1) // (D_offsets.shape[0] - 1)
    return weights.new_empty((batch, total_D))


@torch.library.register_fake("recsys_kernels::mlp_backward")
def _fake_mlp_backward(grad, acts, weights, relu_last, head, needs, need_x, param_dtype, x_dtype):
    params = [t for w in weights for t in (w, w[:, 0])]
    grads = [p.new_empty(p.shape, dtype=param_dtype) for p in params]
    return acts[0].new_empty(acts[0].shape, dtype=x_dtype), grads


@torch.library.register_fake("recsys_kernels::bias_grad")
def _fake_bias_grad(grad):
    return grad.new_empty((grad.shape[1],), dtype=torch.float32)


@torch.library.register_fake("recsys_kernels::bias_act_")
def _fake_bias_act_(out, bias, relu):
    return out


@torch.library.register_fake("recsys_kernels::mlp_head_forward")
def _fake_head_forward(x, weight, bias):
    return x.new_empty((x.shape[0], 1))


@torch.library.register_fake("recsys_kernels::mlp_head_backward")
def _fake_head_backward(grad, x, weight, relu):
    f32 = torch.float32
    return (
        torch.empty_like(x),
        x.new_empty((x.shape[1],), dtype=f32),
        x.new_empty((1, x.shape[1]), dtype=f32),
    )


def set_flush_denormal(on: bool) -> int:
    """Flush subnormal floats to zero (FTZ + DAZ) on the calling thread and on every thread of
    torch's intra-op pool (`torch.set_flush_denormal` sets the caller only, and a pool worker
    keeps what it copied from its creator); returns the number of threads set, 0 where the CPU
    has no such mode."""
    if not isinstance(on, bool):  # the op would read None as False and 2.5 as True
        raise TypeError(f"set_flush_denormal takes True or False, got {on!r}")
    return int(_ops.set_flush_denormal(on))
