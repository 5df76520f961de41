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
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, backend, local_rank)  # checked before any rank waits on the others
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(
                backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
            )
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def _device(device: str, backend: str, local_rank: int) -> torch.device:
    """This rank's device; a ConfigError when the machine cannot run `device` / `backend`."""
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"dist.backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("dist.backend=nccl but this torch build has no NCCL (use dist=cpu)")
    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda":
        raise ConfigError(f"dist.device must be 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError("dist.device=cuda but no CUDA device is visible (use dist=cpu)")
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
