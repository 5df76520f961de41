"""Route fbgemm's CPU embedding-bag backward operators (row-wise Adagrad or SGD fused in) through
recsys's own kernels.

The embedding tables stay fbgemm's table-batched modules (`SplitTableBatchedEmbeddingBagsCodegen`
under torchrec's DMP): same weight and optimizer-state buffers, same state dict and checkpoints,
same arithmetic, same forward (fbgemm's). Only the CPU operators that run in the backward pass
are swapped, because on the machines we measure on fbgemm 1.8's are slow for reasons outside
the math (docs/kernels.md): its row-wise Adagrad kernel switches between AVX and legacy SSE
instructions on every row, which costs ~200 ns per switch here (25 ms of a ~100 ms step at batch
2048), and its CPU operators are built without OpenMP, so they run on one thread (the SGD update
sorts each table's ids there). `recsys_kernels::tbe_backward_{rowwise_adagrad,sgd}`
(kernels/csrc/tbe_backward.cpp) run tables in parallel.

How: kernels registered for fbgemm's operators under the AutogradCPU dispatch key, the key those
operators are reached through (fbgemm registers only CPU kernels for them). Each handles the
common case and hands everything else (weight decay, max-norm, shared tables, fp16 tables) to
fbgemm's own CPU kernel by redispatching below autograd, so turning them on never
changes what is supported.

`lookup` goes further for the modules whose configuration those kernels fully cover (plain SGD
or row-wise Adagrad, fp32 tables, one table per feature, unweighted, no reporting hooks): the
whole lookup becomes one C++ autograd node (`recsys_kernels::tbe_lookup`: ids checked, our
forward - fbgemm's CPU forward bit for bit, with the rows prefetched - and our fused update in
the backward), skipping torchrec's and fbgemm's Python forward around the kernel (~250-300 us
per step at batch 128 on 2 cores, against a ~50-90 us lookup: docs/kernels.md). Same buffers
and numbers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.utils.kernels import kernel_ops

_ADAGRAD = "split_embedding_backward_codegen_rowwise_adagrad_cpu"
_SGD = "split_embedding_backward_codegen_sgd_cpu"
_BELOW_AUTOGRAD = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
# The arguments both backward kernels take first, as fbgemm's schemas name them.
_COMMON = ("grad_output", "host_weights", "weights_offsets", "D_offsets", "hash_size_cumsum",
           "indices", "offsets", "pooling_mode", "indice_weights")  # fmt: skip

_library: torch.library.Library | None = None
_enabled = False


def _fbgemm_op(name: str):
    return getattr(torch.ops.fbgemm, name).default


@functools.cache
def _schema(name: str) -> tuple[tuple[str, object], ...]:
    """(name, default) of each argument of fbgemm's operator, in order."""
    return tuple((a.name, a.default_value) for a in _fbgemm_op(name)._schema.arguments)


def _arguments(name: str, args: tuple, kwargs: dict) -> dict:
    """fbgemm's operator arguments by their schema names, defaults filled in."""
    schema = _schema(name)
    values = dict(zip((n for n, _ in schema), args, strict=False)) | kwargs
    for n, default in schema:
        values.setdefault(n, default)
    return values


def _rowwise_adagrad(*args, **kwargs):
    a = _arguments(_ADAGRAD, args, kwargs)
    handled = (
        _enabled
        and a["weight_decay"] == 0.0
        and a["weight_decay_mode"] == 0
        and a["max_norm"] == 0.0
        and torch.ops.recsys_kernels.tbe_backward_rowwise_adagrad(
            *(a[k] for k in (*_COMMON, "momentum1_host", "momentum1_offsets")),
            a["learning_rate_tensor"],
            a["eps"],
        )
    )
    if not handled:
        _fbgemm_op(_ADAGRAD).redispatch(_BELOW_AUTOGRAD, *args, **kwargs)


def _sgd(*args, **kwargs):
    a = _arguments(_SGD, args, kwargs)
    handled = _enabled and torch.ops.recsys_kernels.tbe_backward_sgd(
        *(a[k] for k in _COMMON), a["learning_rate_tensor"]
    )
    if not handled:
        _fbgemm_op(_SGD).redispatch(_BELOW_AUTOGRAD, *args, **kwargs)


def use_recsys_embedding_kernels(enabled: bool) -> bool:
    """Turn recsys's CPU embedding backward kernels on or off for the whole process; returns
    whether they are on (False when they are not built: fbgemm's kernels then run as before)."""
    global _library, _enabled
    if not enabled:
        _enabled = False
        return False
    if kernel_ops() is None:  # not built: fbgemm's kernels stay in use (kernel_ops warns)
        return False
    if _library is None:
        import fbgemm_gpu.split_table_batched_embeddings_ops_training  # noqa: F401  (its ops)

        library = torch.library.Library("fbgemm", "IMPL")
        library.impl(_ADAGRAD, _rowwise_adagrad, "AutogradCPU")
        library.impl(_SGD, _sgd, "AutogradCPU")
        _library = library
    _enabled = True
    return True


@contextlib.contextmanager
def recsys_embedding_kernels(enabled: bool) -> Iterator[bool]:
    """Scoped `use_recsys_embedding_kernels` (tests and benchmarks compare both)."""
    before = _enabled
    try:
        yield use_recsys_embedding_kernels(enabled)
    finally:
        use_recsys_embedding_kernels(before)


def lookup(batched: nn.Module, features: KeyedJaggedTensor) -> torch.Tensor:
    """The pooled rows [B, total D] of `features` from torchrec's batched embedding module
    `batched`: through recsys's lookup node where it applies (`node_applies`), else through the
    module's own forward."""
    if not node_applies(batched):
        return batched(features)
    return kernel_ops().tbe_lookup(*node_args(batched, features))


def node_applies(batched: nn.Module) -> bool:
    """Whether `batched`'s lookups go through recsys's lookup node: recsys kernels on, and a
    module configuration they cover (`_lookup_applies`, decided once per module)."""
    applies = batched.__dict__.get("_recsys_lookup")
    if applies is None:
        applies = batched.__dict__["_recsys_lookup"] = _lookup_applies(batched)
    return _enabled and applies


def node_args(batched: nn.Module, features: KeyedJaggedTensor) -> tuple:
    """The lookup node's arguments for `features` (`kernels.ops.tbe_lookup`'s order), where
    `node_applies(batched)`; counts the iteration as fbgemm's forward does."""
    tbe = batched.emb_module
    indices = features.values()
    if indices.dtype != batched._embedding_table_index_type:
        indices = indices.to(batched._embedding_table_index_type)
    adagrad = tbe.optimizer == _optim_types()[1]
    if adagrad:
        tbe.iter.add_(1)  # as fbgemm's forward does for this optimizer (its checkpointed count)
    return (
        tbe.placeholder_autograd_tensor, tbe.weights_host, tbe.weights_offsets, tbe.D_offsets,
        tbe.total_D, tbe.hash_size_cumsum, indices, features.offsets(), int(tbe.pooling_mode),
        tbe.momentum1_host if adagrad else _NO_STATE, tbe.momentum1_offsets if adagrad else
        _NO_STATE, tbe.learning_rate_tensor, float(tbe.optimizer_args.eps),
    )  # fmt: skip


_NO_STATE = torch.empty(0)


@functools.cache
def _optim_types() -> tuple:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return EmbOptimType.EXACT_SGD, EmbOptimType.EXACT_ROWWISE_ADAGRAD


def _lookup_applies(batched: nn.Module) -> bool:
    """Whether recsys's lookup node computes exactly what `batched`'s forward would: a CPU
    fbgemm training module with fp32 tables, one table per feature, sum or mean pooling, fp32
    output, SGD or plain row-wise Adagrad (no weight decay, max-norm, gradient clipping,
    counters), and none of the hooks its forward would call (reporting, raw-id tracking,
    write-back, module hooks)."""
    if kernel_ops() is None:
        return False
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    tbe = getattr(batched, "emb_module", None)
    if type(tbe) is not SplitTableBatchedEmbeddingBagsCodegen:
        return False
    args = tbe.optimizer_args
    hooks = (batched._forward_hooks, batched._forward_pre_hooks, tbe._forward_hooks,
             tbe._forward_pre_hooks)  # fmt: skip
    return (
        tbe.weights_host.numel() > 0
        and tbe.weights_host.dtype == torch.float32
        and tbe.optimizer in _optim_types()
        and args.weight_decay == 0.0
        and args.weight_decay_mode == 0
        and args.max_norm == 0.0
        and not args.gradient_clipping
        and not getattr(tbe, "_used_rowwise_adagrad_with_counter", False)
        and not getattr(tbe, "_used_rowwise_adagrad_with_global_weight_decay", False)
        and tbe.pooling_mode in (PoolingMode.SUM, PoolingMode.MEAN)
        and tbe.output_dtype == 0  # SparseType.FP32
        and bool((tbe.hash_size_cumsum.diff() > 0).all())
        and getattr(tbe, "stats_reporter", None) is None
        and getattr(tbe, "_report_input_params", None) is None
        and getattr(tbe, "tbe_input_multiplexer", None) is None
        and not getattr(tbe, "use_writeback_bwd_prehook", False)
        and getattr(batched, "_raw_id_tracker_wrapper", None) is None
        and not any(hooks)
    )
