"""Process-group set-up: the same for a plain `recsys-train` (world size 1) and `torchrun`.

Every run has a process group, so the model always goes through DistributedModelParallel and
there is a single training path for every world size.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from recsys.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()


def init_distributed(backend: str, device: str, timeout_s: int) -> DistEnv:
    """Join the torchrun job described by the environment, or form a group of one."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(
                backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
            )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("dist.device=cuda but no CUDA device is visible (use dist=cpu)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ConfigError(f"dist.device must be 'cpu' or 'cuda', got {device!r}")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
