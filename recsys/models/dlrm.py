"""DLRM: bottom MLP on dense features, pooled embeddings, interaction, top MLP -> one logit.

    dense [B, 13] --bottom MLP--> [B, D] --+
                                           +--> interaction --> top MLP --> logit [B]
    sparse KJT ----EmbeddingBagCollection--> [B, F, D]

The embedding tables live in a torchrec `EmbeddingBagCollection` so torchrec's
DistributedModelParallel can shard them (and fuse their optimizer into the backward pass);
build them on the `meta` device and let sharding allocate them where they belong.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.models.interaction import make_interaction
from recsys.models.mlp import MLP


def table_configs(
    feature_names: list[str], table_sizes: list[int], dim: int
) -> list[EmbeddingBagConfig]:
    """One sum-pooled table per feature, named `t_<feature>`."""
    return [
        EmbeddingBagConfig(
            name=f"t_{name}",
            embedding_dim=dim,
            num_embeddings=size,
            feature_names=[name],
            pooling=PoolingType.SUM,
        )
        for name, size in zip(feature_names, table_sizes, strict=True)
    ]


class DLRM(nn.Module):
    """The DLRM model (Naumov et al. 2019) on a torchrec EmbeddingBagCollection."""

    def __init__(
        self,
        num_dense: int,
        tables: list[EmbeddingBagConfig],
        bottom_mlp: list[int],
        top_mlp: list[int],
        interaction: str = "dot",
        interaction_self: bool = False,
        embedding_device: torch.device | str = "meta",
        interaction_pad: int = 1,
    ) -> None:
        super().__init__()
        dims = {t.embedding_dim for t in tables}
        if len(dims) != 1:
            raise ValueError(f"DLRM needs one embedding dim for all tables, got {sorted(dims)}")
        dim = dims.pop()
        self.feature_names = [f for t in tables for f in t.feature_names]
        self._orders: dict[tuple[str, ...], torch.Tensor] = {}  # output key order -> permutation
        self.embedding_bag_collection = EmbeddingBagCollection(
            tables=tables, device=torch.device(embedding_device)
        )
        self.bottom_mlp = MLP(num_dense, [*bottom_mlp, dim])
        self.interaction = make_interaction(
            interaction, len(self.feature_names), interaction_self, interaction_pad
        )
        top_in = self.interaction.output_dim(dim)
        self.top_mlp = MLP(top_in, [*top_mlp, 1], relu_last=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        dense_out = self.bottom_mlp(dense)  # [B, D]
        pooled = self.embedding_bag_collection(sparse)  # KeyedTensor, [B, F * D]
        emb = self._in_feature_order(pooled, dense_out.shape[0])  # [B, F, D]
        return self.top_mlp(self.interaction(dense_out, emb)).squeeze(-1)  # [B]

    def _in_feature_order(self, pooled: KeyedTensor, batch: int) -> torch.Tensor:
        """[B, F, D] in the model's feature order.

        A sharded collection returns its keys grouped by shard (e.g. rank 0's tables first),
        so the order depends on the sharding plan; the interaction must not.
        """
        keys = pooled.keys()
        emb = pooled.values().reshape(batch, len(keys), -1)  # [B, F, D] in the output's order
        if keys == self.feature_names:
            return emb
        order = self._orders.get(tuple(keys))
        if order is None:
            position = {k: i for i, k in enumerate(keys)}
            order = torch.tensor([position[f] for f in self.feature_names], device=emb.device)
            self._orders[tuple(keys)] = order
        return emb.index_select(1, order)
