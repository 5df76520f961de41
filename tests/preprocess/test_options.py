"""data.preprocess options: the Parquet codec of the parts (same rows and values), the memory
for vocab-mode value counts."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.preprocess.errors import PreprocessError
from tests.preprocess.reference import FIXTURES, read_split, run


def test_uncompressed_parts_hold_the_same_values(tmp_path):
    raw = FIXTURES / "kaggle_clean.tsv"
    run(raw, tmp_path / "snappy", categorical="hash")
    m = run(raw, tmp_path / "none", categorical="hash", compression="none")
    for d, codec in (("snappy", "SNAPPY"), ("none", "UNCOMPRESSED")):
        part = tmp_path / d / m.splits["train"].files[0]
        assert pq.ParquetFile(part).metadata.row_group(0).column(0).compression == codec
    for split in ("train", "valid", "test"):
        a, b = read_split(tmp_path / "snappy", split), read_split(tmp_path / "none", split)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_unknown_codec_is_an_error(tmp_path):
    with pytest.raises(PreprocessError, match="compression must be one of"):
        run(FIXTURES / "kaggle_clean.tsv", tmp_path / "x", compression="gzip9")


def test_count_memory_below_one_mb_is_an_error(tmp_path):
    with pytest.raises(PreprocessError, match="count_memory_mb must be >= 1, got 0"):
        run(FIXTURES / "kaggle_clean.tsv", tmp_path / "x", count_memory_mb=0)
    assert not (tmp_path / "x").exists()  # nothing written
