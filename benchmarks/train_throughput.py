"""DLRM training throughput on the Criteo-Kaggle shape: recsys vs the reference-style DLRM.

Shape: 13 dense features; 26 tables of dim 16 with the Kaggle cardinalities (540M parameters);
one uniform random id per feature; bottom MLP 13-512-256-64-16; top MLP 512-256-1.

Rows of the table (each at every `--batch`):
  reference      plain PyTorch DLRM (benchmarks/reference_dlrm.py): nn.EmbeddingBag(sparse=True)
                 per table, SGD; timed like its own timer (inputs already in memory)
  mlp-only       the dense MLPs alone (forward + backward + SGD): the floor set by the dense math
  recsys ...     the real training step (`Trainer.train_step` built by `recsys.builders`): DMP,
                 fused fbgemm embedding update in the backward; `sgd` = fused SGD tables + SGD
                 dense (the reference's work; the dense step taken inside the MLPs' backward,
                 optim.dense.in_backward, and once as torch's SGD after the backward: `torch
                 dense optimizer`), `default` = row-wise Adagrad + Adam; loader
                 excluded (batches in memory) or included (the Parquet loader with its prefetch);
                 `bf16` = autocast of the dense layers; `fbgemm kernels` = the embedding
                 backward + update left to fbgemm's CPU kernels
                 (trainer.embedding_kernels=fbgemm)

All variants of a batch size are timed in interleaved rounds, each variant between two runs of
the reference (reference, v1, reference, v2, ..., reference), and the speed-up is the median
over rounds of the variant's samples/s over the mean of the two reference runs around it: on a
shared 2-vCPU machine whose speed drifts by +-30% within a minute, only ratios to a reference
timed right beside the variant are stable.

    python -m benchmarks.train_throughput --profile       # full table, JSON in results/
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
import torch.nn.functional as F

from benchmarks.machine import machine_info
from benchmarks.reference_dlrm import ReferenceDLRM
from recsys.builders import build_trainer
from recsys.config import CRITEO_KAGGLE_CARDINALITIES, TrainConfig
from recsys.data.batch import Batch
from recsys.data.features import DatasetManifest, SparseFeature, SplitInfo
from recsys.data.schema import SplitWriter
from recsys.distributed.env import init_distributed
from recsys.models.mlp import MLP
from recsys.training.tbe_kernels import use_recsys_embedding_kernels

DIM = 16
BOTTOM = [512, 256, 64]  # + DIM
TOP = [512, 256]  # + 1
NUM_DENSE = 13
RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "reference (nn.EmbeddingBag sparse + SGD)"


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
        cfg.optim.dense.in_backward = True  # one process: the MLPs take the dense step
        cfg.optim.embedding.name, cfg.optim.embedding.lr = "sgd", 0.1
    cfg.optim.warmup_steps = 0
    t = cfg.trainer
    t.batch_size, t.precision, t.tensorboard, t.resume = batch, precision, False, "none"
    t.max_steps = 1_000_000
    return cfg


def cycling(items: list) -> Callable[[], object]:
    """A function returning the items in turn, forever."""
    return itertools.cycle(items).__next__


def loader_batches(loader) -> Iterator[Batch]:
    while True:
        yield from loader


Variants = dict[str, Callable[[], None]]


def recsys_variants(data_dir: Path, batch: int, optim: str, args, keep: list) -> Variants:
    """fp32/bf16 x loader excluded/included steps of one recsys trainer (the real train_step)."""
    env = init_distributed("gloo", "cpu", 600)
    run_dir = tempfile.mkdtemp()
    trainer_cfg = recsys_config(data_dir, batch, optim, "fp32")
    trainer = build_trainer(trainer_cfg, Path(run_dir), env, config_yaml="")
    keep.append(trainer)
    stream = loader_batches(trainer.train_loader)
    nxt = cycling([next(stream) for _ in range(16)])
    mlps = [m for m in trainer.model.modules() if isinstance(m, MLP)]
    dense_group = trainer.optimizer.optimizers[1][1].param_groups[0]
    in_backward = trainer_cfg.optim.dense.in_backward
    fused_dense = dense_group if in_backward else None

    def step(
        precision: str, included: bool, kernels: str = "recsys", dense_after: bool = False
    ) -> Callable[[], None]:
        def run() -> None:
            trainer.settings.precision = precision
            use_recsys_embedding_kernels(kernels == "recsys")
            for mlp in mlps:  # the dense step in the MLPs' backward, or torch's after it
                mlp.take_sgd_step_in_backward(None if dense_after else fused_dense)
            trainer.train_step(next(stream) if included else nxt())

        return run

    out: Variants = {}
    for precision in ("fp32", "bf16") if optim == "sgd" else ("fp32",):
        if precision == "bf16" and "bf16" in args.skip:
            continue
        out[f"recsys {optim} {precision} | loader excluded"] = step(precision, False)
        out[f"recsys {optim} {precision} | loader included"] = step(precision, True)
    if in_backward:
        out[f"recsys {optim} fp32, torch dense optimizer | loader excluded"] = step(
            "fp32", False, dense_after=True
        )
    if "fbgemm-kernels" not in args.skip:
        out[f"recsys {optim} fp32, fbgemm kernels | loader excluded"] = step(
            "fp32", False, "fbgemm"
        )
    return out


def reference_variant(batches: list[Batch], keep: list) -> Variants:
    model = ReferenceDLRM(NUM_DENSE, CRITEO_KAGGLE_CARDINALITIES, DIM, BOTTOM, TOP)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    keep.append(model)
    loss_fn = torch.nn.BCELoss(reduction="mean")
    nxt = cycling(reference_inputs(batches))

    def step() -> None:
        dense, offs, idx, labels = nxt()
        opt.zero_grad()
        loss = loss_fn(model(dense, offs, idx), labels)
        loss.backward()
        opt.step()

    return {REFERENCE: step}


def reference_inputs(batches: list[Batch]) -> list[tuple]:
    """(dense, offsets per table, indices per table, labels) from recsys batches."""
    out = []
    for b in batches:
        per_feature = list(b.sparse.to_dict().values())
        offs = [jt.offsets()[:-1].contiguous() for jt in per_feature]
        idx = [jt.values().contiguous() for jt in per_feature]
        out.append((b.dense, offs, idx, b.labels))
    return out


def mlp_only_variants(batch: int) -> Variants:
    """The dense MLPs alone (forward + backward + SGD) in fp32 and bf16: the dense-math floor."""
    f = len(CRITEO_KAGGLE_CARDINALITIES) + 1
    bottom = torch.nn.Sequential(*_linear_relu([NUM_DENSE, *BOTTOM, DIM]))
    top = torch.nn.Sequential(*_linear_relu([DIM + f * (f - 1) // 2, *TOP, 1]))
    opt = torch.optim.SGD([*bottom.parameters(), *top.parameters()], lr=0.1)
    dense = torch.randn(batch, NUM_DENSE)
    inter = torch.randn(batch, f * (f - 1) // 2)
    labels = (torch.rand(batch) < 0.25).float()

    def step(precision: str) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad()
            bf16 = precision == "bf16"
            ctx = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                logit = top(torch.cat([bottom(dense), inter], 1)).squeeze(-1)
            F.binary_cross_entropy_with_logits(logit.float(), labels).backward()
            opt.step()

        return run

    return {"mlp-only fp32": step("fp32"), "mlp-only bf16": step("bf16")}


def _linear_relu(sizes: list[int]) -> list[torch.nn.Module]:
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return layers


def interleaved(variants: Variants, batch: int, warmup: int, steps: int, rounds: int):
    """Time the variants in rounds, each variant bracketed by reference runs (reference, v1,
    reference, v2, ..., reference), so that every variant is compared with the reference timed
    just before and just after it: on this VM the speed drifts within a round.

    Returns ({name: [samples/s per round]}, {name: [mean of the bracketing reference samples/s
    per round]}); the reference's own list holds all its runs.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()

    def rate(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return batch * steps / (time.perf_counter() - t0)

    ref = variants[REFERENCE]
    others = [name for name in variants if name != REFERENCE]
    rates: dict[str, list[float]] = {name: [] for name in variants}
    brackets: dict[str, list[float]] = {name: [] for name in others}
    for _ in range(rounds):
        before = rate(ref)
        rates[REFERENCE].append(before)
        for name in others:
            rates[name].append(rate(variants[name]))
            after = rate(ref)
            rates[REFERENCE].append(after)
            brackets[name].append((before + after) / 2)
            before = after
    return rates, brackets


# Op-name patterns -> where the time goes (first match wins; self CPU time per step).
CATEGORIES = (
    ("MLP GEMMs", ("aten::mm", "aten::addmm", "mkldnn", "recsys_kernels::mm_bf16_f32")),
    (
        # the fused stack's own passes (bias + ReLU, their backward, the width-1 head) run
        # inside recsys_kernels::mlp_forward / mlp_backward: their self time
        "MLP bias/ReLU passes",
        ("threshold_backward", "clamp_min", "aten::relu", "recsys_kernels::mlp_", "bias_grad"),
    ),
    (
        "embedding fwd+bwd+update",
        ("fbgemm::", "split_embedding", "recsys_kernels::tbe_"),
    ),
    (
        "interaction (fused kernel; cat)",
        ("recsys_kernels::dot_interaction", "aten::bmm", "index_select", "index_add", "aten::cat"),
    ),
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[2048, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    p.add_argument("--profile", action="store_true", help="add a where-the-time-goes profile")
    p.add_argument("--skip", nargs="*", default=[],
                   help="variants to skip: mlp default bf16 fbgemm-kernels")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    scale = 0.2 if args.quick else 1.0
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "kaggle_shape"
        write_kaggle_shape_dataset(data_dir, rows=max(args.batch) * 160)
        for batch in args.batch:
            keep: list = []  # models stay alive for the whole batch size, then are freed
            variants = reference_variant(_first_batches(data_dir, batch), keep)
            if "mlp" not in args.skip:
                variants |= mlp_only_variants(batch)
            for optim in ("sgd", "default"):
                if optim not in args.skip:
                    variants |= recsys_variants(data_dir, batch, optim, args, keep)
            big = batch >= 1024
            warmup = max(3, int((10 if big else 40) * scale))
            steps = max(5, int((20 if big else 200) * scale))
            rates, brackets = interleaved(variants, batch, warmup, steps, args.rounds)
            rows += _rows(batch, rates, brackets)
            if args.profile:
                for name in [n for n in variants if n.endswith("excluded")]:
                    print(f"{name}, batch {batch}:")
                    row = next(r for r in rows if r["batch"] == batch and r["variant"] == name)
                    row["profile_ms_per_step"] = profile_breakdown(variants[name], steps)
            del variants, keep
            gc.collect()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


def _rows(
    batch: int, rates: dict[str, list[float]], brackets: dict[str, list[float]]
) -> list[dict]:
    """Median samples/s per variant and the median over rounds of its ratio to the reference
    runs just before and after it."""
    rows = []
    rounds = len(next(iter(brackets.values()))) if brackets else len(rates[REFERENCE])
    print(f"\nbatch {batch}: median over {rounds} interleaved rounds, each variant between two "
          "reference runs")  # fmt: skip
    for name, rs in rates.items():
        refs = brackets.get(name, rs)
        ratio = statistics.median(r / q for r, q in zip(rs, refs, strict=True))
        rows.append(
            {
                "variant": name,
                "batch": batch,
                "samples_per_s": round(statistics.median(rs), 1),
                "vs_reference": round(ratio, 2),
                "rounds": [round(r, 1) for r in rs],
                "reference_around": [round(q, 1) for q in refs] if name in brackets else None,
            }
        )
        print(f"  {name:<56} {rows[-1]['samples_per_s']:>10,.0f} samples/s  "
              f"{ratio:5.2f}x reference", flush=True)  # fmt: skip
    return rows


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


if __name__ == "__main__":
    main()
