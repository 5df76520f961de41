"""The one place where configs become objects: data, model, sharding, optimizers, trainer.

Library modules take plain typed arguments; only this module (and the CLI that calls it) reads
the structured config.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torchrec.distributed.planner import Topology

from recsys.config import DistConfig, ModelConfig, OptimConfig, TrainConfig, TrainerConfig
from recsys.data.features import DatasetManifest
from recsys.data.loader import ParquetBatchLoader
from recsys.data.registry import prepare_dataset
from recsys.distributed.env import DistEnv
from recsys.distributed.sharding import (
    init_embedding_tables,
    plan_sharding,
    planner_constraints,
    shard_model,
)
from recsys.distributed.topology import HostSpec, build_topology
from recsys.errors import ConfigError
from recsys.models.dlrm import DLRM, table_configs
from recsys.training.checkpoint import CheckpointManager, resolve_resume
from recsys.training.fused_forward import FusedForwardLoss
from recsys.training.optim import (
    LRSchedule,
    TrainingOptimizer,
    attach_embedding_optimizer,
    dense_optimizer,
)
from recsys.training.reporting import Reporter
from recsys.training.tbe_kernels import use_recsys_embedding_kernels
from recsys.training.trainer import LoopSettings, Trainer
from recsys.utils.allocator import retain_freed_memory
from recsys.utils.hugepages import place_tables_on_huge_pages
from recsys.utils.kernels import flush_denormals

log = logging.getLogger(__name__)


def build_model(cfg: ModelConfig, manifest: DatasetManifest) -> DLRM:
    if cfg.name != "dlrm":
        raise ConfigError(f"model.name={cfg.name!r} is not available (available: dlrm)")
    tables = table_configs(manifest.sparse_names, manifest.table_sizes, cfg.embedding_dim)
    return DLRM(
        num_dense=len(manifest.dense_features),
        tables=tables,
        bottom_mlp=list(cfg.bottom_mlp),
        top_mlp=list(cfg.top_mlp),
        interaction=cfg.interaction,
        interaction_self=cfg.interaction_self,
        interaction_pad=cfg.interaction_pad,
    )


def host_spec(d: DistConfig) -> HostSpec:
    """One host's hardware as the planner sees it (dist.gpus_per_host, memory, bandwidths)."""
    if d.gpus_per_host < 1 or not d.hosts or min(d.hosts) < 1:
        raise ConfigError(f"dist.gpus_per_host and dist.hosts must be >= 1, got "
                          f"{d.gpus_per_host} and {d.hosts}")  # fmt: skip
    return HostSpec(d.name, d.device, d.gpus_per_host, d.hbm_gb, d.ddr_gb, d.hbm_bw_gbps,
                    d.intra_host_bw_gbps, d.inter_host_bw_gbps)  # fmt: skip


def training_topology(d: DistConfig, world_size: int) -> Topology:
    """The planner topology of a running job: `dist`'s hosts when the world fills whole hosts
    of `dist.gpus_per_host` GPUs, else (CPU runs, partial hosts) every rank on one host."""
    spec = host_spec(d)
    per_host = spec.gpus_per_host
    if d.device != "cuda" or world_size % per_host:
        per_host = world_size
    return build_topology(replace(spec, gpus_per_host=per_host), world_size // per_host)


def build_sharded_model(
    model: DLRM, optim: OptimConfig, dist_cfg: DistConfig, env: DistEnv, seed: int
):
    """Attach the fused embedding optimizer, plan, shard (DMP) and initialise the tables."""
    ebc = model.embedding_bag_collection
    tables = list(ebc.embedding_bag_configs())
    e = optim.embedding
    attach_embedding_optimizer(ebc.parameters(), e.name, e.lr, e.eps)
    constraints = planner_constraints(
        tables, list(dist_cfg.sharding_types), dist_cfg.compute_kernel, dict(dist_cfg.pin_sharding),
        dict(dist_cfg.pin_kernel),
    )  # fmt: skip
    topology = training_topology(dist_cfg, env.world_size)
    plan = plan_sharding(model, tables, topology, constraints, dist.GroupMember.WORLD)
    dmp = shard_model(model, plan, env.device)
    init_embedding_tables(dmp, tables, seed)
    return dmp, plan


def build_loaders(
    directory: Path, manifest: DatasetManifest, t: TrainerConfig, hash_ids: bool, env: DistEnv
):
    common = {"rank": env.rank, "world_size": env.world_size, "hash_ids": hash_ids,
              "prefetch": t.prefetch_batches}  # fmt: skip
    train = ParquetBatchLoader(
        directory, manifest, "train", t.batch_size, shuffle=t.shuffle, drop_last=True,
        seed=t.seed, **common,
    )  # fmt: skip

    def eval_loader(split: str, max_rows: int | None):
        return lambda: ParquetBatchLoader(
            directory, manifest, split, t.eval_batch_size, max_rows=max_rows, **common
        )

    evals = {"valid": eval_loader("valid", t.eval_rows), "test": eval_loader("test", None)}
    evals["valid_full"] = eval_loader("valid", None)
    return train, evals


def cpu_has_amx() -> bool:
    """Whether this CPU's AMX tiles are usable (torch asks the OS for them); False if unknown."""
    try:
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


def build_trainer(cfg: TrainConfig, run_dir: Path, env: DistEnv, config_yaml: str) -> Trainer:
    t = cfg.trainer
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    if t.flush_denormal and not flush_denormals():
        log.info("trainer.flush_denormal: not supported on this CPU, left as it is")
    if t.retain_freed_memory and not retain_freed_memory():
        log.info("trainer.retain_freed_memory: not glibc, allocator left as it is")
    if t.embedding_kernels not in ("recsys", "fbgemm"):
        raise ConfigError(
            f"trainer.embedding_kernels must be recsys or fbgemm, got {t.embedding_kernels!r}"
        )
    use_recsys_embedding_kernels(t.embedding_kernels == "recsys")
    if cfg.optim.dense.in_backward and env.world_size > 1:
        raise ConfigError(
            "optim.dense.in_backward=true updates the dense layers inside the backward pass, "
            f"before DDP could average their gradients over the {env.world_size} processes: it "
            "needs world size 1 (with more processes keep optim.dense.in_backward=false)"
        )
    if t.precision == "bf16" and env.device.type == "cpu" and not cpu_has_amx():
        log.warning(
            "trainer.precision=bf16 on a CPU without AMX: its bf16 matrix products are slower "
            "than fp32 ones (measured: the DLRM step ~0.7x of fp32); trainer.precision=fp32 is "
            "faster here"
        )
    torch.manual_seed(t.seed)
    directory, manifest = prepare_dataset(cfg.data, is_writer=env.is_main, barrier=env.barrier)
    train_loader, eval_loaders = build_loaders(directory, manifest, t, cfg.model.hash_ids, env)
    model = build_model(cfg.model, manifest)
    dmp, plan = build_sharded_model(model, cfg.optim, cfg.dist, env, t.seed)
    if t.huge_page_tables and env.device.type == "cpu":
        moved = place_tables_on_huge_pages(dmp, dmp.fused_optimizer.state_dict()["state"])
        log.info("trainer.huge_page_tables: %d MiB of model state on 2 MiB pages", moved >> 20)
    if env.is_main:
        log.info("data set %s (%s): %s", manifest.name, directory,
                 {k: v.rows for k, v in manifest.splits.items()})  # fmt: skip
        log.debug("sharding plan:\n%s", plan)
        (run_dir / "sharding_plan.txt").write_text(str(plan))
    d = cfg.optim.dense
    dense = dense_optimizer(dmp, d.name, d.lr, d.weight_decay, d.momentum, d.eps, d.in_backward)
    optimizer = TrainingOptimizer(dmp.fused_optimizer, dense)
    total = t.max_steps if t.max_steps is not None else t.epochs * len(train_loader)
    o = cfg.optim
    schedule = LRSchedule(total, o.warmup_steps, o.warmup_start_factor, o.decay,
                          o.decay_start_step, o.final_lr_factor)  # fmt: skip
    settings = LoopSettings(total, t.eval_every, t.log_every, t.checkpoint_every, t.precision)
    reporter = Reporter(run_dir, env.is_main, t.tensorboard, config_yaml)
    checkpoints = CheckpointManager(run_dir / "checkpoints", env, t.keep_checkpoints)
    fused = (  # its own check declines steps that change this (e.g. the precision) later
        t.fused_forward and env.world_size == 1 and env.device.type == "cpu"
        and t.precision == "fp32"
    )  # fmt: skip
    trainer = Trainer(
        dmp, optimizer, [(dmp.fused_optimizer, cfg.optim.embedding.lr), (dense, d.lr)], schedule,
        train_loader, eval_loaders, checkpoints, reporter, env, settings,
        forward_loss=FusedForwardLoss(dmp) if fused else None,
    )  # fmt: skip
    resume_from = resolve_resume(t.resume, checkpoints)
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
        dense.init_state()  # torch optimizers create state lazily: DCP needs it to load into
        trainer.restore(resume_from)
    return trainer
