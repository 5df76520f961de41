"""Data-path throughput: synthetic generation rows/s, and the Parquet loader by itself.

The loader must run well above what the trainer consumes (about 25-70k samples/s for the
default model on this machine), so it is measured alone: Parquet row groups -> shuffled
batches of (dense, KeyedJaggedTensor, labels), with and a deep or a shallow prefetch queue.

    python -m benchmarks.data_throughput                  # 2M rows; JSON in results/
    python -m benchmarks.data_throughput --rows 500000    # quicker
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.machine import machine_info
from recsys.config import SyntheticConfig
from recsys.data.loader import ParquetBatchLoader
from recsys.data.synthetic import generate

RESULTS = Path(__file__).resolve().parent / "results"


def bench_generation(cfg: SyntheticConfig, out: Path) -> dict:
    t0 = time.perf_counter()
    manifest = generate(cfg, out)
    seconds = time.perf_counter() - t0
    rows = sum(s.rows for s in manifest.splits.values())
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    return {"what": "synthetic generation", "rows": rows, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds), "bytes_on_disk": size}  # fmt: skip


def bench_loader(directory: Path, batch: int, shuffle: bool, prefetch: int) -> dict:
    from recsys.data.features import DatasetManifest

    manifest = DatasetManifest.load(directory)
    loader = ParquetBatchLoader(
        directory, manifest, "train", batch, shuffle=shuffle, drop_last=True, rank=0,
        world_size=1, prefetch=prefetch,
    )  # fmt: skip
    t0 = time.perf_counter()
    rows = 0
    for b in loader:
        rows += b.size
    seconds = time.perf_counter() - t0
    return {"what": "loader", "batch": batch, "shuffle": shuffle, "prefetch": prefetch,
            "rows": rows, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000, help="training rows to generate")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "data_throughput.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(SyntheticConfig(), rows_train=args.rows, rows_valid=10_000, rows_test=10_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "synthetic"
        rows.append(bench_generation(cfg, directory))
        _print(rows[-1])
        for batch in (2048, 128):
            for shuffle, prefetch in ((True, 4), (True, 1), (False, 4)):
                rows.append(bench_loader(directory, batch, shuffle, prefetch))
                _print(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


def _print(row: dict) -> None:
    if row["what"] == "loader":
        what = (f"loader batch {row['batch']:>5} shuffle {row['shuffle']!s:<5} "
                f"prefetch {row['prefetch']}")  # fmt: skip
    else:
        what = row["what"]
    print(f"{what:<45} {row['rows']:>10,} rows  {row['rows_per_s']:>10,} rows/s", flush=True)


if __name__ == "__main__":
    main()
