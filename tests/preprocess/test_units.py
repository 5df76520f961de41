"""Transform, vocabulary counting and split plans against plain-Python references."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recsys.preprocess.splits import TEST, TRAIN, VALID, kaggle_plan, terabyte_plan
from recsys.preprocess.transform import CategoricalMap, dense_transform
from recsys.preprocess.vocab import MAX_RUNS, ValueCounter, chunk_counts


def test_dense_transform_clamps_negatives_and_logs():
    out = dense_transform(np.array([[-5, 0, 1, 1000, 2**40]], dtype=np.int64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0, 0, np.log(2), np.log(1001), np.log1p(2**40)], rtol=1e-6)


def test_hash_mode_ids_and_missing():
    cmap = CategoricalMap("hash", [10, 7])
    vals = np.array([0, 9, 10, 4_294_967_295], dtype=np.uint32)
    miss = np.array([False, False, False, True])
    assert cmap.apply(0, vals, miss).tolist() == [1, 10, 1, 0]
    assert cmap.apply(1, vals, miss).tolist() == [1, 3, 4, 0]
    assert cmap.table_sizes() == [11, 8]


def test_vocab_counting_threshold_and_oov():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 50, 300).astype(np.uint32) for _ in range(7)]
    counter = ValueCounter()
    for c in chunks:
        counter.add(*chunk_counts(c, c % 11 == 0))  # multiples of 11 play "missing"
    ref = Counter(int(v) for c in chunks for v in c if v % 11)
    assert counter.distinct == len(ref)
    vocab = counter.vocabulary(45)
    assert vocab.tolist() == sorted(k for k, n in ref.items() if n >= 45)
    cmap = CategoricalMap("vocab", [], [vocab])
    vals = np.array([vocab[0], vocab[-1], 1000, 0], dtype=np.uint32)
    ids = cmap.apply(0, vals, np.array([False, False, False, True]))
    assert ids.tolist() == [2, len(vocab) + 1, 1, 0]
    assert cmap.table_sizes() == [len(vocab) + 2]


@pytest.mark.parametrize("max_entries", [1, 7, 100])  # 1: > MAX_RUNS runs, so they get merged
def test_value_counts_spilled_to_disk_give_the_same_vocabulary(tmp_path, max_entries):
    """A counter over its memory budget writes sorted runs and merges them range by range:
    the same vocabulary and distinct count as counting in memory, runs removed afterwards."""
    rng = np.random.default_rng(max_entries)
    chunks = [rng.integers(0, 2**32, 40, dtype=np.uint64).astype(np.uint32) for _ in range(30)]
    chunks += [rng.integers(0, 60, 200).astype(np.uint32) for _ in range(5)]  # repeated values
    chunks.append(np.array([0, 2**32 - 1, 2**32 - 1], dtype=np.uint32))  # both ends of the range
    spill = tmp_path / "counts" / "C1"
    budgeted, plain = ValueCounter(spill, max_entries), ValueCounter()
    for c in chunks:
        for counter in (budgeted, plain):
            counter.add(*chunk_counts(c, np.zeros(len(c), dtype=bool)))
    assert len(list(spill.glob("run*.keys.npy"))) >= (1 if max_entries == 1 else 2)  # spilled
    assert len(list(spill.glob("run*.keys.npy"))) < MAX_RUNS
    ref = Counter(int(v) for c in chunks for v in c)
    for threshold in (1, 2, 5):
        vocab = budgeted.vocabulary(threshold)
        assert vocab.tolist() == plain.vocabulary(threshold).tolist()
        assert vocab.tolist() == sorted(k for k, n in ref.items() if n >= threshold)
    assert budgeted.distinct == plain.distinct == len(ref)
    budgeted.discard_spill()
    assert not spill.exists()


def test_kaggle_seven_days_as_the_reference():
    # 100 rows: days of 15,15,14,14,14,14,14 -> train 86, day 7 = 14: test 7 then valid 7
    plan = kaggle_plan([60, 40])
    codes = np.concatenate([plan.assign(0, np.arange(1, 61)), plan.assign(1, np.arange(1, 41))])
    assert (codes == TRAIN).sum() == 86
    assert codes[86:93].tolist() == [TEST] * 7 and codes[93:].tolist() == [VALID] * 7
    assert plan.has_train(1, 26) and not plan.has_train(1, 27)


def test_terabyte_last_day_halved_valid_then_test():
    plan = terabyte_plan(3, 5)
    assert (plan.assign(1, np.arange(1, 9)) == TRAIN).all()
    assert plan.assign(2, np.arange(1, 6)).tolist() == [VALID] * 3 + [TEST] * 2
