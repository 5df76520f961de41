"""The MLP layer backward kernel (kernels/csrc/mlp*): the masked gradient equal to PyTorch's
threshold_backward, the bias gradient to a float64 column sum, on every dispatch path."""

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
