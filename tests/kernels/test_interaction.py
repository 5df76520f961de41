"""The fused dot-interaction kernel (kernels/csrc/interaction*) against the plain Gram-matrix
formula in float64, on every dispatch path, and inside recsys's DotInteraction."""

from __future__ import annotations

import pytest
import torch

from kernels import ops
from recsys.models.interaction import DotInteraction

# (batch, F, D): Criteo's shape; dims below, at and past one 16-float block and not multiples of
# it; F from no embedding at all to past two 16-vector blocks of the transpose.
SHAPES = [(64, 26, 16), (5, 3, 7), (33, 40, 64), (7, 26, 130), (4, 0, 16), (3, 1, 16), (9, 15, 1),
          (2, 16, 17), (1, 31, 32)]  # fmt: skip


def reference(dense: torch.Tensor, sparse: torch.Tensor, self_terms: bool) -> torch.Tensor:
    """[dense, upper triangle of T T^T] in float64, T = [dense; sparse] per sample."""
    t = torch.cat([dense.unsqueeze(1), sparse], 1).double()
    n = t.shape[1]
    rows, cols = torch.triu_indices(n, n, 0 if self_terms else 1)
    return torch.cat([dense.double(), (t @ t.transpose(1, 2))[:, rows, cols]], 1)


def inputs(batch: int, f: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, d, generator=g), torch.randn(batch, f, d, generator=g)


@pytest.mark.parametrize("self_terms", [False, True])
@pytest.mark.parametrize(("batch", "f", "d"), SHAPES)
def test_forward_and_backward_match_float64_formula(isa, batch, f, d, self_terms):
    dense, sparse = inputs(batch, f, d, seed=batch * 100 + f * 10 + d)
    out = ops.dot_interaction(dense, sparse, self_terms)
    dd = dense.double().requires_grad_()
    ds = sparse.double().requires_grad_()
    expected = reference(dd, ds, self_terms)
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)

    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(7))
    g_dense, g_sparse = ops.dot_interaction_backward(grad, dense, sparse, self_terms)
    e_dense, e_sparse = torch.autograd.grad(expected, (dd, ds), grad.double())
    torch.testing.assert_close(g_dense.double(), e_dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_sparse.double(), e_sparse, rtol=1e-5, atol=1e-5)


def test_paths_agree():
    dense, sparse = inputs(50, 26, 16, seed=1)
    grad = torch.randn(50, 16 + 351)
    results = []
    for path in ("scalar", "avx2", "avx512"):
        if ops.set_isa(path) != path:
            continue
        results.append((ops.dot_interaction(dense, sparse),
                        *ops.dot_interaction_backward(grad, dense, sparse)))  # fmt: skip
    ops.set_isa("auto")
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("self_terms", [False, True])
def test_bf16_output_and_gradient_equal_rounding_and_widening(isa, self_terms):
    """bf16 output = the fp32 output rounded as `.to(torch.bfloat16)` does, bit for bit (NaN and
    infinities included); a bf16 gradient gives what its exact fp32 widening gives."""
    dense, sparse = inputs(37, 26, 16, seed=4)
    dense[3, 0], dense[5, 1], sparse[7, 2, 3] = float("nan"), float("inf"), 3e38
    out32 = ops.dot_interaction(dense, sparse, self_terms)
    out16 = ops.dot_interaction(dense, sparse, self_terms, out_dtype=torch.bfloat16)
    assert out16.dtype == torch.bfloat16
    assert torch.equal(out16.view(torch.int16), out32.bfloat16().view(torch.int16))
    grad = torch.randn(out32.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    got = ops.dot_interaction_backward(grad, dense, sparse, self_terms)
    want = ops.dot_interaction_backward(grad.float(), dense, sparse, self_terms)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_reads_a_row_strided_gradient(isa, dtype):
    """A gradient whose rows lie a stride apart (the MLP's input gradient is a view of padded
    rows) gives what its contiguous copy gives, bit for bit."""
    dense, sparse = inputs(21, 26, 16, seed=5)
    padded = torch.randn(21, 368, generator=torch.Generator().manual_seed(2)).to(dtype)
    grad = padded[:, :367]
    got = ops.dot_interaction_backward(grad, dense, sparse)
    want = ops.dot_interaction_backward(grad.contiguous(), dense, sparse)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    # columns a stride apart too (a transposed copy's view): read through a contiguous copy
    columns = grad.t().contiguous().t()
    for a, b in zip(ops.dot_interaction_backward(columns, dense, sparse), want, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match=r"grad must be float32 or bfloat16 \[21, 367\]"):
        ops.dot_interaction_backward(padded[:, :366], dense, sparse)


@pytest.mark.parametrize("self_terms", [False, True])
def test_dot_interaction_layer_fused_equals_pytorch_formulation(self_terms):
    """recsys's layer with the kernel (the default on CPU in fp32) and without it: same values
    and gradients, also for a strided view of the embeddings and under bf16 autocast."""
    torch.manual_seed(0)
    dense = torch.randn(12, 8, requires_grad=True)
    flat = torch.randn(12, 2 * 5 * 8, requires_grad=True)
    sparse = flat.view(12, 5, 16)[:, :, 8:]  # every other block: not contiguous
    fused, plain = DotInteraction(5, self_terms), DotInteraction(5, self_terms, fused=False)
    outs, grads = [], []
    for layer in (fused, plain):
        out = layer(dense, sparse)
        grad = torch.arange(out.numel(), dtype=torch.float32).view_as(out).sin()
        outs.append(out)
        grads.append(torch.autograd.grad(out, (dense, flat), grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # bf16 autocast: computed in fp32, the output rounded to bf16 once (both paths)
    expected = plain(dense.bfloat16().float(), sparse).bfloat16()
    for layer in (fused, plain):
        with torch.autocast("cpu", torch.bfloat16):
            auto = layer(dense.bfloat16(), sparse)
        assert auto.dtype == torch.bfloat16
        torch.testing.assert_close(auto, expected, rtol=1e-2, atol=1e-2)


def test_float64_and_fused_off_take_the_pytorch_formulation():
    """The kernel is fp32 only: float64 inputs (gradcheck) go the PyTorch way, unchanged."""
    dense = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    sparse = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DotInteraction(5), (dense, sparse))


def test_bad_inputs_raise_clear_errors():
    dense, sparse = inputs(4, 3, 8, seed=0)
    with pytest.raises(RuntimeError, match="dense must be \\[B, D\\] and sparse \\[B, F, D\\]"):
        ops.dot_interaction(dense, sparse[:, :, :4])
    with pytest.raises(RuntimeError, match="float32 CPU tensors only"):
        ops.dot_interaction(dense.double(), sparse.double())
    with pytest.raises(RuntimeError, match="must be contiguous"):
        ops.dot_interaction(dense, sparse.transpose(1, 2).contiguous().transpose(1, 2))
    with pytest.raises(RuntimeError, match="grad must be float32 or bfloat16 \\[4, 14\\]"):
        ops.dot_interaction_backward(torch.zeros(4, 13), dense, sparse)
    with pytest.raises(RuntimeError, match="out_dtype must be float32 or bfloat16"):
        ops.dot_interaction(dense, sparse, out_dtype=torch.float16)


def test_layer_takes_the_kernel_only_on_a_simd_path():
    """The portable scalar kernel is slower than PyTorch's batched GEMM: the layer then keeps
    the PyTorch formulation (seen in the autograd node that made its output)."""
    dense = torch.randn(4, 8, requires_grad=True)
    sparse = torch.randn(4, 3, 8)
    layer = DotInteraction(3)
    try:
        for path in ("avx2", "avx512"):
            if ops.set_isa(path) == path:
                assert "DotPairsFunction" in layer(dense, sparse).grad_fn.name()
        ops.set_isa("scalar")
        assert type(layer(dense, sparse).grad_fn).__name__ == "CatBackward0"
    finally:
        ops.set_isa("auto")


@pytest.mark.parametrize("self_terms", [False, True])
def test_autograd_node_same_through_binding_and_dispatcher(self_terms):
    """`dot_pairs` builds its autograd node in C++: reached through the direct binding (plain
    tensors, eager) or the dispatcher's Autograd kernel, it gives the kernels' own forward and
    backward; in inference mode the operator runs the forward alone."""
    dense, sparse = inputs(64, 26, 16, seed=21)
    grad = torch.randn(64, 16 + 27 * (28 if self_terms else 26) // 2,
                       generator=torch.Generator().manual_seed(22))  # fmt: skip
    expected = ops.dot_interaction(dense, sparse, self_terms)
    e_dense, e_sparse = ops.dot_interaction_backward(grad, dense, sparse, self_terms)
    for call in (ops.dot_pairs, torch.ops.recsys_kernels.dot_pairs):
        dd, ds = dense.clone().requires_grad_(), sparse.clone().requires_grad_()
        out = call(dd, ds, self_terms, None)
        assert "DotPairsFunction" in out.grad_fn.name()
        out.backward(grad)
        assert torch.equal(out.detach(), expected)
        assert torch.equal(dd.grad, e_dense) and torch.equal(ds.grad, e_sparse)
    with torch.inference_mode():
        out = torch.ops.recsys_kernels.dot_pairs(dense, sparse, self_terms, None)
    assert not out.requires_grad and torch.equal(out, expected)
    with pytest.raises(RuntimeError, match="dense must be"):
        ops.dot_pairs(dense, sparse[:, :, :8], self_terms, None)
