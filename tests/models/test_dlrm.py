"""DLRM: equal to torchrec's reference DLRM with the same weights; interaction variants."""

from __future__ import annotations

import pytest
import torch
from torchrec.models.dlrm import DLRM as TorchrecDLRM
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.dlrm import DLRM, table_configs
from recsys.models.interaction import DotInteraction

NAMES, SIZES, DIM = ["a", "b", "c"], [11, 7, 5], 8


def _inputs(batch: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, 4, generator=g)
    lengths = torch.randint(0, 3, (len(NAMES) * batch,), generator=g)
    values = torch.cat([
        torch.randint(0, size, (int(lengths[i * batch:(i + 1) * batch].sum()),), generator=g)
        for i, size in enumerate(SIZES)
    ])  # fmt: skip
    return dense, KeyedJaggedTensor(keys=NAMES, values=values, lengths=lengths)


def _ours(interaction="dot", self_terms=False) -> DLRM:
    torch.manual_seed(0)
    return DLRM(4, table_configs(NAMES, SIZES, DIM), [16], [32, 16], interaction, self_terms, "cpu")


def test_matches_torchrec_reference_dlrm():
    ours = _ours()
    ref = TorchrecDLRM(
        embedding_bag_collection=EmbeddingBagCollection(table_configs(NAMES, SIZES, DIM)),
        dense_in_features=4, dense_arch_layer_sizes=[16, DIM], over_arch_layer_sizes=[32, 16, 1],
    )  # fmt: skip
    ours_params, ref_params = list(ours.parameters()), list(ref.parameters())
    assert [p.shape for p in ours_params] == [p.shape for p in ref_params]
    with torch.no_grad():
        for a, b in zip(ours_params, ref_params, strict=True):
            b.copy_(a)
    dense, kjt = _inputs()
    torch.testing.assert_close(ours(dense, kjt), ref(dense, kjt).squeeze(-1), rtol=1e-6, atol=1e-6)


def test_dot_interaction_layout_and_self_terms():
    dense = torch.randn(2, 3)
    sparse = torch.randn(2, 4, 3)
    out = DotInteraction(4, self_terms=False)(dense, sparse)
    assert out.shape == (2, 3 + 10)  # D + C(5, 2)
    full = DotInteraction(4, self_terms=True)(dense, sparse)
    assert full.shape == (2, 3 + 15)  # D + C(5, 2) + 5 diagonal terms
    # first pair after the dense vector: <dense, e_1>; with self terms: <dense, dense>
    torch.testing.assert_close(out[:, 3], (dense * sparse[:, 0]).sum(1))
    torch.testing.assert_close(full[:, 3], (dense * dense).sum(1))


@pytest.mark.parametrize("self_terms", [False, True])
def test_dot_interaction_gradients(self_terms):
    """The hand-written backward (symmetric Gram: one scatter, one GEMM) against finite
    differences in float64, and the values against the plain Gram-matrix formula."""
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sparse = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    layer = DotInteraction(5, self_terms)
    assert torch.autograd.gradcheck(layer, (dense, sparse))
    t = torch.cat([dense.unsqueeze(1), sparse], 1)
    rows, cols = torch.triu_indices(6, 6, 0 if self_terms else 1)
    expected = torch.cat([dense, (t @ t.transpose(1, 2))[:, rows, cols]], 1)
    torch.testing.assert_close(layer(dense, sparse), expected)


def test_dot_interaction_runs_in_fp32_under_bf16_autocast():
    """Under bf16 autocast the products are fp32 ones, rounded to bf16 once at the output."""
    dense, sparse = torch.randn(4, 8), torch.randn(4, 3, 8) * 30
    layer = DotInteraction(3)
    with torch.autocast("cpu", torch.bfloat16):
        out = layer(dense.bfloat16(), sparse)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, layer(dense.bfloat16().float(), sparse).bfloat16())


@pytest.mark.parametrize(("kind", "self_terms"), [("dot", True), ("concat", False)])
def test_interaction_variants_train(kind, self_terms):
    model = _ours(kind, self_terms)
    dense, kjt = _inputs(batch=16)
    labels = (torch.arange(16) % 2).float()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_mixed_embedding_dims_rejected():
    tables = table_configs(["a"], [3], 4) + table_configs(["b"], [3], 8)
    with pytest.raises(ValueError, match="one embedding dim"):
        DLRM(2, tables, [4], [4])


def test_unknown_interaction_rejected():
    with pytest.raises(ValueError, match="model.interaction must be 'dot' or 'concat'"):
        _ours("cross")


@pytest.mark.parametrize("fused", [True, False], ids=["kernel", "pytorch"])
@pytest.mark.parametrize("self_terms", [False, True])
def test_padded_interaction_is_the_plain_one_followed_by_zeros(fused, self_terms):
    """`pad_to`: the same values, then zero columns up to a multiple of it; the gradient of the
    inputs is the unpadded layer's (the padding is constant)."""
    g = torch.Generator().manual_seed(5)
    dense = torch.randn(9, 8, generator=g, requires_grad=True)
    sparse = torch.randn(9, 4, 8, generator=g, requires_grad=True)
    plain, padded = DotInteraction(4, self_terms, fused), DotInteraction(4, self_terms, fused, 16)
    width = plain.output_dim(8)  # 8 + 10 (or + 15 with self terms)
    assert padded.output_dim(8) == 32 and width in (18, 23)
    out_plain, out_padded = plain(dense, sparse), padded(dense, sparse)
    assert out_padded.shape == (9, 32)
    assert torch.equal(out_padded[:, :width], out_plain)
    assert torch.equal(out_padded[:, width:], torch.zeros(9, 32 - width))
    weights = torch.randn(9, 32, generator=g)
    grads_plain = torch.autograd.grad((out_plain * weights[:, :width]).sum(), (dense, sparse))
    grads_padded = torch.autograd.grad((out_padded * weights).sum(), (dense, sparse))
    for a, b in zip(grads_plain, grads_padded, strict=True):
        assert torch.equal(a, b)


def test_padded_interaction_dlrm_equals_the_unpadded_one():
    """The top MLP's extra input columns meet zeros: same logits for any weights there, and
    their weights get a zero gradient."""
    plain = _ours()
    torch.manual_seed(0)
    padded = DLRM(4, table_configs(NAMES, SIZES, DIM), [16], [32, 16], "dot", False, "cpu", 16)
    width = plain.interaction.output_dim(DIM)  # 8 + C(4, 2) = 14
    assert padded.top_mlp.layers[0].weight.shape == (32, 16)
    with torch.no_grad():
        for (name, a), (_, b) in zip(plain.named_parameters(), padded.named_parameters(),
                                     strict=True):  # fmt: skip
            if name == "top_mlp.layers.0.weight":
                b[:, :width] = a
                b[:, width:] = 7.0
            else:
                b.copy_(a)
    dense, kjt = _inputs()
    logits = padded(dense, kjt)
    torch.testing.assert_close(logits, plain(dense, kjt), rtol=1e-6, atol=1e-6)
    logits.sum().backward()
    grad = padded.top_mlp.layers[0].weight.grad
    assert torch.equal(grad[:, width:], torch.zeros(32, 16 - width))


def test_kernel_refuses_a_width_narrower_than_its_values():
    from kernels import ops

    with pytest.raises(RuntimeError, match="out_width 5 is narrower than the interaction's 8"):
        ops.dot_pairs(torch.randn(2, 5), torch.randn(2, 2, 5), False, None, 5)


def test_interaction_pad_below_one_rejected():
    with pytest.raises(ValueError, match="model.interaction_pad must be at least 1, got 0"):
        DotInteraction(3, pad_to=0)
