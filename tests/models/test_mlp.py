"""recsys's MLP: the fused CPU path (one autograd node; oneDNN bias+ReLU in bf16; the C++ ReLU
and bias backward) against the plain layer-by-layer path and a float64 copy."""

from __future__ import annotations

import copy

import pytest
import torch

from recsys.models.mlp import MLP


def _model(relu_last: bool, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(13, [64, 32, 5], relu_last=relu_last)


def _run(model: MLP, x: torch.Tensor, fused: bool, bf16: bool):
    model.fused = fused
    model.zero_grad()
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = model(x)
    fused_ran = type(y.grad_fn).__name__ == "_FusedMLPBackward"
    assert fused_ran == (fused and x.dtype == torch.float32)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, x.grad, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("relu_last", [True, False])
def test_fp32_fused_equals_float64_reference(relu_last):
    model = _model(relu_last)
    x = torch.randn(300, 13, generator=torch.Generator().manual_seed(1))
    y, gx, grads = _run(model, x, fused=True, bf16=False)
    ref = copy.deepcopy(model).double()
    y64, gx64, grads64 = _run(ref, x.double(), fused=False, bf16=False)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), gx64, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
    if not relu_last:
        assert (y < 0).any()  # no ReLU after the last layer


def test_bf16_fused_matches_autocast_plain_path():
    model = _model(relu_last=True)
    x = torch.randn(512, 13, generator=torch.Generator().manual_seed(2))
    y, gx, grads = _run(model, x, fused=True, bf16=True)
    y_ref, gx_ref, grads_ref = _run(model, x, fused=False, bf16=True)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)  # same oneDNN GEMMs, bias, ReLU
    torch.testing.assert_close(gx, gx_ref, rtol=2e-2, atol=1e-3)
    weights, weights_ref = grads[0::2], grads_ref[0::2]
    for a, b in zip(weights, weights_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-3)
    # bias gradients: fp32 sums of the masked bf16 gradient (autocast's are bf16 sums)
    for a, b in zip(grads[1::2], grads_ref[1::2], strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_frozen_layers_and_input_without_grad():
    model = _model(relu_last=False)
    for p in model.layers[0].parameters():
        p.requires_grad_(False)
    x = torch.randn(16, 13)
    model(x).sum().backward()
    assert model.layers[0].weight.grad is None and model.layers[0].bias.grad is None
    assert model.layers[1].weight.grad is not None


def test_float64_and_unfused_take_the_plain_path():
    model = _model(relu_last=True).double()
    x = torch.randn(8, 13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))
    plain = _model(relu_last=True)
    plain.fused = False
    x32 = torch.randn(8, 13)
    expected = x32
    for layer in plain.layers:
        expected = torch.relu(layer(expected))
    torch.testing.assert_close(plain(x32), expected, rtol=0, atol=0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bf16", [False, True])
def test_wrong_input_width_is_a_clear_error(fused, bf16):
    model = _model(relu_last=True)
    model.fused = fused
    with (
        pytest.raises(ValueError, match=r"MLP expects 13 input features, got .* \(5, 12\)"),
        torch.autocast("cpu", torch.bfloat16, enabled=bf16),
    ):
        model(torch.randn(5, 12))


def test_batched_3d_input_takes_the_plain_path():
    model = _model(relu_last=False)
    x = torch.randn(2, 3, 13)
    out = model(x)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[1], model(x[1]), rtol=1e-6, atol=1e-6)


# A width-1 last layer (DLRM's logit) runs on the head kernels inside the fused path.


def _head_model(sizes: list[int], relu_last: bool = False) -> MLP:
    torch.manual_seed(3)
    return MLP(13, sizes, relu_last=relu_last)


@pytest.mark.parametrize(
    ("sizes", "relu_last"), [([64, 32, 1], False), ([64, 32, 1], True), ([1], False)]
)
def test_fp32_head_equals_float64_reference(sizes, relu_last):
    model = _head_model(sizes, relu_last)
    x = torch.randn(300, 13, generator=torch.Generator().manual_seed(4))
    y, gx, grads = _run(model, x, fused=True, bf16=False)
    y64, gx64, grads64 = _run(copy.deepcopy(model).double(), x.double(), fused=False, bf16=False)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), gx64, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def test_bf16_head_matches_autocast_plain_path():
    model = _head_model([64, 32, 1])
    x = torch.randn(512, 13, generator=torch.Generator().manual_seed(5))
    y, gx, grads = _run(model, x, fused=True, bf16=True)
    y_ref, gx_ref, grads_ref = _run(model, x, fused=False, bf16=True)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    # the hidden layers are the same oneDNN GEMMs; the logit is an fp32 dot product rounded
    # once to bf16 (oneDNN sums in another order): at most one bf16 step apart
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2**-7, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=2e-2, atol=1e-3)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_head_kernels_and_gemm_head_agree():
    from recsys.models.mlp import _FusedMLP

    model = _head_model([64, 32, 1])
    x = torch.randn(200, 13, generator=torch.Generator().manual_seed(6))
    y, gx, grads = _run(model, x, fused=True, bf16=False)
    _FusedMLP.heads = False
    try:
        y_gemm, gx_gemm, grads_gemm = _run(model, x, fused=True, bf16=False)
    finally:
        _FusedMLP.heads = True
    torch.testing.assert_close(y, y_gemm, rtol=1e-6, atol=1e-6)
    assert torch.equal(gx, gx_gemm)  # every input gradient product is the same fp32 product
    for a, b in zip(grads, grads_gemm, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# The stack's input gradient for an input width that is not a multiple of 16 (DLRM's 367-wide
# interaction output) comes, from batch 1024 on, from a GEMM on zero-padded weights: a view of
# aligned rows.


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("rows", [64, 1024])
def test_unaligned_input_width_gradient_is_a_view_of_padded_rows(bf16, rows):
    from recsys.utils.kernels import kernel_ops

    torch.manual_seed(7)
    model = MLP(100, [48, 3])
    x = torch.randn(rows, 100, generator=torch.Generator().manual_seed(8))
    y, gx, grads = _run(model, x, fused=True, bf16=bf16)
    if bf16:
        y_ref, gx_ref, grads_ref = _run(model, x, fused=False, bf16=True)
        torch.testing.assert_close(gx, gx_ref, rtol=2e-2, atol=1e-3)
    else:
        _, gx64, _ = _run(copy.deepcopy(model).double(), x.double(), fused=False, bf16=False)
        torch.testing.assert_close(gx.double(), gx64, rtol=1e-5, atol=1e-5)
    # the operator itself: from batch 1024 on, rows 112 apart (100 padded to a multiple of 16);
    # below, where the padded copy of the weights costs more than it saves, plain rows
    dtype = torch.bfloat16 if bf16 else torch.float32
    params = [p.detach().to(dtype) for p in model.parameters()]
    ops = kernel_ops()
    out, acts, weights = ops.mlp_forward(x.to(dtype), params[0::2], params[1::2], True, bf16,
                                         False)  # fmt: skip
    grad = torch.linspace(-1, 1, out.numel()).view_as(out).to(dtype)
    g_x, _ = ops.mlp_backward(grad, acts, weights, True, False, [True] * 4, True, dtype, dtype)
    assert g_x.shape == (rows, 100) and g_x.stride() == (112 if rows >= 1024 else 100, 1)
    g_plain = (grad * (out > 0)) @ weights[1]
    g_plain = (g_plain * (acts[1] > 0)) @ weights[0]
    torch.testing.assert_close(g_x.float(), g_plain.float(), rtol=2e-2 if bf16 else 1e-5,
                               atol=1e-3 if bf16 else 1e-5)  # fmt: skip
