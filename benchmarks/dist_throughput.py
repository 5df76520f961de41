"""Training samples/s at 1 and 2 processes (torchrun, gloo) on the Criteo-Kaggle shape, with the
share of step time spent in communication.

The same `Trainer.train_step` as `recsys-train`, on the shape of benchmarks/train_throughput.py
(26 Kaggle-sized tables of dim 16, bottom 512-256-64-16, top 512-256-1), per-rank batch 2048
(the global batch grows with the world size), tables sharded table-wise. This machine has 2
cores: one process uses 2 threads, two processes use 1 thread each. Communication share = self
CPU time of the collective ops (the KJT and pooled-embedding all-to-alls, the dense all-reduce,
and waits on them) over the step time, from torch.profiler on rank 0.

    python -m benchmarks.dist_throughput                    # 1 and 2 processes, JSON in results/
    python -m benchmarks.dist_throughput --steps 10         # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
COMM_PATTERNS = ("c10d::", "all_to_all", "alltoall", "allreduce", "all_reduce", "_dist]",
                 "Awaitable wait", "output_dist", "input_dist", "splits_dist")  # fmt: skip


def worker(data: Path, batch: int, steps: int, out: Path) -> None:
    """Runs inside torchrun: time `steps` train steps, then profile a few; rank 0 writes JSON."""
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.train_throughput import cycling, loader_batches, recsys_config
    from recsys.builders import build_trainer
    from recsys.distributed.env import init_distributed

    env = init_distributed("gloo", "cpu", 600)
    cfg = recsys_config(data, batch, "sgd", "fp32")
    cfg.dist.sharding_types = ["table_wise"]
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg, Path(run_dir), env, config_yaml="")
        stream = loader_batches(trainer.train_loader)
        nxt = cycling([next(stream) for _ in range(8)])
        for _ in range(5):
            trainer.train_step(nxt())
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(nxt())
        dist.barrier()
        seconds = time.perf_counter() - t0
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            p0 = time.perf_counter()
            for _ in range(max(3, steps // 3)):
                trainer.train_step(nxt())
            profiled = time.perf_counter() - p0
    comm = sum(e.self_cpu_time_total for e in prof.key_averages()
               if any(p in e.key for p in COMM_PATTERNS)) / 1e6  # fmt: skip
    if env.is_main:
        out.write_text(json.dumps({
            "world_size": env.world_size, "threads_per_process": torch.get_num_threads(),
            "batch_per_rank": batch, "global_batch": batch * env.world_size,
            "samples_per_s": round(batch * env.world_size * steps / seconds, 1),
            "comm_share": round(comm / profiled, 4),
        }))  # fmt: skip


def run(nproc: int, data: Path, batch: int, steps: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "result.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "-m",
           "benchmarks.dist_throughput", "--worker", "--data", str(data), "--batch", str(batch),
           "--steps", str(steps), "--result", str(out)]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=2048, help="per-rank batch")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", type=Path, default=RESULTS / "dist_throughput.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        worker(args.data, args.batch, args.steps, args.result)
        return
    from benchmarks.machine import machine_info
    from benchmarks.train_throughput import write_kaggle_shape_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "kaggle_shape"
        write_kaggle_shape_dataset(data, rows=args.batch * max(args.procs) * 16)
        for nproc in args.procs:
            rows.append(run(nproc, data, args.batch, args.steps))
            r = rows[-1]
            share = 100 * r["comm_share"]
            print(f"{r['world_size']} process(es) x {r['threads_per_process']} thread(s), global "
                  f"batch {r['global_batch']}: {r['samples_per_s']:,.0f} samples/s, "
                  f"communication {share:.1f}% of step time", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(0), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
