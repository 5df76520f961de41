"""The prefetch lead, measured: our int8 and int4 lookups with the default leads (a row of 3 or
more cache lines has its first line prefetched some rows before its other lines: 4 rows in
calls with the near plan, 16 with the far plan) against the same lookups with every line
prefetched at once (lead 0), and both against FBGEMM's op on the same table, in the same
process, interleaved round after round on fresh ids, each sample after another table's lookup,
as in benchmarks/embedding_bag.py. Ratios are medians of per-round ratios.

Run: `.venv/bin/python -m benchmarks.prefetch_lead [--reps 15] [--quick]`
-> a table on stdout and `benchmarks/results/prefetch_lead.json`.
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

# (format, rows, dim, pooling, ids, threads): the lead's shapes (3-line int8 rows, both plans)
# and controls it leaves alone (rows of 1-2 lines: int8 64- and 16-wide, int4 128-wide), whose
# "speed-up" shows the A/A noise.
CONFIGS = [
    ("int8", 10_000_000, 128, 20, "uniform", 1),
    ("int8", 10_000_000, 128, 100, "uniform", 2),
    ("int8", 10_000_000, 128, 1, "uniform", 1),
    ("int8", 10_000_000, 64, 20, "uniform", 1),
    ("int8", 10_000_000, 16, 100, "uniform", 1),
    ("int4", 10_000_000, 128, 20, "uniform", 1),
    ("int8", 100_000, 128, 20, "uniform", 1),
    ("int8", 100_000, 128, 100, "zipf", 1),
    ("int8", 100_000, 64, 20, "uniform", 1),
]
QUICK = [CONFIGS[0], CONFIGS[6]]
FBGEMM_OPS = {
    "int8": "embedding_bag_byte_rowwise_offsets",
    "int4": "embedding_bag_4bit_rowwise_offsets",
}


def current_leads() -> tuple[int, int]:
    """The leads (near, far) in force, read by setting them back."""
    leads = ops.set_prefetch_lead(0, 0)
    ops.set_prefetch_lead(*leads)
    return leads


def bench_lead(fmt: str, rows: int, dim: int, pool: int, dist: str, threads: int,
               reps: int) -> dict:  # fmt: skip
    """ns per id of FBGEMM's op and of ours with the default lead and with lead 0."""
    torch.set_num_threads(threads)
    table = eb.packed_table(rows, dim, fmt, 1)
    n = eb.BATCH * pool
    offsets = torch.arange(0, n + 1, pool)
    fbgemm = getattr(torch.ops.quantized, FBGEMM_OPS[fmt])
    default = current_leads()

    def ours(idx: torch.Tensor) -> torch.Tensor:
        return ops.embedding_bag(table, idx, offsets, format=fmt, include_last_offset=True)

    cases = {
        "fbgemm": lambda idx: fbgemm(table, idx, offsets, False, 0, False, None, None, True),
        "lead": ours,
        "no lead": ours,
    }
    eb.SWITCHED["no lead"] = lambda on: ops.set_prefetch_lead(*((0, 0) if on else default))
    calls = min(16, -(-eb.CALL_IDS // n))
    n_sets = eb.sets_needed(len(cases), reps, calls) + 1
    id_sets = list(eb.ids(rows, n, dist, seed=dim * 1000 + pool * 10 + threads + 3, sets=n_sets))
    before = eb.other_lookup(id_sets.pop(), offsets)
    try:
        times = eb.interleaved(cases, reps, id_sets, before, calls)
    finally:
        ops.set_prefetch_lead(*default)
        del eb.SWITCHED["no lead"]
    fb = times["fbgemm"]
    row = {"format": fmt, "rows": rows, "dim": dim, "pool": pool, "ids": dist,
           "threads": threads, "leads": list(default)}  # fmt: skip
    for name, ts in times.items():
        row[f"{name} ns_per_id"] = round(statistics.median(ts) / n * 1e9, 2)
    for name in ("lead", "no lead"):
        row[f"{name} vs fbgemm"] = round(
            statistics.median(f / t for f, t in zip(fb, times[name], strict=True)), 3
        )
    row["lead / no lead"] = round(
        statistics.median(t / s for s, t in zip(times["lead"], times["no lead"], strict=True)),
        3,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="two configs only")
    parser.add_argument("--out", type=Path, default=RESULTS / "prefetch_lead.json")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    if not args.out.parent.is_dir():  # refused before minutes of measuring, not after
        parser.error(f"--out: no directory {args.out.parent}")
    print(f"prefetch leads (near, far): {current_leads()}")
    print("| format | rows | dim | pool | ids | threads | fbgemm ns | lead ns | no lead ns | "
          "lead vs fbgemm | no lead vs fbgemm | speed-up from lead |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for config in QUICK if args.quick else CONFIGS:
        r = bench_lead(*config, args.reps)
        rows.append(r)
        print(f"| {r['format']} | {r['rows']} | {r['dim']} | {r['pool']} | {r['ids']} | "
              f"{r['threads']} | {r['fbgemm ns_per_id']} | {r['lead ns_per_id']} | "
              f"{r['no lead ns_per_id']} | {r['lead vs fbgemm']} | {r['no lead vs fbgemm']} | "
              f"{r['lead / no lead']} |", flush=True)  # fmt: skip
    atomic_write_json(args.out, {"machine": machine_info(0), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
