"""The yardstick: a plain PyTorch DLRM built the way facebookresearch/dlrm's reference does it.

Written for the benchmark only (not used by recsys): one `nn.EmbeddingBag(mode="sum",
sparse=True)` per table, `nn.Sequential` MLPs of Linear + ReLU (sigmoid at the top), the dot
interaction through `bmm` and the strictly lower triangle, `BCELoss`, and one `torch.optim.SGD`
over every parameter (sparse gradients for the tables). Timed like the reference's own timer:
forward, backward and optimizer step, with the inputs already in memory.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(sizes: list[int], sigmoid_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == len(sizes) - 2
        layers.append(nn.Sigmoid() if last and sigmoid_last else nn.ReLU())
    return nn.Sequential(*layers)


class ReferenceDLRM(nn.Module):
    """DLRM with per-table EmbeddingBags; `forward(dense, offsets, indices)` -> click prob [B]."""

    def __init__(
        self, num_dense: int, table_sizes: list[int], dim: int, bottom: list[int], top: list[int]
    ) -> None:
        super().__init__()
        self.tables = nn.ModuleList()
        for n in table_sizes:
            bag = nn.EmbeddingBag(n, dim, mode="sum", sparse=True)
            bound = (1.0 / n) ** 0.5
            with torch.no_grad():
                bag.weight.uniform_(-bound, bound)
            self.tables.append(bag)
        self.bottom = _mlp([num_dense, *bottom, dim], sigmoid_last=False)
        f = len(table_sizes) + 1
        self.li, self.lj = torch.tril_indices(f, f, offset=-1)
        self.top = _mlp([dim + f * (f - 1) // 2, *top, 1], sigmoid_last=True)

    def forward(
        self, dense: torch.Tensor, offsets: list[torch.Tensor], indices: list[torch.Tensor]
    ) -> torch.Tensor:
        x = self.bottom(dense)  # [B, D]
        pooled = [bag(i, o) for bag, i, o in zip(self.tables, indices, offsets, strict=True)]
        t = torch.cat([x, *pooled], dim=1).view(x.shape[0], -1, x.shape[1])  # [B, F+1, D]
        z = torch.bmm(t, t.transpose(1, 2))[:, self.li, self.lj]  # [B, F(F+1)/2]
        return self.top(torch.cat([x, z], dim=1)).squeeze(-1)  # [B]
