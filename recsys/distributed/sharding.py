"""Shard a model's embedding tables with torchrec: planner constraints, DMP, deterministic init.

Tables are model-parallel by default (table-wise, column-wise, row-wise or table-row-wise, as
the planner decides under the memory caps) with the FUSED compute kernel, so their optimizer
runs inside the backward pass (fbgemm table-batched kernels). `pin_sharding` fixes a table's
sharding type. Dense layers are replicated and data-parallel (DDP inside DMP; neither DDP nor
the all-to-alls in a group of one).
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from torch import nn
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import (
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from recsys.distributed.group_of_one import EmbeddingTablesSharder
from recsys.errors import ConfigError

INIT_CHUNK_ROWS = 65_536


SHARDING_TYPES = [t.value for t in ShardingType]
COMPUTE_KERNELS = [k.value for k in EmbeddingComputeKernel]


def planner_constraints(
    tables: list[EmbeddingBagConfig],
    sharding_types: list[str],
    compute_kernel: str,
    pins: dict[str, str],
    kernel_pins: dict[str, str] | None = None,
) -> dict[str, ParameterConstraints]:
    """Per table: the sharding types and compute kernel the planner may choose from.

    `pins` (dist.pin_sharding) and `kernel_pins` (dist.pin_kernel) fix a table's sharding type
    or kernel. A table pinned to data_parallel gets the dense kernel unless its kernel is
    pinned too: a fused (in-backward) kernel cannot be replicated.
    """
    kernel_pins = kernel_pins or {}
    names = {t.name for t in tables}
    _check("dist.sharding_types", sharding_types, SHARDING_TYPES)
    _check("dist.compute_kernel", [compute_kernel], COMPUTE_KERNELS)
    checks = [("dist.pin_sharding", pins, SHARDING_TYPES),
              ("dist.pin_kernel", kernel_pins, COMPUTE_KERNELS)]  # fmt: skip
    for option, table_pins, allowed in checks:
        unknown = sorted(set(table_pins) - names)
        if unknown:
            raise ConfigError(f"{option} names unknown tables {unknown} (tables: {sorted(names)})")
        _check(option, list(table_pins.values()), allowed)
    constraints = {}
    for t in tables:
        types = [pins[t.name]] if t.name in pins else list(sharding_types)
        kernel = "dense" if types == [ShardingType.DATA_PARALLEL.value] else compute_kernel
        constraints[t.name] = ParameterConstraints(
            sharding_types=types, compute_kernels=[kernel_pins.get(t.name, kernel)]
        )
    return constraints


def _check(option: str, values: list[str], allowed: list[str]) -> None:
    bad = sorted(set(values) - set(allowed))
    if bad:
        raise ConfigError(f"{option}: unknown value(s) {bad} (allowed: {', '.join(allowed)})")


def plan_sharding(
    model: nn.Module,
    tables: list[EmbeddingBagConfig],
    topology: Topology,
    constraints: dict[str, ParameterConstraints],
    pg: dist.ProcessGroup,
) -> ShardingPlan:
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    return planner.collective_plan(model, [EmbeddingBagCollectionSharder()], pg)


class ReplicatedDenseWrapper(DefaultDataParallelWrapper):
    """DDP for the dense layers when there is more than one replica; none in a group of one.

    With one process DDP's all-reduce averages a gradient with itself: the same numbers, at a
    cost of ~1 ms per step in bucket copies, hooks and a gloo call. Skipping it changes no
    result and no state-dict key (DMP unwraps DDP when it builds state dicts).
    """

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        if env.world_size == 1:
            dmp._dmp_wrapped_module = dmp._dmp_wrapped_module.to(device)
            return
        super().wrap(dmp, env, device)


def embedding_sharder(device: torch.device) -> EmbeddingTablesSharder:
    """torchrec's sharder for the tables (no all-to-alls in a group of one: group_of_one.py);
    on CPU without fbgemm's separate id bounds check.

    That check (`bounds_check_indices`, ~0.5 ms per step at batch 2048 on one thread) clamps a bad
    id to 0 with a warning by default: a silent wrong answer. Ids are checked where they enter
    (the loader names the file, row and feature), and on CPU fbgemm's lookup kernel and our
    backward kernel both stop with an error on an id outside its table. On CUDA fbgemm's kernels
    trust their input, so the check stays there.
    """
    if device.type != "cpu":
        return EmbeddingTablesSharder()
    return EmbeddingTablesSharder(fused_params={"bounds_check_mode": BoundsCheckMode.NONE})


def shard_model(
    model: nn.Module, plan: ShardingPlan, device: torch.device
) -> DistributedModelParallel:
    pg = dist.GroupMember.WORLD
    return DistributedModelParallel(
        model,
        env=ShardingEnv.from_process_group(pg),
        device=device,
        plan=plan,
        sharders=[embedding_sharder(device)],
        data_parallel_wrapper=ReplicatedDenseWrapper(),
    )


@torch.no_grad()
def init_embedding_tables(model: nn.Module, tables: list[EmbeddingBagConfig], seed: int) -> None:
    """Fill every local shard with U(-1/sqrt(n), 1/sqrt(n)) drawn per (table, row chunk).

    Values depend only on (seed, table, row), never on how the table is sharded, so runs at any
    world size start from the same weights.
    """
    by_name = {t.name: t for t in tables}
    for key, value in model.state_dict().items():
        table = key.rsplit(".", 2)[-2] if key.endswith(".weight") else None
        if table not in by_name or not hasattr(value, "local_shards"):
            continue
        cfg = by_name[table]
        bound = cfg.num_embeddings**-0.5
        for shard in value.local_shards():
            r0, c0 = shard.metadata.shard_offsets
            rows, cols = shard.metadata.shard_sizes
            for start in range(r0 - r0 % INIT_CHUNK_ROWS, r0 + rows, INIT_CHUNK_ROWS):
                chunk = _chunk_values(seed, table, start, cfg, bound)
                lo, hi = max(start, r0), min(start + chunk.shape[0], r0 + rows)
                shard.tensor[lo - r0 : hi - r0].copy_(
                    chunk[lo - start : hi - start, c0 : c0 + cols]
                )


def _chunk_values(
    seed: int, table: str, start: int, cfg: EmbeddingBagConfig, bound: float
) -> torch.Tensor:
    digest = hashlib.blake2b(f"{seed}/{table}/{start}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    n = min(INIT_CHUNK_ROWS, cfg.num_embeddings - start)
    return torch.empty(n, cfg.embedding_dim).uniform_(-bound, bound, generator=gen)
