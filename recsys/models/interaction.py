"""Feature interaction layers of DLRM: pairwise dot products, or plain concatenation."""

from __future__ import annotations

import torch
from torch import nn

from recsys.errors import ConfigError
from recsys.models.autocast import autocast_off
from recsys.utils.kernels import kernel_ops


def _simd_kernels() -> bool:
    """True when the kernels are built and run a SIMD path: the portable scalar one (CPUs
    without AVX2, or forced by RECSYS_KERNELS_ISA) is slower than the PyTorch formulation."""
    ops = kernel_ops()
    return ops is not None and ops.current_isa() != "scalar"


_KERNEL_OUT = (None, torch.bfloat16)  # output dtypes of the fused kernel (None: fp32)


class _GramPairs(torch.autograd.Function):
    """Selected entries of each sample's Gram matrix T T^T, with a hand-written backward.

    Forward: one batched GEMM and one index_select. Backward: the Gram matrix is symmetric, so
    the gradient of T is (G + G^T) T with G the selected entries' gradients scattered into a
    square matrix: one gather puts each pair's gradient at both of its positions (no zero fill,
    no scatter), then ONE batched GEMM, where
    autograd's generic backward of bmm(T, T^T) + index_select needs two GEMMs and transposed
    copies.
    Runs in fp32 whatever the autocast: CPU bf16 batched GEMMs of this size are slower than
    fp32 ones, and the casts of [B, n, n] tensors cost more than the math.
    """

    @staticmethod
    def forward(ctx, combined: torch.Tensor, pairs: torch.Tensor, source: torch.Tensor,
                diagonal: torch.Tensor | None):  # fmt: skip
        n = combined.shape[1]
        gram = torch.bmm(combined, combined.transpose(1, 2))  # [B, n, n]
        ctx.save_for_backward(combined, source)
        ctx.n, ctx.diagonal = n, diagonal
        return gram.view(-1, n * n).index_select(1, pairs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        combined, source = ctx.saved_tensors
        n = ctx.n
        # G + G^T in one gather: position (i, j) and (j, i) both take pair (i, j)'s gradient;
        # positions of no pair take the zero column appended at the end.
        padded = torch.cat([grad, grad.new_zeros(grad.shape[0], 1)], dim=1)
        sym = padded.index_select(1, source)  # [B, n * n]
        if ctx.diagonal is not None:  # self terms: d(t_i . t_i) / dt_i = 2 t_i
            sym[:, ctx.diagonal] *= 2
        return torch.bmm(sym.view(-1, n, n), combined), None, None, None


class DotInteraction(nn.Module):
    """Pairwise dot products of the dense vector and the F pooled embeddings.

    Output is `[dense, dots]`: the bottom-MLP output followed by the upper triangle of the
    (F+1) x (F+1) Gram matrix, with the diagonal (each vector with itself) when `self_terms`.
    Same layout as torchrec's `InteractionArch` when `self_terms` is False.
    On CPU in fp32 (training's case, bf16 autocast included) it runs the fused C++ kernel
    (`fused=True`, the default) on its AVX-512 or AVX2 path; float64 inputs, other devices,
    `fused=False`, a CPU without AVX2 and a build without the kernels take the PyTorch
    formulation (`_GramPairs`): the same values.
    The dot products are computed in fp32 whatever the autocast; under bf16 autocast the output
    is rounded to bf16 (what the top MLP's first layer would cast it to), by the fused kernel
    as it writes each row, so no fp32 [B, D + P] copy goes through memory either way.
    `pad_to` > 1 pads each row with zero columns to a multiple of it (`model.interaction_pad`):
    MKL runs the top MLP's products 1.1-1.2x faster on 368 columns than on Criteo's 367
    (docs/benchmarks.md); the padding's weights in the top MLP get a zero gradient and never
    change what the model computes.
    """

    def __init__(
        self, num_sparse: int, self_terms: bool = False, fused: bool = True, pad_to: int = 1
    ) -> None:
        super().__init__()
        if pad_to < 1:
            raise ConfigError(f"model.interaction_pad must be at least 1, got {pad_to}")
        self.pad_to = pad_to
        self.fused = fused  # the C++ kernel for fp32 CPU inputs (else the PyTorch formulation)
        n = num_sparse + 1
        rows, cols = torch.triu_indices(n, n, offset=0 if self_terms else 1)
        # Flat positions in the row-major Gram matrix: one index_select (and an index_add in the
        # backward) is ~4x cheaper on CPU than advanced indexing with (rows, cols).
        self.register_buffer("pairs", rows * n + cols, persistent=False)
        # For each position of the n x n matrix, the pair whose gradient it takes in the
        # backward: (i, j) and (j, i) both take pair (i, j); others the zero column (index P).
        source = torch.full((n * n,), rows.numel(), dtype=torch.long)
        source[rows * n + cols] = torch.arange(rows.numel())
        source[cols * n + rows] = torch.arange(rows.numel())
        self.register_buffer("source", source, persistent=False)
        self.self_terms = self_terms
        self.register_buffer("diagonal", torch.arange(n) * (n + 1), persistent=False)

    def output_dim(self, dim: int) -> int:
        """Columns of the output for embedding dim `dim`: D + P, padded to `pad_to`."""
        return -(-(dim + int(self.pairs.numel())) // self.pad_to) * self.pad_to

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        # dense [B, D], sparse [B, F, D]
        device = dense.device.type
        autocast = torch.is_autocast_enabled(device)
        out_dtype = torch.get_autocast_dtype(device) if autocast else None
        work = torch.promote_types(sparse.dtype, torch.float32)  # fp32, or fp64 if given
        if (self.fused and work == torch.float32 and device == "cpu" and out_dtype in _KERNEL_OUT
                and _simd_kernels()):  # fmt: skip
            # the fused C++ kernel, its autograd node built in C++ (autocast off inside)
            sparse = _vectors_contiguous(sparse.to(work))
            width = self.output_dim(dense.shape[1])
            return kernel_ops().dot_pairs(dense.to(work), sparse, self.self_terms, out_dtype, width)
        with autocast_off(device):  # see _GramPairs
            dense = dense.to(work)
            combined = torch.cat([dense.unsqueeze(1), sparse.to(work)], dim=1)  # [B, F+1, D]
            diagonal = self.diagonal if self.self_terms else None
            pairs = _GramPairs.apply(combined, self.pairs, self.source, diagonal)  # [B, P]
            padding = self.output_dim(dense.shape[1]) - dense.shape[1] - pairs.shape[1]
            out = torch.cat([dense, pairs, pairs.new_zeros(pairs.shape[0], padding)], dim=1)
            return out if out_dtype is None else out.to(out_dtype)


def _vectors_contiguous(sparse: torch.Tensor) -> torch.Tensor:
    """`sparse` [B, F, D] with each vector's D floats contiguous, as the kernel reads them
    (already so for a view of the embedding lookup's [B, F * D] output: then no copy)."""
    d = sparse.size(2)
    if (d == 1 or sparse.stride(2) == 1) and (sparse.size(1) <= 1 or sparse.stride(1) == d):
        return sparse
    return sparse.contiguous()


class ConcatInteraction(nn.Module):
    """No explicit interaction: `[dense, e_1, ..., e_F]`, left to the top MLP."""

    def __init__(self, num_sparse: int) -> None:
        super().__init__()
        self.num_sparse = num_sparse

    def output_dim(self, dim: int) -> int:
        return dim * (self.num_sparse + 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.cat([dense, sparse.flatten(1)], dim=1)  # [B, (F+1) * D]


def make_interaction(kind: str, num_sparse: int, self_terms: bool, pad_to: int = 1) -> nn.Module:
    if kind == "dot":
        return DotInteraction(num_sparse, self_terms, pad_to=pad_to)
    if kind == "concat":
        return ConcatInteraction(num_sparse)
    raise ConfigError(f"model.interaction must be 'dot' or 'concat', got {kind!r}")
