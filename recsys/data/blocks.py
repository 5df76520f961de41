"""Row groups -> validated numpy column blocks.

A `RowBlock` holds a contiguous run of rows, already converted from Arrow and checked: labels in
{0, 1}, dense values finite, no nulls, ids inside their tables (or hashed into them). Errors name
the file, row (counted from the start of the file) and column.

Dense values and single-hot ids are kept feature-major ([features, rows]): each Parquet column
becomes one contiguous row of the array (a plain copy, where a row-major block took one strided
pass over the whole block per column), the shuffle gathers within each feature's row, and a
batch's ids come out as the [features, batch] block the KeyedJaggedTensor's values are (on the
Kaggle-shaped benchmark data: ~20 ms less work per row group of 131k rows, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.features import DatasetError, DatasetManifest


@dataclass
class RowBlock:
    labels: np.ndarray  # [n] float32
    dense: np.ndarray  # [D, n] float32 (feature-major)
    ids: np.ndarray  # [F_single, n] int64 (single-hot features in manifest order; feature-major)
    multi: list[pa.ListArray]  # one per multi-hot feature
    true_ctr: np.ndarray | None  # [n] float32

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def slice(self, start: int, stop: int) -> RowBlock:
        return RowBlock(
            labels=self.labels[start:stop],
            dense=self.dense[:, start:stop],
            ids=self.ids[:, start:stop],
            multi=[m.slice(start, stop - start) for m in self.multi],
            true_ctr=None if self.true_ctr is None else self.true_ctr[start:stop],
        )

    def take(self, order: np.ndarray) -> RowBlock:
        return RowBlock(
            labels=self.labels[order],
            dense=np.take(self.dense, order, axis=1),  # np.take: ~3x numpy's fancy indexing
            ids=np.take(self.ids, order, axis=1),
            multi=[m.take(pa.array(order)) for m in self.multi],
            true_ctr=None if self.true_ctr is None else self.true_ctr[order],
        )

    @staticmethod
    def concat(blocks: list[RowBlock]) -> RowBlock:
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        return RowBlock(
            labels=np.concatenate([b.labels for b in blocks]),
            dense=np.concatenate([b.dense for b in blocks], axis=1),
            ids=np.concatenate([b.ids for b in blocks], axis=1),
            multi=[pa.concat_arrays([b.multi[i] for b in blocks]) for i in range(len(first.multi))],
            true_ctr=None
            if first.true_ctr is None
            else np.concatenate([b.true_ctr for b in blocks]),
        )


class BlockReader:
    """Reads row groups of the files of one data set into validated `RowBlock`s."""

    def __init__(self, manifest: DatasetManifest, hash_ids: bool, with_true_ctr: bool) -> None:
        self.manifest = manifest
        self.hash_ids = hash_ids
        self.single = [f for f in manifest.sparse_features if not f.multi_hot]
        self.multi = [f for f in manifest.sparse_features if f.multi_hot]
        self.true_ctr = manifest.true_ctr_column if with_true_ctr else None
        self.columns = [manifest.label, *manifest.dense_features, *manifest.sparse_names]
        if self.true_ctr:
            self.columns.append(self.true_ctr)
        self._sizes = np.array([f.num_embeddings for f in self.single], dtype=np.int64)

    def read(self, pf: pq.ParquetFile, path: str, row_group: int, first_row: int) -> RowBlock:
        """Read and check one row group; `first_row` is its offset in the file (for errors)."""
        try:
            table = pf.read_row_group(row_group, columns=self.columns)
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"{path}: cannot read row group {row_group} ({e})") from e
        for name in self.columns:
            col = table.column(name)
            if col.null_count:
                row = first_row + _first_true(col.is_null().to_numpy(zero_copy_only=False))
                raise DatasetError(f"{path}: row {row}: column {name!r} is null")
        m = self.manifest
        labels = _numpy(table, m.label)
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            i = _first_true(bad)
            raise DatasetError(
                f"{path}: row {first_row + i}: label {labels[i].item()!r} in column {m.label!r} "
                "is not 0 or 1"
            )
        dense = np.empty((len(m.dense_features), table.num_rows), dtype=np.float32)
        for j, name in enumerate(m.dense_features):
            dense[j] = _numpy(table, name)
        if not np.isfinite(dense).all():
            i, j = _first_row_major(~np.isfinite(dense))
            raise DatasetError(
                f"{path}: row {first_row + i}: dense column {m.dense_features[j]!r} "
                f"has non-finite value {float(dense[j, i])}"
            )
        ids = np.empty((len(self.single), table.num_rows), dtype=np.int64)
        for f, feat in enumerate(self.single):
            ids[f] = _numpy(table, feat.name)
        ids = self._check_ids(ids, path, first_row)
        multi = [self._check_multi(table, f, path, first_row) for f in self.multi]
        true_ctr = _numpy(table, self.true_ctr).astype(np.float32) if self.true_ctr else None
        return RowBlock(labels.astype(np.float32), dense, ids, multi, true_ctr)

    def _check_ids(self, ids: np.ndarray, path: str, first_row: int) -> np.ndarray:
        if self.hash_ids:  # numpy mod is non-negative for positive sizes
            return np.mod(ids, self._sizes[:, None], out=ids)
        if not ids.size or ((ids.min(axis=1) >= 0).all() and (ids.max(axis=1) < self._sizes).all()):
            return ids
        # a bad id somewhere: the mask that locates the file's earliest one, built only now
        i, f = _first_row_major((ids < 0) | (ids >= self._sizes[:, None]))
        feat = self.single[f]
        raise DatasetError(
            f"{path}: row {first_row + i}: id {int(ids[f, i])} in column {feat.name!r} is outside "
            f"its table [0, {feat.num_embeddings}) (set model.hash_ids=true to hash ids)"
        )

    def _check_multi(self, table: pa.Table, feat, path: str, first_row: int) -> pa.ListArray:
        arr = table.column(feat.name).combine_chunks().cast(pa.list_(pa.int64()))
        values = arr.flatten().to_numpy()
        if self.hash_ids:
            values = np.mod(values, feat.num_embeddings)
            return pa.ListArray.from_arrays(arr.offsets, pa.array(values))
        bad = (values < 0) | (values >= feat.num_embeddings)
        if bad.any():
            pos = _first_true(bad)
            offsets = arr.offsets.to_numpy()
            row = int(np.searchsorted(offsets, pos, side="right") - 1)
            raise DatasetError(
                f"{path}: row {first_row + row}: id {values[pos]} in column {feat.name!r} is "
                f"outside its table [0, {feat.num_embeddings})"
            )
        return arr


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _first_true(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _first_row_major(mask: np.ndarray) -> tuple[int, int]:
    """(row, feature) of the first True of a [features, rows] mask in row order: the error
    names the earliest bad row of the file, as a row-by-row reader would."""
    f, i = np.nonzero(mask)
    k = int(np.lexsort((f, i))[0])
    return int(i[k]), int(f[k])
