"""recsys-preprocess end to end: raw Criteo files -> a Parquet data set plus its manifest.

Passes: (1) line counts where the split needs them (Kaggle: all rows; 1TB: the last day), a
C-speed read; (2) vocabulary mode only: count the training rows' values; (3) convert. Passes 2
and 3 stream chunks to a pool of worker processes (bounded: at most workers + 1 chunks in
flight). Everything is written into `.<name>.staging` beside the target; the manifest is written
last and the directory renamed into place. A killed run resumes: finished chunks (those with a
marker) are skipped as long as the inputs and settings are unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from recsys.config import PreprocessConfig
from recsys.data.features import DatasetManifest
from recsys.preprocess import work
from recsys.preprocess.errors import PreprocessError
from recsys.preprocess.parse import SPARSE_NAMES
from recsys.preprocess.sources import Chunk, Source, iter_chunks, resolve_sources, scan_plain
from recsys.preprocess.splits import SplitPlan, kaggle_plan, terabyte_plan, unlabelled_plan
from recsys.preprocess.totals import (
    RunTotals,
    build_manifest,
    check_bad_fraction,
    check_balance,
)  # fmt: skip
from recsys.preprocess.transform import CategoricalMap
from recsys.preprocess.vocab import ValueCounter, load_vocabularies, save_vocabularies
from recsys.utils.atomic import atomic_write_json, replace_directory

log = logging.getLogger("recsys.preprocess")

LAYOUTS = ("kaggle", "1tb")
MODES = ("vocab", "hash")
CODECS = ("snappy", "lz4", "zstd", "none")
RUN_FILE = "_run.json"
COUNT_SPILL = "_counts"  # vocab mode: value counts spilled to disk (removed once counted)
LINES_FILE = "_lines.json"
EARLY_ABORT_ROWS = 1_000_000


def preprocess(name: str, out_dir: Path, raw: str | None, cfg: PreprocessConfig) -> DatasetManifest:
    """Convert `raw` into the data set `name` at `out_dir`; return its manifest."""
    _validate(cfg)
    sources = resolve_sources(raw)
    staging = out_dir.parent / f".{out_dir.name}.staging"
    _open_staging(staging, _fingerprint(cfg, sources), cfg.resume)
    workers = cfg.workers or os.cpu_count() or 1
    start = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with Arrow threads
    # One pool for all passes. Its processes start (imports) while the main process counts
    # lines; the context, known only after that, goes with each chunk.
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=work.init_worker) as pool:
        for _ in range(workers):
            pool.submit(work.warm_up)
        ctx = work.WorkerContext(str(staging), [s.path for s in sources], None, cfg.labelled,
                                 cfg.categorical, ranges(cfg), None, cfg.negative_sample_rate,
                                 cfg.seed, cfg.compression,
                                 [(s.size, s.mtime) for s in sources])  # fmt: skip
        early = _EarlyStart.create(cfg, staging, ctx, pool, workers)
        ctx.plan = plan = _split_plan(cfg, sources, staging, early)
        if cfg.categorical == "vocab":
            ctx.vocab_dir = str(_vocabularies(cfg, sources, staging, ctx, pool, workers, early))
        vocabs = load_vocabularies(Path(ctx.vocab_dir), SPARSE_NAMES) if ctx.vocab_dir else None
        sizes = CategoricalMap(cfg.categorical, ctx.ranges, vocabs).table_sizes()
        totals = _convert(cfg, sources, staging, ctx, pool, workers, early)
    check_balance(totals)
    check_bad_fraction(totals.rows_in, totals.rejected_total, cfg.max_bad_fraction,
                       str(staging / work.REJECTS))  # fmt: skip
    manifest = build_manifest(name, totals, sizes, cfg.negative_sample_rate,
                              [asdict(s) for s in sources], _transform(cfg, plan))  # fmt: skip
    if ctx.vocab_dir and Path(ctx.vocab_dir).parent != staging:
        shutil.copytree(ctx.vocab_dir, staging / "vocab", dirs_exist_ok=True)
    for f in (RUN_FILE, LINES_FILE):
        (staging / f).unlink(missing_ok=True)
    shutil.rmtree(staging / work.MARKERS, ignore_errors=True)
    shutil.rmtree(staging / work.STASH, ignore_errors=True)
    manifest.save(staging)
    _publish(staging, out_dir)
    summary = totals.summary()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    log.info("wrote %s: %s", out_dir, json.dumps(summary))
    return manifest


def ranges(cfg: PreprocessConfig) -> list[int]:
    """Hash-mode range of every sparse feature (global, or its per-feature override)."""
    unknown = set(cfg.max_ind_range_per_feature) - set(SPARSE_NAMES)
    if unknown:
        raise PreprocessError(f"max_ind_range_per_feature: unknown features {sorted(unknown)}")
    out = [int(cfg.max_ind_range_per_feature.get(n, cfg.max_ind_range)) for n in SPARSE_NAMES]
    if min(out) < 1:
        raise PreprocessError("max_ind_range must be >= 1")
    return out


def _validate(cfg: PreprocessConfig) -> None:
    if cfg.layout not in LAYOUTS:
        raise PreprocessError(
            f"data.preprocess.layout must be one of {LAYOUTS}, got {cfg.layout!r}"
        )
    if cfg.categorical not in MODES:
        raise PreprocessError(
            f"data.preprocess.categorical must be one of {MODES}, got {cfg.categorical!r}"
        )
    if cfg.compression not in CODECS:
        raise PreprocessError(
            f"data.preprocess.compression must be one of {CODECS}, got {cfg.compression!r}"
        )
    if not 0.0 < cfg.negative_sample_rate <= 1.0:
        raise PreprocessError("data.preprocess.negative_sample_rate must be in (0, 1]")
    if cfg.count_memory_mb < 1:
        raise PreprocessError(
            f"data.preprocess.count_memory_mb must be >= 1, got {cfg.count_memory_mb}"
        )
    if cfg.categorical == "vocab" and not cfg.labelled and not cfg.vocab_from:
        raise PreprocessError(
            "unlabelled input in vocab mode needs data.preprocess.vocab_from=<a preprocessed "
            "training data set> (its vocabulary maps the ids), or categorical=hash"
        )


def _fingerprint(cfg: PreprocessConfig, sources: list[Source]) -> dict:
    """What must match for a staging directory to be resumed."""
    settings = asdict(replace(cfg, workers=0, max_bad_fraction=0.0, resume=True, progress=True,
                              count_memory_mb=0))  # fmt: skip
    return {"settings": settings, "sources": [[s.path, s.size, s.mtime] for s in sources]}


def _open_staging(staging: Path, fingerprint: dict, resume: bool) -> None:
    run_file = staging / RUN_FILE
    if staging.exists():
        same = run_file.is_file() and json.loads(run_file.read_text()) == fingerprint
        if resume and same:
            done = len(list((staging / work.MARKERS).glob("*.json")))
            log.info("resuming %s: %d chunks already converted", staging, done)
            return
        log.info("discarding %s (inputs or settings changed, or resume=false)", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    atomic_write_json(run_file, fingerprint)


def _split_plan(
    cfg: PreprocessConfig, sources: list[Source], staging: Path, early: _EarlyStart | None = None
) -> SplitPlan:
    """The split plan; the line count it needs also records each plain source's chunk layout
    (so later passes let workers read their chunks themselves) and its CRC32. Chunks certainly
    in the training split are started on the workers (`early`) while the count goes on."""
    if not cfg.labelled:
        return unlabelled_plan(len(sources))
    needed = sources if cfg.layout == "kaggle" else sources[-1:]
    lines_file = staging / LINES_FILE
    cached = json.loads(lines_file.read_text()) if lines_file.is_file() else {}
    cached = {k: v for k, v in cached.items() if isinstance(v, dict)}  # older format: recount
    todo = [s for s in needed if s.path not in cached]
    if early is not None and (cfg.layout != "kaggle" or len(todo) != len(sources)):
        early = None  # only for a fresh Kaggle count (global line numbers known as it goes)
    if todo:
        chunk_bytes = int(cfg.chunk_mb * (1 << 20))
        total = sum(s.size for s in todo)
        with tqdm(total=total, desc="counting lines", unit="B", unit_scale=True,
                  disable=not cfg.progress, mininterval=1.0) as bar:  # fmt: skip
            for i, s in enumerate(todo):
                if early is not None:
                    early.begin_source(i)
                if s.gzip:
                    for _ in iter_chunks([s], chunk_bytes, bar.update):
                        pass
                    layout = None
                else:
                    on_chunk = functools.partial(early.cut, i) if early is not None else None
                    layout = scan_plain(s, chunk_bytes, bar.update, on_chunk)
                if early is not None:
                    early.end_source(s.lines)
                cached[s.path] = {"lines": s.lines, "crc32": s.crc32, "chunks": layout}
        atomic_write_json(lines_file, cached)
    for s in sources:
        if s.path in cached:
            s.lines, s.crc32 = cached[s.path]["lines"], cached[s.path]["crc32"]
    if cfg.layout == "kaggle":
        return kaggle_plan([cached[s.path]["lines"] for s in sources])
    return terabyte_plan(len(sources), cached[sources[-1].path]["lines"])


class _EarlyStart:
    """Work started during the Kaggle line count. Nothing can be split before the total is
    known, but a row whose global index is below the training rows of the lines counted so far
    (train grows with the total) is certainly a training row. So a chunk all of whose rows are
    below that bound goes to a worker at once, for the first pass (hash: conversion; vocab:
    counting), with a provisional plan that calls every row of it train: the workers, idle
    during the count, start converting 1/6 of the file after it. At most workers + 1 chunks are
    queued so; the rest wait for the pass. The pass then skips the started chunks and collects
    their results (`futures`, `names`)."""

    def __init__(self, fn: Callable, ctx: work.WorkerContext, pool: ProcessPoolExecutor,
                 workers: int, skip: set[str]) -> None:  # fmt: skip
        self.fn, self.ctx, self.pool, self.workers, self.skip = fn, ctx, pool, workers, skip
        self.offsets: list[int] = []  # lines before each source
        self.counted = 0
        self.waiting: list[tuple[Chunk, int]] = []  # (chunk, global end line), in order
        self.futures: dict[Future, None] = {}
        self.names: set[str] = set()
        self.closed = False

    @classmethod
    def create(cls, cfg: PreprocessConfig, staging: Path, ctx: work.WorkerContext,
               pool: ProcessPoolExecutor, workers: int) -> _EarlyStart | None:  # fmt: skip
        if cfg.layout != "kaggle" or not cfg.labelled:
            return None
        if cfg.categorical == "hash":
            convert = functools.partial(work.convert_chunk, vocab_dir=None)
            done = {p.stem for p in (staging / work.MARKERS).glob("*.json")}
            return cls(convert, ctx, pool, workers, done)
        if cfg.vocab_from or load_vocabularies(staging / "vocab", SPARSE_NAMES) is not None:
            return None  # no counting pass
        return cls(work.count_chunk, ctx, pool, workers, set())

    def begin_source(self, source: int) -> None:
        self.offsets.append(self.counted)

    def end_source(self, lines: int) -> None:
        self.counted = self.offsets[-1] + lines

    def cut(self, source: int, index: int, entry: list[int], lines: int) -> None:
        offset, first_line, size = entry
        chunk = Chunk(source, index, first_line, offset=offset, size=size, lines=lines)
        self.counted += lines
        if work.marker_name(source, index) not in self.skip:
            self.waiting.append((chunk, self.offsets[source] + first_line - 1 + lines))
        in_flight = sum(1 for f in self.futures if not f.done())
        bound = kaggle_plan([self.counted]).bounds[0]  # train rows if the input ended here
        while self.waiting and self.waiting[0][1] <= bound and in_flight <= self.workers:
            chunk, _ = self.waiting.pop(0)
            plan = SplitPlan("kaggle", tuple(self.offsets), (bound, bound), len(self.offsets))
            ctx = replace(self.ctx, plan=plan)
            self.futures[self.pool.submit(self.fn, chunk, ctx=ctx)] = None
            self.names.add(work.marker_name(chunk.source, chunk.index))
            in_flight += 1

    def take(self) -> tuple[dict[Future, None], set[str]]:
        """The started work, handed to the pass once (later passes get nothing)."""
        if self.closed:
            return {}, set()
        self.closed = True
        log.debug("%d chunks started during the line count", len(self.names))
        return self.futures, self.names


def _layouts(staging: Path) -> dict[str, list[list[int]]]:
    """Chunk layouts of the plain sources counted by `_split_plan`."""
    lines_file = staging / LINES_FILE
    cached = json.loads(lines_file.read_text()) if lines_file.is_file() else {}
    return {k: v["chunks"] for k, v in cached.items() if isinstance(v, dict) and v["chunks"]}


def _run_pass(
    desc: str, sources: list[Source], cfg: PreprocessConfig, ctx: work.WorkerContext,
    pool: ProcessPoolExecutor, workers: int, fn: Callable[[Chunk], dict],
    on_result: Callable[[dict], int], wanted: Callable[[Chunk], bool],
    needs_text: Callable[[Chunk], bool] = lambda c: True,
    per_file: Callable[[int], dict] | None = None, file_tasks: frozenset[int] = frozenset(),
    started: dict[Future, None] | None = None,
) -> None:  # fmt: skip
    """Stream wanted chunks through `fn` on a worker pool; `on_result` returns rows handled.
    A chunk for which `needs_text` is false (already parsed and stashed) goes without its text.
    Sources in `file_tasks` go to a worker whole (`per_file(source)`: it reads and cuts the
    file itself and returns its chunks' results). `started`: chunks already submitted (during
    the line count), collected here too."""
    total = sum(s.size for s in sources)
    layouts = _layouts(Path(ctx.staging))
    rows, t0 = 0, time.perf_counter()
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not cfg.progress,
              mininterval=1.0) as bar:  # fmt: skip
        pending: dict[Future, int | None] = dict(started or {})  # -> source of a whole-file task

        def collect(futures: set[Future]) -> None:
            nonlocal rows
            for fut in futures:
                whole = pending.pop(fut)
                res = fut.result()
                if whole is None:
                    rows += on_result(res)
                    continue
                sources[whole].lines, sources[whole].crc32 = res["lines"], res["crc32"]
                for stats in res["chunks"]:
                    rows += on_result(stats)
                bar.update(sources[whole].size)
            bar.set_postfix(rows_s=f"{rows / max(time.perf_counter() - t0, 1e-9):,.0f}")

        def submit(task, whole: int | None = None) -> None:
            while len(pending) > workers:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            pending[pool.submit(*task)] = whole

        try:
            chunk_bytes = int(cfg.chunk_mb * (1 << 20))
            for s, source in enumerate(sources):
                if s in file_tasks:
                    submit((per_file, s), s)
                    continue
                for chunk in iter_chunks([source], chunk_bytes, bar.update, layouts):
                    chunk = replace(chunk, source=s)
                    if not wanted(chunk):
                        continue
                    if not needs_text(chunk):
                        chunk = replace(chunk, data=b"", offset=-1, size=0)
                    submit((fn, chunk))
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _vocabularies(
    cfg: PreprocessConfig, sources: list[Source], staging: Path, ctx: work.WorkerContext,
    pool: ProcessPoolExecutor, workers: int, early: _EarlyStart | None = None,
) -> Path:  # fmt: skip
    """Vocabulary directory: reused (vocab_from, or a resumed run), or counted now."""
    if cfg.vocab_from:
        directory = Path(cfg.vocab_from).expanduser() / "vocab"
        if load_vocabularies(directory, SPARSE_NAMES) is None:
            raise PreprocessError(f"vocab_from: no vocabulary at {directory}")
        return directory
    directory = staging / "vocab"
    if load_vocabularies(directory, SPARSE_NAMES) is not None:
        return directory
    # Memory for the counts: ~36 bytes per distinct value held (a merge doubles a table), shared
    # by the 26 features; a feature's counts beyond its share spill to sorted runs on disk.
    spill = staging / COUNT_SPILL
    shutil.rmtree(spill, ignore_errors=True)  # runs of a killed count are not reused
    max_entries = max(1024, cfg.count_memory_mb * (1 << 20) // (36 * len(SPARSE_NAMES)))
    counters = [ValueCounter(spill / name, max_entries) for name in SPARSE_NAMES]
    seen = {"rows_in": 0, "rejected": 0, "rows": 0}

    def on_result(res: dict) -> int:
        for counter, (keys, counts) in zip(counters, res["counts"], strict=True):
            counter.add(keys, counts)
        for k in seen:
            seen[k] += res[k]
        if seen["rows_in"] >= EARLY_ABORT_ROWS:
            check_bad_fraction(seen["rows_in"], seen["rejected"], cfg.max_bad_fraction,
                               "a hash-mode or a verbose run")  # fmt: skip
        return res["rows_in"]

    started, names = early.take() if early is not None else ({}, set())
    count = functools.partial(work.count_chunk, ctx=ctx)
    _run_pass("counting values", sources, cfg, ctx, pool, workers, count, on_result,
              lambda c: ctx.plan.has_train(c.source, c.first_line)
              and work.marker_name(c.source, c.index) not in names,
              started=started)  # fmt: skip
    vocabs = [c.vocabulary(cfg.frequency_threshold) for c in counters]
    info = {
        "frequency_threshold": cfg.frequency_threshold, "train_rows_counted": seen["rows"],
        "distinct": {n: c.distinct for n, c in zip(SPARSE_NAMES, counters, strict=True)},
        "kept": {n: len(v) for n, v in zip(SPARSE_NAMES, vocabs, strict=True)},
    }  # fmt: skip
    save_vocabularies(directory, SPARSE_NAMES, vocabs, info)
    shutil.rmtree(spill, ignore_errors=True)
    return directory


def _convert(
    cfg: PreprocessConfig, sources: list[Source], staging: Path, ctx: work.WorkerContext,
    pool: ProcessPoolExecutor, workers: int, early: _EarlyStart | None = None,
) -> RunTotals:  # fmt: skip
    """The transform pass; chunks finished by an earlier (killed) run are read back, not redone.
    Chunks started during the line count (hash mode) come back through their futures."""
    started, names = early.take() if early is not None else ({}, set())
    totals = RunTotals()
    done = set(names)
    for marker in sorted((staging / work.MARKERS).glob("*.json")):
        if marker.stem not in names:  # (a started chunk's marker may already be there)
            totals.add(json.loads(marker.read_text()))
            done.add(marker.stem)

    def on_result(stats: dict) -> int:
        totals.add(stats)
        if totals.rows_in >= EARLY_ABORT_ROWS:
            check_bad_fraction(totals.rows_in, totals.rejected_total, cfg.max_bad_fraction,
                               str(staging / work.REJECTS))  # fmt: skip
        return stats["rows_in"]

    stashed = {p.stem for p in (staging / work.STASH).glob("*.npy")}
    convert = functools.partial(work.convert_chunk, vocab_dir=ctx.vocab_dir, ctx=ctx)
    # Several gzip files: each goes to a worker whole, which decompresses it itself (one stream
    # per worker instead of every stream through the main process). One gzip file is streamed
    # by the main process in chunks, so that all workers parse it.
    gzipped = [s for s, src in enumerate(sources) if src.gzip]
    file_tasks = frozenset(gzipped if len(gzipped) >= 2 else [])
    per_file = functools.partial(work.convert_source, skip=frozenset(done),
                                 chunk_bytes=int(cfg.chunk_mb * (1 << 20)),
                                 vocab_dir=ctx.vocab_dir, ctx=ctx)  # fmt: skip
    _run_pass("converting", sources, cfg, ctx, pool, workers, convert, on_result,
              lambda c: work.marker_name(c.source, c.index) not in done,
              lambda c: work.marker_name(c.source, c.index) not in stashed,
              per_file, file_tasks, started)  # fmt: skip
    return totals


def _transform(cfg: PreprocessConfig, plan: SplitPlan) -> dict:
    """A description of the transform, stored in the manifest."""
    out = {
        "tool": "recsys-preprocess", "layout": cfg.layout if cfg.labelled else "unlabelled",
        "dense": "missing -> 0, negative -> 0, log(1 + x), float32",
        "categorical": cfg.categorical,
        "ids": "0 = missing, 1 = out of vocabulary, 2.. = values seen >= frequency_threshold "
        "times in train (sorted by value; vocab/C<k>.npy)" if cfg.categorical == "vocab"
        else "0 = missing, 1 + (value mod max_ind_range) otherwise",
        "splits": plan.layout + ": " + str(plan.bounds),
        "negative_sample_rate": cfg.negative_sample_rate,
    }  # fmt: skip
    if cfg.categorical == "vocab":
        out["frequency_threshold"] = cfg.frequency_threshold
        out["vocab_from"] = cfg.vocab_from
    else:
        out["max_ind_range"] = dict(zip(SPARSE_NAMES, ranges(cfg), strict=True))
    return out


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished staging directory into place (replacing an older data set)."""
    replace_directory(staging, target)
