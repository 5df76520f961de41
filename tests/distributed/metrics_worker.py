"""Worker: metrics over predictions split across ranks, written by rank 0 as JSON.

    torchrun --nproc_per_node=2 tests/distributed/metrics_worker.py OUT.json

Every rank draws the same seeded predictions, keeps its own slice (uneven on purpose), and
feeds it to the trainer's PredictionAccumulator, which gathers all ranks' rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.distributed.env import init_distributed, shutdown_distributed  # noqa: E402
from recsys.training.metrics import PredictionAccumulator  # noqa: E402

ROWS = 10_001


def predictions() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    true_ctr = torch.rand(ROWS, generator=g) * 0.6
    labels = (torch.rand(ROWS, generator=g) < true_ctr).float()
    probs = (true_ctr + 0.2 * torch.randn(ROWS, generator=g)).clamp(0.01, 0.99)
    return probs, labels, true_ctr


def main() -> None:
    env = init_distributed("gloo", "cpu", 60)
    probs, labels, true_ctr = predictions()
    bounds = [0, 3_000, ROWS] if env.world_size == 2 else [0, ROWS]
    lo, hi = bounds[env.rank], bounds[env.rank + 1]
    acc = PredictionAccumulator()
    for start in range(lo, hi, 997):  # several batches per rank
        stop = min(start + 997, hi)
        acc.add(probs[start:stop], labels[start:stop], true_ctr[start:stop])
    metrics = acc.compute()
    if env.is_main:
        Path(sys.argv[1]).write_text(json.dumps(metrics))
    shutdown_distributed()


if __name__ == "__main__":
    main()
