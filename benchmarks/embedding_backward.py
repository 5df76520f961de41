"""The embedding tables' backward pass with the fused optimizer update, alone: fbgemm's CPU
kernel against recsys's (trainer.embedding_kernels, kernels/csrc/tbe_backward.cpp).

Criteo-Kaggle shape: fbgemm's table-batched module (`SplitTableBatchedEmbeddingBagsCodegen`,
what torchrec's DMP runs on CPU) over the 26 Kaggle tables of dim 16 (540M parameters), one
uniform random id per feature; row-wise Adagrad (recsys's default) and SGD. Both kernels update
the same module in interleaved rounds (they share its weights: the update's cost does not
depend on their values). ms per backward; the forward (fbgemm's, the same for both) beside it.

    python -m benchmarks.embedding_backward [--batch 2048 128] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)

from benchmarks.machine import machine_info
from recsys.config import CRITEO_KAGGLE_CARDINALITIES
from recsys.training.tbe_kernels import use_recsys_embedding_kernels

DIM = 16
SIDES = ("fbgemm", "recsys")
SERIES = ["forward", *(f"{side} backward" for side in SIDES)]
RESULTS = Path(__file__).resolve().parent / "results"
OPTIMIZERS = {"rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "sgd": EmbOptimType.EXACT_SGD}


def kaggle_tables(optimizer: EmbOptimType) -> SplitTableBatchedEmbeddingBagsCodegen:
    tables = [(n, DIM, EmbeddingLocation.HOST, ComputeDevice.CPU)
              for n in CRITEO_KAGGLE_CARDINALITIES]  # fmt: skip
    # No separate bounds-check pass, as the trainer builds them on CPU (embedding_sharder).
    return SplitTableBatchedEmbeddingBagsCodegen(
        tables, optimizer=optimizer, learning_rate=0.01, eps=1e-8,
        bounds_check_mode=BoundsCheckMode.NONE,
    )  # fmt: skip


def batches(batch: int, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = [torch.randint(0, rows, (batch,), generator=gen)
               for rows in CRITEO_KAGGLE_CARDINALITIES]  # fmt: skip
        out.append((torch.cat(ids), torch.arange(len(ids) * batch + 1)))
    return out


def time_kernels(optimizer: str, batch: int, rounds: int, reps: int) -> dict[str, list[float]]:
    """Per round: ms per forward (fbgemm's) and ms per backward with each side's kernel."""
    tbe = kaggle_tables(OPTIMIZERS[optimizer])
    inputs = batches(batch)
    grad = torch.randn(batch, DIM * len(CRITEO_KAGGLE_CARDINALITIES))
    outputs = []  # forward outputs for the backward timing, made before it starts

    def backward_ms(side: str) -> float:
        use_recsys_embedding_kernels(side == "recsys")
        outputs.clear()
        outputs.extend(tbe(*inputs[i % len(inputs)]) for i in range(reps))
        t0 = time.perf_counter()
        for out in outputs:
            out.backward(grad)
        return (time.perf_counter() - t0) / reps * 1e3

    def forward_ms() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(reps):
                tbe(*inputs[i % len(inputs)])
        return (time.perf_counter() - t0) / reps * 1e3

    times: dict[str, list[float]] = {k: [] for k in SERIES}
    for side in SIDES:  # warm-up (fbgemm JIT-compiles its kernels on first use)
        backward_ms(side)
    for _ in range(rounds):
        times["forward"].append(forward_ms())
        for side in SIDES:
            times[f"{side} backward"].append(backward_ms(side))
    use_recsys_embedding_kernels(True)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[2048, 128])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "embedding_backward.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not use_recsys_embedding_kernels(True):
        raise SystemExit("recsys kernels are not built: run `make install` first")
    rows = []
    print(f"{'optimizer':<16} {'batch':>5} " + " ".join(f"{k:>16}" for k in SERIES)
          + "   backward speed-up")  # fmt: skip
    for optimizer in OPTIMIZERS:
        for batch in args.batch:
            reps = 20 if batch >= 1024 else 200
            t = time_kernels(optimizer, batch, args.rounds, reps)
            row = {"optimizer": optimizer, "batch": batch}
            row |= {f"{k.replace(' ', '_')}_ms": round(statistics.median(t[k]), 3) for k in SERIES}
            pairs = zip(t["fbgemm backward"], t["recsys backward"], strict=True)
            row["backward_speedup"] = round(statistics.median(f / r for f, r in pairs), 2)
            rows.append(row)
            print(f"{optimizer:<16} {batch:>5} "
                  + " ".join(f"{statistics.median(t[k]):>16.3f}" for k in SERIES)
                  + f"   {row['backward_speedup']:.2f}x",
                  flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
