"""The step's forward and loss as one C++ call (recsys.training.fused_forward): the same logits,
losses, tables, optimizer state and dense weights as the modules' path, step after step; the
modules wherever it does not apply; bad ids stopped with the lookup's error."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from kernels import ops
from recsys import builders
from recsys.config import TrainConfig
from recsys.data.batch import Batch
from recsys.models.mlp import MLP
from recsys.training import tbe_kernels
from recsys.training.tbe_kernels import recsys_embedding_kernels

STEPS = 5
WARM_UP = 2  # module steps: torchrec's first forward, then the collection's direct-path choice


def _config(tiny_dataset, optim: str, fused: bool) -> TrainConfig:
    directory, _ = tiny_dataset
    cfg = TrainConfig()
    cfg.data.kind, cfg.data.path = "parquet", str(directory)
    cfg.model.bottom_mlp, cfg.model.top_mlp = [16], [16]
    if optim == "sgd":  # the benchmark's: SGD tables, the dense SGD step inside the backward
        cfg.optim.dense.name, cfg.optim.dense.lr, cfg.optim.dense.in_backward = "sgd", 0.1, True
        cfg.optim.embedding.name, cfg.optim.embedding.lr = "sgd", 0.1
    cfg.optim.warmup_steps = 3  # the lr changes every step
    cfg.trainer.tensorboard, cfg.trainer.resume, cfg.trainer.batch_size = False, "none", 64
    cfg.trainer.fused_forward = fused
    return cfg


def _trainer(tiny_dataset, dist_env, tmp_path, optim="default", fused=True, **trainer):
    cfg = _config(tiny_dataset, optim, fused)
    for key, value in trainer.items():
        setattr(cfg.trainer, key, value)
    run_dir = tmp_path / f"{optim}-{fused}-{len(list(tmp_path.iterdir()))}"
    run_dir.mkdir()
    return builders.build_trainer(cfg, run_dir, dist_env, "")


@pytest.fixture
def fused_calls(monkeypatch):
    """How many steps took the fused call."""
    calls = []
    real = ops.dlrm_forward_loss

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ops, "dlrm_forward_loss", counted)
    return calls


def _state(trainer) -> dict[str, torch.Tensor]:
    model = trainer.model.module
    tensors = {n: p.detach().clone() for n, p in model.named_parameters()}
    for lookup in model.embedding_bag_collection._lookups:
        for k, m in enumerate(lookup._emb_modules):
            tbe = m.emb_module
            tensors[f"tables{k}"] = tbe.weights_host.clone()
            tensors[f"momentum{k}"] = tbe.momentum1_host.clone()
            tensors[f"iter{k}"] = tbe.iter.clone()
    for k, v in trainer.optimizer.state_dict()["state"].items():
        for name, t in v.items():
            if type(t) is torch.Tensor:  # dense state (the tables' is read above)
                tensors[f"opt {k} {name}"] = t.clone()
    return tensors


@pytest.mark.parametrize("optim", ["sgd", "default"])
def test_same_steps_as_the_modules(tiny_dataset, dist_env, tmp_path, fused_calls, optim):
    """SGD tables + the dense step in the backward (the benchmark's), and row-wise Adagrad
    tables + Adam (the default job): STEPS steps from the same start give bit-identical
    logits, losses, weights, tables and optimizer state either way."""
    runs = {}
    for fused in (False, True):
        trainer = _trainer(tiny_dataset, dist_env, tmp_path, optim, fused)
        assert (trainer.forward_loss is not None) == fused
        batches = iter(trainer.train_loader)
        outputs = []
        for step in range(STEPS):
            trainer.step = step
            loss, logits = trainer.train_step(next(batches))
            outputs.append((loss, logits))
        runs[fused] = outputs, _state(trainer)
    assert len(fused_calls) == STEPS - WARM_UP
    (out_m, state_m), (out_f, state_f) = runs[False], runs[True]
    for (loss_m, logits_m), (loss_f, logits_f) in zip(out_m, out_f, strict=True):
        assert torch.equal(loss_m, loss_f) and torch.equal(logits_m, logits_f)
    assert state_m.keys() == state_f.keys()
    for name, value in state_m.items():
        assert torch.equal(value, state_f[name]), name


def test_modules_run_where_it_does_not_apply(
    tiny_dataset, dist_env, tmp_path, fused_calls, monkeypatch
):
    trainer = _trainer(tiny_dataset, dist_env, tmp_path)
    batch = next(iter(trainer.train_loader))
    for _ in range(WARM_UP + 1):
        trainer.train_step(batch)
    assert len(fused_calls) == 1
    args = (batch.dense, batch.sparse, batch.labels)

    seen = []
    hook = trainer.model.module.top_mlp.register_forward_hook(lambda *_: seen.append(1))
    assert trainer.forward_loss(*args) is None  # a hook the fused call would skip
    trainer.train_step(batch)
    assert seen == [1]
    hook.remove()
    with torch.no_grad():
        assert trainer.forward_loss(*args) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.forward_loss(*args) is None
    with recsys_embedding_kernels(False):
        assert trainer.forward_loss(*args) is None
    assert trainer.forward_loss(batch.dense.double(), batch.sparse, batch.labels) is None
    model = trainer.model.module
    model.top_mlp.fused = False
    assert trainer.forward_loss(*args) is None
    model.top_mlp.fused = True
    model.top_mlp.take_sgd_step_in_backward({"lr": 0.1, "weight_decay": 0.0})  # not the bottom's
    assert trainer.forward_loss(*args) is None
    model.top_mlp.take_sgd_step_in_backward(None)
    assert len(fused_calls) == 1
    for heads in (True, False):  # read at every call, like the modules do
        monkeypatch.setattr(MLP, "heads", heads)
        logits, _ = trainer.forward_loss(*args)
        assert torch.equal(logits, trainer.model(batch.dense, batch.sparse))

    trainer.settings.precision = "bf16"  # changed after the build (as the benchmark does)
    before = len(fused_calls)
    trainer.train_step(batch)
    assert len(fused_calls) == before
    # switched off, or bf16: the builder gives the trainer no fused call
    assert _trainer(tiny_dataset, dist_env, tmp_path, fused=False).forward_loss is None
    assert _trainer(tiny_dataset, dist_env, tmp_path, precision="bf16").forward_loss is None


def test_bad_input_gets_the_modules_errors(tiny_dataset, dist_env, tmp_path, fused_calls):
    trainer = _trainer(tiny_dataset, dist_env, tmp_path)
    batch = next(iter(trainer.train_loader))
    for _ in range(WARM_UP):
        trainer.train_step(batch)
    before = _state(trainer)
    kjt = batch.sparse
    values = kjt.values().clone()
    values[5] = 10**9  # beyond every table: feature 0, bag 5
    sparse = KeyedJaggedTensor(kjt.keys(), values, lengths=kjt.lengths())
    bad = dataclasses.replace(batch, sparse=sparse)
    with pytest.raises(RuntimeError, match=r"feature 0, bag 5, position 5: id"):
        trainer.train_step(bad)
    assert len(fused_calls) == 1  # the error came from the fused call's lookup
    narrow = Batch(batch.dense[:, :5], batch.sparse, batch.labels)
    with pytest.raises(ValueError, match=r"MLP expects 13 input features, got .*\(64, 5\)"):
        trainer.train_step(narrow)  # the modules' check names the shape
    after = _state(trainer)
    for name, value in before.items():  # nothing was updated (fbgemm's iteration count is
        if not name.startswith("iter"):  # counted before the lookup, as its forward does)
            assert torch.equal(value, after[name]), name


def test_operator_rejects_mismatched_arguments(tiny_dataset, dist_env, tmp_path):
    """The C++ entry itself names what does not fit (labels of another batch, a feature count
    that does not split the pooled columns) before any operator runs."""
    trainer = _trainer(tiny_dataset, dist_env, tmp_path)
    batch = next(iter(trainer.train_loader))
    for _ in range(WARM_UP + 1):  # the last one decides the plan
        trainer.train_step(batch)
    model, plan = trainer.model.module, trainer.forward_loss._plan
    lookup = tbe_kernels.node_args(plan.batched, batch.sparse)
    mlps = model.bottom_mlp.fused_args(), model.top_mlp.fused_args()
    with pytest.raises(RuntimeError, match=r"labels \[B\] expected, got .*64.* and \[63\]"):
        ops.dlrm_forward_loss(batch.dense, batch.labels[:63], *mlps, None, 0.0,
                              plan.num_features, False, lookup)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"embedding columns do not split into 5 features"):
        ops.dlrm_forward_loss(batch.dense, batch.labels, *mlps, None, 0.0, 5, False, lookup)
