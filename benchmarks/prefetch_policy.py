"""The lookups' prefetch policy, measured: batched multi-table calls with the default plan (the
call's tables together decide: below twice the L2 the near plan, L1; up to the far size the mid
plan, L2 and L1; beyond it the far plan, L2) against every call forced to the near plan
(`near`), to the mid plan (`mid`) and to the far plan (`far`), in the same process, interleaved
round after round on fresh ids, like benchmarks/embedding_bag.py.

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
NEVER = 1 << 62  # a size no call reaches

# (tables as (rows, count) groups, dim, pooling, threads): calls whose tables are each below
# the far size but together beyond the caches, and a Criteo-like mix of sizes.
CONFIGS = [
    (((100_000, 4), (1_000_000, 4)), 64, 20, 1),
    (((1_000_000, 8),), 64, 20, 1),
    (((1_000_000, 8),), 64, 20, 2),
    (((10_000_000, 1), (1_000_000, 2), (100_000, 4), (1_000, 8)), 16, 1, 1),
    (((10_000_000, 1), (1_000_000, 2), (100_000, 4), (1_000, 8)), 64, 20, 1),
    (((100_000, 8),), 128, 100, 1),
    (((100_000, 8),), 128, 100, 2),
    (((300_000, 2),), 64, 20, 2),
]

Setting = tuple[int, int, int, int]  # far distance, far size, mid size, mid near distance


def current_setting() -> Setting:
    """The current far and mid settings, read by setting them back."""
    far = ops.set_far_prefetch(64, NEVER)
    ops.set_far_prefetch(*far)
    mid = ops.set_mid_prefetch(NEVER, 0)
    ops.set_mid_prefetch(*mid)
    return (*far, *mid)


def apply(setting: Setting) -> None:
    """Sets the far and mid settings as current_setting reads them."""
    ops.set_far_prefetch(setting[0], setting[1])
    ops.set_mid_prefetch(setting[2], setting[3])


def bench_policy(groups: tuple[tuple[int, int], ...], dim: int, pool: int, threads: int,
                 reps: int) -> dict:  # fmt: skip
    """M ids/s of one batched int8 call under the default, near, mid and far plans."""
    torch.set_num_threads(threads)
    sizes = [rows for rows, count in groups for _ in range(count)]
    tables = [eb.packed_table(rows, dim, "int8", 10 + t) for t, rows in enumerate(sizes)]
    n_bag = eb.BATCH * pool
    n = len(sizes) * n_bag
    offsets = torch.arange(0, n + 1, pool)
    default = current_setting()
    far, near = default[0], default[3]
    settings = {"near": (far, NEVER, NEVER, near), "mid": (far, NEVER, 0, near),
                "far": (far, 0, 0, near)}  # fmt: skip
    for name, setting in settings.items():
        eb.SWITCHED[name] = lambda on, s=setting: apply(s if on else default)

    def call(idx: torch.Tensor) -> torch.Tensor:
        return ops.embedding_bags(tables, [dim] * len(tables), idx, offsets)

    cases = {"default": call, "near": call, "mid": call, "far": call}
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
    default = current_setting()
    print(
        f"far size {default[1] / 1e6:.0f} MB, far distance {default[0]}, mid size "
        f"{default[2] / 1e6:.1f} MB, mid near distance {default[3]}"
    )
    print("| tables (rows x count) | dim | pool | threads | MB | default | near | mid | far | "
          "default / near | default / mid | default / far |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for groups, dim, pool, threads in CONFIGS:
        r = bench_policy(groups, dim, pool, threads, args.reps)
        rows.append(r)
        spec = " + ".join(f"{rows_}x{count}" for rows_, count in groups)
        print(f"| {spec} | {dim} | {pool} | {threads} | {r['table_mb']} | "
              f"{r['default mids_per_s']} | {r['near mids_per_s']} | {r['mid mids_per_s']} | "
              f"{r['far mids_per_s']} | {r['default / near']} | {r['default / mid']} | "
              f"{r['default / far']} |", flush=True)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "prefetch_policy.json"
    atomic_write_json(out, {"machine": machine_info(0), "far_bytes": default[1],
                            "far_distance": default[0], "mid_bytes": default[2],
                            "mid_near": default[3], "rows": rows})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
