"""The training loss: mean binary cross-entropy of logits against 0/1 click labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.utils.kernels import kernel_ops


def bce_with_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits. On the CPU (float32 [B] logits and labels) by
    recsys's one-node C++ loss (`kernels.ops.bce_with_logits`: ATen's formula, one pass forward
    and one multiply backward, where `F.binary_cross_entropy_with_logits` runs ~13 small ops;
    the fused forward calls the same kernel); anywhere else by PyTorch's."""
    ops = kernel_ops()
    if (
        ops is not None
        and logits.device.type == "cpu"
        and labels.device.type == "cpu"
        and logits.dtype == torch.float32
        and labels.dtype == torch.float32
        and logits.dim() == 1
        and labels.shape == logits.shape
        and not labels.requires_grad
    ):
        return ops.bce_with_logits(logits, labels)
    return F.binary_cross_entropy_with_logits(logits, labels)
