"""Vocab mode parses each training row once: the counting pass keeps the parsed chunk (a stash)
and the conversion pass maps it. Its output must equal a plain parse, and resume must work."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from recsys.data.features import DatasetManifest
from recsys.preprocess import pipeline, work
from recsys.preprocess.errors import PreprocessError
from recsys.preprocess.parse import parse_chunk
from recsys.preprocess.sources import Chunk
from recsys.preprocess.splits import kaggle_plan
from recsys.preprocess.transform import CategoricalMap
from recsys.preprocess.vocab import ValueCounter, chunk_inverse
from tests.preprocess.reference import FIXTURES, mixed_file, read_split, run

SMALL_CHUNKS = 4096 / 2**20  # ~4 KiB chunks: many parts, chunks across the train/test boundary


@pytest.mark.parametrize(("n", "distinct", "missing_rate"),
                         [(0, 1, 0.0), (1, 1, 1.0), (1000, 7, 0.3), (5000, 2**32, 0.0),
                          (200_000, 150_000, 0.1), (70_000, 2**32, 0.5)])  # fmt: skip
def test_chunk_inverse_matches_unique(n, distinct, missing_rate):
    rng = np.random.default_rng(n)
    values = rng.integers(0, distinct, n, dtype=np.uint64).astype(np.uint32)
    values[: n // 10] = 2**32 - 1  # the largest value must not be taken for "missing"
    missing = rng.random(n) < missing_rate
    keys, counts, inverse = chunk_inverse(values, missing)
    ref_keys, ref_counts = np.unique(values[~missing], return_counts=True)
    assert keys.dtype == np.uint32 and keys.tolist() == ref_keys.tolist()
    assert counts.tolist() == ref_counts.tolist()
    assert inverse.dtype == (np.uint16 if len(keys) < 2**16 else np.uint32)
    assert (inverse[missing] == len(keys)).all()
    assert (keys[inverse[~missing]] == values[~missing]).all()


def _same(a_dir, b_dir, vocab=True):
    """Two data sets with the same rows, values, counts and vocabularies."""
    a, b = DatasetManifest.load(a_dir), DatasetManifest.load(b_dir)
    assert a.splits == b.splits and a.rejects == b.rejects and a.extra == b.extra
    assert a.sparse_features == b.sparse_features and a.missing_rate == b.missing_rate
    for k in range(26 if vocab else 0):
        va, vb = (
            np.load(a_dir / "vocab" / f"C{k + 1}.npy"),
            np.load(b_dir / "vocab" / f"C{k + 1}.npy"),
        )
        np.testing.assert_array_equal(va, vb)
    for split in ("train", "valid", "test"):
        x, y = read_split(a_dir, split), read_split(b_dir, split)
        assert x.keys() == y.keys()
        for name in x:
            assert x[name].dtype == y[name].dtype
            np.testing.assert_array_equal(x[name], y[name])


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_vocab_output_equals_a_plain_parse(tmp_path, rate):
    """Stashed (parsed once) conversion == converting the text again with the same vocabulary
    (`vocab_from`: no counting pass, no stash), including rejects, repairs, down-sampling and
    chunks across the train/test boundary."""
    raw = mixed_file(tmp_path, clean_after=True)
    kw = {"chunk_mb": SMALL_CHUNKS, "max_bad_fraction": 1.0, "negative_sample_rate": rate,
          "frequency_threshold": 2}  # fmt: skip
    once = run(raw, tmp_path / "once", **kw)
    run(raw, tmp_path / "twice", vocab_from=str(tmp_path / "once"), **kw)
    assert once.transform["vocab_from"] is None and once.rejects
    assert once.sparse_features[0].num_embeddings > 2  # a vocabulary with values in it
    _same(tmp_path / "once", tmp_path / "twice")
    assert not (tmp_path / "once" / work.STASH).exists()
    assert sorted(p.name for p in (tmp_path / "once" / "rejects").iterdir()) == sorted(
        p.name for p in (tmp_path / "twice" / "rejects").iterdir()
    )


def test_killed_vocab_run_resumes_in_either_pass(tmp_path, monkeypatch):
    raw = mixed_file(tmp_path, clean_after=True)
    kw = {"chunk_mb": SMALL_CHUNKS, "max_bad_fraction": 1.0}
    run(raw, tmp_path / "fresh", **kw)

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed

    # killed after the counting pass: every training chunk is stashed, nothing converted
    real_convert = pipeline._convert
    monkeypatch.setattr(pipeline, "_convert", killed)
    with pytest.raises(Killed):
        run(raw, tmp_path / "resumed", **kw)
    staging = tmp_path / ".resumed.staging"
    stashes = sorted((staging / work.STASH).glob("*.npy"))
    assert len(stashes) > 3 and (staging / "vocab" / "_done.json").is_file()
    # ... and as if killed during the counting pass: no vocabulary, some stashes missing
    (staging / "vocab" / "_done.json").unlink()
    for p in stashes[1::2]:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in stashes[::2]}
    monkeypatch.setattr(work.Stash, "save", _no_overwrite(work.Stash.save, kept))
    with pytest.raises(Killed):  # the counting pass reads kept stashes, parses the rest
        run(raw, tmp_path / "resumed", **kw)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert len(list((staging / work.STASH).glob("*.npy"))) == len(stashes)
    # killed during the conversion: a converted chunk lost its marker and parts
    monkeypatch.setattr(pipeline, "_convert", real_convert)
    with pytest.raises(PreprocessError, match="rejected"):
        run(raw, tmp_path / "resumed", **dict(kw, max_bad_fraction=0.0))
    assert not list((staging / work.STASH).glob("*.npy"))  # each removed once converted
    victim = sorted((staging / "_chunks").glob("*.json"))[1].stem
    (staging / "_chunks" / f"{victim}.json").unlink()
    for p in staging.glob(f"*/part-{victim}.parquet"):
        p.unlink()
    run(raw, tmp_path / "resumed", **kw)
    _same(tmp_path / "fresh", tmp_path / "resumed")


def _no_overwrite(save, kept):
    def guarded(self, path):
        assert path not in kept, f"{path} was parsed again"
        return save(self, path)

    return guarded


def test_count_chunk_reads_an_existing_stash_back(tmp_path):
    data = (FIXTURES / "kaggle_bad.tsv").read_bytes() + b"\n" + (FIXTURES / "kaggle_clean.tsv"
                                                                  ).read_bytes()  # fmt: skip
    plan = kaggle_plan([data.count(b"\n")])  # 47 lines: 41 train, 3 test, 3 valid
    ctx = work.WorkerContext(str(tmp_path), ["raw.tsv"], plan, True, "vocab")
    first = work.count_chunk(Chunk(0, 0, 1, data), ctx)
    again = work.count_chunk(Chunk(0, 0, 1, b"garbage\n"), ctx)  # not parsed: stash read
    assert first["rows_in"] == again["rows_in"] == 47 and first["rejected"] == 6
    for (k1, c1), (k2, c2) in zip(first["counts"], again["counts"], strict=True):
        assert k1.tolist() == k2.tolist() and c1.tolist() == c2.tolist()
    block = parse_chunk(data, 1)
    train = plan.assign(0, block.lines) == 0
    assert first["rows"] == int(train.sum()) < block.rows
    for f in range(26):  # counts of the training rows only
        keys, counts = np.unique(block.cats[f][train & ~block.cat_missing[f]], return_counts=True)
        assert first["counts"][f][0].tolist() == keys.tolist()
        assert first["counts"][f][1].tolist() == counts.tolist()
    stash = work.Stash.load(next((tmp_path / work.STASH).glob("*.npy")))
    assert stash.lines.tolist() == block.lines.tolist()  # not consecutive: stored
    cmap = CategoricalMap("hash", [2**32] * 26)
    label, dense, dense_missing, ids = work._stash_rows(stash, None, cmap)
    ref = work._block_rows(block, None, cmap)
    np.testing.assert_array_equal(label, ref[0])
    np.testing.assert_array_equal(dense, ref[1])
    np.testing.assert_array_equal(dense_missing, ref[2])
    for a, b in zip(ids, ref[3], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("categorical", ["hash", "vocab"])
def test_gzip_days_converted_by_workers_equal_plain_days(tmp_path, categorical):
    """Several .gz sources go to workers whole (each decompresses its own); the result equals
    the same days as plain files (streamed in chunks), and a killed run resumes."""
    lines = (FIXTURES / "kaggle_clean.tsv").read_bytes().split(b"\n")[:-1]
    bad = (FIXTURES / "kaggle_bad.tsv").read_bytes() + b"\n"
    days = [b"\n".join(lines[:12]) + b"\n" + bad, b"\n".join(lines[12:24]) + b"\n",
            b"\n".join(lines[24:]) + b"\n"]  # fmt: skip
    for kind in ("plain", "gz"):
        (tmp_path / kind).mkdir()
        for d, data in enumerate(days):
            name = f"day_{d}" + (".gz" if kind == "gz" else "")
            (tmp_path / kind / name).write_bytes(gzip.compress(data) if kind == "gz" else data)
    kw = {"layout": "1tb", "categorical": categorical, "chunk_mb": 2048 / 2**20,
          "max_ind_range": 2**32, "negative_sample_rate": 0.5,
          "frequency_threshold": 1}  # fmt: skip
    run(tmp_path / "plain", tmp_path / "out_plain", max_bad_fraction=1.0, **kw)
    with pytest.raises(PreprocessError, match="rejected"):  # fails at the end: like a kill
        run(tmp_path / "gz", tmp_path / "out_gz", max_bad_fraction=0.0, **kw)
    staging = tmp_path / ".out_gz.staging"
    markers = sorted((staging / "_chunks").glob("*.json"))
    assert len(markers) > 3
    markers[1].unlink()
    run(tmp_path / "gz", tmp_path / "out_gz", max_bad_fraction=1.0, **kw)
    _same(tmp_path / "out_plain", tmp_path / "out_gz", vocab=categorical == "vocab")
    m = DatasetManifest.load(tmp_path / "out_gz")
    assert [s["lines"] for s in m.sources] == [24, 12, 11]
    assert [s["crc32"] for s in m.sources] == [zlib.crc32(d) for d in days]


@pytest.mark.parametrize("categorical", ["hash", "vocab"])
def test_chunks_started_during_the_line_count(tmp_path, monkeypatch, categorical):
    """Chunks certainly in train start while lines are still counted; the result equals a run
    without that, also when a run killed during the count had converted some already."""
    raw = mixed_file(tmp_path, clean_after=True)
    kw = {"categorical": categorical, "chunk_mb": SMALL_CHUNKS, "max_bad_fraction": 1.0,
          "max_ind_range": 2**32}  # fmt: skip
    started = []
    take = pipeline._EarlyStart.take

    def recording_take(self):
        futures, names = take(self)
        started.extend(names)
        return futures, names

    monkeypatch.setattr(pipeline._EarlyStart, "take", recording_take)
    run(raw, tmp_path / "early", **kw)
    assert len(started) >= 2  # workers + 1 at most (1 worker here)
    monkeypatch.setattr(pipeline._EarlyStart, "create", lambda *a: None)
    run(raw, tmp_path / "late", **kw)
    _same(tmp_path / "early", tmp_path / "late", vocab=categorical == "vocab")
    # killed during the count: some chunks done (markers, stashes), no line count saved
    monkeypatch.undo()
    with pytest.raises(PreprocessError, match="rejected"):
        run(raw, tmp_path / "resumed", **dict(kw, max_bad_fraction=0.0))
    staging = tmp_path / ".resumed.staging"
    (staging / pipeline.LINES_FILE).unlink()
    (staging / "vocab" / "_done.json").unlink(missing_ok=True)
    for marker in sorted((staging / "_chunks").glob("*.json"))[4:]:
        marker.unlink()
    run(raw, tmp_path / "resumed", **kw)
    _same(tmp_path / "late", tmp_path / "resumed", vocab=categorical == "vocab")


def test_vocab_counts_spilled_to_disk_give_the_same_data_set(tmp_path, monkeypatch):
    """count_memory_mb=1 (about 1,100 distinct values per feature held, the rest spilled to
    sorted runs) writes the same data set as counting in memory, and leaves no runs behind."""
    rng = np.random.default_rng(7)
    n = 6000
    lines = []
    for i in range(n):
        dense = "\t".join(str(int(x)) for x in rng.integers(0, 50, 13))
        # wide and narrow features: up to ~6,000 distinct values, some repeated
        cats = "\t".join(f"{int(rng.integers(0, 2**32 if k % 2 else 3000)):08x}" for k in range(26))
        lines.append(f"{i % 4 == 0:d}\t{dense}\t{cats}\n")
    raw = tmp_path / "train.tsv"
    raw.write_text("".join(lines))
    kw = {"chunk_mb": 64 * 1024 / 2**20, "frequency_threshold": 2}
    spills = []
    real_spill = ValueCounter._spill
    monkeypatch.setattr(ValueCounter, "_spill", lambda self: (spills.append(1), real_spill(self)))
    run(raw, tmp_path / "budget", count_memory_mb=1, **kw)
    assert len(spills) >= 13  # every wide feature spilled at least once
    run(raw, tmp_path / "memory", **kw)
    _same(tmp_path / "budget", tmp_path / "memory")
    assert not (tmp_path / "budget" / pipeline.COUNT_SPILL).exists()
