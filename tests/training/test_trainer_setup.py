"""Trainer set-up: what `build_trainer` wires together (lr hand-over, start-up warnings)."""

from __future__ import annotations

import platform

import pytest
import torch

import recsys.builders as builders
from kernels import ops
from recsys.config import TrainConfig


def _config(tiny_dataset) -> TrainConfig:
    directory, _ = tiny_dataset
    cfg = TrainConfig()
    cfg.data.kind, cfg.data.path = "parquet", str(directory)
    cfg.model.bottom_mlp, cfg.model.top_mlp = [16], [16]
    cfg.trainer.tensorboard, cfg.trainer.resume = False, "none"
    return cfg


def test_trainer_hands_each_steps_lr_to_dense_and_fused_optimizers(
    tiny_dataset, dist_env, tmp_path
):
    """The schedule's lr of step k reaches the dense optimizer and fbgemm's fused table kernels
    before step k's backward (the combined optimizer's `step` leaves the fused ones alone)."""
    cfg = _config(tiny_dataset)
    cfg.optim.dense.lr, cfg.optim.embedding.lr = 0.01, 0.2
    cfg.optim.warmup_steps, cfg.optim.warmup_start_factor = 4, 0.1
    cfg.trainer.batch_size = 32
    trainer = builders.build_trainer(cfg, tmp_path, dist_env, config_yaml="")
    ebc = trainer.model.module.embedding_bag_collection
    tbes = [m._emb_module for lookup in ebc._lookups for m in lookup._emb_modules]
    assert tbes
    batches = iter(trainer.train_loader)
    for step in range(6):
        factor = trainer.schedule.factor(step)
        if step < 4:  # warm-up: a different lr every step
            assert factor == pytest.approx(0.1 + 0.9 * step / 4)
        trainer.step = step
        trainer.train_step(next(batches))
        for tbe in tbes:
            assert tbe.get_learning_rate() == pytest.approx(0.2 * factor)
        dense = trainer.optimizer.optimizers[1][1]
        assert all(g["lr"] == pytest.approx(0.01 * factor) for g in dense.param_groups)


@pytest.mark.parametrize("amx", [False, True])
def test_bf16_without_amx_warns(tiny_dataset, dist_env, tmp_path, monkeypatch, caplog, amx):
    cfg = _config(tiny_dataset)
    cfg.trainer.precision = "bf16"
    monkeypatch.setattr(builders, "cpu_has_amx", lambda: amx)
    with caplog.at_level("WARNING", logger="recsys.builders"):
        builders.build_trainer(cfg, tmp_path, dist_env, config_yaml="")
    warned = [r for r in caplog.records if "without AMX" in r.getMessage()]
    assert len(warned) == (0 if amx else 1)


SUBNORMAL = 1e-39  # below float32's smallest normal (1.18e-38)


def _subnormals_kept() -> int:
    """Subnormal inputs surviving a multiply spread over both threads (1M elements, grain 32k)."""
    x = torch.full((1 << 20,), SUBNORMAL)
    return int(torch.count_nonzero(x * 1.0))


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    ops.set_flush_denormal(False)
    torch.set_num_threads(before)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 FTZ/DAZ")
@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_on_every_thread(tiny_dataset, dist_env, tmp_path, two_threads, flush):
    """`trainer.flush_denormal` reaches the OpenMP workers too (they run most of the step's
    arithmetic), also when the pool already exists."""
    ops.set_flush_denormal(False)
    assert _subnormals_kept() == 1 << 20  # the pool's worker exists now
    cfg = _config(tiny_dataset)
    cfg.trainer.flush_denormal = flush
    builders.build_trainer(cfg, tmp_path, dist_env, config_yaml="")
    assert _subnormals_kept() == (0 if flush else 1 << 20)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 FTZ/DAZ")
def test_flush_denormal_op_sets_and_clears_every_thread(two_threads):
    assert torch.finfo(torch.float32).tiny > SUBNORMAL > 0
    assert ops.set_flush_denormal(True) == 2
    assert _subnormals_kept() == 0  # DAZ on both threads: read as zero everywhere
    assert ops.set_flush_denormal(False) == 2
    assert _subnormals_kept() == 1 << 20


@pytest.mark.parametrize("bad", [None, 2.5, "yes"])
def test_flush_denormal_op_rejects_non_bools(bad):
    with pytest.raises(TypeError, match="set_flush_denormal takes True or False, got"):
        ops.set_flush_denormal(bad)
