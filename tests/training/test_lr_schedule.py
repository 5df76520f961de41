"""LR schedule: warm-up then decay, a pure function of the step."""

from __future__ import annotations

import math

import pytest

from recsys.training.optim import LRSchedule


def test_linear_warmup_then_cosine_to_final():
    s = LRSchedule(total_steps=110, warmup_steps=10, start_factor=0.1, decay="cosine",
                   final_factor=0.2)  # fmt: skip
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(5) == pytest.approx(0.55)
    assert s.factor(10) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s.factor(110) == pytest.approx(0.2)
    assert s.factor(500) == pytest.approx(0.2)


def test_linear_decay_and_constant():
    lin = LRSchedule(total_steps=100, decay="linear", decay_start=50, final_factor=0.0)
    assert lin.factor(49) == 1.0 and lin.factor(75) == pytest.approx(0.5)
    assert LRSchedule(total_steps=100).factor(99) == 1.0


def test_unknown_decay_rejected():
    with pytest.raises(ValueError, match="optim.decay must be none, linear or cosine"):
        LRSchedule(total_steps=10, decay="step")


def test_trainer_hands_each_steps_lr_to_dense_and_fused_optimizers(
    tiny_dataset, dist_env, tmp_path
):
    """The schedule's lr of step k reaches the dense optimizer and fbgemm's fused table kernels
    before step k's backward (the combined optimizer's `step` leaves the fused ones alone)."""
    from recsys.builders import build_trainer
    from recsys.config import TrainConfig

    directory, _ = tiny_dataset
    cfg = TrainConfig()
    cfg.data.kind, cfg.data.path = "parquet", str(directory)
    cfg.model.bottom_mlp, cfg.model.top_mlp = [16], [16]
    cfg.optim.dense.lr, cfg.optim.embedding.lr = 0.01, 0.2
    cfg.optim.warmup_steps, cfg.optim.warmup_start_factor = 4, 0.1
    cfg.trainer.batch_size, cfg.trainer.tensorboard, cfg.trainer.resume = 32, False, "none"
    trainer = build_trainer(cfg, tmp_path, dist_env, config_yaml="")
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
