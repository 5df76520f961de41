"""Vocabulary mode: count each feature's values over the training rows, keep the frequent ones.

Counting is exact. Each chunk reduces its values to (sorted distinct values, counts) per feature
(`chunk_counts`, in the workers); `ValueCounter` merges those into one sorted table per feature,
merging geometrically (a pending batch is folded in once it is as large as the table), so the
work is O(n log n) and memory is about 12 bytes per distinct (feature, value) pair plus up to
twice that while a merge runs (~36 bytes x distinct values; Kaggle: ~34M distinct values over all
26 features, ~1.2 GB). With a memory budget (`max_entries`), a table that outgrows it is written
to disk as a sorted run and counting starts afresh; the vocabulary is then built range by range
of the key space, each range merged from the slices of every run (memory-mapped), so memory stays
within the budget whatever the number of distinct values (the 1TB logs have several hundred
million), apart from the kept vocabulary itself (4 bytes per kept value); past MAX_RUNS runs a
feature's runs are merged into one. A vocabulary is the sorted uint32 values with count >=
frequency_threshold, saved as `vocab/C<k>.npy` beside the data so serving maps raw hashes the
same way: id 0 = missing, 1 = out of vocabulary, 2 + rank in the sorted array otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from recsys.utils.atomic import atomic_write_json

MISSING_ID = 0
OOV_ID = 1
FIRST_ID = 2
DONE = "_done.json"
MAX_RUNS = 32  # spilled runs of one feature before they are merged into one


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
    """Exact counts of one feature's values, kept as two sorted parallel arrays; spilled to
    sorted runs under `spill_dir` whenever more than `max_entries` distinct values are held
    (0 = never spill)."""

    def __init__(self, spill_dir: Path | None = None, max_entries: int = 0) -> None:
        if max_entries and spill_dir is None:
            raise ValueError("a memory budget for value counts needs a spill directory")
        self.keys = np.zeros(0, dtype=np.uint32)
        self.counts = np.zeros(0, dtype=np.uint64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0
        self._spill_dir = spill_dir
        self._max_entries = max_entries
        self._runs: list[tuple[Path, Path, int]] = []  # keys file, counts file, length
        self._run_serial = 0
        self._distinct: int | None = None

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys, counts))
        self._pending_size += len(keys)
        self._distinct = None
        batch = min(1 << 20, self._max_entries) if self._max_entries else 1 << 20
        if self._pending_size >= max(batch, len(self.keys)):
            self._merge()
            if self._max_entries and len(self.keys) > self._max_entries:
                self._spill()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self.counts, *(c.astype(np.uint64) for _, c in self._pending)])
        self._pending, self._pending_size = [], 0
        self.keys, self.counts = _reduce(keys, counts)

    def _spill(self) -> None:
        """Write the held table as a sorted run and start afresh; past MAX_RUNS runs, merge
        them into one (so the number of files open at once stays small)."""
        assert self._spill_dir is not None
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        paths = self._next_run_paths()
        np.save(paths[0], self.keys)
        np.save(paths[1], self.counts)
        self._runs.append((*paths, len(self.keys)))
        self.keys = np.zeros(0, dtype=np.uint32)
        self.counts = np.zeros(0, dtype=np.uint64)
        if len(self._runs) >= MAX_RUNS:
            self._compact()

    def _next_run_paths(self) -> tuple[Path, Path]:
        assert self._spill_dir is not None
        self._run_serial += 1
        base = self._spill_dir / f"run{self._run_serial}"
        return base.with_suffix(".keys.npy"), base.with_suffix(".counts.npy")

    def _open_runs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.load(k, mmap_mode="r")[:n], np.load(c, mmap_mode="r")[:n])
                for k, c, n in self._runs]  # fmt: skip

    def _ranges(self, tables: list[tuple[np.ndarray, np.ndarray]]):
        """(sorted distinct keys, summed counts) of the tables, key range after key range, each
        range small enough for the memory budget. Hex-hash values spread evenly over the 32-bit
        key space, so equal key ranges hold about equal numbers of distinct values."""
        total = sum(len(k) for k, _ in tables)
        parts = max(1, -(-total // max(self._max_entries, 1)))
        bounds = [round(i * (1 << 32) / parts) for i in range(parts + 1)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            keys, counts = [], []
            for k, c in tables:
                a = int(np.searchsorted(k, np.uint32(lo)))
                b = len(k) if hi >= 1 << 32 else int(np.searchsorted(k, np.uint32(hi)))
                keys.append(np.asarray(k[a:b]))
                counts.append(np.asarray(c[a:b]))
            yield _reduce(np.concatenate(keys), np.concatenate(counts))

    def _compact(self) -> None:
        """Merge every run into one run file, range by range (memory within the budget)."""
        tables = self._open_runs()
        total = sum(len(k) for k, _ in tables)
        paths = self._next_run_paths()
        out_k = np.lib.format.open_memmap(paths[0], mode="w+", dtype=np.uint32, shape=(total,))
        out_c = np.lib.format.open_memmap(paths[1], mode="w+", dtype=np.uint64, shape=(total,))
        n = 0
        for uk, uc in self._ranges(tables):
            out_k[n : n + len(uk)] = uk
            out_c[n : n + len(uk)] = uc
            n += len(uk)
        out_k.flush()
        out_c.flush()
        del tables, out_k, out_c
        for k, c, _ in self._runs:
            k.unlink()
            c.unlink()
        self._runs = [(*paths, n)]

    def vocabulary(self, threshold: int) -> np.ndarray:
        """Sorted values seen at least `threshold` times."""
        self._merge()
        threshold = max(threshold, 1)
        if not self._runs:
            self._distinct = len(self.keys)
            return self.keys[self.counts >= threshold]
        kept, distinct = [], 0
        for uk, uc in self._ranges([*self._open_runs(), (self.keys, self.counts)]):
            distinct += len(uk)
            kept.append(uk[uc >= threshold])
        self._distinct = distinct
        return np.concatenate(kept)

    @property
    def distinct(self) -> int:
        if self._distinct is None:
            self.vocabulary(1)
        assert self._distinct is not None
        return self._distinct

    def discard_spill(self) -> None:
        """Remove the spilled runs (after the vocabulary is saved)."""
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
        self._runs = []


def _reduce(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and their summed counts (uint64)."""
    if len(keys) == 0:
        return keys.astype(np.uint32), counts.astype(np.uint64)
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order].astype(np.uint64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[starts], np.add.reduceat(counts, starts)


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
