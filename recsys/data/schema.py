"""The recsys Parquet format: one row per example.

| column            | Arrow type     | meaning                                             |
|-------------------|----------------|-----------------------------------------------------|
| `label`           | int8           | 0 or 1                                              |
| dense features    | float32        | already transformed (e.g. log(1+x)); finite          |
| single-hot sparse | int64          | id in [0, num_embeddings)                            |
| multi-hot sparse  | list<int64>    | ids in [0, num_embeddings); empty list = no ids      |
| `ctr_true` (opt.) | float32        | true click probability (synthetic data only)         |

Files live under `<dataset>/<split>/part-NNNNN.parquet`, listed in the manifest.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.data.features import DatasetError, DatasetManifest

ROW_GROUP_ROWS = 131_072


def arrow_schema(manifest: DatasetManifest) -> pa.Schema:
    """The Arrow schema a data set's files must have."""
    fields = [pa.field(manifest.label, pa.int8(), nullable=False)]
    fields += [pa.field(n, pa.float32(), nullable=False) for n in manifest.dense_features]
    for f in manifest.sparse_features:
        typ = pa.list_(pa.int64()) if f.multi_hot else pa.int64()
        fields.append(pa.field(f.name, typ, nullable=False))
    if manifest.true_ctr_column:
        fields.append(pa.field(manifest.true_ctr_column, pa.float32(), nullable=False))
    return pa.schema(fields)


def check_file_schema(path: str | Path, manifest: DatasetManifest) -> pq.ParquetFile:
    """Open a Parquet file and check it has every column of the manifest with the right type."""
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: file listed in the manifest does not exist") from e
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"{path}: not a readable Parquet file ({e})") from e
    actual = pf.schema_arrow
    for field in arrow_schema(manifest):
        idx = actual.get_field_index(field.name)
        if idx < 0:
            raise DatasetError(f"{path}: column {field.name!r} is missing")
        typ = actual.field(idx).type
        if field.type != typ and not _compatible(field.type, typ):
            raise DatasetError(
                f"{path}: column {field.name!r} has type {typ}, expected {field.type}"
            )
    return pf


def _compatible(expected: pa.DataType, actual: pa.DataType) -> bool:
    """Integer/float widths that convert losslessly are accepted (e.g. int32 ids, int64 labels)."""
    if pa.types.is_integer(expected) and pa.types.is_integer(actual):
        return True
    if pa.types.is_floating(expected) and pa.types.is_floating(actual):
        return True
    if pa.types.is_list(expected) and (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
        return pa.types.is_integer(actual.value_type)
    return False


class SplitWriter:
    """Writes one split as numbered Parquet parts of bounded size, counting rows and positives."""

    def __init__(
        self, directory: Path, split: str, manifest: DatasetManifest, rows_per_file: int
    ) -> None:
        self.directory = directory / split
        self.directory.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.schema = arrow_schema(manifest)
        self.label = manifest.label
        self.rows_per_file = rows_per_file
        self.files: list[str] = []
        self.rows = 0
        self.positives = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def write(self, table: pa.Table) -> None:
        """Append a table (cast to the schema); rolls over to a new part when one is full."""
        table = table.select(self.schema.names).cast(self.schema)
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._rows_in_file >= self.rows_per_file:
                self._open_next()
            take = min(table.num_rows - start, self.rows_per_file - self._rows_in_file)
            chunk = table.slice(start, take)
            self._writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)
            self._rows_in_file += take
            self.rows += take
            self.positives += int(pc.sum(chunk[self.label]).as_py() or 0)
            start += take

    def _open_next(self) -> None:
        self.close()
        name = f"{self.split}/part-{len(self.files):05d}.parquet"
        self._writer = pq.ParquetWriter(self.directory.parent / name, self.schema)
        self.files.append(name)
        self._rows_in_file = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
