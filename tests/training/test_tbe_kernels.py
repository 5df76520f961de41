"""recsys's CPU embedding backward kernels (kernels/csrc/tbe_backward.cpp) against fbgemm's own.

Two identical fbgemm table-batched modules take the same steps, one on fbgemm's backward
kernels, one on ours; pooled outputs, weights and row-wise Adagrad state must agree to float32
rounding (sums of squares are added in another order). Then: what ours does not handle reaches
fbgemm's kernels unchanged, bad ids stop with an error naming the position, and the trainer's
sharded model really runs ours.
"""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)

from recsys.training.tbe_kernels import recsys_embedding_kernels

ROWS = [50, 7, 1000, 3]
DIMS = [16, 4, 40, 8]
BATCH = 33
ADAGRAD = EmbOptimType.EXACT_ROWWISE_ADAGRAD
SGD = EmbOptimType.EXACT_SGD


def make_tbe(optimizer: EmbOptimType, pooling: PoolingMode, **kw):
    torch.manual_seed(0)
    place = (EmbeddingLocation.HOST, ComputeDevice.CPU)
    tables = [(n, d, *place) for n, d in zip(ROWS, DIMS, strict=True)]
    return SplitTableBatchedEmbeddingBagsCodegen(
        tables, optimizer=optimizer, learning_rate=0.05, eps=1e-3, pooling_mode=pooling, **kw
    )


def random_step(gen: torch.Generator, index_dtype: torch.dtype, weighted: bool):
    """Bags of 0-6 ids (empty bags and repeated ids included), and an upstream gradient."""
    lengths = torch.randint(0, 7, (len(ROWS) * BATCH,), generator=gen)
    ids = [torch.randint(0, ROWS[i // BATCH], (int(n),), generator=gen)
           for i, n in enumerate(lengths)]  # fmt: skip
    indices = torch.cat(ids).to(index_dtype)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).to(index_dtype)
    weights = torch.rand(indices.numel(), generator=gen) if weighted else None
    grad = torch.randn(BATCH, sum(DIMS), generator=gen)
    return indices, offsets, weights, grad


def state(tbe) -> list[torch.Tensor]:
    out = [tbe.weights_host.detach().clone()]
    if tbe.optimizer == ADAGRAD:
        out.append(tbe.momentum1_host.detach().clone())
    return out


def train(tbe, ours: bool, index_dtype, weighted: bool, steps: int = 4) -> list[torch.Tensor]:
    """`steps` forward + backward steps; the tables' state, then every step's pooled output."""
    gen = torch.Generator().manual_seed(1)
    outputs = []
    with recsys_embedding_kernels(ours) as active:
        assert active == ours
        for _ in range(steps):
            indices, offsets, weights, grad = random_step(gen, index_dtype, weighted)
            out = tbe(indices, offsets, per_sample_weights=weights)
            out.backward(grad)
            outputs.append(out.detach())
    return state(tbe) + outputs


CASES = [
    (opt, pooling, dtype, weighted)
    for opt in (ADAGRAD, SGD)
    for pooling in (PoolingMode.SUM, PoolingMode.MEAN)
    for dtype in (torch.int64, torch.int32)
    for weighted in (False, True)
    if not (weighted and pooling == PoolingMode.MEAN)
]


@pytest.mark.parametrize("opt,pooling,dtype,weighted", CASES)
def test_matches_fbgemm_kernel(opt, pooling, dtype, weighted):
    before = state(make_tbe(opt, pooling))
    theirs = train(make_tbe(opt, pooling), False, dtype, weighted)
    ours = train(make_tbe(opt, pooling), True, dtype, weighted)
    for b, t in zip(before, theirs, strict=False):
        assert not torch.equal(t, b)  # the steps did update the tables
    for t, o in zip(theirs, ours, strict=True):
        torch.testing.assert_close(o, t, rtol=1e-5, atol=1e-6)


def _weight_decay():
    from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode

    return {"weight_decay": 0.1, "weight_decay_mode": WeightDecayMode.L2}


def _fp16_tables():
    from fbgemm_gpu.split_embedding_configs import SparseType

    return {"weights_precision": SparseType.FP16}


@pytest.mark.parametrize("options", [_weight_decay, _fp16_tables], ids=["decay", "fp16"])
def test_unhandled_settings_run_fbgemms_kernel(options):
    """What ours does not implement must reach fbgemm's kernel: results equal bit for bit."""
    before = state(make_tbe(ADAGRAD, PoolingMode.SUM, **options()))
    theirs = train(make_tbe(ADAGRAD, PoolingMode.SUM, **options()), False, torch.int64, False)
    ours = train(make_tbe(ADAGRAD, PoolingMode.SUM, **options()), True, torch.int64, False)
    for b, t in zip(before, theirs, strict=False):
        assert not torch.equal(t, b)
    for t, o in zip(theirs, ours, strict=True):
        assert torch.equal(o, t)


def op_args(tbe, indices, offsets, grad):
    return (grad, tbe.weights_host, tbe.weights_offsets, tbe.D_offsets, tbe.hash_size_cumsum,
            indices, offsets, 0, torch.empty(0), tbe.momentum1_host, tbe.momentum1_offsets,
            torch.tensor(0.05), 1e-3)  # fmt: skip


def one_bad_id(bad_id: int):
    """A module and one-id bags whose feature 0 (50 rows), bag 5 holds `bad_id`."""
    indices = torch.zeros(len(ROWS) * BATCH, dtype=torch.long)
    indices[5] = bad_id
    return make_tbe(ADAGRAD, PoolingMode.SUM), indices, torch.arange(len(ROWS) * BATCH + 1)


@pytest.mark.parametrize("bad_id", [-1, 50])
def test_id_outside_table_names_feature_and_position(bad_id):
    tbe, indices, offsets = one_bad_id(bad_id)
    before = state(tbe)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"feature 0, bag 5, position 5: id"):
        torch.ops.recsys_kernels.tbe_backward_rowwise_adagrad(
            *op_args(tbe, indices, offsets, torch.ones(BATCH, sum(DIMS)))
        )
    for b, a in zip(before, state(tbe), strict=True):
        assert torch.equal(a, b)  # the table with the bad id was not touched


def test_strided_per_sample_weights_read_correctly():
    """The op makes its own contiguous copy of strided weights (and keeps it alive)."""
    gen = torch.Generator().manual_seed(2)
    indices, offsets, _, grad = random_step(gen, torch.int64, False)
    weights = torch.rand(2 * indices.numel(), generator=gen)
    results = []
    for w in (weights[::2], weights[::2].contiguous()):
        tbe = make_tbe(ADAGRAD, PoolingMode.SUM)
        args = list(op_args(tbe, indices, offsets, grad))
        args[8] = w
        with torch.no_grad():
            assert torch.ops.recsys_kernels.tbe_backward_rowwise_adagrad(*args)
        results.append(state(tbe))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_offsets_past_the_indices_are_an_error():
    tbe = make_tbe(ADAGRAD, PoolingMode.SUM)
    indices = torch.zeros(len(ROWS) * BATCH, dtype=torch.long)
    offsets = torch.arange(len(ROWS) * BATCH + 1)
    offsets[-1] += 3
    with torch.no_grad(), pytest.raises(RuntimeError, match="offsets run from 0 to"):
        torch.ops.recsys_kernels.tbe_backward_rowwise_adagrad(
            *op_args(tbe, indices, offsets, torch.ones(BATCH, sum(DIMS)))
        )


def test_decreasing_offsets_are_an_error_and_change_nothing():
    tbe = make_tbe(SGD, PoolingMode.SUM)
    indices = torch.zeros(len(ROWS) * BATCH, dtype=torch.long)
    offsets = torch.arange(len(ROWS) * BATCH + 1)
    offsets[BATCH + 4] = offsets[BATCH + 3] - 1  # feature 1: bag 3 ends before it starts
    before = state(tbe)
    with (
        torch.no_grad(),
        pytest.raises(RuntimeError, match="offsets of feature 1 decrease at bag 3"),
    ):
        torch.ops.recsys_kernels.tbe_backward_sgd(
            *op_args(tbe, indices, offsets, torch.ones(BATCH, sum(DIMS)))[:9], torch.tensor(0.05)
        )
    for b, a in zip(before, state(tbe), strict=True):
        assert torch.equal(a, b)


def test_unknown_embedding_kernels_value_is_a_config_error(tmp_path, dist_env):
    from recsys.builders import build_trainer
    from recsys.config import TrainConfig
    from recsys.errors import ConfigError

    cfg = TrainConfig()
    cfg.trainer.embedding_kernels = "fastest"
    with pytest.raises(ConfigError, match="trainer.embedding_kernels must be recsys or fbgemm"):
        build_trainer(cfg, tmp_path, dist_env, config_yaml="")


def sharded_dlrm(tiny_dataset, dist_env):
    """The DMP-sharded DLRM as the trainer builds it, and a batch of its data."""
    from recsys.builders import build_model, build_sharded_model
    from recsys.config import TrainConfig
    from recsys.data.loader import ParquetBatchLoader

    directory, manifest = tiny_dataset
    cfg = TrainConfig()
    cfg.model.bottom_mlp, cfg.model.top_mlp = [16], [16]
    batch = next(iter(ParquetBatchLoader(directory, manifest, "train", 64, rank=0, world_size=1)))
    model = build_model(cfg.model, manifest)
    dmp, _ = build_sharded_model(model, cfg.optim, cfg.dist, dist_env, seed=0)
    return dmp, batch


def step(dmp, batch) -> None:
    logits = dmp(batch.dense, batch.sparse)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).backward()


def test_trainer_model_runs_our_kernels(tiny_dataset, dist_env):
    """Its backward runs ours, and fbgemm's separate bounds check is off on CPU."""
    from torch.profiler import ProfilerActivity, profile

    names = {}
    for ours in (False, True):
        dmp, batch = sharded_dlrm(tiny_dataset, dist_env)
        with recsys_embedding_kernels(ours), profile(activities=[ProfilerActivity.CPU]) as prof:
            step(dmp, batch)
        names[ours] = {e.key for e in prof.key_averages()}
    assert "recsys_kernels::tbe_backward_rowwise_adagrad" in names[True]
    assert "recsys_kernels::tbe_backward_rowwise_adagrad" not in names[False]
    assert not any("bounds_check" in name for name in names[True] | names[False])


@pytest.mark.parametrize("ours", [True, False], ids=["recsys", "fbgemm"])
def test_trainer_model_rejects_id_outside_table(tiny_dataset, dist_env, ours):
    """Without fbgemm's bounds check (which would clamp it to row 0), a bad id that got past the
    loader still stops the step: fbgemm's lookup rejects it."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    dmp, batch = sharded_dlrm(tiny_dataset, dist_env)
    kjt = batch.sparse
    values = kjt.values().clone()
    values[3] = 10**9
    bad = KeyedJaggedTensor(kjt.keys(), values, lengths=kjt.lengths())
    with recsys_embedding_kernels(ours), pytest.raises(RuntimeError, match="out of bounds"):
        step(dmp, type(batch)(batch.dense, bad, batch.labels))
