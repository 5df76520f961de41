"""The line-count scan of a plain file cuts exactly the chunks the streaming reader cuts."""

from __future__ import annotations

import zlib

import pytest

from recsys.preprocess.sources import iter_chunks, resolve_sources, scan_plain
from tests.preprocess.reference import FIXTURES


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 4096, 1 << 20])
@pytest.mark.parametrize("tail", [b"", b"no final newline", b"\n\n"])
def test_scan_plain_matches_iter_chunks(tmp_path, chunk_bytes, tail):
    data = (FIXTURES / "kaggle_clean.tsv").read_bytes() * 3
    data += b"x" * (3 << 20) + b"\n"  # one line longer than the scan's window
    data += (FIXTURES / "kaggle_bad.tsv").read_bytes() + b"\n" + tail
    path = tmp_path / "raw.tsv"
    path.write_bytes(data)
    ref_source, source = resolve_sources(str(path)) * 2
    ref = [[c.offset, c.first_line, c.size] for c in iter_chunks([ref_source], chunk_bytes)]
    sizes = []
    assert scan_plain(source, chunk_bytes, sizes.append) == ref
    assert (source.lines, source.crc32) == (ref_source.lines, ref_source.crc32)
    assert source.crc32 == zlib.crc32(data) and sum(sizes) == len(data)
    assert source.lines == data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def test_scan_plain_empty_file(tmp_path):
    (tmp_path / "empty.tsv").write_bytes(b"")
    source = resolve_sources(str(tmp_path / "empty.tsv"))[0]
    assert scan_plain(source, 100) == [] and (source.lines, source.crc32) == (0, 0)


def test_parse_file_range_trusts_recorded_lines_only_for_an_unchanged_file(tmp_path):
    import os

    import numpy as np

    from recsys.preprocess.errors import PreprocessError
    from recsys.preprocess.parse import parse_file_range

    path = tmp_path / "raw.tsv"
    path.write_bytes((FIXTURES / "kaggle_clean.tsv").read_bytes())
    source = resolve_sources(str(path))[0]
    stamp = (source.size, source.mtime)
    ref = parse_file_range(str(path), 0, source.size, 1)
    got = parse_file_range(str(path), 0, source.size, 1, lines=35, stamp=stamp)
    assert got.rows == ref.rows == 35
    np.testing.assert_array_equal(got.cats, ref.cats)
    os.utime(path, (source.mtime + 5, source.mtime + 5))  # touched since it was counted
    with pytest.raises(PreprocessError, match="changed while being converted"):
        parse_file_range(str(path), 0, source.size, 1, lines=35, stamp=stamp)
