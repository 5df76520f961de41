"""The value transform, matching the reference DLRM pipeline.

Dense: missing -> 0, negative -> 0, then log(1 + x), stored as float32.
Categorical, hash mode: id = 1 + (value mod R_f) with R_f = max_ind_range (or its per-feature
override), missing = 0, so table f has R_f + 1 rows. Vocabulary mode: see `vocab.py`
(missing = 0, out of vocabulary = 1, frequent values 2..).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    _tables: dict[int, VocabTable] = field(default_factory=dict, repr=False, compare=False)

    def table_sizes(self) -> list[int]:
        if self.mode == "hash":
            return [r + 1 for r in self.ranges]
        assert self.vocabs is not None
        return [len(v) + FIRST_ID for v in self.vocabs]

    def apply(self, f: int, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Ids (int64) of feature f for `values` (uint32) with `missing` (bool)."""
        ids = self.ids(f, values)
        ids[missing] = MISSING_ID
        return ids

    def ids(self, f: int, values: np.ndarray, ascending: bool = False) -> np.ndarray:
        """Ids (int64, a new array) of feature f for non-missing `values` (uint32);
        `ascending`: the values are sorted (a chunk's distinct values), which a binary search
        walks in one sweep."""
        if self.mode == "hash":
            r = self.ranges[f]
            if r >= 1 << 32:  # every 32-bit value is below the range
                ids = values.astype(np.int64)
            else:  # uint32 floor division by a scalar is a multiply and shift (libdivide)
                values = np.asarray(values, dtype=np.uint32)
                ids = (values - values // np.uint32(r) * np.uint32(r)).astype(np.int64)
            ids += 1
            return ids
        vocab = self.vocabs[f]
        if len(vocab) == 0:
            return np.full(len(values), OOV_ID, dtype=np.int64)
        if len(vocab) >= HASH_TABLE_MIN and not ascending:
            table = self._tables.get(f)
            if table is None:
                table = self._tables[f] = VocabTable(vocab)
            return table.ids(values)
        # a small vocabulary stays in cache: a binary search is cheaper
        pos = np.searchsorted(vocab, values)
        found = vocab[np.minimum(pos, len(vocab) - 1)] == values
        return np.where(found, pos + FIRST_ID, OOV_ID).astype(np.int64, copy=False)


HASH_TABLE_MIN = 1 << 20  # vocabularies this long are looked up through a `VocabTable`
_MULT = np.uint32(0x9E3779B1)  # Fibonacci hashing


class VocabTable:
    """A sorted vocabulary as an open-addressing hash table (linear probing, load <= 1/2):
    value -> id (FIRST_ID + rank) or OOV_ID, a few cache misses per value where a binary search
    (`np.searchsorted`) takes one per level. Built and probed vectorised, all values at once."""

    def __init__(self, vocab: np.ndarray) -> None:
        self.vocab = np.asarray(vocab, dtype=np.uint32)
        self.bits = max(int(2 * len(self.vocab)).bit_length(), 4)
        self.mask = (1 << self.bits) - 1
        self.slots = np.full(1 << self.bits, -1, dtype=np.int32)  # rank in vocab, -1 empty
        pending = np.arange(len(self.vocab), dtype=np.int32)
        where = self._home(self.vocab)
        while len(pending):
            free = self.slots[where] == -1
            self.slots[where[free]] = pending[free]  # one of several claimants wins a slot
            placed = self.slots[where] == pending
            pending, where = pending[~placed], (where[~placed] + 1) & self.mask

    def _home(self, values: np.ndarray) -> np.ndarray:
        return ((values * _MULT) >> np.uint32(32 - self.bits)).astype(np.int64) & self.mask

    def ids(self, values: np.ndarray) -> np.ndarray:
        """int64 ids of uint32 `values` (missing not handled here)."""
        ids = np.full(len(values), OOV_ID, dtype=np.int64)
        todo = np.arange(len(values))
        where = self._home(values)
        probe = values
        while len(todo):
            rank = self.slots[where]
            hit = rank >= 0
            match = hit & (self.vocab[np.maximum(rank, 0)] == probe)
            ids[todo[match]] = rank[match] + FIRST_ID
            more = hit & ~match
            todo, where, probe = todo[more], (where[more] + 1) & self.mask, probe[more]
        return ids
