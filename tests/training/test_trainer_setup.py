"""Trainer set-up: what `build_trainer` wires together (lr hand-over, start-up warnings)."""

from __future__ import annotations

import pytest

import recsys.builders as builders
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
