"""DLRM's MLPs: Linear layers with ReLU between them, fused on CPU into one autograd step.

On CPU the whole stack runs as one autograd node instead of two to three per layer, built in C++
(`recsys_kernels::mlp`: its layer loops `mlp_forward` / `mlp_backward`, no Python per layer and none
in the backward): under bf16 autocast each layer's bias and ReLU run inside oneDNN's GEMM (the
`mkldnn::_linear_pointwise` op that torch.compile's CPU backend emits) - below 1024 rows every bf16
product runs on MKL's bf16 GEMM instead (fp32 out: oneDNN's ~30 us per call outside the product
dominates there), its fp32 result through the fp32 bias + ReLU pass and cast to bf16, the weight
gradients kept in fp32 (`kernels.ops.set_mkl_bf16_max_rows`) -, in fp32 the bias and ReLU run in one
in-place pass after MKL's GEMM (`bias_act_`; `addmm` first copies the broadcast bias into the
output); in the backward one C++ pass per layer masks the gradient with the ReLU output and sums the
bias gradient in fp32 (`relu_bias_grad`, in place on the gradients the backward made itself), where
PyTorch takes two to three passes (threshold_backward, a bf16 -> fp32 copy, sum). Weight gradients
are the same GEMMs autograd runs (in fp32 a narrow input's, e.g. the 13 dense features, as the
transposed product: 3-4x faster in MKL); the bias gradient is an fp32 sum (autocast's is a bf16
one). An input width that is not a multiple of 16 (the interaction's 367) gets its gradient from a
GEMM on zero-padded weights, as a view of aligned rows (1.2-1.5x faster GEMM). A width-1 last layer
(DLRM's logit) is not a GEMM here: its forward is one dot product per row and its backward one pass
over its input that also does the ReLU backward of the layer below (`mlp_head_*`); its output and
weight gradient are fp32 sums in another order than the GEMM's (the logit within a bf16 rounding
step of oneDNN's), its input gradient the same products. fp32 outputs differ from `addmm`'s in the
last bits (the bias is added after the products, not before). Other devices, dtypes, parameters of
mixed dtypes and a build without the kernels take the plain path (`fused=False` forces it).

`take_sgd_step_in_backward` (the trainer's `optim.dense.in_backward`) hands the dense SGD step of
the stack's parameters to the fused path's backward: each weight is updated inside its gradient
GEMM and no gradient is written to `.grad`, so the optimizer's step finds nothing left to do for
them (after a plain-path step it applies the gradients as usual).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from recsys.utils.kernels import kernel_ops

_BF16 = torch.bfloat16


class MLP(nn.Module):
    """`sizes[i]`-wide Linear layers from `in_features`, ReLU after each (the last one too when
    `relu_last`)."""

    heads = True  # fused path: a width-1 last layer on the head kernels (False: a GEMM; A/B checks)

    def __init__(
        self, in_features: int, sizes: list[int], relu_last: bool = True, fused: bool = True
    ) -> None:
        super().__init__()
        widths = [in_features, *sizes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.relu_last = relu_last
        self.fused = fused
        self._sgd_group: dict | None = None

    def take_sgd_step_in_backward(self, group: dict | None) -> None:
        """Let the fused path's backward take the SGD step of optimizer param group `group`
        (torch.optim.SGD without momentum; its lr and weight_decay are read at every forward)
        on this stack's parameters, in place of the optimizer; None hands it back."""
        if group is not None and group.get("momentum", 0.0) != 0.0:
            raise ValueError("an SGD step in the backward has no momentum buffer: the group's "
                             f"momentum must be 0, got {group['momentum']}")  # fmt: skip
        self._sgd_group = group

    def fused_args(self) -> tuple[list[nn.Parameter], list[nn.Parameter], bool, bool]:
        """(weights, biases, relu_last, head) as the fused path passes them to
        `kernels.ops.mlp`; `head`: a width-1 last layer (DLRM's logit) runs on the head
        kernels, not as an N = 1 GEMM."""
        weights = [layer.weight for layer in self.layers]
        biases = [layer.bias for layer in self.layers]
        return weights, biases, self.relu_last, weights[-1].shape[0] == 1 and MLP.heads

    def sgd_args(self) -> tuple[float | None, float]:
        """(lr, weight decay) of the SGD step the fused backward takes now
        (`take_sgd_step_in_backward`; none without grad mode): (None, 0.0) for none."""
        sgd = self._sgd_group if torch.is_grad_enabled() else None
        return (None, 0.0) if sgd is None else (sgd["lr"], sgd["weight_decay"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.layers[0].in_features
        if x.dim() == 0 or x.shape[-1] != width:
            # checked here: oneDNN's own error for this names no shape
            raise ValueError(f"MLP expects {width} input features, got a tensor of shape "
                             f"{tuple(x.shape)}")  # fmt: skip
        work = _fused_dtype(x) if self.fused else None
        weights, biases, relu_last, head = self.fused_args()
        if work is not None and len({p.dtype for p in (*weights, *biases)}) == 1:
            return kernel_ops().mlp(x, weights, biases, relu_last, work == _BF16, head,
                                    *self.sgd_args())  # fmt: skip
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.relu_last:
                x = torch.relu(x)
        return x


def _fused_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype the fused path computes in for a [batch, features] input `x` (bf16 under CPU
    bf16 autocast, else fp32), or None when the plain path must run (also bf16 on a CPU and
    torch where neither oneDNN's bf16 kernels nor MKL's bf16 GEMM runs)."""
    if x.device.type != "cpu" or x.dim() != 2 or kernel_ops() is None:
        return None
    if torch.is_autocast_enabled("cpu"):
        work = _BF16 if torch.get_autocast_dtype("cpu") == _BF16 else None
    else:
        work = x.dtype if x.dtype in (torch.float32, _BF16) else None
    return None if work == _BF16 and not kernel_ops().bf16_mlp_available() else work
