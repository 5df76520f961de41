"""What a worker process does with one chunk: count its values, or convert and write it.

Each converted chunk becomes one Parquet part per split it touches
(`<split>/part-<source>-<chunk>.parquet`), a rejects file when it had bad lines, and last a
marker `_chunks/<source>-<chunk>.json` holding its counts: a chunk with a marker is finished, so a
resumed run skips it. Parts are written under a temporary name and renamed, so a killed worker
leaves no half part behind a marker.
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.schema import ROW_GROUP_ROWS
from recsys.preprocess.parse import (
    DENSE_NAMES,
    SPARSE_NAMES,
    ParsedBlock,
    parse_chunk,
    parse_file_range,
)
from recsys.preprocess.sources import Chunk
from recsys.preprocess.splits import SPLITS, TRAIN, SplitPlan
from recsys.preprocess.transform import CategoricalMap, dense_transform
from recsys.preprocess.vocab import chunk_counts, load_vocabularies
from recsys.utils.atomic import atomic_write_json

MARKERS = "_chunks"
REJECTS = "rejects"


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
    worker's CPU time went there). Memory stays bounded by one chunk's working set.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD (glibc caps it at 32 MiB on 64-bit)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 64 << 20)  # M_TOP_PAD
    except (OSError, AttributeError):  # not glibc: keep the defaults
        pass


def marker_name(source: int, index: int) -> str:
    return f"{source:03d}-{index:05d}"


def _parse(chunk: Chunk, ctx: WorkerContext) -> ParsedBlock:
    if chunk.data or chunk.offset < 0:
        return parse_chunk(chunk.data, chunk.first_line, ctx.labelled)
    path = ctx.sources[chunk.source]
    return parse_file_range(path, chunk.offset, chunk.size, chunk.first_line, ctx.labelled)


def count_chunk(chunk: Chunk, ctx: WorkerContext | None = None) -> dict:
    """Counting pass: value counts of the chunk's valid training rows, per feature."""
    ctx = _use(ctx)
    block = _parse(chunk, ctx)
    train = ctx.plan.assign(chunk.source, block.lines) == TRAIN
    if not train.all():
        block = block.take(train)
    counts = [chunk_counts(block.cats[f], block.cat_missing[f]) for f in range(len(SPARSE_NAMES))]
    return {
        "rows": block.rows,
        "rows_in": block.rows_in,
        "rejected": len(block.rejects),
        "counts": counts,
    }


def convert_chunk(
    chunk: Chunk, vocab_dir: str | None = None, ctx: WorkerContext | None = None
) -> dict:
    """Transform pass: parse, split, down-sample, transform, write; return the chunk's counts."""
    ctx = _use(ctx)
    cmap = _categorical_map(vocab_dir or ctx.vocab_dir)
    staging = Path(ctx.staging)
    name = marker_name(chunk.source, chunk.index)
    block = _parse(chunk, ctx)
    stats = {
        "rows_in": block.rows_in,
        "rejected": _count(reason for _, reason, _ in block.rejects),
        "repaired": block.repaired,
        "splits": {},
        "missing": {},
    }
    if block.rejects:
        _write_rejects(staging / REJECTS / f"part-{name}.jsonl", ctx.sources[chunk.source], block)
    split = ctx.plan.assign(chunk.source, block.lines)
    keep = _downsample(block, split, chunk)
    stats["downsampled"] = int(block.rows - keep.sum())
    if not keep.all():
        block, split = block.take(keep), split[keep]
    stats["missing"] = dict(zip(DENSE_NAMES, block.dense_missing.sum(axis=1).tolist(), strict=True))
    stats["missing"].update(zip(SPARSE_NAMES, block.cat_missing.sum(axis=1).tolist(), strict=True))
    for code, split_name in enumerate(SPLITS):
        rows = split == code
        if rows.any():
            part = block if rows.all() else block.take(rows)
            rel = f"{split_name}/part-{name}.parquet"
            _write_part(staging / rel, part, cmap)
            stats["splits"][split_name] = {
                "file": rel, "rows": part.rows, "positives": int(part.label.sum(dtype=np.int64)),
            }  # fmt: skip
    atomic_write_json(staging / MARKERS / f"{name}.json", stats)
    return stats


def _downsample(block: ParsedBlock, split: np.ndarray, chunk: Chunk) -> np.ndarray:
    """Keep every row but a (1 - rate) share of training negatives, seeded per chunk."""
    keep = np.ones(block.rows, dtype=bool)
    rate = _ctx.negative_sample_rate
    if rate < 1.0:
        rng = np.random.default_rng([_ctx.seed, chunk.source, chunk.index])
        drop = (split == TRAIN) & (block.label == 0) & (rng.random(block.rows) >= rate)
        keep &= ~drop
    return keep


def _write_part(path: Path, block: ParsedBlock, cmap: CategoricalMap) -> None:
    cols: dict[str, pa.Array] = {"label": pa.array(block.label, pa.int8())}
    dense = dense_transform(block.dense)
    for j, name in enumerate(DENSE_NAMES):
        cols[name] = pa.array(dense[j])
    for f, name in enumerate(SPARSE_NAMES):
        cols[name] = pa.array(cmap.apply(f, block.cats[f], block.cat_missing[f]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(cols), tmp, row_group_size=ROW_GROUP_ROWS, use_dictionary=False)
    os.replace(tmp, path)


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
