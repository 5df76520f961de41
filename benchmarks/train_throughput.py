"""DLRM training throughput on the Criteo-Kaggle shape: recsys vs the reference-style DLRM.

Shape: 13 dense features; 26 tables of dim 16 with the Kaggle cardinalities (540M parameters);
one uniform random id per feature; bottom MLP 13-512-256-64-16; top MLP 512-256-1.

Rows of the table (each at every `--batch`):
  reference      plain PyTorch DLRM (benchmarks/reference_dlrm.py): nn.EmbeddingBag(sparse=True)
                 per table, SGD; timed like its own timer (inputs already in memory)
  mlp-only       the dense MLPs alone (forward + backward + SGD): the floor set by the dense math
  recsys ...     the real training step (`Trainer.train_step` built by `recsys.builders`): DMP,
                 fused fbgemm embedding update in the backward; `sgd` = fused SGD tables + SGD
                 dense (the reference's work), `default` = row-wise Adagrad + Adam; loader
                 excluded (batches in memory) or included (the Parquet loader with its prefetch)

    python -m benchmarks.train_throughput                 # full table, JSON in results/
    python -m benchmarks.train_throughput --batch 2048 --quick
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from benchmarks.machine import machine_info
from benchmarks.reference_dlrm import ReferenceDLRM
from recsys.builders import build_trainer
from recsys.config import CRITEO_KAGGLE_CARDINALITIES, TrainConfig
from recsys.data.batch import Batch
from recsys.data.features import DatasetManifest, SparseFeature, SplitInfo
from recsys.data.schema import SplitWriter
from recsys.distributed.env import init_distributed

DIM = 16
BOTTOM = [512, 256, 64]  # + DIM
TOP = [512, 256]  # + 1
NUM_DENSE = 13
RESULTS = Path(__file__).resolve().parent / "results"


def write_kaggle_shape_dataset(directory: Path, rows: int, seed: int = 0) -> None:
    """Uniform random ids over the Kaggle table sizes, in the recsys Parquet format."""
    dense = [f"I{j + 1}" for j in range(NUM_DENSE)]
    sparse = [SparseFeature(f"C{f + 1}", n) for f, n in enumerate(CRITEO_KAGGLE_CARDINALITIES)]
    manifest = DatasetManifest("kaggle-shape-uniform", dense, sparse, splits={})
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", rows), ("valid", 4096), ("test", 4096)):
        writer = SplitWriter(directory, split, manifest, rows_per_file=1 << 20)
        cols = {"label": pa.array((rng.random(n) < 0.25).astype(np.float32))}
        for name in dense:
            cols[name] = pa.array(np.log1p(rng.exponential(10.0, n)).astype(np.float32))
        for f in sparse:
            cols[f.name] = pa.array(rng.integers(0, f.num_embeddings, n, dtype=np.int64))
        writer.write(pa.table(cols))
        writer.close()
        splits[split] = SplitInfo(writer.files, writer.rows, writer.positives)
    DatasetManifest("kaggle-shape-uniform", dense, sparse, splits=splits).save(directory)


def recsys_config(data_dir: Path, batch: int, optim: str, precision: str) -> TrainConfig:
    cfg = TrainConfig()
    cfg.data.kind, cfg.data.path = "parquet", str(data_dir)
    cfg.model.embedding_dim, cfg.model.bottom_mlp, cfg.model.top_mlp = DIM, BOTTOM, TOP
    if optim == "sgd":
        cfg.optim.dense.name, cfg.optim.dense.lr = "sgd", 0.1
        cfg.optim.embedding.name, cfg.optim.embedding.lr = "sgd", 0.1
    cfg.optim.warmup_steps = 0
    t = cfg.trainer
    t.batch_size, t.precision, t.tensorboard, t.resume = batch, precision, False, "none"
    t.max_steps = 1_000_000
    return cfg


def timed_rate(step: Callable[[], None], batch: int, warmup: int, steps: int, repeats: int):
    """Median samples/s over `repeats` blocks of `steps` steps, after `warmup` steps."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(batch * steps / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def cycling(items: list) -> Callable[[], object]:
    """A function returning the items in turn, forever."""
    return itertools.cycle(items).__next__


def loader_batches(loader) -> Iterator[Batch]:
    while True:
        yield from loader


def bench_recsys(data_dir: Path, batch: int, optim: str, precision: str, args) -> list[dict]:
    """Loader excluded and included for one recsys configuration."""
    env = init_distributed("gloo", "cpu", 600)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(recsys_config(data_dir, batch, optim, precision), Path(run_dir),
                                env, config_yaml="")  # fmt: skip
        stream = loader_batches(trainer.train_loader)
        in_memory = [next(stream) for _ in range(16)]
        nxt = cycling(in_memory)
        warm, steps = args.warmup(batch), args.steps(batch)
        rows = []
        rate, rates = timed_rate(
            lambda: trainer.train_step(nxt()), batch, warm, steps, args.repeats
        )
        rows.append(_row(f"recsys {optim} {precision}", batch, "excluded", rate, rates))
        rate, rates = timed_rate(
            lambda: trainer.train_step(next(stream)), batch, warm, steps, args.repeats
        )
        rows.append(_row(f"recsys {optim} {precision}", batch, "included", rate, rates))
        if args.profile:
            rows[0]["profile_ms_per_step"] = profile_breakdown(
                lambda: trainer.train_step(nxt()), steps=max(5, steps // 3)
            )
    return rows


# Op-name patterns -> where the time goes (first match wins; self CPU time per step).
CATEGORIES = (
    ("MLP GEMMs", ("aten::mm", "aten::addmm", "mkldnn")),
    ("MLP activations", ("threshold_backward", "clamp_min", "aten::relu")),
    ("embedding fwd+bwd+update (fbgemm)", ("fbgemm::", "split_embedding")),
    ("interaction (bmm, pair select)", ("aten::bmm", "index_select", "index_add", "aten::cat")),
    ("dense optimizer", ("Optimizer.step", "_foreach", "aten::add_", "aten::mul_", "lerp", "sqrt")),
    ("KJT / dist plumbing", ("all2all", "alltoall", "allreduce", "c10d", "dist", "permute")),
)


def profile_breakdown(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Self CPU ms per step by category, from torch.profiler over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for ev in prof.key_averages():
        cat = next((c for c, pats in CATEGORIES if any(p in ev.key for p in pats)), "other")
        totals[cat] += ev.self_cpu_time_total / 1000 / steps
    out = {k: round(v, 2) for k, v in totals.items()}
    print("    profile, self CPU ms/step: " + ", ".join(f"{k} {v}" for k, v in out.items()))
    return out


def reference_inputs(batches: list[Batch]) -> list[tuple]:
    """(dense, offsets per table, indices per table, labels) from recsys batches."""
    out = []
    for b in batches:
        per_feature = list(b.sparse.to_dict().values())
        offs = [jt.offsets()[:-1].contiguous() for jt in per_feature]
        idx = [jt.values().contiguous() for jt in per_feature]
        out.append((b.dense, offs, idx, b.labels))
    return out


def bench_reference(batches: list[Batch], batch: int, args) -> dict:
    model = ReferenceDLRM(NUM_DENSE, CRITEO_KAGGLE_CARDINALITIES, DIM, BOTTOM, TOP)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.BCELoss(reduction="mean")
    nxt = cycling(reference_inputs(batches))

    def step() -> None:
        dense, offs, idx, labels = nxt()
        opt.zero_grad()
        loss = loss_fn(model(dense, offs, idx), labels)
        loss.backward()
        opt.step()

    rate, rates = timed_rate(step, batch, args.warmup(batch), args.steps(batch), args.repeats)
    return _row("reference (nn.EmbeddingBag sparse + SGD)", batch, "excluded", rate, rates)


def bench_mlp_only(batch: int, precision: str, args) -> dict:
    f = len(CRITEO_KAGGLE_CARDINALITIES) + 1
    bottom = torch.nn.Sequential(*_linear_relu([NUM_DENSE, *BOTTOM, DIM]))
    top = torch.nn.Sequential(*_linear_relu([DIM + f * (f - 1) // 2, *TOP, 1]))
    opt = torch.optim.SGD([*bottom.parameters(), *top.parameters()], lr=0.1)
    dense = torch.randn(batch, NUM_DENSE)
    inter = torch.randn(batch, f * (f - 1) // 2)
    labels = (torch.rand(batch) < 0.25).float()

    def autocast() -> contextlib.AbstractContextManager:
        bf16 = precision == "bf16"
        return torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad()
        with autocast():
            x = bottom(dense)
            logit = top(torch.cat([x, inter], 1)).squeeze(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), labels).backward()
        opt.step()

    rate, rates = timed_rate(step, batch, args.warmup(batch), args.steps(batch), args.repeats)
    return _row(f"mlp-only {precision}", batch, "n/a", rate, rates)


def _linear_relu(sizes: list[int]) -> list[torch.nn.Module]:
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return layers


def _row(name: str, batch: int, loader: str, rate: float, rates: list[float]) -> dict:
    return {"model": name, "batch": batch, "loader": loader, "samples_per_s": round(rate, 1),
            "blocks": [round(r, 1) for r in rates]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[2048, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    p.add_argument("--profile", action="store_true", help="add a where-the-time-goes profile")
    p.add_argument("--skip", nargs="*", default=[], help="row groups to skip: reference mlp "
                   "sgd default bf16")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    scale = 0.2 if args.quick else 1.0
    args.warmup = lambda b: max(3, int((10 if b >= 1024 else 40) * scale))
    args.steps = lambda b: max(5, int((30 if b >= 1024 else 300) * scale))

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "kaggle_shape"
        write_kaggle_shape_dataset(data_dir, rows=max(args.batch) * 160)
        for batch in args.batch:
            if "reference" not in args.skip:
                batches = _first_batches(data_dir, batch)
                rows.append(bench_reference(batches, batch, args))
                _print(rows[-1])
                gc.collect()
            for precision in ("fp32", "bf16"):
                if "mlp" not in args.skip and (precision == "fp32" or "bf16" not in args.skip):
                    rows.append(bench_mlp_only(batch, precision, args))
                    _print(rows[-1])
            for optim, precision in (("sgd", "fp32"), ("default", "fp32"), ("sgd", "bf16")):
                if optim in args.skip or (precision == "bf16" and "bf16" in args.skip):
                    continue
                for row in bench_recsys(data_dir, batch, optim, precision, args):
                    rows.append(row)
                    _print(row)
                gc.collect()
    _summarise(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


def _first_batches(data_dir: Path, batch: int, n: int = 16) -> list[Batch]:
    from recsys.data.loader import ParquetBatchLoader

    manifest = DatasetManifest.load(data_dir)
    loader = ParquetBatchLoader(data_dir, manifest, "train", batch, shuffle=False,
                                drop_last=True, rank=0, world_size=1)  # fmt: skip
    out = []
    for b in loader:
        out.append(b)
        if len(out) == n:
            break
    return out


def _print(row: dict) -> None:
    print(f"{row['model']:<42} batch {row['batch']:>5}  loader {row['loader']:<8} "
          f"{row['samples_per_s']:>10,.0f} samples/s", flush=True)  # fmt: skip


def _summarise(rows: list[dict]) -> None:
    ref = {r["batch"]: r["samples_per_s"] for r in rows if r["model"].startswith("reference")}
    print("\nspeed-up over the reference (same batch):")
    for r in rows:
        if r["batch"] in ref and not r["model"].startswith("reference"):
            r["vs_reference"] = round(r["samples_per_s"] / ref[r["batch"]], 2)
            print(f"  {r['model']:<30} batch {r['batch']:>5} loader {r['loader']:<8} "
                  f"{r['vs_reference']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
