"""The value transform, matching the reference DLRM pipeline.

Dense: missing -> 0, negative -> 0, then log(1 + x), stored as float32.
Categorical, hash mode: id = 1 + (value mod R_f) with R_f = max_ind_range (or its per-feature
override), missing = 0, so table f has R_f + 1 rows. Vocabulary mode: see `vocab.py`
(missing = 0, out of vocabulary = 1, frequent values 2..).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.preprocess.vocab import FIRST_ID, MISSING_ID, OOV_ID


def dense_transform(dense: np.ndarray) -> np.ndarray:
    """[13, n] int64 (missing already 0) -> [13, n] float32 log(1 + max(x, 0))."""
    return np.log1p(np.maximum(dense, 0).astype(np.float64)).astype(np.float32)


@dataclass
class CategoricalMap:
    """Raw 32-bit values -> embedding ids for every sparse feature."""

    mode: str  # hash | vocab
    ranges: list[int]  # hash mode: R_f per feature
    vocabs: list[np.ndarray] | None = None  # vocab mode: sorted kept values per feature

    def table_sizes(self) -> list[int]:
        if self.mode == "hash":
            return [r + 1 for r in self.ranges]
        assert self.vocabs is not None
        return [len(v) + FIRST_ID for v in self.vocabs]

    def apply(self, f: int, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Ids (int64) of feature f for `values` (uint32) with `missing` (bool)."""
        if self.mode == "hash":
            ids = values.astype(np.int64) % self.ranges[f] + 1
        else:
            vocab = self.vocabs[f]
            if len(vocab) == 0:
                ids = np.full(len(values), OOV_ID, dtype=np.int64)
            else:
                pos = np.searchsorted(vocab, values)
                found = vocab[np.minimum(pos, len(vocab) - 1)] == values
                ids = np.where(found, pos + FIRST_ID, OOV_ID).astype(np.int64)
        ids[missing] = MISSING_ID
        return ids
