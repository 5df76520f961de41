"""The training loss (recsys.training.loss, `kernels.ops.bce_with_logits`): PyTorch's mean binary
cross-entropy with logits and its gradient, through the direct binding and the registered
operator; bad shapes and dtypes as errors; PyTorch's function wherever the kernel does not
apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import ops
from recsys.training.loss import bce_with_logits


def _inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g) * 6
    logits[: min(n, 4)] = torch.tensor([0.0, 40.0, -40.0, 1e-3])[: min(n, 4)]  # saturated, zero
    labels = (torch.rand(n, generator=g) < 0.3).float()
    return logits, labels


@pytest.mark.parametrize("n", [1, 7, 128, 2048])
def test_loss_and_gradient_equal_pytorch(n):
    logits, labels = _inputs(n, seed=n)
    ours_x = logits.clone().requires_grad_()
    torch_x = logits.clone().requires_grad_()
    ours = ops.bce_with_logits(ours_x, labels)
    expected = F.binary_cross_entropy_with_logits(torch_x, labels)
    (2.5 * ours).backward()
    (2.5 * expected).backward()
    torch.testing.assert_close(ours, expected, rtol=2e-7, atol=0)
    torch.testing.assert_close(ours_x.grad, torch_x.grad, rtol=1e-6, atol=1e-9)


def test_registered_operator_same_as_direct_binding():
    logits, labels = _inputs(64, seed=1)
    x = logits.clone().requires_grad_()
    via_op = torch.ops.recsys_kernels.bce_with_logits(x, labels)
    via_op.backward()
    y = logits.clone().requires_grad_()
    direct = ops.bce_with_logits(y, labels)
    direct.backward()
    assert torch.equal(via_op, direct) and torch.equal(x.grad, y.grad)
    with torch.inference_mode():
        assert torch.equal(torch.ops.recsys_kernels.bce_with_logits(logits, labels), direct)


def test_bad_inputs_are_errors():
    logits, labels = _inputs(8, seed=2)
    with pytest.raises(RuntimeError, match=r"bce_with_logits: logits \[B\] and labels \[B\]"):
        ops.bce_with_logits(logits, labels[:7])
    with pytest.raises(RuntimeError, match="float32 CPU logits and labels expected"):
        ops.bce_with_logits(logits.double(), labels.double())
    with pytest.raises(RuntimeError, match="labels must not require grad"):
        ops.bce_with_logits(logits, labels.clone().requires_grad_())


def test_training_loss_falls_back_to_pytorch_where_the_kernel_does_not_apply():
    logits, labels = _inputs(16, seed=3)
    got = bce_with_logits(logits.double(), labels.double())
    assert got.dtype == torch.float64
    assert torch.equal(got, F.binary_cross_entropy_with_logits(logits.double(), labels.double()))
    two_d = bce_with_logits(logits.view(4, 4), labels.view(4, 4))
    torch.testing.assert_close(two_d, F.binary_cross_entropy_with_logits(logits, labels))
    assert torch.equal(bce_with_logits(logits, labels), ops.bce_with_logits(logits, labels))


def test_no_samples_is_nan_like_pytorch():
    empty = torch.empty(0)
    assert torch.isnan(ops.bce_with_logits(empty, empty))
    assert torch.isnan(F.binary_cross_entropy_with_logits(empty, empty))
