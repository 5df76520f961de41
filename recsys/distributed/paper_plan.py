"""Shard a model on paper: torchrec's planner on a described topology, no process group.

`plan_on_paper` runs `EmbeddingShardingPlanner.plan` (the single-process planner) for N hosts
of a `HostSpec` and returns what it chose: each table's sharding type and shards (rank, rows,
columns, estimated HBM/DDR bytes and time), each rank's memory use against its cap, and the
planner's step-time rating (the slowest rank's summed shard time, in ms). The planner's own
storage estimate per shard is: weights + fused optimizer state (row-wise Adagrad: one fp32 per
row) + input/output buffers of one batch (ids and pooled outputs, pipelined copies).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import (
    ParameterConstraints,
    PlannerError,
    ShardingOption,
    Stats,
    Topology,
)
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from recsys.distributed.topology import GB, HostSpec, build_topology
from recsys.errors import RecsysError


class PlanDoesNotFit(RecsysError):
    """No sharding of the tables fits the topology's memory."""


@dataclass
class ShardPlacement:
    rank: int
    row_offset: int
    rows: int
    col_offset: int
    cols: int
    hbm_bytes: int
    ddr_bytes: int
    perf_ms: float


@dataclass
class TablePlan:
    name: str
    rows: int
    dim: int
    sharding_type: str
    compute_kernel: str
    shards: list[ShardPlacement]

    @property
    def ranks(self) -> list[int]:
        return sorted({s.rank for s in self.shards})


@dataclass
class DeviceUse:
    """One rank: estimated bytes of its shards, the planner's reservation, and the caps."""

    rank: int
    hbm_bytes: int = 0
    ddr_bytes: int = 0
    hbm_reserved: int = 0
    ddr_reserved: int = 0
    hbm_cap: int = 0
    ddr_cap: int = 0
    perf_ms: float = 0.0


@dataclass
class TopologyPlan:
    label: str
    hosts: int
    gpus_per_host: int
    world_size: int
    batch_size: int
    tables: list[TablePlan] = field(default_factory=list)
    devices: list[DeviceUse] = field(default_factory=list)

    @property
    def step_ms(self) -> float:
        """The planner's rating: the slowest rank's summed shard time (embeddings only)."""
        return max((d.perf_ms for d in self.devices), default=0.0)


class _CaptureBestPlan(Stats):
    """A planner `Stats` hook that keeps the chosen sharding options (and prints nothing)."""

    def __init__(self) -> None:
        self.best_plan: list[ShardingOption] = []

    def log(self, sharding_plan, topology, batch_size, storage_reservation, num_proposals,
            num_plans, run_time, best_plan, *args, **kwargs) -> None:  # fmt: skip
        if sharding_plan.plan:
            self.best_plan = list(best_plan)


def plan_on_paper(
    model: nn.Module,
    tables: list[EmbeddingBagConfig],
    spec: HostSpec,
    hosts: int,
    constraints: dict[str, ParameterConstraints],
    batch_size: int,
    reserve_fraction: float = 0.15,
) -> TopologyPlan:
    """Plan `model`'s tables on `hosts` hosts of `spec`; raise PlanDoesNotFit when none fits."""
    topology = build_topology(spec, hosts)
    sharders = [EmbeddingBagCollectionSharder()]
    with warnings.catch_warnings():  # "known to cause issues": it is the planner's default
        warnings.simplefilter("ignore", FutureWarning)
        reservation = HeuristicalStorageReservation(percentage=reserve_fraction)
    capture = _CaptureBestPlan()
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, storage_reservation=reservation,
        stats=capture, constraints=constraints, debug=False,
    )  # fmt: skip
    try:
        planner.plan(model, sharders)
        available = reservation.reserve(topology, batch_size, model, sharders, constraints)
    except PlannerError as e:
        raise PlanDoesNotFit(_no_fit_message(spec, hosts, tables)) from e
    result = TopologyPlan(spec.label(hosts), hosts, spec.gpus_per_host, topology.world_size,
                          batch_size)  # fmt: skip
    result.devices = _devices(topology, available)
    by_name = {t.name: t for t in tables}
    for option in capture.best_plan:
        result.tables.append(_table_plan(option, by_name[option.name]))
        for shard in result.tables[-1].shards:
            device = result.devices[shard.rank]
            device.hbm_bytes += shard.hbm_bytes
            device.ddr_bytes += shard.ddr_bytes
            device.perf_ms += shard.perf_ms
    result.tables.sort(key=lambda t: list(by_name).index(t.name))
    return result


def _devices(topology: Topology, available: Topology) -> list[DeviceUse]:
    return [
        DeviceUse(
            rank=d.rank,
            hbm_cap=d.storage.hbm,
            ddr_cap=d.storage.ddr,
            hbm_reserved=d.storage.hbm - a.storage.hbm,
            ddr_reserved=d.storage.ddr - a.storage.ddr,
        )
        for d, a in zip(topology.devices, available.devices, strict=True)
    ]


def _table_plan(option: ShardingOption, table: EmbeddingBagConfig) -> TablePlan:
    shards = [
        ShardPlacement(
            rank=s.rank,
            row_offset=s.offset[0],
            rows=s.size[0],
            col_offset=s.offset[1],
            cols=s.size[1],
            hbm_bytes=s.storage.hbm,
            ddr_bytes=s.storage.ddr,
            perf_ms=s.perf.total,
        )  # fmt: skip
        for s in option.shards
    ]
    return TablePlan(table.name, table.num_embeddings, table.embedding_dim,
                     option.sharding_type, option.compute_kernel, shards)  # fmt: skip


def _no_fit_message(spec: HostSpec, hosts: int, tables: list[EmbeddingBagConfig]) -> str:
    biggest = max(tables, key=lambda t: t.num_embeddings * t.embedding_dim)
    total = sum(t.num_embeddings * t.embedding_dim * 4 for t in tables)
    return (
        f"the embedding tables do not fit on {spec.label(hosts)} "
        f"({hosts * spec.gpus_per_host} ranks; caps per rank: HBM {spec.hbm_gb:g} GB, "
        f"DDR {spec.ddr_cap / GB:g} GB): biggest table {biggest.name} "
        f"{biggest.num_embeddings:,} x {biggest.embedding_dim} "
        f"({biggest.num_embeddings * biggest.embedding_dim * 4 / GB:.1f} GB fp32), "
        f"all tables {total / GB:.1f} GB fp32 before optimizer state; "
        f"use more hosts (dist.hosts) or a smaller model.embedding_dim"
    )
