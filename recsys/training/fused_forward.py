"""The DLRM forward and loss of a one-process CPU training step in one C++ call.

Through the modules, a step's forward is six module calls (DistributedModelParallel, DLRM, the
two MLPs, the sharded collection, the interaction) and the loss: each ends in one of recsys's
C++ operators (`mlp`, `tbe_lookup`, `dot_pairs`), and the Python around them - module call
machinery, the collection's feature splits and KeyedTensor, the MLPs' and interaction's checks,
the loss call - costs ~0.3 ms of a ~3.6 ms step at batch 128 on the 2-core box, much of it
because the interpreter's working set is cold after each operator's megabytes of GEMM operands
(docs/benchmarks.md). `FusedForwardLoss` makes the same operator calls, with the same
arguments, from C++ (`kernels.ops.dlrm_forward_loss`): the same autograd nodes, bit-identical
logits, loss and updates.

It applies only where each module would take exactly that operator: a DLRM whose sharded
collection is the group of one (world size 1) going straight to one table-batched module that
takes recsys's lookup node, with the features already in the model's order; both MLPs and the
dot interaction on their fused paths (fp32 parameters on the CPU); grad mode on, no autocast;
no forward or backward hook on any of the modules it would skip. The structure (module types,
one table-batched module, feature order, fp32 CPU parameters) is decided once, after torchrec's
first forwards set the collection up; the switches (the modules' `fused` flags, `MLP.heads`, the
kernels' SIMD path, the MLPs' SGD group, grad mode, autocast, hooks, the batch's tensors) at
every call. Where it
does not apply, the call returns None and the trainer runs the modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torchrec.distributed.memory_stashing import MemoryStashingManager
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.distributed.group_of_one import GroupOfOneEmbeddingBagCollection
from recsys.models.dlrm import DLRM
from recsys.models.interaction import DotInteraction, _simd_kernels
from recsys.models.mlp import MLP
from recsys.training import tbe_kernels
from recsys.utils.kernels import kernel_ops

_is_tracing = torch._C._is_tracing
_is_compiling = torch.compiler.is_compiling


@dataclass(frozen=True)
class _Plan:
    """What one fused call needs from the model besides its parameters (read at every call)."""

    dlrm: DLRM
    batched: nn.Module  # the table-batched module (torchrec's wrapper of fbgemm's)
    skipped: tuple[nn.Module, ...]  # the modules whose calls the fused call replaces
    num_features: int
    width: int  # dense features


class FusedForwardLoss:
    """`(logits, loss)` of a training step by one C++ call where it applies, else None."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model  # torchrec's DistributedModelParallel around a DLRM
        self._plan: _Plan | bool | None = None  # None: undecided; False: never applies

    def __call__(
        self, dense: torch.Tensor, sparse: KeyedJaggedTensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        plan = self._plan
        if plan is None:
            plan = self._plan = _plan_for(self.model)
        if not plan or not _applies_now(plan, dense, sparse, labels):
            return None
        bottom, top = plan.dlrm.bottom_mlp, plan.dlrm.top_mlp
        return kernel_ops().dlrm_forward_loss(
            dense, labels, bottom.fused_args(), top.fused_args(), *bottom.sgd_args(),
            plan.num_features, plan.dlrm.interaction.self_terms,
            tbe_kernels.node_args(plan.batched, sparse),
        )  # fmt: skip


def _plan_for(model: nn.Module) -> _Plan | bool | None:
    """The model's plan, False where the fused call can never apply to it, None while its
    collection has not run torchrec's first forward yet (decided after it)."""
    dlrm = getattr(model, "module", model)
    if not isinstance(dlrm, DLRM):
        return False
    collection = dlrm.embedding_bag_collection
    if not isinstance(collection, GroupOfOneEmbeddingBagCollection):
        return False
    if collection.direct_forward is None:
        return None
    bottom, top, interaction = dlrm.bottom_mlp, dlrm.top_mlp, dlrm.interaction
    if (
        not collection.direct_forward
        or len(collection._lookups) != 1
        or len(collection._lookups[0]._emb_modules) != 1
        or collection._has_features_permute
        or list(collection._embedding_names) != dlrm.feature_names
        or type(interaction) is not DotInteraction
        or not all(type(m) is MLP and _fp32_cpu(m) for m in (bottom, top))
    ):
        return False
    wrapped = getattr(model, "_dmp_wrapped_module", None)
    skipped = tuple({id(m): m for m in (model, wrapped, dlrm, bottom, collection, interaction,
                                        top) if m is not None}.values())  # fmt: skip
    return _Plan(
        dlrm=dlrm,
        batched=collection._lookups[0]._emb_modules[0],
        skipped=skipped,
        num_features=len(dlrm.feature_names),
        width=bottom.layers[0].in_features,
    )


def _fp32_cpu(mlp: MLP) -> bool:
    return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in mlp.parameters())


def _applies_now(
    plan: _Plan, dense: torch.Tensor, sparse: KeyedJaggedTensor, labels: torch.Tensor
) -> bool:
    """This call's part of the decision: what can change from one step to the next."""
    dlrm = plan.dlrm
    bottom, top = dlrm.bottom_mlp, dlrm.top_mlp
    return (
        torch.is_grad_enabled()
        and bottom.fused
        and top.fused
        and dlrm.interaction.fused
        and _simd_kernels()  # (the kernel path can be switched at run time)
        and bottom._sgd_group is top._sgd_group  # one lr for both (or no step in the backward)
        and not torch.is_autocast_enabled("cpu")
        and tbe_kernels.node_applies(plan.batched)
        and type(dense) is torch.Tensor
        and dense.dtype == torch.float32
        and dense.dim() == 2
        and dense.shape[1] == plan.width
        and type(labels) is torch.Tensor
        and labels.dtype == torch.float32
        and type(sparse) is KeyedJaggedTensor
        and not sparse.variable_stride_per_key()
        and not MemoryStashingManager.is_enabled()
        and not _hooked(plan.skipped)
        and not _is_tracing()
        and not _is_compiling()
    )


def _hooked(modules: tuple[nn.Module, ...]) -> bool:
    """Whether a module call the fused call skips would run a hook (its own or a global one)."""
    if (
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or torch_module._global_backward_hooks
        or torch_module._global_backward_pre_hooks
    ):
        return True
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in modules
    )
