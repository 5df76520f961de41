"""The MLP kernels (kernels/csrc/mlp*): the layer backward's masked gradient equal to PyTorch's
threshold_backward and its bias gradient to a float64 column sum (out of place and in place);
the width-1 last layer ("head") against a float64 product and the ops it replaces; on every
dispatch path."""

from __future__ import annotations

import pytest
import torch

from kernels import ops

SHAPES = [(2048, 512), (128, 256), (37, 19), (64, 16), (65, 1), (1, 33), (0, 8)]
DTYPES = [torch.float32, torch.bfloat16]


def _inputs(rows: int, cols: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(rows, cols, generator=g).to(dtype)
    out = torch.relu(torch.randn(rows, cols, generator=g)).to(dtype)
    return grad, out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_matches_threshold_backward_and_float64_sum(isa, rows, cols, dtype):
    grad, out = _inputs(rows, cols, dtype, seed=rows * 1000 + cols)
    masked, bias = ops.relu_bias_grad(grad, out)
    expected = torch.ops.aten.threshold_backward(grad, out, 0)
    assert masked.dtype == dtype and bias.dtype == torch.float32 and bias.shape == (cols,)
    assert torch.equal(masked, expected)
    torch.testing.assert_close(bias.double(), expected.double().sum(0), rtol=1e-5, atol=1e-4)
    plain = ops.bias_grad(grad)
    torch.testing.assert_close(plain.double(), grad.double().sum(0), rtol=1e-5, atol=1e-4)


def test_nan_output_lets_the_gradient_through_like_pytorch(isa):
    out = torch.tensor([[float("nan"), 0.0, -0.0, -1.0, 2.0]])
    grad = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    for dtype in DTYPES:
        masked, bias = ops.relu_bias_grad(grad.to(dtype), out.to(dtype))
        expected = torch.ops.aten.threshold_backward(grad.to(dtype), out.to(dtype), 0)
        assert torch.equal(masked, expected)
        assert bias.tolist() == [1.0, 0.0, 0.0, 0.0, 5.0]


def test_paths_and_thread_counts_give_identical_sums():
    grad, out = _inputs(1000, 300, torch.bfloat16, seed=5)
    results = []
    threads = torch.get_num_threads()
    for path in ("scalar", "avx2", "avx512"):
        if ops.set_isa(path) != path:
            continue
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(ops.relu_bias_grad(grad, out))
    torch.set_num_threads(threads)
    ops.set_isa("auto")
    for masked, bias in results[1:]:
        assert torch.equal(masked, results[0][0]) and torch.equal(bias, results[0][1])


def test_strided_input_reads_right():
    grad, out = _inputs(40, 24, torch.float32, seed=2)
    masked, bias = ops.relu_bias_grad(grad.t().contiguous().t(), out[:, :].t().contiguous().t())
    expected = torch.ops.aten.threshold_backward(grad, out, 0)
    assert torch.equal(masked, expected)
    torch.testing.assert_close(bias, expected.sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("grad", "out", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(4, 2), "must match"),
        (torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.bfloat16), "must match"),
        (torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, 3), "float32 or bfloat16"),
        (torch.zeros(12), torch.zeros(12), "2-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(grad, out, message):
    with pytest.raises(RuntimeError, match=message):
        ops.relu_bias_grad(grad, out)


def test_bias_grad_rejects_a_non_matrix():
    with pytest.raises(RuntimeError, match="bias_grad: grad must be a 2-D float32 or bfloat16"):
        ops.bias_grad(torch.zeros(3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_variant_equals_the_out_of_place_one(isa, dtype):
    grad, out = _inputs(300, 70, dtype, seed=9)
    masked, bias = ops.relu_bias_grad(grad, out)
    in_place = grad.clone()
    bias_in_place = ops.relu_bias_grad_(in_place, out)
    assert torch.equal(in_place, masked) and torch.equal(bias_in_place, bias)


def test_in_place_variant_rejects_a_strided_gradient():
    grad, out = _inputs(8, 6, torch.float32, seed=3)
    with pytest.raises(RuntimeError, match="relu_bias_grad_: grad must be contiguous"):
        ops.relu_bias_grad_(grad.t(), out.t())
    with pytest.raises(RuntimeError, match="relu_bias_grad_: grad and out must match"):
        ops.relu_bias_grad_(grad, out[:, :5])


# The width-1 last layer ("head"): forward against a float64 product, backward against the ops
# it replaces (the N = 1 GEMM for the input gradient, then relu_bias_grad) bit for bit.

HEAD_SHAPES = [(2048, 256), (128, 256), (37, 19), (65, 16), (1, 33), (0, 8)]


def _head_inputs(rows: int, cols: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(rows, cols, generator=g)).to(dtype)
    w = torch.randn(1, cols, generator=g).to(dtype)
    b = torch.randn(1, generator=g).to(dtype)
    grad = torch.randn(rows, 1, generator=g).to(dtype)
    return x, w, b, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "cols"), HEAD_SHAPES)
def test_head_forward_is_the_linear_layer(isa, rows, cols, dtype):
    x, w, b, _ = _head_inputs(rows, cols, dtype, seed=rows + cols)
    y = ops.mlp_head_forward(x, w, b)
    assert y.shape == (rows, 1) and y.dtype == dtype
    exact = x.double() @ w.double().t() + b.double()
    # fp32 sums; a bf16 output is that sum rounded once (half a bf16 step, 2^-9 relative)
    tol = {"rtol": 2**-8, "atol": 1e-6} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(y.double(), exact, **tol)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "cols"), HEAD_SHAPES)
def test_head_backward_equals_gemm_then_relu_backward(isa, rows, cols, dtype, relu):
    x, w, _, grad = _head_inputs(rows, cols, dtype, seed=rows * 7 + cols)
    grad_x, below_bias, w_grad = ops.mlp_head_backward(grad, x, w, relu)
    product = torch.mm(grad, w)  # the N = 1 GEMM's input gradient: one product per element
    if relu:
        expected_x, expected_bias = ops.relu_bias_grad(product, x)
    else:
        expected_x, expected_bias = product, ops.bias_grad(product)
    assert grad_x.dtype == dtype and w_grad.dtype == below_bias.dtype == torch.float32
    assert torch.equal(grad_x, expected_x) and torch.equal(below_bias, expected_bias)
    torch.testing.assert_close(
        w_grad.double(), grad.double().t() @ x.double(), rtol=1e-5, atol=1e-4
    )


def test_head_backward_nan_input_lets_the_gradient_through():
    x = torch.tensor([[float("nan"), 0.0, -1.0, 2.0]])
    grad_x, bias, _ = ops.mlp_head_backward(torch.tensor([[2.0]]), x, torch.ones(1, 4), True)
    assert grad_x.tolist() == [[2.0, 0.0, 0.0, 2.0]] and bias.tolist() == [2.0, 0.0, 0.0, 2.0]


def test_head_sums_do_not_depend_on_thread_count():
    x, w, b, grad = _head_inputs(1000, 300, torch.bfloat16, seed=4)
    threads = torch.get_num_threads()
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        results.append((ops.mlp_head_forward(x, w, b), *ops.mlp_head_backward(grad, x, w, True)))
    torch.set_num_threads(threads)
    for a, b_ in zip(results[0], results[1], strict=True):
        assert torch.equal(a, b_)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ops.mlp_head_forward(torch.zeros(4, 3), torch.zeros(1, 2), torch.zeros(1)),
         r"weight must be a \[1, 3\] float CPU tensor \(the input has 3 features\)"),
        (lambda: ops.mlp_head_forward(torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(1)),
         r"weight must be a \[1, 3\]"),
        (lambda: ops.mlp_head_forward(torch.zeros(4, 3), torch.zeros(1, 3), torch.zeros(2)),
         "bias must hold one value"),
        (lambda: ops.mlp_head_backward(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(1, 3),
                                       True), r"grad must be \[4, 1\]"),
        (lambda: ops.mlp_head_backward(torch.zeros(4, 1, dtype=torch.bfloat16), torch.zeros(4, 3),
                                       torch.zeros(1, 3), True), r"grad must be \[4, 1\]"),
        (lambda: ops.mlp_head_forward(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(1, 3),
                                      torch.zeros(1)), "float32 or bfloat16"),
    ],
)  # fmt: skip
def test_head_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


# The fp32 layer epilogue: bias (and ReLU) added in place after the GEMM.


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_bias_act_equals_add_then_relu(isa, rows, cols, relu):
    out, _ = _inputs(rows, cols, torch.float32, seed=rows + 3 * cols)
    bias = torch.randn(cols, generator=torch.Generator().manual_seed(cols))
    expected = out + bias
    if relu:
        expected = torch.relu(expected)
    result = ops.bias_act_(out, bias, relu)
    assert result.data_ptr() == out.data_ptr() and torch.equal(out, expected)


def test_bias_act_keeps_nan_like_torch_relu(isa):
    out = torch.tensor([[float("nan"), -1.0, 2.0, float("-inf")]])
    ops.bias_act_(out, torch.zeros(4), True)
    assert torch.equal(out.isnan(), torch.tensor([[True, False, False, False]]))
    assert out[0, 1:].tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize(
    ("out", "bias", "message"),
    [
        (torch.zeros(4, 3).t(), torch.zeros(4), "contiguous 2-D float32"),
        (torch.zeros(4, 3, dtype=torch.bfloat16), torch.zeros(3), "contiguous 2-D float32"),
        (torch.zeros(4, 3), torch.zeros(4), r"bias must be \[3\]"),
    ],
)
def test_bias_act_bad_inputs_raise_clear_errors(out, bias, message):
    with pytest.raises(RuntimeError, match=message):
        ops.bias_act_(out, bias, True)
