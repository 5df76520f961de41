"""Worker for the multi-process tests: K training steps at any world size, then a checkpoint.

    torchrun --nproc_per_node=2 tests/distributed/steps_worker.py --data DIR --out RUN \
        --batch 64 --steps 12 --sharding table_wise --optim sgd

Builds the trainer exactly as `recsys-train` does (recsys.builders), runs `train_step` on the
loader's batches, records the global mean loss of every step (the mean of the ranks' local
means: every rank has the same batch size), writes a DCP checkpoint under `<RUN>/checkpoints`
and (rank 0) `<RUN>/losses.json` plus `<RUN>/predictions.pt`: the model's click probabilities
for the first rows of the test split (every rank scores the same rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.builders import build_trainer  # noqa: E402
from recsys.config import TrainConfig  # noqa: E402
from recsys.distributed.env import init_distributed, shutdown_distributed  # noqa: E402


def config(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig()
    cfg.data.kind, cfg.data.path = "parquet", args.data
    cfg.model.embedding_dim, cfg.model.bottom_mlp, cfg.model.top_mlp = 16, [32], [32]
    if args.optim == "sgd":
        cfg.optim.dense.name, cfg.optim.dense.lr = "sgd", 0.5
        cfg.optim.embedding.name, cfg.optim.embedding.lr = "sgd", 2.0
    cfg.optim.warmup_steps, cfg.optim.decay = 0, "none"
    cfg.dist.sharding_types = [args.sharding]
    t = cfg.trainer
    t.batch_size, t.max_steps, t.seed, t.num_threads = args.batch, args.steps, 3, 1
    t.tensorboard, t.resume = False, "none"
    return cfg


def probe_batch(data: str, rows: int = 512):
    """The first `rows` test rows as one unsharded batch."""
    from recsys.data.features import DatasetManifest
    from recsys.data.loader import ParquetBatchLoader

    manifest = DatasetManifest.load(data)
    loader = ParquetBatchLoader(Path(data), manifest, "test", rows, rank=0, world_size=1)
    return next(iter(loader))


@torch.no_grad()
def predict(model: torch.nn.Module, data: str) -> torch.Tensor:
    batch = probe_batch(data)
    model.eval()
    try:
        return torch.sigmoid(model(batch.dense, batch.sparse))
    finally:
        model.train()


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("--data", "--out", "--sharding", "--optim"):
        p.add_argument(name, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    args = p.parse_args()
    env = init_distributed("gloo", "cpu", 120)
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(config(args), run, env, config_yaml="")
    losses = []
    batches = iter(trainer.train_loader)
    for _ in range(args.steps):
        loss, _ = trainer.train_step(next(batches))
        trainer.step += 1
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(float(mean) / env.world_size)
    trainer.save_checkpoint()
    probs = predict(trainer.model, args.data)
    if env.is_main:
        (run / "losses.json").write_text(json.dumps({"losses": losses}))
        torch.save(probs, run / "predictions.pt")
    shutdown_distributed()


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
