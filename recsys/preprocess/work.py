"""What a worker process does with one chunk: count its values, or convert and write it.

Each converted chunk becomes one Parquet part per split it touches
(`<split>/part-<source>-<chunk>.parquet`), a rejects file when it had bad lines, and last a
marker `_chunks/<source>-<chunk>.json` holding its counts: a chunk with a marker is finished, so a
resumed run skips it. Parts are written under a temporary name and renamed, so a killed worker
leaves no half part behind a marker.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.schema import ROW_GROUP_ROWS
from recsys.preprocess.errors import PreprocessError
from recsys.preprocess.parse import (
    DENSE_NAMES,
    SPARSE_NAMES,
    ParsedBlock,
    parse_chunk,
    parse_file_range,
)
from recsys.preprocess.sources import Chunk, Source, iter_chunks
from recsys.preprocess.splits import SPLITS, TRAIN, SplitPlan
from recsys.preprocess.transform import CategoricalMap, dense_transform
from recsys.preprocess.vocab import MISSING_ID, chunk_inverse, load_vocabularies
from recsys.utils.allocator import retain_freed_memory
from recsys.utils.atomic import atomic_write_json

MARKERS = "_chunks"
REJECTS = "rejects"
STASH = "_stash"


@dataclass
class WorkerContext:
    """Everything a worker needs, sent once when the pool starts."""

    staging: str
    sources: list[str]
    plan: SplitPlan
    labelled: bool
    mode: str = "hash"
    ranges: list[int] | None = None
    vocab_dir: str | None = None
    negative_sample_rate: float = 1.0
    seed: int = 0
    compression: str = "snappy"
    stamps: list[tuple[int, float]] | None = None  # (size, mtime) of each source at the start


_ctx: WorkerContext | None = None
_cmap: tuple[str | None, CategoricalMap] | None = None  # (vocab_dir, its map)


def init_worker(ctx: WorkerContext | None = None) -> None:
    """Pool initializer: memory and Arrow settings; keep the context when given (passes may also
    send it with each chunk: the pool starts before the split plan is known)."""
    global _ctx
    _keep_freed_memory()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    if ctx is not None:
        _ctx = ctx


def warm_up() -> None:
    """A no-op task: submitting one per worker starts the processes (imports) early."""


def _use(ctx: WorkerContext | None) -> WorkerContext:
    global _ctx
    if ctx is not None:
        _ctx = ctx
    return _ctx


def _categorical_map(vocab_dir: str | None) -> CategoricalMap:
    """The id map, built once per worker (vocab mode: the vocabularies of `vocab_dir`, known
    only after the counting pass that ran on the same pool)."""
    global _cmap
    if _cmap is None or _cmap[0] != vocab_dir:
        vocabs = load_vocabularies(Path(vocab_dir), SPARSE_NAMES) if vocab_dir else None
        _cmap = (vocab_dir, CategoricalMap(_ctx.mode, _ctx.ranges or [], vocabs))
    return _cmap[1]


def _keep_freed_memory() -> None:
    """Let glibc reuse freed memory for the next chunk instead of returning it to the kernel.

    A chunk allocates the same large arrays (MBs to tens of MBs) again and again; by default each
    is a fresh mmap that is page-faulted in and zeroed by the kernel every time (a third of the
    worker's CPU time went there). Memory stays bounded by one chunk's working set. Not glibc:
    the defaults stay.
    """
    retain_freed_memory(top_pad_bytes=64 << 20)


def marker_name(source: int, index: int) -> str:
    return f"{source:03d}-{index:05d}"


def _parse(chunk: Chunk, ctx: WorkerContext) -> ParsedBlock:
    if chunk.data or chunk.offset < 0:
        return parse_chunk(chunk.data, chunk.first_line, ctx.labelled)
    path = ctx.sources[chunk.source]
    stamp = ctx.stamps[chunk.source] if ctx.stamps else None
    return parse_file_range(path, chunk.offset, chunk.size, chunk.first_line, ctx.labelled,
                            chunk.lines, stamp)  # fmt: skip


class Stash:
    """One chunk as the counting pass parsed it, kept for the conversion pass (vocab mode), so
    each training row is parsed once: `_stash/<chunk>.npy`, the arrays one after another in .npy
    format, written under a temporary name and renamed (a killed run leaves whole stashes only).

    Per row: label (int8), the transformed dense values (13 float32, NaN = missing) and per
    feature the index of the row's value among the chunk's distinct values (`vocab.chunk_inverse`,
    uint16 when the chunk has <= 65536 distinct values of the feature, else uint32): 105-157
    bytes a row (the benchmark file: ~114), against ~245 bytes of text. Per feature and chunk:
    the distinct values and their counts over the chunk's training rows (so a resumed counting
    pass reads them back).
    Line numbers are stored only when not consecutive (a chunk with rejected lines).
    """

    def __init__(self, meta: dict, label: np.ndarray, dense: np.ndarray,
                 lines: np.ndarray | None, keys: list[np.ndarray], counts: list[np.ndarray],
                 inverse: list[np.ndarray]) -> None:  # fmt: skip
        self.meta, self.label, self.dense = meta, label, dense
        self.keys, self.counts, self.inverse = keys, counts, inverse
        n = len(label)
        self.lines = lines if lines is not None else np.arange(
            meta["first_line"], meta["first_line"] + n, dtype=np.int64
        )  # fmt: skip
        self._stored_lines = lines is not None

    @classmethod
    def from_block(cls, block: ParsedBlock, train: np.ndarray, first_line: int) -> Stash:
        keys, counts, inverse = [], [], []
        all_train = bool(train.all())
        for f in range(len(SPARSE_NAMES)):
            k, c, inv = chunk_inverse(block.cats[f], block.cat_missing[f])
            if not all_train:  # count the training rows only
                c = np.bincount(inv[train], minlength=len(k) + 1)[: len(k)].astype(np.uint32)
            keys.append(k)
            counts.append(c)
            inverse.append(inv)
        dense = dense_transform(block.dense)
        dense[block.dense_missing] = np.nan
        contiguous = block.rows == 0 or (
            block.lines[0] == first_line and block.lines[-1] == first_line + block.rows - 1
        )  # fmt: skip
        meta = {"first_line": int(block.lines[0]) if block.rows else first_line,
                "train_rows": int(train.sum()), **_parse_stats(block)}  # fmt: skip
        lines = None if contiguous else block.lines
        return cls(meta, block.label, dense, lines, keys, counts, inverse)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        meta = dict(self.meta, stored_lines=self._stored_lines)
        with open(tmp, "wb") as f:
            np.save(f, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
            for a in (self.label, self.dense, *self.keys, *self.counts, *self.inverse):
                np.save(f, np.ascontiguousarray(a))
            if self._stored_lines:
                np.save(f, self.lines)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Stash:
        n = len(SPARSE_NAMES)
        with open(path, "rb") as f:
            meta = json.loads(np.load(f).tobytes())
            label, dense = np.load(f), np.load(f)
            arrays = [np.load(f) for _ in range(3 * n)]
            lines = np.load(f) if meta.pop("stored_lines") else None
        return cls(meta, label, dense, lines, arrays[:n], arrays[n : 2 * n], arrays[2 * n :])

    def count_result(self) -> dict:
        """What the counting pass reports for this chunk (values seen in training rows)."""
        counts = []
        for k, c in zip(self.keys, self.counts, strict=True):
            seen = c > 0
            counts.append((k, c) if seen.all() else (k[seen], c[seen]))
        return {
            "rows": self.meta["train_rows"], "rows_in": self.meta["rows_in"],
            "rejected": sum(self.meta["rejected"].values()), "counts": counts,
        }  # fmt: skip


def _parse_stats(block: ParsedBlock) -> dict:
    """Rows read, repaired and rejected (per reason) by the parse of one chunk."""
    return {"rows_in": block.rows_in, "repaired": block.repaired,
            "rejected": _count(reason for _, reason, _ in block.rejects)}  # fmt: skip


def stash_path(staging: Path, chunk: Chunk) -> Path:
    return staging / STASH / f"{marker_name(chunk.source, chunk.index)}.npy"


def count_chunk(chunk: Chunk, ctx: WorkerContext | None = None) -> dict:
    """Counting pass (vocab mode): value counts of the chunk's valid training rows, per feature.
    The parsed chunk is kept as a `Stash` for the conversion pass; a chunk whose stash exists
    (a resumed run) is not parsed again."""
    ctx = _use(ctx)
    staging = Path(ctx.staging)
    path = stash_path(staging, chunk)
    if path.is_file():
        return Stash.load(path).count_result()
    block = _parse(chunk, ctx)
    if block.rejects:
        name = marker_name(chunk.source, chunk.index)
        _write_rejects(staging / REJECTS / f"part-{name}.jsonl", ctx.sources[chunk.source], block)
    train = ctx.plan.assign(chunk.source, block.lines) == TRAIN
    stash = Stash.from_block(block, train, chunk.first_line)
    stash.save(path)
    return stash.count_result()


def convert_chunk(
    chunk: Chunk, vocab_dir: str | None = None, ctx: WorkerContext | None = None
) -> dict:
    """Transform pass: parse (or read the counting pass's stash), split, down-sample,
    transform, write; return the chunk's counts."""
    ctx = _use(ctx)
    cmap = _categorical_map(vocab_dir or ctx.vocab_dir)
    staging = Path(ctx.staging)
    name = marker_name(chunk.source, chunk.index)
    stash_file = stash_path(staging, chunk)
    stash, block = (Stash.load(stash_file), None) if stash_file.is_file() else (None, None)
    if stash is not None:
        lines, label = stash.lines, stash.label
        stats = {k: stash.meta[k] for k in ("rows_in", "rejected", "repaired")}
    else:
        if not chunk.data and chunk.offset < 0:  # sent without its text: it had a stash
            raise PreprocessError(f"{stash_file}: missing; rerun with data.preprocess.resume=false")
        block = _parse(chunk, ctx)
        lines, label = block.lines, block.label
        stats = _parse_stats(block)
        if block.rejects:
            source = ctx.sources[chunk.source]
            _write_rejects(staging / REJECTS / f"part-{name}.jsonl", source, block)
    split = ctx.plan.assign(chunk.source, lines)
    keep = _downsample(label, split, chunk)
    stats["downsampled"] = int(len(label) - np.count_nonzero(keep))
    keep = None if stats["downsampled"] == 0 else keep
    if keep is not None:
        split = split[keep]
    if stash is not None:
        label, dense, dense_missing, ids = _stash_rows(stash, keep, cmap)
    else:
        label, dense, dense_missing, ids = _block_rows(block, keep, cmap)
    stats["missing"] = dict(zip(DENSE_NAMES, dense_missing.tolist(), strict=True))
    for f, feature in enumerate(SPARSE_NAMES):
        stats["missing"][feature] = int(np.count_nonzero(ids[f] == MISSING_ID))
    stats["splits"] = {}
    for code, split_name in enumerate(SPLITS):
        rows = split == code
        if not rows.any():
            continue
        if rows.all():
            part = (label, dense, ids)
        else:
            part = (label[rows], dense[:, rows], [i[rows] for i in ids])
        rel = f"{split_name}/part-{name}.parquet"
        _write_part(staging / rel, *part, compression=ctx.compression)
        stats["splits"][split_name] = {
            "file": rel, "rows": len(part[0]), "positives": int(part[0].sum(dtype=np.int64)),
        }  # fmt: skip
    atomic_write_json(staging / MARKERS / f"{name}.json", stats)
    stash_file.unlink(missing_ok=True)  # converted (its marker says so): the stash is done
    return stats


def convert_source(
    source: int, skip: frozenset[str], chunk_bytes: int, vocab_dir: str | None = None,
    ctx: WorkerContext | None = None,
) -> dict:  # fmt: skip
    """A whole (gzip) source in this worker: read and cut it as the main process would, convert
    every chunk without a marker in `skip`; its line count, CRC32 and the chunks' results."""
    ctx = _use(ctx)
    size, mtime = ctx.stamps[source]
    src = Source(ctx.sources[source], size, mtime)
    results = []
    for chunk in iter_chunks([src], chunk_bytes):
        chunk = replace(chunk, source=source)
        if marker_name(source, chunk.index) not in skip:
            results.append(convert_chunk(chunk, vocab_dir, ctx))
    return {"lines": src.lines, "crc32": src.crc32, "chunks": results}


def _block_rows(
    block: ParsedBlock, keep: np.ndarray | None, cmap: CategoricalMap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(label, transformed dense, missing count per dense column, ids per feature) of the
    parsed rows where `keep` holds (all when None)."""
    if keep is not None:
        block = block.take(keep)
    ids = [cmap.apply(f, block.cats[f], block.cat_missing[f]) for f in range(len(SPARSE_NAMES))]
    return block.label, dense_transform(block.dense), block.dense_missing.sum(axis=1), ids


def _stash_rows(
    stash: Stash, keep: np.ndarray | None, cmap: CategoricalMap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """`_block_rows` from a stash. Ids: only the chunk's distinct values are looked up; every
    row then takes its id from that small table."""
    label, dense = stash.label, stash.dense
    inverse = stash.inverse
    if keep is not None:
        label, dense = label[keep], dense[:, keep]
        inverse = [inv[keep] for inv in inverse]
    missing = np.isnan(dense)
    dense_missing = missing.sum(axis=1)
    dense[missing] = 0.0
    ids = []
    for f, (keys, inv) in enumerate(zip(stash.keys, inverse, strict=True)):
        table = np.empty(len(keys) + 1, dtype=np.int64)
        table[:-1] = cmap.ids(f, keys, ascending=True)
        table[-1] = MISSING_ID
        ids.append(table[inv])
    return label, dense, dense_missing, ids


def _downsample(label: np.ndarray, split: np.ndarray, chunk: Chunk) -> np.ndarray:
    """Keep every row but a (1 - rate) share of training negatives, seeded per chunk."""
    keep = np.ones(len(label), dtype=bool)
    rate = _ctx.negative_sample_rate
    if rate < 1.0:
        rng = np.random.default_rng([_ctx.seed, chunk.source, chunk.index])
        drop = (split == TRAIN) & (label == 0) & (rng.random(len(label)) >= rate)
        keep &= ~drop
    return keep


def _write_part(
    path: Path, label: np.ndarray, dense: np.ndarray, ids: list[np.ndarray], compression: str
) -> None:
    """One Parquet part: label int8, dense float32 (already transformed), ids int64."""
    cols = [_arrow(label, np.int8)]
    cols += [_arrow(dense[j], np.float32) for j in range(len(DENSE_NAMES))]
    cols += [_arrow(col, np.int64) for col in ids]
    table = pa.Table.from_arrays(cols, names=["label", *DENSE_NAMES, *SPARSE_NAMES])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, use_dictionary=False,
                   compression=compression)  # fmt: skip
    os.replace(tmp, path)


def _arrow(values: np.ndarray, dtype: type) -> pa.Array:
    """A numpy column as an Arrow array, without a copy when it is contiguous and of `dtype`.
    (`pa.array` on numpy input imports pandas to rule out a pandas Series: ~0.4 CPU-s once per
    worker process.)"""
    values = np.ascontiguousarray(values, dtype=dtype)
    typ = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(values)])


def _write_rejects(path: Path, source: str, block: ParsedBlock) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"file": source, "line": line, "reason": reason,
                    "text": text.decode("utf-8", "backslashreplace")})
        for line, reason, text in block.rejects
    ]  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
