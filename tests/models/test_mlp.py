"""recsys's MLP: the fused CPU path (one autograd node; oneDNN bias+ReLU in bf16, MKL's bf16 GEMM
for small batches; the C++ ReLU and bias backward) against the plain layer-by-layer path, a
float64 copy and a float64 emulation of the bf16 roundings."""

from __future__ import annotations

import copy

import pytest
import torch

from kernels import ops
from recsys.models.mlp import MLP

needs_mkl_bf16 = pytest.mark.skipif(
    not ops.mkl_bf16_available(), reason="this torch does not carry MKL's bf16 GEMM"
)
# oneDNN's bf16 kernels need AVX-512 or newer; on an AVX2-only host (seen: AMD EPYC Zen 3) every
# bf16 product of the fused stack runs on MKL's bf16 GEMM instead, whatever the batch size.
ONEDNN_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
needs_onednn_bf16 = pytest.mark.skipif(
    not ONEDNN_BF16, reason="oneDNN has no bf16 kernels for this CPU (the stack runs on MKL)"
)


@pytest.fixture
def mkl_rows():
    """Sets the row count below which bf16 products run on MKL; restores it afterwards."""
    old = ops.set_mkl_bf16_max_rows(1024)
    yield ops.set_mkl_bf16_max_rows
    ops.set_mkl_bf16_max_rows(old)


def _model(relu_last: bool, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(13, [64, 32, 5], relu_last=relu_last)


def _run(model: MLP, x: torch.Tensor, fused: bool, bf16: bool):
    model.fused = fused
    model.zero_grad()
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = model(x)
    fused_ran = "MlpFunction" in y.grad_fn.name()  # the C++ node of recsys_kernels::mlp
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


@needs_onednn_bf16
def test_bf16_fused_matches_autocast_plain_path(mkl_rows):
    mkl_rows(0)  # every product on oneDNN, as the plain path's
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


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).double()


def _fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float().double()


def _emulate_mkl_path(model: MLP, x: torch.Tensor, grad_y: torch.Tensor):
    """float64 model of the small-batch bf16 path: bf16 operands, products and sums rounded to
    fp32 (MKL's accumulator), fp32 bias + ReLU, activations and input gradients rounded to bf16,
    weight and bias gradients kept in fp32."""
    weights = [_bf16(layer.weight.detach().double()) for layer in model.layers]
    biases = [layer.bias.detach().double() for layer in model.layers]
    last = len(weights) - 1
    acts = [_bf16(x.double())]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        y = _fp32(_fp32(acts[-1] @ w.t()) + _fp32(b))
        acts.append(_bf16(torch.relu(y) if i < last or model.relu_last else y))
    g, grads = _bf16(grad_y), []
    for i in reversed(range(len(weights))):
        if i < last or model.relu_last:
            g = g * (acts[i + 1] > 0)
        grads = [_fp32(g.t() @ acts[i]), _fp32(g.sum(0)), *grads]
        g = _bf16(_fp32(g @ weights[i])) if i > 0 else _fp32(g @ weights[i])
    return acts[-1], g, grads


@needs_mkl_bf16
@pytest.mark.parametrize("shape", ["relu_last", "linear_last", "head"])
def test_bf16_small_batch_runs_on_mkl_with_fp32_accumulation(mkl_rows, shape):
    """Below 1024 rows the bf16 products run on MKL (fp32 out): output and gradients equal the
    float64 emulation of those roundings to fp32 accumulation error (the width-1 head's kernels
    included). The oneDNN path (bf16 bias, bf16-rounded weight gradients) misses the same bound
    by more than 20x."""
    model = _head_model([64, 32, 1]) if shape == "head" else _model(shape == "relu_last")
    x = torch.randn(512, 13, generator=torch.Generator().manual_seed(2))
    results = {}
    for rows in (1024, 0):
        mkl_rows(rows)
        y, gx, grads = _run(model, x, fused=True, bf16=True)
        grad_y = torch.linspace(-1, 1, y.numel()).view_as(y)
        y_e, gx_e, grads_e = _emulate_mkl_path(model, x, grad_y)
        errors = [(y.double() - y_e).abs().max(), (gx.double() - gx_e).abs().max()]
        pairs = zip(grads, grads_e, strict=True)
        errors += [(a.double() - b).abs().max() / b.abs().max() for a, b in pairs if b.any()]
        results[rows] = max(float(e) for e in errors)
    # MKL's fp32 sums run in a CPU-dependent order (AMX tiles or AVX-512 BF16 dot products), so
    # an fp32 result one ulp from the emulation's can round to the neighbouring bf16 activation or
    # input gradient (2^-8 apart), which the next layer's sums carry on: 2e-6 with AMX, 4e-5
    # with AVX-512 BF16 only; the oneDNN path is off by 2e-3 or more.
    assert results[1024] < 1e-4
    if ONEDNN_BF16:
        assert results[0] > 1e-3
    else:  # no oneDNN bf16 kernels here: every batch runs on MKL, to the same bound
        assert results[0] < 1e-4


def test_bf16_stack_takes_the_plain_path_where_it_cannot_run(monkeypatch):
    """Where neither oneDNN's bf16 kernels nor MKL's bf16 GEMM can run (a CPU without AVX-512
    and a torch without MKL), bf16 autocast takes the layer-by-layer path, with its numbers."""
    model = _model(relu_last=False)
    x = torch.randn(64, 13, generator=torch.Generator().manual_seed(3))
    y_ref, gx_ref, grads_ref = _run(model, x, fused=False, bf16=True)
    monkeypatch.setattr(ops, "bf16_mlp_available", lambda: False)
    model.fused = True
    model.zero_grad()
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        y = model(x)
    assert "MlpFunction" not in y.grad_fn.name()
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    assert torch.equal(y, y_ref) and torch.equal(x.grad, gx_ref)
    for p, g in zip(model.parameters(), grads_ref, strict=True):
        assert torch.equal(p.grad, g)


@needs_mkl_bf16
@pytest.mark.parametrize(("m", "k", "n"), [(128, 367, 512), (1, 13, 5), (7, 1, 3), (64, 0, 9)])
@pytest.mark.parametrize("transposed", [(False, False), (True, False), (False, True), (True, True)])
def test_mm_bf16_f32_equals_float64_product(m, k, n, transposed):
    gen = torch.Generator().manual_seed(m * 1000 + k + n)
    a = torch.randn(m, k, generator=gen).bfloat16()
    b = torch.randn(k, n, generator=gen).bfloat16()
    if transposed[0]:
        a = a.t().contiguous().t()  # same values, column-major storage
    if transposed[1]:
        b = b.t().contiguous().t()
    c = ops.mm_bf16_f32(a, b)
    assert c.dtype == torch.float32 and c.shape == (m, n) and c.is_contiguous()
    exact = a.double() @ b.double()
    bound = (a.double().abs() @ b.double().abs()) * max(k, 1) * 2.0**-23
    assert ((c.double() - exact).abs() <= bound).all()


@needs_mkl_bf16
def test_mm_bf16_f32_rejects_mismatched_inputs():
    with pytest.raises(RuntimeError, match=r"bf16 CPU matrices \[M, K\] and \[K, N\]"):
        ops.mm_bf16_f32(torch.zeros(2, 3).bfloat16(), torch.zeros(4, 5).bfloat16())
    with pytest.raises(RuntimeError, match="bf16 CPU matrices"):
        ops.mm_bf16_f32(torch.zeros(2, 3), torch.zeros(3, 5))
    with pytest.raises(RuntimeError, match="rows must be >= 0"):
        ops.set_mkl_bf16_max_rows(-1)


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


@needs_onednn_bf16
def test_bf16_head_matches_autocast_plain_path(mkl_rows):
    mkl_rows(0)  # the hidden layers on oneDNN, as the plain path's
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
    model = _head_model([64, 32, 1])
    x = torch.randn(200, 13, generator=torch.Generator().manual_seed(6))
    y, gx, grads = _run(model, x, fused=True, bf16=False)
    MLP.heads = False
    try:
        y_gemm, gx_gemm, grads_gemm = _run(model, x, fused=True, bf16=False)
    finally:
        MLP.heads = True
    torch.testing.assert_close(y, y_gemm, rtol=1e-6, atol=1e-6)
    assert torch.equal(gx, gx_gemm)  # every input gradient product is the same fp32 product
    # weight gradients: fp32 sums of 200 products in two orders (the head kernel's, MKL's: which
    # is CPU-dependent), each within 200 * 2^-24 (1.2e-5) of the sum of the terms' magnitudes
    for a, b in zip(grads, grads_gemm, strict=True):
        torch.testing.assert_close(a, b, rtol=5e-5, atol=1e-6)


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
    if bf16 and (ONEDNN_BF16 or rows < 1024):  # the plain path's GEMMs, or both on MKL
        y_ref, gx_ref, grads_ref = _run(model, x, fused=False, bf16=True)
        torch.testing.assert_close(gx, gx_ref, rtol=2e-2, atol=1e-3)
    elif bf16:  # every product on MKL here: the float64 emulation of that path
        _, gx_e, _ = _emulate_mkl_path(model, x, torch.linspace(-1, 1, y.numel()).view_as(y))
        assert (gx.double() - gx_e).abs().max() < 1e-4
    else:
        _, gx64, _ = _run(copy.deepcopy(model).double(), x.double(), fused=False, bf16=False)
        torch.testing.assert_close(gx.double(), gx64, rtol=1e-5, atol=1e-5)
    # the operator itself: from batch 1024 on, rows 112 apart (100 padded to a multiple of 16);
    # below, where the padded copy of the weights costs more than it saves, plain rows
    dtype = torch.bfloat16 if bf16 else torch.float32
    params = [p.detach().to(dtype) for p in model.parameters()]
    ops = kernel_ops()
    forward = torch.ops.recsys_kernels.mlp_forward
    out, acts, weights = forward(x.to(dtype), params[0::2], params[1::2], True, bf16, False)
    grad = torch.linspace(-1, 1, out.numel()).view_as(out).to(dtype)
    g_x, _ = ops.mlp_backward(grad, acts, weights, True, False, [True] * 4, True, dtype, dtype)
    # (the MKL route, every bf16 batch's where oneDNN has no bf16 kernels, writes plain rows)
    padded = rows >= 1024 and (ONEDNN_BF16 or not bf16)
    assert g_x.shape == (rows, 100) and g_x.stride() == (112 if padded else 100, 1)
    g_plain = (grad * (out > 0)) @ weights[1]
    g_plain = (g_plain * (acts[1] > 0)) @ weights[0]
    torch.testing.assert_close(g_x.float(), g_plain.float(), rtol=2e-2 if bf16 else 1e-5,
                               atol=1e-3 if bf16 else 1e-5)  # fmt: skip


# The stack's autograd node is built in C++ (`recsys_kernels::mlp`): reached from eager Python
# through a direct binding, and through the dispatcher (its Autograd kernel) everywhere else.
# Both must record the same node and give the same numbers; without autograd (inference mode)
# the operator's CPU kernel runs the forward alone.
def _op_grads(call, model: MLP, x: torch.Tensor, grad: torch.Tensor):
    model.zero_grad()
    x = x.clone().requires_grad_()
    ws = [layer.weight for layer in model.layers]
    bs = [layer.bias for layer in model.layers]
    y = call(x, ws, bs, model.relu_last, False, False)
    assert "MlpFunction" in y.grad_fn.name()
    y.backward(grad)
    return y.detach(), x.grad, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("relu_last", [True, False])
def test_cpp_node_same_through_binding_and_dispatcher(relu_last):
    model = _model(relu_last, seed=11)
    x = torch.randn(96, 13, generator=torch.Generator().manual_seed(12))
    grad = torch.randn(96, 5, generator=torch.Generator().manual_seed(13))
    direct = _op_grads(ops.mlp, model, x, grad)  # plain tensors in eager mode: the binding
    dispatched = _op_grads(torch.ops.recsys_kernels.mlp, model, x, grad)
    for a, b in zip([direct[0], direct[1], *direct[2]], [dispatched[0], dispatched[1],
                                                         *dispatched[2]], strict=True):  # fmt: skip
        assert torch.equal(a, b)
    # and the numbers are the plain layer-by-layer path's (float64 reference)
    ref = copy.deepcopy(model).double()
    ref.fused = False
    x64 = x.double().requires_grad_()
    y64 = ref(x64)
    y64.backward(grad.double())
    torch.testing.assert_close(direct[0].double(), y64.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(direct[1].double(), x64.grad, rtol=1e-5, atol=1e-5)
    for a, p in zip(direct[2], ref.parameters(), strict=True):
        torch.testing.assert_close(a.double(), p.grad, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        y_inf = model(x)
    assert not y_inf.requires_grad and torch.equal(y_inf, direct[0])


def test_cpp_node_grads_only_what_needs_them():
    """Frozen layers and an input without grad get no gradient (the node's needs_input_grad)."""
    model = _model(True, seed=14)
    model.layers[0].weight.requires_grad_(False)
    model.layers[1].bias.requires_grad_(False)
    x = torch.randn(32, 13)
    model(x).sum().backward()
    assert model.layers[0].weight.grad is None and model.layers[1].bias.grad is None
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_cpp_node_products_are_not_autocast():
    """bf16=False under an enclosing bf16 autocast still computes in fp32, as outside it."""
    model = _model(True, seed=15)
    ws = [layer.weight for layer in model.layers]
    bs = [layer.bias for layer in model.layers]
    x = torch.randn(64, 13)
    expected = ops.mlp(x, ws, bs, True, False, False)
    with torch.autocast("cpu", torch.bfloat16):
        for call in (ops.mlp, torch.ops.recsys_kernels.mlp):
            y = call(x, ws, bs, True, False, False)
            assert y.dtype == torch.float32 and torch.equal(y, expected)


def test_cpp_node_bad_input_names_the_problem():
    w = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="no layers"):
        ops.mlp(torch.randn(2, 3), [], [], True, False, False)
    with pytest.raises(RuntimeError, match="one bias per weight"):
        ops.mlp(torch.randn(2, 3), [w], [], True, False, False)
