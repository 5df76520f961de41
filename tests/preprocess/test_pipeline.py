"""recsys-preprocess end to end on the fixtures: outputs, accounting, resume, errors."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from recsys.data.features import DatasetManifest
from recsys.preprocess.errors import PreprocessError
from tests.preprocess.reference import FIXTURES, SAMPLE_DIR, mixed_file, read_split, ref_row, run


def _lines(path: Path) -> list[str]:
    return path.read_text().rstrip("\n").split("\n")


def _check_split(directory: Path, split: str, texts: list[str], hashed: bool = True) -> None:
    """Rows of `split` equal the reference parse of `texts` (hash mode with a 2^32 range)."""
    cols = read_split(directory, split)
    assert len(cols["label"]) == len(texts)
    for i, text in enumerate(texts):
        ref = ref_row(text)
        assert cols["label"][i] == ref["label"]
        dense = [cols[f"I{j + 1}"][i] for j in range(13)]
        np.testing.assert_allclose(dense, ref["dense"], rtol=1e-6)
        ids = [int(cols[f"C{k + 1}"][i]) for k in range(26)]
        if hashed:
            assert ids == [0 if v is None else v + 1 for v in ref["cats"]]


def test_kaggle_vocab_run_writes_manifest_and_values(tmp_path):
    raw = FIXTURES / "kaggle_clean.tsv"
    out = tmp_path / "kaggle"
    manifest = run(raw, out, frequency_threshold=3)
    lines = _lines(raw)  # 35 rows: days 5,5,5,5,5,5,5 -> train 30, test 3, valid 2
    assert {k: v.rows for k, v in manifest.splits.items()} == {"train": 30, "valid": 2, "test": 3}
    assert manifest == DatasetManifest.load(out) and not (out / "_run.json").exists()
    assert manifest.sources[0]["size"] == raw.stat().st_size
    assert manifest.sources[0]["crc32"] == zlib.crc32(raw.read_bytes())
    assert manifest.sources[0]["lines"] == 35 and manifest.rejects == {}
    assert manifest.splits["train"].positives == sum(ref_row(t)["label"] for t in lines[:30])
    ref = [ref_row(t) for t in lines]
    assert manifest.missing_rate["I1"] == pytest.approx(
        sum(r["dense"][0] == 0 and t.split("\t")[1] == "" for r, t in zip(ref, lines, strict=True))
        / 35
    )  # noqa: E501
    assert manifest.missing_rate["C1"] == pytest.approx(sum(r["cats"][0] is None for r in ref) / 35)
    # vocabulary: values seen >= 3 times in the 30 training rows, ids 2.. in value order
    for k in (0, 7, 25):
        counts: dict[int, int] = {}
        for r in ref[:30]:
            if r["cats"][k] is not None:
                counts[r["cats"][k]] = counts.get(r["cats"][k], 0) + 1
        vocab = sorted(v for v, n in counts.items() if n >= 3)
        assert manifest.sparse_features[k].num_embeddings == len(vocab) + 2
        assert np.load(out / "vocab" / f"C{k + 1}.npy").tolist() == vocab
        ids = read_split(out, "test")[f"C{k + 1}"].tolist()
        want = [0 if r["cats"][k] is None else vocab.index(r["cats"][k]) + 2
                if r["cats"][k] in vocab else 1 for r in ref[30:33]]  # fmt: skip
        assert ids == want
    _check_split(out, "valid", lines[33:], hashed=False)


def test_bad_rows_accounted_per_reason_with_rejects_file(tmp_path):
    out = tmp_path / "bad"
    m = run(FIXTURES / "kaggle_bad.tsv", out, categorical="hash", max_ind_range=2**32,
            max_bad_fraction=1.0)  # fmt: skip
    summary = m.extra["preprocess"]
    assert m.rejects == {"empty_line": 1, "field_count": 1, "invalid_dense": 1,
                         "invalid_hex": 2, "invalid_label": 1}  # fmt: skip
    assert summary["rows_in"] == 12 == summary["rows_written"] + summary["rows_rejected"]
    assert summary["repaired"] == {
        "extra_empty_fields_dropped": 1,
        "trailing_empty_fields_added": 1,
    }
    rejects = [
        json.loads(x) for f in (out / "rejects").iterdir() for x in f.read_text().split("\n") if x
    ]  # noqa: E501
    assert sorted((r["line"], r["reason"]) for r in rejects) == [
        (4, "invalid_dense"), (5, "invalid_hex"), (6, "invalid_hex"), (7, "invalid_label"),
        (8, "empty_line"), (9, "field_count"),
    ]  # fmt: skip
    assert all(r["file"] == str(FIXTURES / "kaggle_bad.tsv") for r in rejects)


def test_too_many_bad_rows_abort_with_clear_error(tmp_path):
    with pytest.raises(
        PreprocessError, match=r"6 of 12 lines .*max_bad_fraction=0.1; see .*rejects"
    ):
        run(FIXTURES / "kaggle_bad.tsv", tmp_path / "bad", categorical="hash", max_bad_fraction=0.1)
    assert not (tmp_path / "bad").exists()  # nothing published


def test_gzip_directory_and_glob_inputs_match_plain(tmp_path):
    raw = FIXTURES / "kaggle_clean.tsv"
    days = tmp_path / "raw"
    days.mkdir()
    (days / "part.tsv.gz").write_bytes(gzip.compress(raw.read_bytes()))
    plain = run(raw, tmp_path / "plain", categorical="hash", max_ind_range=2**32)
    for src in (days, str(days / "*.gz")):
        m = run(src, tmp_path / "gz", categorical="hash", max_ind_range=2**32)
        assert {k: v.rows for k, v in m.splits.items()} == {
            k: v.rows for k, v in plain.splits.items()
        }  # noqa: E501
        _check_split(tmp_path / "gz", "train", _lines(raw)[:30])


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "day_0.gz"
    blob = gzip.compress((FIXTURES / "kaggle_clean.tsv").read_bytes() * 50)
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PreprocessError, match=r"day_0.gz: the gzip stream is truncated"):
        run(path, tmp_path / "out", categorical="hash")


def test_terabyte_days_and_negative_downsampling(tmp_path):
    lines = _lines(FIXTURES / "kaggle_clean.tsv")
    days = tmp_path / "days"
    days.mkdir()
    for d, rows in enumerate((lines[:12], lines[12:24], lines[24:])):  # day_2 has 11 rows
        (days / f"day_{d}.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    m = run(days, tmp_path / "tb", layout="1tb", categorical="hash", max_ind_range=2**32,
            negative_sample_rate=0.5)  # fmt: skip
    assert m.negative_sample_rate == 0.5 and m.transform["negative_sample_rate"] == 0.5
    assert [s["path"].rsplit("/", 1)[1] for s in m.sources] == ["day_0.gz", "day_1.gz", "day_2.gz"]
    assert m.splits["valid"].rows == 6 and m.splits["test"].rows == 5  # day_2 halved, 6 first
    _check_split(tmp_path / "tb", "valid", lines[24:30])
    _check_split(tmp_path / "tb", "test", lines[30:])
    positives = sum(ref_row(t)["label"] for t in lines[:24])
    train = read_split(tmp_path / "tb", "train")
    assert train["label"].sum() == positives and m.splits["train"].rows < 24  # negatives dropped
    s = m.extra["preprocess"]
    assert s["rows_downsampled"] == 24 - m.splits["train"].rows
    assert s["rows_in"] == s["rows_written"] + s["rows_downsampled"] + s["rows_rejected"] == 35


def test_unlabelled_test_layout(tmp_path):
    m = run(FIXTURES / "test_layout.tsv", tmp_path / "t", labelled=False, categorical="hash",
            max_ind_range=1000)  # fmt: skip
    assert m.splits["test"].rows == 10 and m.splits["train"].rows == 0
    cols = read_split(tmp_path / "t", "test")
    for i, text in enumerate(_lines(FIXTURES / "test_layout.tsv")):
        ref = ref_row(text, labelled=False)
        assert [int(cols[f"C{k + 1}"][i]) for k in range(26)] == [
            0 if v is None else v % 1000 + 1 for v in ref["cats"]
        ]


def test_resume_after_kill_redoes_only_unfinished_parts(tmp_path):
    raw = mixed_file(tmp_path)
    kw = {"categorical": "vocab", "chunk_mb": 4096 / 2**20}  # ~4 KiB chunks: many parts
    fresh = run(raw, tmp_path / "fresh", max_bad_fraction=1.0, **kw)
    # a run that fails at the very end leaves its staging directory, as a kill would
    with pytest.raises(PreprocessError, match="rejected"):
        run(raw, tmp_path / "resumed", max_bad_fraction=0.0, **kw)
    staging = tmp_path / ".resumed.staging"
    markers = sorted((staging / "_chunks").glob("*.json"))
    assert len(markers) > 3
    victim = markers[2].stem  # pretend the kill hit while this part was being written
    markers[2].unlink()
    for p in staging.glob(f"*/part-{victim}.*"):
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in staging.glob("train/*.parquet")}
    resumed = run(raw, tmp_path / "resumed", max_bad_fraction=1.0, **kw)
    assert resumed.splits == fresh.splits and resumed.rejects == fresh.rejects
    out = tmp_path / "resumed"
    for p, mtime in kept.items():
        assert (out / p.relative_to(staging)).stat().st_mtime_ns == mtime  # not rewritten
    for split in ("train", "valid", "test"):
        a, b = read_split(tmp_path / "fresh", split), read_split(out, split)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="shared Criteo sample rows not present")
def test_real_sample_rows_convert_row_by_row(tmp_path):
    raw = SAMPLE_DIR / "part-0.txt"
    m = run(raw, tmp_path / "real", categorical="hash", max_ind_range=2**32)
    lines = _lines(raw)
    assert sum(v.rows for v in m.splits.values()) == len(lines) and m.rejects == {}
    n_train = m.splits["train"].rows
    n_test = m.splits["test"].rows
    _check_split(tmp_path / "real", "train", lines[:n_train])
    _check_split(tmp_path / "real", "test", lines[n_train : n_train + n_test])
    _check_split(tmp_path / "real", "valid", lines[n_train + n_test :])
    assert m.splits["train"].positives + m.splits["valid"].positives + m.splits[
        "test"
    ].positives == sum(ref_row(t)["label"] for t in lines)  # noqa: E501
    assert math.isclose(m.missing_rate["C26"], sum(t.split("\t")[39] == "" for t in lines) / 100)


def test_publish_replaces_previous_dataset(tmp_path):
    out = tmp_path / "kaggle"
    run(FIXTURES / "kaggle_clean.tsv", out, categorical="hash")
    (out / "stale.txt").write_text("x")
    run(FIXTURES / "kaggle_clean.tsv", out, categorical="hash")
    assert not (out / "stale.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    shutil.rmtree(out)
