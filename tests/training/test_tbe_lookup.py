"""recsys's lookup node for fbgemm's CPU table-batched modules (`recsys_kernels::tbe_lookup`,
`recsys.training.tbe_kernels.lookup`): the same outputs, tables and optimizer state as the
module's own forward + backward, checked ids, and the modules it must leave to fbgemm."""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode

from kernels import ops
from recsys.training import tbe_kernels
from recsys.training.tbe_kernels import recsys_embedding_kernels
from tests.training.test_tbe_kernels import (
    ADAGRAD,
    BATCH,
    ROWS,
    SGD,
    _fp16_tables,
    _weight_decay,
    make_tbe,
    one_bad_id,
    random_step,
    sharded_dlrm,
    state,
)


def node(tbe, indices, offsets):
    adagrad = tbe.optimizer == ADAGRAD
    empty = torch.empty(0)
    return ops.tbe_lookup(
        tbe.placeholder_autograd_tensor, tbe.weights_host, tbe.weights_offsets, tbe.D_offsets,
        tbe.total_D, tbe.hash_size_cumsum, indices, offsets, int(tbe.pooling_mode),
        tbe.momentum1_host if adagrad else empty, tbe.momentum1_offsets if adagrad else empty,
        tbe.learning_rate_tensor, tbe.optimizer_args.eps,
    )  # fmt: skip


@pytest.mark.parametrize("opt", [ADAGRAD, SGD], ids=["adagrad", "sgd"])
@pytest.mark.parametrize("pooling", [PoolingMode.SUM, PoolingMode.MEAN], ids=["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_node_equals_module_forward_and_fused_update(opt, pooling, dtype):
    """Bit for bit: the same fbgemm forward kernel and the same update kernel (ours), with the
    lr changed between steps as a schedule does."""
    via_module, via_node = make_tbe(opt, pooling), make_tbe(opt, pooling)
    before = state(via_module)
    gen = torch.Generator().manual_seed(3)
    with recsys_embedding_kernels(True):
        for lr in (0.05, 0.02, 0.1):
            indices, offsets, _, grad = random_step(gen, dtype, weighted=False)
            for tbe in (via_module, via_node):
                tbe.set_learning_rate(lr)
            a = via_module(indices, offsets)
            b = node(via_node, indices, offsets)
            assert "TbeLookupFunction" in b.grad_fn.name()
            assert torch.equal(a, b)
            a.backward(grad)
            b.backward(grad)
    for x, y, z in zip(state(via_module), state(via_node), before, strict=True):
        assert torch.equal(x, y) and not torch.equal(y, z)
    assert via_node.weights_host.grad is None


def test_inference_mode_forward_only():
    """Runs where fbgemm's own module cannot (its lookup has no inference-mode kernel)."""
    tbe = make_tbe(SGD, PoolingMode.SUM)
    indices, offsets, _, _ = random_step(torch.Generator().manual_seed(4), torch.int64, False)
    with torch.no_grad():
        expected = tbe(indices, offsets)
    with torch.inference_mode():
        got = node(tbe, indices, offsets)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("bad_id", [-1, 50])
def test_id_outside_table_stops_the_forward_naming_it(bad_id):
    tbe, indices, offsets = one_bad_id(bad_id)
    before = state(tbe)
    with pytest.raises(RuntimeError, match=r"tbe_lookup: feature 0, bag 5, position 5: id"):
        node(tbe, indices, offsets)
    for b, a in zip(before, state(tbe), strict=True):
        assert torch.equal(a, b)


def test_bad_offsets_and_shapes_are_errors():
    tbe = make_tbe(SGD, PoolingMode.SUM)
    indices = torch.zeros(len(ROWS) * BATCH, dtype=torch.long)
    offsets = torch.arange(len(ROWS) * BATCH + 1)
    decreasing = offsets.clone()
    decreasing[BATCH + 4] = decreasing[BATCH + 3] - 1
    with pytest.raises(RuntimeError, match="offsets of feature 1 decrease at bag 3"):
        node(tbe, indices, decreasing)
    with pytest.raises(RuntimeError, match="do not split into 4 features"):
        node(tbe, indices, offsets[:-1])
    with pytest.raises(RuntimeError, match="indices must be int64 or int32"):
        node(tbe, indices.float(), offsets)
    with pytest.raises(RuntimeError, match="must be 1-D"):
        node(tbe, indices.view(len(ROWS), BATCH), offsets)


@pytest.mark.parametrize(
    "options", [_weight_decay, _fp16_tables, dict], ids=["decay", "fp16", "plain"]
)
def test_which_modules_take_the_node(options):
    class Batched(torch.nn.Module):  # torchrec's batched module, as far as `lookup` reads it
        def __init__(self, tbe):
            super().__init__()
            self.emb_module = tbe

    tbe = make_tbe(ADAGRAD, PoolingMode.SUM, **options())
    assert tbe_kernels._lookup_applies(Batched(tbe)) == (options is dict)


def test_sharded_dlrm_same_tables_with_and_without_the_node(tiny_dataset, dist_env):
    """The trainer's sharded model (row-wise Adagrad): its modules take the node, and three
    steps from the same start leave tables, Adagrad state and fbgemm's iteration count as the
    module path does."""
    from torch.profiler import ProfilerActivity, profile

    dmp, batch = sharded_dlrm(tiny_dataset, dist_env)
    modules = [m for lookup in dmp.module.embedding_bag_collection._lookups
               for m in lookup._emb_modules]  # fmt: skip
    live = [t for m in modules for t in (m.emb_module.weights_host, m.emb_module.momentum1_host,
                                         m.emb_module.iter)]  # fmt: skip
    start = [t.detach().clone() for t in live]
    results = []
    for node_on in (False, True):
        with torch.no_grad():
            for t, saved in zip(live, start, strict=True):
                t.copy_(saved)
        for m in modules:
            m.__dict__["_recsys_lookup"] = node_on and tbe_kernels._lookup_applies(m)
        with recsys_embedding_kernels(True), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                logits = dmp(batch.dense, batch.sparse)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
                loss.backward()
        names = {e.key for e in prof.key_averages()}
        assert ("recsys_kernels::tbe_lookup_backward" in names) == node_on
        results.append([t.detach().clone() for t in live])
    for a, b, s0 in zip(*results, start, strict=True):
        assert torch.equal(a, b)
        if a.numel() > 1:
            assert not torch.equal(a, s0)  # the steps updated it
