"""Parquet loader: every row once per epoch, rank slices, exact resume, clear errors."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys.data.features import DatasetError, DatasetManifest, SparseFeature, SplitInfo
from recsys.data.loader import ParquetBatchLoader, _prefetched
from recsys.data.schema import SplitWriter


def _rows(batches) -> np.ndarray:
    """Identify rows by their dense vectors (continuous values: unique per row)."""
    return np.concatenate([b.dense[:, :4].numpy() for b in batches])


def test_epoch_covers_every_row_once_shuffled(tiny_dataset):
    directory, m = tiny_dataset
    plain = ParquetBatchLoader(directory, m, "valid", 1000)
    shuffled = ParquetBatchLoader(directory, m, "valid", 1000, shuffle=True, seed=3)
    a, b = _rows(plain), _rows(shuffled)
    assert len(a) == m.split("valid").rows
    assert not np.array_equal(a, b)
    key = lambda x: x[np.lexsort(x.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(key(a), key(b))


def test_batch_contents_match_parquet(tiny_dataset):
    directory, m = tiny_dataset
    table = pq.read_table(directory / m.split("test").files[0])
    batch = next(iter(ParquetBatchLoader(directory, m, "test", 64)))
    assert batch.dense.dtype == torch.float32 and batch.dense.shape == (64, 13)
    np.testing.assert_array_equal(batch.labels.numpy(), table["label"].to_numpy()[:64])
    np.testing.assert_array_equal(batch.dense[:, 2].numpy(), table["I3"].to_numpy()[:64])
    kjt = batch.sparse
    assert kjt.keys() == m.sparse_names
    lengths = kjt.lengths()
    assert lengths.dtype == torch.int32 and lengths.tolist() == [1] * lengths.numel()
    assert kjt.offsets_or_none() is not None  # made by the loader, not later in the step
    assert kjt.offsets().dtype == torch.int32
    assert kjt.offsets().tolist() == list(range(lengths.numel() + 1))
    for name in m.sparse_names:  # feature-major values: every feature's ids in row order
        np.testing.assert_array_equal(kjt[name].values().numpy(), table[name].to_numpy()[:64])
    np.testing.assert_array_equal(batch.true_ctr.numpy(), table["ctr_true"].to_numpy()[:64])


def test_ranks_split_each_global_batch(tiny_dataset):
    directory, m = tiny_dataset
    kw = {"shuffle": True, "seed": 9, "drop_last": True}
    whole = list(ParquetBatchLoader(directory, m, "train", 2000, **kw))
    r0 = list(ParquetBatchLoader(directory, m, "train", 1000, rank=0, world_size=2, **kw))
    r1 = list(ParquetBatchLoader(directory, m, "train", 1000, rank=1, world_size=2, **kw))
    assert len(whole) == len(r0) == len(r1) == m.split("train").rows // 2000
    for w, a, b in zip(whole, r0, r1, strict=True):
        torch.testing.assert_close(w.dense, torch.cat([a.dense, b.dense]), rtol=0, atol=0)


def test_resume_position_is_exact(tiny_dataset):
    directory, m = tiny_dataset
    kw = {"shuffle": True, "seed": 4, "drop_last": True}
    full = ParquetBatchLoader(directory, m, "train", 700, **kw)
    expected = _rows(list(full)[13:])
    first = ParquetBatchLoader(directory, m, "train", 700, **kw)
    it = iter(first)
    for _ in range(13):
        next(it)
    state = first.state_dict()
    assert state == {"epoch": 0, "batch": 13}
    resumed = ParquetBatchLoader(directory, m, "train", 700, **kw)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(_rows(resumed), expected)
    assert resumed.state_dict() == {"epoch": 1, "batch": 0}


def test_epochs_reshuffle_deterministically(tiny_dataset):
    directory, m = tiny_dataset
    loader = ParquetBatchLoader(directory, m, "valid", 4000, shuffle=True, seed=1)
    e0, e1 = _rows(loader), _rows(loader)
    assert not np.array_equal(e0, e1)
    again = ParquetBatchLoader(directory, m, "valid", 4000, shuffle=True, seed=1)
    np.testing.assert_array_equal(_rows(again), e0)


# -- bad input ------------------------------------------------------------------------------


def _write(
    tmp_path, columns: dict, sparse=(("C1", 10),), multi: bool | set[str] = False
) -> DatasetManifest:
    """`multi`: all sparse features multi-hot (True), or the ones named."""
    hot = (lambda n: multi) if isinstance(multi, bool) else (lambda n: n in multi)
    m = DatasetManifest(
        name="t", dense_features=["I1"],
        sparse_features=[SparseFeature(n, v, hot(n)) for n, v in sparse], splits={},
    )  # fmt: skip
    w = SplitWriter(tmp_path, "train", m, 1000)
    w.write(pa.table(columns))
    w.close()
    m = DatasetManifest(
        **{**m.__dict__, "splits": {"train": SplitInfo(w.files, w.rows, w.positives)}}
    )
    m.save(tmp_path)
    return m


def _good(n=4) -> dict:
    return {"label": pa.array([0, 1] * (n // 2), pa.int8()),
            "I1": pa.array(np.arange(n, dtype=np.float32)),
            "C1": pa.array(np.arange(n, dtype=np.int64) % 10)}  # fmt: skip


def test_label_outside_01_names_file_and_row(tmp_path):
    cols = _good() | {"label": pa.array([0, 1, 2, 0], pa.int8())}
    m = _write(tmp_path, cols)
    with pytest.raises(DatasetError, match=r"part-00000.parquet: row 2: label 2 .* not 0 or 1"):
        list(ParquetBatchLoader(tmp_path, m, "train", 2))


def test_nan_dense_names_column(tmp_path):
    cols = _good() | {"I1": pa.array([0.0, np.nan, 1.0, 2.0], pa.float32())}
    m = _write(tmp_path, cols)
    with pytest.raises(DatasetError, match=r"row 1: dense column 'I1' has non-finite value nan"):
        list(ParquetBatchLoader(tmp_path, m, "train", 4))


def test_infinite_dense_rejected(tmp_path):
    cols = _good() | {"I1": pa.array([0.0, 1.0, np.inf, 2.0], pa.float32())}
    m = _write(tmp_path, cols)
    with pytest.raises(DatasetError, match=r"row 2: dense column 'I1' has non-finite value inf"):
        list(ParquetBatchLoader(tmp_path, m, "train", 4))


def test_id_outside_table_rejected_unless_hashed(tmp_path):
    cols = _good() | {"C1": pa.array([1, 2, 13, -1], pa.int64())}
    m = _write(tmp_path, cols)
    with pytest.raises(
        DatasetError, match=r"row 2: id 13 in column 'C1' is outside its table \[0, 10\)"
    ):
        list(ParquetBatchLoader(tmp_path, m, "train", 4))
    batch = next(iter(ParquetBatchLoader(tmp_path, m, "train", 4, hash_ids=True)))
    assert batch.sparse["C1"].values().tolist() == [1, 2, 3, 9]


def test_first_bad_row_is_named_whichever_feature_holds_it(tmp_path):
    # ids are checked a feature at a time ([features, rows] blocks): the error still names the
    # file's earliest bad row, here in the second feature, not the first feature's later one
    cols = _good() | {"C1": pa.array([1, 2, 3, 10], pa.int64()),
                      "C2": pa.array([4, -7, 5, 6], pa.int64())}  # fmt: skip
    m = _write(tmp_path, cols, sparse=(("C1", 10), ("C2", 10)))
    with pytest.raises(DatasetError, match=r"row 1: id -7 in column 'C2' is outside"):
        list(ParquetBatchLoader(tmp_path, m, "train", 4))
    batch = next(iter(ParquetBatchLoader(tmp_path, m, "train", 4, hash_ids=True)))
    assert batch.sparse["C1"].values().tolist() == [1, 2, 3, 0]
    assert batch.sparse["C2"].values().tolist() == [4, 3, 5, 6]


def test_missing_column_names_it(tmp_path):
    m = _write(tmp_path, _good())
    pq.write_table(pa.table({k: v for k, v in _good().items() if k != "I1"}),
                   tmp_path / m.split("train").files[0])  # fmt: skip
    with pytest.raises(DatasetError, match=r"part-00000.parquet: column 'I1' is missing"):
        ParquetBatchLoader(tmp_path, m, "train", 4)


def test_missing_file_and_missing_manifest(tmp_path):
    m = _write(tmp_path, _good())
    (tmp_path / m.split("train").files[0]).unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        ParquetBatchLoader(tmp_path, m, "train", 4)
    with pytest.raises(DatasetError, match=r"no data set at .*manifest.json does not exist"):
        DatasetManifest.load(tmp_path / "nowhere")


def test_null_value_rejected(tmp_path):
    m = _write(tmp_path, _good())
    table = pq.read_table(tmp_path / m.split("train").files[0])
    c1 = pa.array([1, None, 2, 3], pa.int64())
    pq.write_table(table.set_column(table.schema.get_field_index("C1"), "C1", c1),
                   tmp_path / m.split("train").files[0])  # fmt: skip
    with pytest.raises(DatasetError, match=r"row 1: column 'C1' is null"):
        list(ParquetBatchLoader(tmp_path, m, "train", 4))


def test_multi_hot_lists_become_jagged(tmp_path):
    cols = _good() | {"C1": pa.array([[1, 2], [], [3], [4, 5, 6]], pa.list_(pa.int64())),
                      "C2": pa.array([6, 0, 5, 2], pa.int64()),
                      "C3": pa.array([9, 8, 1, 3], pa.int64())}  # fmt: skip
    m = _write(tmp_path, cols, sparse=(("C2", 7), ("C1", 10), ("C3", 10)), multi={"C1"})
    batch = next(iter(ParquetBatchLoader(tmp_path, m, "train", 4)))
    jt = batch.sparse["C1"]
    assert jt.lengths().tolist() == [2, 0, 1, 3]
    assert jt.values().tolist() == [1, 2, 3, 4, 5, 6]
    assert batch.sparse.lengths().dtype == torch.int32
    # the offsets the loader hands over (the lookup reads them) are the lengths' running sum
    assert batch.sparse.offsets_or_none() is not None
    assert batch.sparse.offsets().tolist() == [0, 1, 2, 3, 4, 6, 6, 7, 10, 11, 12, 13, 14]
    assert batch.sparse.offsets().dtype == torch.int32
    for name in ("C2", "C3"):  # single-hot features before and after it
        assert batch.sparse[name].lengths().tolist() == [1, 1, 1, 1]
        assert batch.sparse[name].values().tolist() == cols[name].to_pylist()
    shuffled = next(iter(ParquetBatchLoader(tmp_path, m, "train", 4, shuffle=True, seed=0)))
    assert sorted(shuffled.sparse["C1"].lengths().tolist()) == [0, 1, 2, 3]


def test_prefetch_thread_refills_in_bursts():
    """Full buffer: the thread sleeps until half of it is consumed, then refills it at once
    (one wake-up per depth / 2 items, not one per item); items come in order, then the end."""
    produced: list[int] = []

    def source():
        for i in range(40):
            produced.append(i)
            yield i

    leads = []  # items made but not yet consumed, after each item consumed
    for k, item in enumerate(_prefetched(source(), depth=8)):
        assert item == k
        time.sleep(0.02)  # time for the thread to act
        leads.append(len(produced) - (k + 1))
    assert k == 39
    # A per-item refill keeps the lead at 9 (8 buffered + 1 made, waiting for room); the burst
    # refill lets it fall to 6 (5 buffered + 1) before refilling at 4 buffered.
    assert min(leads[:30]) <= 6


def test_prefetch_thread_error_reaches_the_consumer():
    def source():
        yield 1
        raise DatasetError("part-0.parquet: row 7: label 3 is not 0 or 1")

    items = _prefetched(source(), depth=4)
    assert next(items) == 1
    with pytest.raises(DatasetError, match="row 7: label 3"):
        next(items)
