"""data.preprocess.compression: the Parquet codec of the parts (same rows and values)."""

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
