"""The one definition of a training batch: dense features, sparse ids as a KJT, labels.

Sparse features use torchrec's KeyedJaggedTensor, feature-major::

    keys:    ["C1", "C2"]          batch of 3 rows
    values:  [a0 a1 a2 | b0 b1 b2 b3]
    lengths: [1  1  1  | 2  1  1 ]   (row 0 of C2 holds two ids: multi-hot)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass
class Batch:
    dense: torch.Tensor  # [B, num_dense] float32
    sparse: KeyedJaggedTensor  # keys = sparse feature names, lengths [F * B]
    labels: torch.Tensor  # [B] float32 in {0, 1}
    true_ctr: torch.Tensor | None = None  # [B] float32, synthetic data only

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            dense=self.dense.to(device, non_blocking=non_blocking),
            sparse=self.sparse.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            true_ctr=None
            if self.true_ctr is None
            else self.true_ctr.to(device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        """For torchrec's train pipelines on CUDA (keeps tensors alive across streams)."""
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        self.labels.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            dense=self.dense.pin_memory(),
            sparse=self.sparse.pin_memory(),
            labels=self.labels.pin_memory(),
            true_ctr=None if self.true_ctr is None else self.true_ctr.pin_memory(),
        )
