"""Feature interaction layers of DLRM: pairwise dot products, or plain concatenation."""

from __future__ import annotations

import torch
from torch import nn

from recsys.errors import ConfigError


class DotInteraction(nn.Module):
    """Pairwise dot products of the dense vector and the F pooled embeddings.

    Output is `[dense, dots]`: the bottom-MLP output followed by the upper triangle of the
    (F+1) x (F+1) Gram matrix, with the diagonal (each vector with itself) when `self_terms`.
    Same layout as torchrec's `InteractionArch` when `self_terms` is False.
    """

    def __init__(self, num_sparse: int, self_terms: bool = False) -> None:
        super().__init__()
        n = num_sparse + 1
        rows, cols = torch.triu_indices(n, n, offset=0 if self_terms else 1)
        # Flat positions in the row-major Gram matrix: one index_select (and an index_add in the
        # backward) is ~4x cheaper on CPU than advanced indexing with (rows, cols).
        self.register_buffer("pairs", rows * n + cols, persistent=False)

    def output_dim(self, dim: int) -> int:
        return dim + int(self.pairs.numel())

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        # dense [B, D], sparse [B, F, D]
        combined = torch.cat([dense.unsqueeze(1), sparse], dim=1)  # [B, F+1, D]
        # A contiguous right operand lets the batched GEMM skip a strided copy per sample.
        gram = torch.bmm(combined, combined.transpose(1, 2).contiguous())  # [B, F+1, F+1]
        # The pair selection runs in fp32 even under bf16 autocast: CPU bf16 index_select and
        # its backward (index_add) are several times slower than fp32 ones plus the casts.
        pairs = gram.float().flatten(1).index_select(1, self.pairs)  # [B, P]
        return torch.cat([dense.to(pairs.dtype), pairs], dim=1)


class ConcatInteraction(nn.Module):
    """No explicit interaction: `[dense, e_1, ..., e_F]`, left to the top MLP."""

    def __init__(self, num_sparse: int) -> None:
        super().__init__()
        self.num_sparse = num_sparse

    def output_dim(self, dim: int) -> int:
        return dim * (self.num_sparse + 1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.cat([dense, sparse.flatten(1)], dim=1)  # [B, (F+1) * D]


def make_interaction(kind: str, num_sparse: int, self_terms: bool) -> nn.Module:
    if kind == "dot":
        return DotInteraction(num_sparse, self_terms)
    if kind == "concat":
        return ConcatInteraction(num_sparse)
    raise ConfigError(f"model.interaction must be 'dot' or 'concat', got {kind!r}")
