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
    """Bit for bit: our forward against fbgemm's forward kernel and the same update kernel
    (ours), with the lr changed between steps as a schedule does."""
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


@pytest.mark.parametrize("pooling", [0, 1], ids=["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_forward_equals_fbgemm_kernel_at_every_width(pooling, dtype):
    """Our forward against fbgemm's CPU forward kernel, bit for bit: the widths with their own
    code (4 ... 128), odd ones and one wider than the 512-column block, bags from empty to
    longer than the prefetch distance, one-id bags."""
    gen = torch.Generator().manual_seed(11)
    dims, rows, batch = [4, 8, 16, 32, 64, 128, 3, 17, 600], [5, 300, 40, 7, 1000, 60, 9, 2, 30], 23
    weights = torch.randn(sum(r * d for r, d in zip(rows, dims, strict=True)), generator=gen)
    weights_offsets = torch.tensor([0] + [r * d for r, d in zip(rows, dims, strict=True)][:-1])
    weights_offsets = weights_offsets.cumsum(0)
    d_offsets = torch.tensor([0, *dims]).cumsum(0).to(torch.int32)
    cumsum = torch.tensor([0, *rows]).cumsum(0)
    lengths = torch.randint(0, 40, (len(dims) * batch,), generator=gen)
    lengths[:batch] = 1  # a table of one-id bags
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    ids = torch.cat([torch.randint(0, rows[t], (int(lengths[t * batch : (t + 1) * batch].sum()),),
                                   generator=gen) for t in range(len(dims))])  # fmt: skip
    expected = torch.ops.fbgemm.split_embedding_codegen_forward_cpu(
        weights, weights_offsets, d_offsets, int(d_offsets[-1]), cumsum, ids, offsets, pooling,
        None, 0,
    )  # fmt: skip
    empty = torch.empty(0)
    with torch.inference_mode():
        got = ops.tbe_lookup(
            torch.zeros(0), weights, weights_offsets, d_offsets, int(d_offsets[-1]), cumsum,
            ids.to(dtype), offsets.to(dtype), pooling, empty, empty, torch.tensor(0.1), 1e-8,
        )  # fmt: skip
    assert torch.equal(got, expected)


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
