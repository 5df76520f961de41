"""In a group of one the sharded tables skip torchrec's all-to-alls: same numbers, same state.

The model is sharded twice with one plan, once by torchrec's own sharder and once by recsys's,
and both must give bit-identical logits, dense gradients and fused embedding updates.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import NoWait, ShardingEnv
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.builders import build_model, training_topology
from recsys.config import DistConfig, ModelConfig
from recsys.data.features import DatasetManifest, SparseFeature
from recsys.data.synthetic import dense_names
from recsys.distributed.group_of_one import (
    GroupOfOneEmbeddingBagCollection,
    LocalFeaturesDist,
    LocalPooledDist,
)
from recsys.distributed.sharding import (
    ReplicatedDenseWrapper,
    embedding_sharder,
    init_embedding_tables,
    plan_sharding,
    planner_constraints,
)
from recsys.training.optim import attach_embedding_optimizer

SIZES = [1_000, 37, 5_000, 3]
BATCH = 64


def _sharded(sharder, pins: dict[str, str]):
    features = [SparseFeature(f"C{i + 1}", n) for i, n in enumerate(SIZES)]
    manifest = DatasetManifest("t", dense_names(5), features, {})
    torch.manual_seed(3)
    model = build_model(ModelConfig(embedding_dim=16, bottom_mlp=[32], top_mlp=[32]), manifest)
    ebc = model.embedding_bag_collection
    tables = list(ebc.embedding_bag_configs())
    attach_embedding_optimizer(ebc.parameters(), "sgd", 0.5, 1e-8)
    types = ["table_wise", "column_wise"]
    constraints = planner_constraints(tables, types, "fused", pins)
    topology = training_topology(DistConfig(), 1)
    plan = plan_sharding(model, tables, topology, constraints, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(
        model, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=torch.device("cpu"), plan=plan, sharders=[sharder],
        data_parallel_wrapper=ReplicatedDenseWrapper(),
    )  # fmt: skip
    init_embedding_tables(dmp, tables, seed=11)
    return dmp


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (len(SIZES) * BATCH,), generator=g)  # empty bags included
    counts = lengths.view(len(SIZES), BATCH).sum(1).tolist()
    ids = [torch.randint(0, n, (c,), generator=g) for n, c in zip(SIZES, counts, strict=True)]
    values = torch.cat(ids)
    sparse = KeyedJaggedTensor.from_lengths_sync(
        [f"C{i + 1}" for i in range(len(SIZES))], values, lengths
    )
    return torch.randn(BATCH, 5, generator=g), sparse, (torch.rand(BATCH, generator=g) < 0.3)


def _step(dmp, seed: int) -> torch.Tensor:
    dense, sparse, labels = _batch(seed)
    logits = dmp(dense, sparse)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    loss.backward()  # the fused SGD updates the tables here
    return logits.detach()


def _dense_grads(dmp) -> dict[str, torch.Tensor]:
    """Gradients of the dense layers (the tables have none: their update is fused), cleared."""
    grads = {}
    for name, p in dmp.named_parameters():
        if p.grad is not None:
            grads[name], p.grad = p.grad, None
    return grads


def _tables(dmp) -> dict[str, torch.Tensor]:
    return {
        k: torch.cat([s.tensor for s in v.local_shards()])
        for k, v in dmp.state_dict().items()
        if hasattr(v, "local_shards")
    }


TABLE_WISE = {f"t_C{i + 1}": "table_wise" for i in range(len(SIZES))}
MIXED = {**TABLE_WISE, "t_C1": "column_wise", "t_C3": "column_wise"}


# Every table pinned: the planner's own choice between the two types depends on its memory
# estimates, which vary with the process's state.
@pytest.mark.parametrize("pins", [TABLE_WISE, MIXED], ids=["table_wise", "mixed"])
def test_same_numbers_as_torchrecs_all_to_alls(dist_env, pins):
    ours = _sharded(embedding_sharder(torch.device("cpu")), pins)
    stock = _sharded(EmbeddingBagCollectionSharder(fused_params=embedding_sharder(
        torch.device("cpu")).fused_params), pins)  # fmt: skip
    sharded = ours.module.embedding_bag_collection
    assert isinstance(sharded, GroupOfOneEmbeddingBagCollection)
    assert type(stock.module.embedding_bag_collection) is not GroupOfOneEmbeddingBagCollection
    assert set(sharded._sharding_types) == set(pins.values())
    for seed in range(3):
        torch.testing.assert_close(_step(ours, seed), _step(stock, seed), rtol=0, atol=0)
        ours_grads, stock_grads = _dense_grads(ours), _dense_grads(stock)
        assert ours_grads.keys() == stock_grads.keys() and len(ours_grads) >= 6  # both MLPs
        for name, grad in ours_grads.items():
            torch.testing.assert_close(grad, stock_grads[name], rtol=0, atol=0, msg=name)
    assert sharded.direct_forward is True  # steps 2-3 went straight to the lookups
    assert all(isinstance(d, LocalFeaturesDist) for d in sharded._input_dists)
    assert all(isinstance(d, LocalPooledDist) for d in sharded._output_dists)
    ours_tables, stock_tables = _tables(ours), _tables(stock)
    assert ours_tables.keys() == stock_tables.keys() and len(ours_tables) == len(SIZES)
    for name, table in ours_tables.items():
        torch.testing.assert_close(table, stock_tables[name], rtol=0, atol=0, msg=name)
    assert ours.state_dict().keys() == stock.state_dict().keys()


class _Collective(torch.nn.Module):
    def forward(self, *args):
        self.called_with = args
        return "collective"


def test_variable_batch_keeps_the_collective():
    features = KeyedJaggedTensor(
        keys=["a", "b"], values=torch.arange(5), lengths=torch.tensor([1, 1, 2, 1]),
        stride_per_key_per_rank=[[2], [2]], inverse_indices=(["a", "b"], torch.zeros(2, 2)),
    )  # fmt: skip
    local = LocalFeaturesDist(_Collective())
    assert features.variable_stride_per_key()
    assert local(features) == "collective"
    uniform = KeyedJaggedTensor.from_lengths_sync(["a"], torch.arange(3), torch.tensor([2, 1]))
    assert local(uniform).wait().wait() is uniform

    pooled = LocalPooledDist(_Collective())
    embs = torch.ones(2, 4)
    ctx = type("Ctx", (), {"variable_batch_per_feature": True})()
    assert pooled(embs, ctx) == "collective"
    ctx.variable_batch_per_feature = False
    out = pooled(embs, ctx)
    assert isinstance(out, NoWait) and out.wait() is embs


def test_direct_forward_routes_only_what_it_can_take(dist_env, monkeypatch):
    """After torchrec's first forward the collection skips torchrec's; inputs that need its
    bookkeeping (variable batch sizes) still take it."""
    dmp = _sharded(embedding_sharder(torch.device("cpu")), MIXED)
    sharded = dmp.module.embedding_bag_collection
    _, sparse, _ = _batch(0)
    assert sharded.direct_forward is None
    first = sharded(sparse).wait().values()  # torchrec's forward: builds the distributions
    calls = []
    stock_forward = ShardedEmbeddingBagCollection.forward

    def counted(self, *args, **kwargs):
        calls.append(args)
        return stock_forward(self, *args, **kwargs)

    monkeypatch.setattr(ShardedEmbeddingBagCollection, "forward", counted)
    with torch.no_grad():
        direct = sharded(sparse)
    assert sharded.direct_forward is True and not calls
    assert direct.keys() == sharded._embedding_names
    torch.testing.assert_close(direct.values(), first, rtol=0, atol=0)
    sharded.direct_forward = False  # e.g. a tracker registered: torchrec's forward again
    torch.testing.assert_close(sharded(sparse).wait().values(), first, rtol=0, atol=0)
    assert len(calls) == 1
