"""Vocabulary mode: count each feature's values over the training rows, keep the frequent ones.

Counting is exact. Each chunk reduces its values to (sorted distinct values, counts) per feature
(`chunk_counts`, in the workers); `ValueCounter` merges those into one sorted table per feature,
merging geometrically (a pending batch is folded in once it is as large as the table), so the
work is O(n log n) and memory is about 12 bytes per distinct (feature, value) pair kept plus up to
twice that while a merge runs: the bound is ~36 bytes x distinct values (Kaggle: ~34M distinct
values over all 26 features, ~1.2 GB). A vocabulary is the sorted uint32 values with count >=
frequency_threshold, saved as `vocab/C<k>.npy` beside the data so serving maps raw hashes the same
way: id 0 = missing, 1 = out of vocabulary, 2 + rank in the sorted array otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recsys.utils.atomic import atomic_write_json

MISSING_ID = 0
OOV_ID = 1
FIRST_ID = 2
DONE = "_done.json"


def chunk_counts(values: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct non-missing values, counts as uint32) of one feature in one chunk."""
    keys, counts = np.unique(values[~missing], return_counts=True)
    return keys.astype(np.uint32), counts.astype(np.uint32)


_ROWS: dict[int, np.ndarray] = {}  # arange(n) as uint64, kept per n (chunks repeat sizes)


def chunk_inverse(
    values: np.ndarray, missing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, counts, inverse) of one feature in one chunk: the sorted distinct non-missing
    values (uint32), how often each occurs (uint32), and for every row the index of its value
    in `keys`, `len(keys)` for a missing value (uint16 when that fits, else uint32).

    `keys[inverse]` gives the values back, so a chunk can be stored once as (keys, inverse) and
    later mapped through any vocabulary by looking up only its distinct keys. One sort of 64-bit
    words (a 33-bit value, missing = 2^32, above the row number), which numpy does with SIMD;
    `np.unique(return_inverse=True)` takes an argsort, several times slower.
    """
    n = len(values)
    if n == 0:
        z = np.zeros(0, dtype=np.uint32)
        return z, z, np.zeros(0, dtype=np.uint16)
    bits = max(int(n - 1).bit_length(), 1)
    rows = _ROWS.get(n)
    if rows is None:
        _ROWS.clear()
        rows = _ROWS[n] = np.arange(n, dtype=np.uint64)
    key = values.astype(np.uint64)
    np.copyto(key, np.uint64(1 << 32), where=missing)  # one value for every missing row
    key <<= np.uint64(bits)
    key |= rows
    key.sort()
    value = key >> np.uint64(bits)
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(value[1:], value[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(starts, append=n).astype(np.uint32)
    keys = value[starts]
    dtype = np.uint16 if len(starts) <= 1 << 16 else np.uint32
    group = np.repeat(np.arange(len(starts), dtype=dtype), counts)
    key &= np.uint64((1 << bits) - 1)  # the row numbers, in value order
    inverse = np.empty(n, dtype=dtype)
    inverse[key.view(np.int64)] = group
    if keys[-1] >> np.uint64(32):  # the last group is the missing rows: not a key
        keys, counts = keys[:-1], counts[:-1]
    return keys.astype(np.uint32), counts, inverse


class ValueCounter:
    """Exact counts of one feature's values, kept as two sorted parallel arrays."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint32)
        self.counts = np.zeros(0, dtype=np.uint64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys, counts))
        self._pending_size += len(keys)
        if self._pending_size >= max(1 << 20, len(self.keys)):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self.counts, *(c.astype(np.uint64) for _, c in self._pending)])
        self._pending, self._pending_size = [], 0
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        self.keys, self.counts = keys[starts], np.add.reduceat(counts, starts)

    def vocabulary(self, threshold: int) -> np.ndarray:
        """Sorted values seen at least `threshold` times."""
        self._merge()
        return self.keys[self.counts >= max(threshold, 1)]

    @property
    def distinct(self) -> int:
        self._merge()
        return len(self.keys)


def save_vocabularies(directory: Path, names: list[str], vocabs: list[np.ndarray], info: dict):
    """Write one .npy per feature, then a done marker (so a resumed run can trust them)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, vocab in zip(names, vocabs, strict=True):
        np.save(directory / f"{name}.npy", vocab.astype(np.uint32))
    atomic_write_json(directory / DONE, info)


def load_vocabularies(directory: Path, names: list[str]) -> list[np.ndarray] | None:
    """The saved vocabularies, or None when they are absent or incomplete."""
    if not (directory / DONE).is_file():
        return None
    return [np.load(directory / f"{name}.npy", mmap_mode="r") for name in names]


def vocabulary_info(directory: Path) -> dict:
    return json.loads((directory / DONE).read_text())
