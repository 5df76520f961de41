"""Sharded embedding tables without all-to-alls when the process group has one member.

torchrec moves a batch's ids to the ranks that own their tables (a KJT all-to-all) and the
pooled embeddings back to the ranks that own the samples (a pooled all-to-all), also when the
group is one process: then both are identities that still cost splits exchanges, copies,
awaitables and autograd nodes (~0.5 ms of a ~7 ms step at batch 128 on the 2-core CPU box).
Here the table-wise and column-wise shardings of a group of one hand the features to the lookup
and the lookup's output to the model as they are. The module, its plan, its state dict and its
numbers are torchrec's; only the two identities are skipped, so a run at world size 1 goes
through the same DistributedModelParallel path as one at world size 8.

With the identities gone, what is left of torchrec's sharded forward around the table-batched
lookups is bookkeeping: a context, two nested awaitables, a sharding context per sharding type,
profiler annotations, a lazy awaitable around the output (~0.4 ms a call at batch 128, as much
as the lookup itself). Once torchrec's own first forward has set the module up, and as long as
it uses none of the features that need that bookkeeping (variable batch sizes, mean pooling,
feature processors, weighted features, trackers, memory stashing, score collection), the
collection goes straight from the features to its table-batched modules and returns the
pooled `KeyedTensor` (`direct_forward`): the same modules, in the same order, on the same
feature splits, hence the same numbers. Each table-batched module is called through
`recsys.training.tbe_kernels.lookup`, which skips fbgemm's Python forward where recsys's
kernels cover the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.distributed.embedding_lookup import GroupedPooledEmbeddingsLookup
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.memory_stashing import MemoryStashingManager
from torchrec.distributed.types import Awaitable, NoWait, ShardingEnv, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.training import tbe_kernels

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
    """torchrec's sharded collection with the identity all-to-alls of a group of one skipped,
    and its forward straight to the lookups where nothing needs torchrec's bookkeeping."""

    direct_forward: bool | None = None  # None until torchrec's first forward set the module up

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if self.direct_forward is None and not self._has_uninitialized_input_dist:
            self.direct_forward = self._direct_forward_applies()
        features = inputs[0] if len(inputs) == 1 and not kwargs else None
        if (
            not self.direct_forward
            or not isinstance(features, KeyedJaggedTensor)
            or features.variable_stride_per_key()
            or MemoryStashingManager.is_enabled()
        ):
            return super().forward(*inputs, **kwargs)
        with torch.no_grad():  # as in torchrec's input distribution
            if self._has_features_permute:
                features = features.permute(self._features_order, self._features_order_tensor)
            per_sharding = features.split(self._feature_splits)
        pooled = []
        for lookup, part in zip(self._lookups, per_sharding, strict=True):
            groups = part.split(lookup._feature_splits)
            pooled.extend(
                tbe_kernels.lookup(m, g) for m, g in zip(lookup._emb_modules, groups, strict=True)
            )
        values = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)
        return KeyedTensor(self._embedding_names, self._embedding_dims, values, key_dim=1)

    def _direct_forward_applies(self) -> bool:
        """Whether torchrec's forward would do nothing here beyond the lookups (checked once,
        after its first call built the distributions)."""
        if (
            any(t not in LOCAL_SHARDING_TYPES for t in self._sharding_types)
            or self._has_mean_pooling_callback
            or self._enabled_feature_score_auto_collection
            or self.post_lookup_tracker_fn is not None
            or self.post_odist_tracker_fn is not None
            or not self._lookups
        ):
            return False
        for lookup in self._lookups:
            if type(lookup) is not GroupedPooledEmbeddingsLookup or not lookup._emb_modules:
                return False
            if lookup.optim_state_tracker_fn is not None:
                return False
            if any(c.has_feature_processor or c.is_weighted for c in lookup.grouped_configs):
                return False
            if any(
                hasattr(m, "wait_for_forward") or hasattr(m, "get_rs_awaitable")
                for m in lookup._emb_modules
            ):
                return False
        return True

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
