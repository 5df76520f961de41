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
