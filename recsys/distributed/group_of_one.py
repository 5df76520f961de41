"""Sharded embedding tables without all-to-alls when the process group has one member.

torchrec moves a batch's ids to the ranks that own their tables (a KJT all-to-all) and the
pooled embeddings back to the ranks that own the samples (a pooled all-to-all), also when the
group is one process: then both are identities that still cost splits exchanges, copies,
awaitables and autograd nodes (~0.5 ms of a ~7 ms step at batch 128 on the 2-core CPU box).
Here the table-wise and column-wise shardings of a group of one hand the features to the lookup
and the lookup's output to the model as they are. The module, its plan, its state dict and its
numbers are torchrec's; only the two identities are skipped, so a run at world size 1 goes
through the same DistributedModelParallel path as one at world size 8.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.types import Awaitable, NoWait, ShardingEnv, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

# Sharding types whose input and output distributions are identities in a group of one.
# (Row-wise shardings bucketize ids on the way in and reduce-scatter on the way out;
# data-parallel ones have no communication to skip.)
LOCAL_SHARDING_TYPES = (ShardingType.TABLE_WISE.value, ShardingType.COLUMN_WISE.value)


class LocalFeaturesDist(nn.Module):
    """The input distribution of a group of one: this rank already owns every table.

    Variable-batch features keep torchrec's collective, which records the per-rank batch sizes
    that the variable-batch output path reads.
    """

    def __init__(self, collective: nn.Module) -> None:
        super().__init__()
        self.collective = collective

    def forward(self, features: KeyedJaggedTensor) -> Awaitable[Awaitable[KeyedJaggedTensor]]:
        if features.variable_stride_per_key():
            return self.collective(features)
        return NoWait(NoWait(features))


class LocalPooledDist(nn.Module):
    """The output distribution of a group of one: the pooled rows already belong here."""

    def __init__(self, collective: nn.Module) -> None:
        super().__init__()
        self.collective = collective

    def forward(
        self, local_embs: torch.Tensor, sharding_ctx: Any = None
    ) -> Awaitable[torch.Tensor]:
        if sharding_ctx is not None and sharding_ctx.variable_batch_per_feature:
            return self.collective(local_embs, sharding_ctx)
        return NoWait(local_embs)


class GroupOfOneEmbeddingBagCollection(ShardedEmbeddingBagCollection):
    """torchrec's sharded collection with the identity all-to-alls of a group of one skipped."""

    def _create_input_dist(self, input_feature_names: list[str]) -> None:
        super()._create_input_dist(input_feature_names)
        self._input_dists = self._localized(self._input_dists, LocalFeaturesDist)

    def _create_output_dist(self) -> None:
        super()._create_output_dist()
        self._output_dists = self._localized(self._output_dists, LocalPooledDist)

    def _localized(self, dists: list[nn.Module], local: type[nn.Module]) -> list[nn.Module]:
        return [
            local(d) if kind in LOCAL_SHARDING_TYPES else d
            for kind, d in zip(self._sharding_types, dists, strict=True)
        ]


class EmbeddingTablesSharder(EmbeddingBagCollectionSharder):
    """torchrec's sharder; in a group of one it builds `GroupOfOneEmbeddingBagCollection`."""

    def shard(
        self,
        module: EmbeddingBagCollection,
        params: dict[str, Any],
        env: ShardingEnv,
        device: torch.device | None = None,
        module_fqn: str | None = None,
    ) -> ShardedEmbeddingBagCollection:
        if env.world_size != 1:
            return super().shard(module, params, env, device, module_fqn)
        return GroupOfOneEmbeddingBagCollection(
            module=module,
            table_name_to_parameter_sharding=params,
            env=env,
            fused_params=self.fused_params,
            device=device,
            qcomm_codecs_registry=self.qcomm_codecs_registry,
            module_fqn=module_fqn,
            sharded_module_order_overwrite=self._sharded_module_order_overwrite,
        )
