"""Markdown table of how many hosts a model needs, from recsys-plan JSON reports.

    recsys-plan dist=big_basin 'dist.hosts=[1,2,4,8,16]' data=criteo_1tb_mlperf \
        model.embedding_dim=128 plan.output=plans/big_basin_128.json
    python -m benchmarks.hosts_needed plans/*.json

One row per (dist, embedding dim): the fewest planned hosts whose plan fits, its peak HBM per
GPU (tables + the planner's reservation) against the cap, and the planner's step estimate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GB = 1024**3


def row(report: dict) -> str:
    fitting = [t for t in report["topologies"] if t["fits"]]
    tried = ",".join(str(t["hosts"]) for t in report["topologies"])
    head = f"| {report['dist']} | {report['embedding_dim']} |"
    if not fitting:
        return f"{head} > {max(t['hosts'] for t in report['topologies'])} | - | - | {tried} |"
    best = min(fitting, key=lambda t: t["hosts"])
    peak = max(d["hbm_bytes"] + d["hbm_reserved"] for d in best["devices"])
    cap = best["devices"][0]["hbm_cap"]
    return (f"{head} {best['hosts']} ({best['world_size']} GPUs) | "
            f"{peak / GB:.1f} / {cap / GB:.0f} GB | {best['step_ms']:.2f} | {tried} |")  # fmt: skip


def main(paths: list[str]) -> None:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    reports.sort(key=lambda r: (r["dist"], r["embedding_dim"]))
    print("| dist | dim | hosts needed | peak HBM / GPU | step est. ms | hosts tried |")
    print("|---|---|---|---|---|---|")
    for report in reports:
        print(row(report))


if __name__ == "__main__":
    main(sys.argv[1:])
