"""Line parsing: every bad-row case of the fixtures gets the documented repair or rejection."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.preprocess.parse import check_line, decode_hex, parse_chunk
from tests.preprocess.reference import FIXTURES, ref_row

BAD_REASONS = {
    4: "invalid_dense", 5: "invalid_hex", 6: "invalid_hex", 7: "invalid_label",
    8: "empty_line", 9: "field_count",
}  # fmt: skip


def _check_values(block, texts: dict[int, str], labelled: bool = True) -> None:
    for i, line in enumerate(block.lines.tolist()):
        ref = ref_row(texts[line], labelled)
        assert block.label[i] == ref["label"]
        dense = np.log1p(np.maximum(block.dense[:, i], 0))
        np.testing.assert_allclose(dense, ref["dense"], rtol=1e-12)
        for f, v in enumerate(ref["cats"]):
            assert bool(block.cat_missing[f, i]) == (v is None)
            assert int(block.cats[f, i]) == (v or 0)


def test_bad_fixture_rejects_and_repairs_each_case():
    data = (FIXTURES / "kaggle_bad.tsv").read_bytes()
    assert b"\r\n" in data and not data.endswith(b"\n")
    block = parse_chunk(data, 1)
    assert block.rows_in == 12
    assert {line: reason for line, reason, _ in block.rejects} == BAD_REASONS
    assert block.repaired == {"trailing_empty_fields_added": 1, "extra_empty_fields_dropped": 1}
    assert block.lines.tolist() == [1, 2, 3, 10, 11, 12]
    assert block.rows + len(block.rejects) == block.rows_in
    texts = dict(enumerate(data.decode().split("\n"), start=1))
    _check_values(block, texts)
    assert block.cat_missing[23:, 1].all()  # line 2: stripped C24..C26 are missing
    rejected_text = {line: text for line, _, text in block.rejects}
    assert rejected_text[9] == texts[9].encode()


def test_offset_first_line_and_clean_chunk_agree_with_reference():
    data = (FIXTURES / "kaggle_clean.tsv").read_bytes()
    block = parse_chunk(data, 101)
    assert block.rows == 35 and not block.rejects and block.lines[0] == 101
    texts = {i + 101: t for i, t in enumerate(data.decode().split("\n"))}
    _check_values(block, texts)
    assert (block.dense < 0).any()  # negatives are kept raw here; the transform clamps them


def test_careful_path_equals_fast_path():
    """A chunk forced through the per-line path (bad dense) parses its good rows identically."""
    clean = (FIXTURES / "kaggle_clean.tsv").read_bytes()
    fast = parse_chunk(clean, 1)
    careful = parse_chunk(clean + b"1\tx" + b"\t" * 38 + b"\n", 1)
    assert [(r[0], r[1]) for r in careful.rejects] == [(36, "invalid_dense")]
    for name in ("lines", "label", "dense", "dense_missing", "cats", "cat_missing"):
        np.testing.assert_array_equal(getattr(careful, name), getattr(fast, name))


def test_test_layout_has_39_fields():
    data = (FIXTURES / "test_layout.tsv").read_bytes()
    block = parse_chunk(data, 1, labelled=False)
    assert block.rows == 10 and not block.rejects and (block.label == 0).all()
    _check_values(block, dict(enumerate(data.decode().split("\n"), start=1)), labelled=False)


def test_decode_hex_matches_int_parse():
    import pyarrow as pa

    vals = [b"00000000", b"ffffffff", b"", b"0a1B2c3D", b"12345", b"1234567g", b"80000000"]
    values, missing, invalid = decode_hex(pa.array(vals, pa.binary()))
    assert missing.tolist() == [False, False, True, False, False, False, False]
    assert invalid.tolist() == [False, False, False, False, True, True, False]
    ok = ~missing & ~invalid
    assert values[ok].tolist() == [int(v, 16) for v, k in zip(vals, ok, strict=True) if k]


@pytest.mark.parametrize(
    ("text", "reason", "repair"),
    [
        (b"", "empty_line", None),
        (b"1" + b"\t" * 20, None, "trailing_empty_fields_added"),
        (b"1" + b"\t" * 41, None, "extra_empty_fields_dropped"),
        (b"1" + b"\t" * 40 + b"x", "field_count", None),
        (b"1\t99999999999999999999" + b"\t" * 38, "invalid_dense", None),
        (b"1\t-7" + b"\t" * 38, None, None),
    ],
)
def test_check_line_rules(text, reason, repair):
    fields, got_reason, got_repair = check_line(text, 40, True)
    assert (got_reason, got_repair) == (reason, repair)
    if reason is None:
        assert len(fields) == 40
