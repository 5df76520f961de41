"""The dot interaction alone, forward + backward: recsys's DotInteraction with its fused C++
kernel (the default on CPU), the same layer's PyTorch formulation (bmm + index_select with a
hand-written backward; `fused=False`), and the same math with autograd's generic backward (the
first formulation, which both replaced). Then the kernel's two operators alone on each
dispatch path (AVX-512, AVX2, scalar) this CPU has.

Criteo-Kaggle shape: 26 pooled embeddings + the dense vector, dim 16; fp32 and bf16 autocast
(the dense vector arrives in bf16 from the bottom MLP, as in training). Interleaved rounds;
ms per forward + backward, median; JSON in benchmarks/results/interaction.json.

    python -m benchmarks.interaction [--batch 2048 128]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.machine import machine_info
from kernels import ops
from recsys.models.interaction import DotInteraction

NUM_SPARSE, DIM = 26, 16


class AutogradDot(nn.Module):
    """Same output as DotInteraction; backward left to autograd."""

    def __init__(self, num_sparse: int) -> None:
        super().__init__()
        n = num_sparse + 1
        rows, cols = torch.triu_indices(n, n, offset=1)
        self.register_buffer("pairs", rows * n + cols, persistent=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        combined = torch.cat([dense.unsqueeze(1), sparse], dim=1)
        gram = torch.bmm(combined, combined.transpose(1, 2).contiguous())
        pairs = gram.float().flatten(1).index_select(1, self.pairs)
        return torch.cat([dense.to(pairs.dtype), pairs], dim=1)


def kernel_paths(batch: int, rounds: int) -> list[dict]:
    """The fused kernel's operators alone (forward + backward, fp32) on each dispatch path this
    CPU has, interleaved: ms per call pair."""
    dense, sparse = torch.randn(batch, DIM), torch.randn(batch, NUM_SPARSE, DIM)
    grad = torch.randn(batch, DotInteraction(NUM_SPARSE).output_dim(DIM))
    paths = [p for p in ("avx512", "avx2", "scalar") if ops.set_isa(p) == p]
    times: dict[str, list[float]] = {p: [] for p in paths}
    try:
        for _ in range(rounds):
            for path in paths:
                ops.set_isa(path)
                t0 = time.perf_counter()
                for _ in range(10):
                    ops.dot_interaction(dense, sparse)
                    ops.dot_interaction_backward(grad, dense, sparse)
                times[path].append((time.perf_counter() - t0) / 10 * 1e3)
    finally:
        ops.set_isa("auto")
    out = []
    for path, ts in times.items():
        print(f"batch {batch:>5} fp32  fused kernel ops only, {path:<7} path "
              f"{statistics.median(ts):7.3f} ms fwd+bwd", flush=True)  # fmt: skip
        out.append({"batch": batch, "path": path, "ms_fwd_bwd": round(statistics.median(ts), 3)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[2048, 128])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "interaction.json"
    )
    args = p.parse_args()
    rows: list[dict] = []
    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers = {"autograd bmm + index_select": AutogradDot(NUM_SPARSE),
              "recsys, PyTorch formulation": DotInteraction(NUM_SPARSE, fused=False),
              "recsys, fused kernel": DotInteraction(NUM_SPARSE)}  # fmt: skip
    for batch in args.batch:
        dense = torch.randn(batch, DIM, requires_grad=True)
        sparse = torch.randn(batch, NUM_SPARSE, DIM, requires_grad=True)
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"

            def step(layer: nn.Module, bf16: bool = bf16, d=dense, s=sparse) -> None:
                ctx = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
                with ctx:
                    out = layer(d.bfloat16() if bf16 else d, s)
                out.float().sum().backward()

            reps = 20 if batch >= 1024 else 200
            times: dict[str, list[float]] = {name: [] for name in layers}
            for layer in layers.values():
                step(layer)
            for _ in range(args.rounds):
                for name, layer in layers.items():
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        step(layer)
                    times[name].append((time.perf_counter() - t0) / reps * 1e3)
            base = times["autograd bmm + index_select"]
            for name, ts in times.items():
                ratio = statistics.median(b / t for b, t in zip(base, ts, strict=True))
                print(f"batch {batch:>5} {precision}  {name:<30} {statistics.median(ts):7.3f} ms "
                      f"fwd+bwd  {ratio:4.2f}x", flush=True)  # fmt: skip
                rows.append({"batch": batch, "precision": precision, "layer": name,
                             "ms_fwd_bwd": round(statistics.median(ts), 3),
                             "speedup": round(ratio, 3)})  # fmt: skip
    paths = kernel_paths(max(args.batch), args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(2), "rows": rows,
                                    "kernel_paths": paths}, indent=2))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
