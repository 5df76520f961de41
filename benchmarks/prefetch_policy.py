"""The lookups' prefetch policy, measured: batched multi-table calls with the default plan (the
call's tables together decide between the L1 and the far L2 prefetch, and a call on one thread
takes the far one from twice the L2 on) against every table forced to L1 (`near`) and every
table forced to L2 (`far`), in the same process, interleaved round after round on fresh ids,
like benchmarks/embedding_bag.py.

Run: `.venv/bin/python -m benchmarks.prefetch_policy [--reps 15]`
-> a table on stdout and `benchmarks/results/prefetch_policy.json`.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks import embedding_bag as eb
from benchmarks.machine import machine_info
from kernels import ops
from recsys.utils.atomic import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
NEVER = 1 << 62  # a far size no call reaches: every table prefetched into L1

# (tables as (rows, count) groups, dim, pooling, threads): calls whose tables are each below
# the far size but together beyond the caches, and a Criteo-like mix of sizes.
CONFIGS = [
    (((100_000, 4), (1_000_000, 4)), 64, 20, 1),
    (((1_000_000, 8),), 64, 20, 1),
    (((1_000_000, 8),), 64, 20, 2),
    (((10_000_000, 1), (1_000_000, 2), (100_000, 4), (1_000, 8)), 16, 1, 1),
    (((10_000_000, 1), (1_000_000, 2), (100_000, 4), (1_000, 8)), 64, 20, 1),
    (((100_000, 8),), 128, 100, 1),
]


def far_setting() -> tuple[int, int, int]:
    """The current far prefetch (distance, min_table_bytes, min_table_bytes on one thread), read
    by setting it back."""
    current = ops.set_far_prefetch(64, NEVER)
    ops.set_far_prefetch(*current)
    one_thread = ops.set_far_prefetch_one_thread(NEVER)
    ops.set_far_prefetch_one_thread(one_thread)
    return (*current, one_thread)


def apply(setting: tuple[int, int, int]) -> None:
    """Sets the far prefetch as far_setting reads it."""
    ops.set_far_prefetch(setting[0], setting[1])
    ops.set_far_prefetch_one_thread(setting[2])


def bench_policy(groups: tuple[tuple[int, int], ...], dim: int, pool: int, threads: int,
                 reps: int) -> dict:  # fmt: skip
    """M ids/s of one batched int8 call under the default, near and far plans."""
    torch.set_num_threads(threads)
    sizes = [rows for rows, count in groups for _ in range(count)]
    tables = [eb.packed_table(rows, dim, "int8", 10 + t) for t, rows in enumerate(sizes)]
    n_bag = eb.BATCH * pool
    n = len(sizes) * n_bag
    offsets = torch.arange(0, n + 1, pool)
    default = far_setting()
    settings = {"near": (default[0], NEVER, NEVER), "far": (default[0], 0, 0)}
    for name, setting in settings.items():
        eb.SWITCHED[name] = lambda on, s=setting: apply(s if on else default)

    def call(idx: torch.Tensor) -> torch.Tensor:
        return ops.embedding_bags(tables, [dim] * len(tables), idx, offsets)

    cases = {"default": call, "near": call, "far": call}
    n_sets = eb.sets_needed(len(cases), reps, 1) + 1
    per_table = [eb.ids(rows, n_bag, "uniform", 11 + t, sets=n_sets)
                 for t, rows in enumerate(sizes)]  # fmt: skip
    id_sets = list(torch.cat(per_table, dim=1))
    before = eb.other_lookup(id_sets.pop()[:n_bag], torch.arange(0, n_bag + 1, pool))
    try:
        times = eb.interleaved(cases, reps, id_sets, before)
    finally:
        apply(default)
        for name in settings:
            del eb.SWITCHED[name]
    base = times["default"]
    row = {"tables": [list(g) for g in groups], "dim": dim, "pool": pool, "threads": threads,
           "table_mb": round(sum(t.numel() for t in tables) / 1e6, 1)}  # fmt: skip
    for name, ts in times.items():
        row[f"{name} mids_per_s"] = round(n / statistics.median(ts) / 1e6, 2)
        if name != "default":  # median of per-round ratios
            row[f"default / {name}"] = round(
                statistics.median(t / b for t, b in zip(ts, base, strict=True)), 3
            )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    default = far_setting()
    print(
        f"far size {default[1] / 1e6:.0f} MB (on one thread {default[2] / 1e6:.1f} MB), "
        f"far distance {default[0]}"
    )
    print("| tables (rows x count) | dim | pool | threads | MB | default | near | far | "
          "default / near | default / far |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for groups, dim, pool, threads in CONFIGS:
        r = bench_policy(groups, dim, pool, threads, args.reps)
        rows.append(r)
        spec = " + ".join(f"{rows_}x{count}" for rows_, count in groups)
        print(f"| {spec} | {dim} | {pool} | {threads} | {r['table_mb']} | "
              f"{r['default mids_per_s']} | {r['near mids_per_s']} | {r['far mids_per_s']} | "
              f"{r['default / near']} | {r['default / far']} |", flush=True)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "prefetch_policy.json"
    atomic_write_json(out, {"machine": machine_info(0), "far_bytes": default[1],
                            "far_bytes_one_thread": default[2], "far_distance": default[0],
                            "rows": rows})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
