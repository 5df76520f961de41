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
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

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
