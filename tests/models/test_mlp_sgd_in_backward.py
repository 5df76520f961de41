"""The dense SGD step taken inside the fused MLP's backward (`optim.dense.in_backward`): the same
parameters as the backward followed by torch.optim.SGD, no `.grad` written, and clear errors."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import recsys.builders as builders
from kernels import ops
from recsys.config import TrainConfig
from recsys.errors import ConfigError
from recsys.models.mlp import MLP
from recsys.training.optim import dense_optimizer


def _pair(in_features: int, sizes: list[int], relu_last: bool, lr: float, decay: float):
    """(model stepped in its backward, its copy with a torch SGD optimizer)."""
    torch.manual_seed(0)
    model = MLP(in_features, sizes, relu_last=relu_last)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr, weight_decay=decay)
    group = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=decay).param_groups[0]
    model.take_sgd_step_in_backward(group)
    return model, ref, ref_opt


def _step(model: MLP, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = model(x)
    (y.float() * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()
    return y.detach(), x.grad


# bottom-MLP shape (13 = narrow input: the transposed weight-gradient GEMM), top-MLP shape with a
# width-1 head (the head kernels) and an input width that is not a multiple of 16
@pytest.mark.parametrize(
    "in_features,sizes,relu_last", [(13, [64, 32, 16], True), (37, [48, 24, 1], False)]
)
@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_fp32_step_in_backward_equals_torch_sgd(in_features, sizes, relu_last, decay):
    model, ref, ref_opt = _pair(in_features, sizes, relu_last, lr=0.05, decay=decay)
    initial = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(96, in_features, generator=g)
        y, gx = _step(model, x, bf16=False)
        y_ref, gx_ref = _step(ref, x, bf16=False)
        ref_opt.step()
        ref_opt.zero_grad()
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
        assert all(p.grad is None for p in model.parameters())
    # four steps of lr 0.05 on weight gradients that are fp32 sums of 96 products in two orders
    # (MKL picks its order by CPU; seen: one weight of 1776 4.2e-5 apart after the four steps on
    # an AMD Zen 3 host, all others within atol 1e-5, rtol 1e-4)
    for p, q, p0 in zip(model.parameters(), ref.parameters(), initial, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4)
        assert not torch.equal(p, p0)  # every parameter was stepped


@pytest.mark.parametrize("rows", [64, 1100])  # MKL's bf16 GEMM below 1024 rows, oneDNN above
def test_bf16_step_in_backward_equals_torch_sgd(rows):
    model, ref, ref_opt = _pair(13, [64, 32, 1], False, lr=0.05, decay=0.01)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(rows, 13, generator=g)
        y, gx = _step(model, x, bf16=True)
        y_ref, gx_ref = _step(ref, x, bf16=True)
        ref_opt.step()
        ref_opt.zero_grad()
        assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_lr_read_at_every_forward_and_no_step_without_grad():
    model, ref, ref_opt = _pair(13, [32, 8], True, lr=0.1, decay=0.0)
    group = model._sgd_group
    x = torch.randn(16, 13, generator=torch.Generator().manual_seed(3))
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model(x)
    with torch.inference_mode():
        model(x)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for lr in (0.1, 0.0, 0.02):  # a schedule changes the group's lr between steps
        group["lr"] = ref_opt.param_groups[0]["lr"] = lr
        _step(model, x, bf16=False)
        _step(ref, x, bf16=False)
        ref_opt.step()
        ref_opt.zero_grad()
        if lr == 0.0:
            for p, q in zip(model.parameters(), ref.parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    model.take_sgd_step_in_backward(None)  # handed back: gradients again, no update
    snapshot = copy.deepcopy(model.state_dict())
    _step(model, x, bf16=False)
    assert all(p.grad is not None for p in model.parameters())
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


def test_frozen_parameters_are_not_stepped():
    model, _, _ = _pair(13, [32, 8], True, lr=0.1, decay=0.1)
    model.layers[0].weight.requires_grad_(False)
    model.layers[1].bias.requires_grad_(False)
    frozen = model.layers[0].weight.clone(), model.layers[1].bias.clone()
    others = [p.clone() for p in model.parameters() if p.requires_grad]
    model(torch.randn(16, 13)).sum().backward()  # the input needs no gradient either
    assert torch.equal(model.layers[0].weight, frozen[0])
    assert torch.equal(model.layers[1].bias, frozen[1])
    moved = [p for p in model.parameters() if p.requires_grad]
    assert all(not torch.equal(a, b) for a, b in zip(moved, others, strict=True))


def test_binding_and_dispatcher_take_the_same_step():
    results = []
    for call in (ops.mlp, torch.ops.recsys_kernels.mlp):
        torch.manual_seed(4)
        model = MLP(13, [32, 8], relu_last=True)
        ws = [layer.weight for layer in model.layers]
        bs = [layer.bias for layer in model.layers]
        call(torch.randn(24, 13), ws, bs, True, False, False, 0.05, 0.01).sum().backward()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_bad_step_settings_name_the_problem():
    model = MLP(3, [4])
    ws, bs = [model.layers[0].weight], [model.layers[0].bias]
    with pytest.raises(RuntimeError, match="lr >= 0 and weight_decay >= 0"):
        ops.mlp(torch.randn(2, 3), ws, bs, True, False, False, -0.1, 0.0)
    with pytest.raises(ValueError, match="momentum must be 0"):
        model.take_sgd_step_in_backward({"lr": 0.1, "weight_decay": 0.0, "momentum": 0.9})
    for name, momentum in (("adam", 0.0), ("sgd", 0.9)):
        with pytest.raises(ConfigError, match="optim.dense.in_backward=true .* needs"):
            dense_optimizer(model, name, 0.1, 0.0, momentum, 1e-8, in_backward=True)


def _config(tiny_dataset, in_backward: bool) -> TrainConfig:
    directory, _ = tiny_dataset
    cfg = TrainConfig()
    cfg.data.kind, cfg.data.path = "parquet", str(directory)
    cfg.model.bottom_mlp, cfg.model.top_mlp = [16], [16]
    cfg.optim.dense.name, cfg.optim.dense.lr, cfg.optim.dense.in_backward = "sgd", 0.1, in_backward
    cfg.optim.dense.weight_decay = 0.001
    cfg.optim.warmup_steps = 3  # the lr changes every step
    cfg.trainer.tensorboard, cfg.trainer.resume, cfg.trainer.batch_size = False, "none", 64
    return cfg


def test_trainer_with_step_in_backward_trains_the_same_weights(tiny_dataset, dist_env, tmp_path):
    dense = {}
    for in_backward in (False, True):
        run_dir = tmp_path / str(in_backward)
        run_dir.mkdir()
        trainer = builders.build_trainer(_config(tiny_dataset, in_backward), run_dir, dist_env, "")
        batches = iter(trainer.train_loader)
        for step in range(5):
            trainer.step = step
            trainer.train_step(next(batches))
        params = dict(trainer.model.module.named_parameters())
        assert all(p.grad is None for n, p in params.items() if "mlp" in n) == in_backward
        dense[in_backward] = {n: p.detach().clone() for n, p in params.items() if "mlp" in n}
    assert dense[True].keys() == dense[False].keys() and dense[True]
    for name, value in dense[False].items():
        torch.testing.assert_close(dense[True][name], value, rtol=1e-4, atol=1e-6)


def test_step_in_backward_refused_with_more_processes(tiny_dataset, dist_env, tmp_path):
    two = dataclasses.replace(dist_env, world_size=2)
    with pytest.raises(ConfigError, match="needs world size 1"):
        builders.build_trainer(_config(tiny_dataset, True), tmp_path, two, "")
