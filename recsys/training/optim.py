"""Optimizers: fused (in-backward) ones for embedding tables, torch ones for dense layers.

Embedding optimizers are attached with torchrec's `apply_optimizer_in_backward` before
sharding; DMP turns them into fbgemm's fused table-batched updates, so no dense gradient of a
table is ever materialised. The learning-rate schedule is a pure function of the step, so a
checkpoint needs only the step to restore it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from recsys.errors import ConfigError
from recsys.models.mlp import MLP


def attach_embedding_optimizer(
    params: Iterable[nn.Parameter], name: str, lr: float, eps: float
) -> None:
    """Fuse the embedding optimizer into the backward pass (call before sharding)."""
    if name == "rowwise_adagrad":
        apply_optimizer_in_backward(RowWiseAdagrad, params, {"lr": lr, "eps": eps})
    elif name == "adagrad":
        apply_optimizer_in_backward(torch.optim.Adagrad, params, {"lr": lr, "eps": eps})
    elif name == "sgd":
        apply_optimizer_in_backward(torch.optim.SGD, params, {"lr": lr})
    else:
        raise ConfigError(
            f"optim.embedding.name must be rowwise_adagrad, adagrad or sgd, got {name!r}"
        )


def dense_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    eps: float,
    in_backward: bool = False,
) -> KeyedOptimizer:
    """A keyed torch optimizer over every parameter without an in-backward optimizer; with
    `in_backward` (SGD without momentum only) the model's MLPs take its step in their backward
    (`sgd_step_in_backward`)."""
    params = dict(in_backward_optimizer_filter(model.named_parameters()))
    # fused=True: one multi-tensor kernel per step instead of a Python loop of small ops per
    # parameter (torch has fused CPU kernels for all three).
    common = {"lr": lr, "weight_decay": weight_decay, "fused": True}
    factories = {
        "adam": lambda p: torch.optim.Adam(p, eps=eps, **common),
        "adagrad": lambda p: torch.optim.Adagrad(p, eps=eps, **common),
        "sgd": lambda p: torch.optim.SGD(p, momentum=momentum, **common),
    }
    if name not in factories:
        raise ConfigError(f"optim.dense.name must be one of {sorted(factories)}, got {name!r}")
    if in_backward and (name != "sgd" or momentum != 0.0):
        raise ConfigError(
            "optim.dense.in_backward=true takes plain SGD steps in the MLPs' backward: it needs "
            f"optim.dense.name=sgd and optim.dense.momentum=0, got {name!r} and {momentum}"
        )
    dense = KeyedOptimizerWrapper(params, factories[name])
    if in_backward:
        sgd_step_in_backward(model, dense.param_groups[0])
    return dense


def sgd_step_in_backward(model: nn.Module, group: dict) -> None:
    """Hand SGD param group `group`'s step on each MLP's parameters to that MLP's fused backward
    (no weight gradient is written or read again: ~5-8 % of a batch-128 DLRM step on 2 cores,
    docs/benchmarks.md); the optimizer's own step still covers every other dense parameter."""
    for module in model.modules():
        if isinstance(module, MLP):
            module.take_sgd_step_in_backward(group)


class TrainingOptimizer(CombinedOptimizer):
    """torchrec's combined optimizer (one state dict for both) whose `step` runs the dense torch
    optimizer only, and directly: the fused embedding optimizers update their tables in the
    backward pass, and their own `step` just hands the lr to fbgemm's kernels again, which their
    `zero_grad`, called at the start of every training step, has already done (~25 us of Python
    a step); the keyed wrapper around the dense optimizer only passes the call on, under one more
    profiler hook (~25 us more). When no dense parameter has a gradient (every one updated in
    the backward: `sgd_step_in_backward`) the dense step is skipped (~13 us of Python).

    `zero_grad` drops the dense gradients (None, torch's default) where torchrec's combined
    optimizer zeroes them in place, so the next backward stores each new gradient instead of
    adding it into zeros (no difference measured at batch 128: same-process A/B 0.99x, noise),
    and skips the dense optimizer's call when there is none."""

    def __init__(self, fused: KeyedOptimizer, dense: KeyedOptimizerWrapper) -> None:
        super().__init__([("embedding", fused), ("dense", dense)])
        self._dense = dense._optimizer  # the torch optimizer the wrapper holds
        self._dense_params = [p for g in self._dense.param_groups for p in g["params"]]

    def _dense_grads(self) -> bool:
        return any(p.grad is not None for p in self._dense_params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizers[0][1].zero_grad()  # hands the new lr to the fused embedding kernels
        if self._dense_grads():
            self._dense.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> None:
        if closure is not None or self._dense_grads():
            self._dense.step(closure=closure)


class LRSchedule:
    """Linear warm-up from `start_factor`, then none / linear / cosine decay to `final_factor`."""

    def __init__(
        self,
        total_steps: int,
        warmup_steps: int = 0,
        start_factor: float = 0.01,
        decay: str = "none",
        decay_start: int = 0,
        final_factor: float = 0.0,
    ) -> None:
        if decay not in ("none", "linear", "cosine"):
            raise ConfigError(f"optim.decay must be none, linear or cosine, got {decay!r}")
        self.total_steps = max(total_steps, 1)
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        self.decay = decay
        self.decay_start = max(decay_start, warmup_steps)
        self.final_factor = final_factor

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            t = step / self.warmup_steps
            return self.start_factor + (1.0 - self.start_factor) * t
        if self.decay == "none" or step < self.decay_start:
            return 1.0
        span = max(self.total_steps - self.decay_start, 1)
        t = min((step - self.decay_start) / span, 1.0)
        shape = 1.0 - t if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
        return self.final_factor + (1.0 - self.final_factor) * shape

    def apply(self, optimizers: list[tuple[KeyedOptimizer, float]], step: int) -> float:
        """Set every group's lr to base_lr x factor(step); returns the factor."""
        f = self.factor(step)
        for opt, base_lr in optimizers:
            for group in opt.param_groups:
                group["lr"] = base_lr * f
        return f
