"""Our int8/int4 embedding bags against FBGEMM's own operators, on every dispatch path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fbgemm_gpu  # noqa: F401  (registers torch.ops.quantized.* prepack/lookup ops)
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import ops, quant
from recsys.utils.hugepages import collapse_supported, huge_page_bytes
from tests.conftest import REPO
from tests.kernels.conftest import PACKERS, PATHS


def fbgemm_int8(packed, indices, offsets, weights, include_last):
    return torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
        packed, indices, offsets, False, 0, False, weights, None, include_last
    )


def fbgemm_int4(packed, indices, offsets, weights, include_last):
    return torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(
        packed, indices, offsets, False, 0, False, weights, None, include_last
    )


@st.composite
def bags(draw, even_dim: bool):
    rows = draw(st.integers(1, 300))
    # Up to 300 columns: one pass up to 256 (AVX-512) / 128 (AVX2), column blocks beyond.
    dim = draw(st.integers(1, 150)) * (2 if even_dim else 1)
    lengths = draw(st.lists(st.integers(0, 12), min_size=1, max_size=20))  # 0 = empty bag
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, dim, generator=g) * draw(st.sampled_from([0.01, 1.0, 30.0]))
    n = sum(lengths)
    index_dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    indices = torch.randint(0, rows, (n,), generator=g, dtype=torch.int64).to(index_dtype)
    ends = torch.tensor(lengths).cumsum(0)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), ends]).to(index_dtype)
    weights = torch.rand(n, generator=g) if draw(st.booleans()) else None
    include_last = draw(st.booleans())
    return table, indices, offsets if include_last else offsets[:-1], weights, include_last


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=bags(even_dim=False))
def test_int8_matches_fbgemm_on_every_path(case):
    table, indices, offsets, weights, last = case
    packed = torch.ops.quantized.embedding_bag_byte_prepack(table)
    expected = fbgemm_int8(packed, indices, offsets, weights, last)
    for path in PATHS:
        ops.set_isa(path)
        got = ops.embedding_bag_int8(packed, indices, offsets, per_sample_weights=weights,
                                     include_last_offset=last)  # fmt: skip
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=path)
    ops.set_isa("auto")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=bags(even_dim=True))
def test_int4_matches_fbgemm_on_every_path(case):
    table, indices, offsets, weights, last = case
    packed = torch.ops.quantized.embedding_bag_4bit_prepack(table)
    expected = fbgemm_int4(packed, indices, offsets, weights, last)
    for path in PATHS:
        ops.set_isa(path)
        got = ops.embedding_bag_int4(packed, indices, offsets, per_sample_weights=weights,
                                     include_last_offset=last)  # fmt: skip
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=path)
    ops.set_isa("auto")


@pytest.mark.parametrize("dim", [3, 16, 40, 64, 130])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_one_id_per_bag_matches_fbgemm(dim, index_dtype, isa):
    """Runs of one-id bags take their own loop; a bag of two or an empty bag among them must
    send the run back to the general one. Weighted and mean too (mean of one row = the row)."""
    g = torch.Generator().manual_seed(dim)
    table = torch.randn(700, dim * 2, generator=g)[:, :dim].contiguous()
    b = 2500  # over one task's worth of bags: several runs, prefetch across run ends
    indices = torch.randint(0, 700, (b,), generator=g).to(index_dtype)
    weights = torch.rand(b, generator=g)
    singles = torch.arange(b + 1).to(index_dtype)
    mixed = singles.clone()
    mixed[8] = 7  # bag 7 empty, bag 8 two ids: that run goes through the general loop
    cases = [(singles, None), (singles, weights), (mixed, None), (mixed, weights)]
    packed8 = torch.ops.quantized.embedding_bag_byte_prepack(table)
    packed4 = torch.ops.quantized.embedding_bag_4bit_prepack(table[:, : dim - dim % 2].contiguous())
    for offsets, w in cases:
        got = ops.embedding_bag_int8(packed8, indices, offsets, per_sample_weights=w,
                                     include_last_offset=True)  # fmt: skip
        want = fbgemm_int8(packed8, indices, offsets, w, True)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        got4 = ops.embedding_bag_int4(packed4, indices, offsets, per_sample_weights=w,
                                      include_last_offset=True)  # fmt: skip
        torch.testing.assert_close(got4, fbgemm_int4(packed4, indices, offsets, w, True),
                                   rtol=1e-5, atol=1e-4)  # fmt: skip
    mean = ops.embedding_bag_int8(packed8, indices, singles, mode="mean", include_last_offset=True)
    torch.testing.assert_close(mean, fbgemm_int8(packed8, indices, singles, None, True))


def test_mean_pooling_lengths_and_empty_bags(isa):
    g = torch.Generator().manual_seed(1)
    table = torch.randn(50, 19, generator=g)
    packed = quant.quantize_int8(table)
    lengths = torch.tensor([3, 0, 5, 1])
    indices = torch.randint(0, 50, (9,), generator=g)
    got = ops.embedding_bag_int8(packed, indices, lengths=lengths, mode="mean")
    offsets = torch.tensor([0, 3, 3, 8])
    expected = F.embedding_bag(indices, quant.dequantize_int8(packed), offsets, mode="mean")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[1], torch.zeros(19))  # empty bag


def test_batched_tables_write_the_concatenated_output(isa):
    g = torch.Generator().manual_seed(2)
    dims, rows, batch = [4, 16, 33], [10, 200, 7], 6
    tables = [quant.quantize_int8(torch.randn(r, d, generator=g))
              for r, d in zip(rows, dims, strict=True)]  # fmt: skip
    lengths = [torch.randint(0, 4, (batch,), generator=g) for _ in dims]
    ids = [torch.randint(0, r, (int(n.sum()),), generator=g)
           for r, n in zip(rows, lengths, strict=True)]  # fmt: skip
    flat_lengths = torch.cat(lengths)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), flat_lengths.cumsum(0)])
    got = ops.embedding_bags(tables, dims, torch.cat(ids), offsets, names=["a", "b", "c"])
    expected = torch.cat([ops.embedding_bag_int8(t, i, lengths=n)
                          for t, i, n in zip(tables, ids, lengths, strict=True)], 1)  # fmt: skip
    assert got.shape == (batch, sum(dims))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", list(PACKERS))
def test_tail_stores_write_only_their_columns(fmt, isa):
    """A bag's last vector holds 1 to a whole vector's columns (dims 1-17 and 33 cover every
    count on AVX2 and AVX-512); its store writes those columns only. In the batched output the
    last table's columns are followed by the next sample's first table, written before it: a
    store past its columns would change them. Every result equals the table's own lookup."""
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([1, 2, 0, 1, 3])  # a batch of 5, one-id, empty and longer bags
    for last_dim in [*range(1, 18), 33]:
        dims = [6, last_dim]
        tables = [PACKERS[fmt](torch.randn(9, d, generator=g)) for d in dims]
        ids = [torch.randint(0, 9, (int(lengths.sum()),), generator=g) for _ in dims]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.repeat(2).cumsum(0)])
        got = ops.embedding_bags(tables, dims, torch.cat(ids), offsets, format=fmt)
        expected = torch.cat([ops.embedding_bag(t, i, lengths=lengths, format=fmt, dim=d)
                              for t, i, d in zip(tables, ids, dims, strict=True)], 1)  # fmt: skip
        assert torch.equal(got, expected), last_dim


def test_quantization_error_bounds():
    g = torch.Generator().manual_seed(3)
    table = torch.randn(400, 64, generator=g) * torch.rand(400, 1, generator=g) * 10
    lo, hi = table.min(1, keepdim=True).values, table.max(1, keepdim=True).values
    err8 = (quant.dequantize_int8(quant.quantize_int8(table)) - table).abs()
    assert torch.all(err8 <= (hi - lo) / 255 / 2 * (1 + 1e-4) + 1e-6)
    packed4 = quant.quantize_int4(table)
    err4 = (quant.dequantize_int4(packed4) - table).abs()
    scale = ((hi - lo.half().float()) / 15).half().float()
    clamp = (hi - 15 * scale - lo.half().float()).clamp(min=0)
    bound = scale / 2 + (lo - lo.half().float()).abs() + clamp
    assert torch.all(err4 <= bound * (1 + 1e-3) + 1e-6)
    # Our packing reads back through FBGEMM's own lookup.
    one = torch.arange(400)
    torch.testing.assert_close(
        fbgemm_int4(packed4, one, one, None, False), quant.dequantize_int4(packed4)
    )


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("dim", [1, 5, 13])
def test_dequantize_reads_short_tables_of_odd_width(rows, dim):
    """A one-row table's scale/bias bytes start at an odd byte offset of the same storage (the
    slice is already contiguous): until 2026-11-30 (eighth session) dequantizing it raised a
    RuntimeError from `Tensor.view`. Each format reads back as our lookup of each row."""
    table = torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows * 100 + dim))
    one = torch.arange(rows)
    for fmt, pack, unpack in (
        ("int8", quant.quantize_int8, quant.dequantize_int8),
        ("int8_half", quant.quantize_int8_half, quant.dequantize_int8_half),
        ("int4", quant.quantize_int4, lambda p: quant.dequantize_int4(p, dim)),
    ):
        packed = pack(table)
        got = unpack(packed)
        assert got.shape == (rows, dim)
        looked_up = ops.embedding_bag(packed, one, one, format=fmt, dim=dim)
        torch.testing.assert_close(got, looked_up, rtol=1e-6, atol=1e-6, msg=fmt)


def test_dequantize_refuses_tables_that_are_not_packed_rows():
    with pytest.raises(ValueError, match=r"int8 table: .*8 bytes of scale and bias.*float32"):
        quant.dequantize_int8(torch.zeros(4, 16))
    with pytest.raises(ValueError, match=r"int8_half table: .*\[4, 4\]"):
        quant.dequantize_int8_half(torch.zeros(4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"int4 table: rows of 3 code bytes hold 5 or 6 columns"):
        quant.dequantize_int4(torch.zeros(2, 7, dtype=torch.uint8), dim=9)


def test_hugepage_table_is_on_huge_pages():
    """The copy's every 2 MiB page is a huge page once made (collapsed where the fault found no
    free one), where the kernel has transparent huge pages and MADV_COLLAPSE."""
    if not collapse_supported():
        pytest.skip("no transparent huge pages or no MADV_COLLAPSE (Linux 6.1+) here")
    table = ops.to_hugepages(torch.ones(24 << 20, dtype=torch.uint8))
    huge, _ = huge_page_bytes(table.data_ptr(), table.nbytes)
    assert huge >= table.nbytes


def test_hugepage_table_gives_the_same_results():
    g = torch.Generator().manual_seed(4)
    packed = quant.quantize_int8(torch.randn(5000, 32, generator=g))
    moved = ops.to_hugepages(packed)
    assert moved.data_ptr() % (2 << 20) == 0 and torch.equal(moved, packed)
    idx = torch.randint(0, 5000, (300,), generator=g)
    off = torch.arange(0, 300, 3)
    assert torch.equal(ops.embedding_bag_int8(moved, idx, off),
                       ops.embedding_bag_int8(packed, idx, off))  # fmt: skip


@pytest.mark.parametrize(
    ("indices", "offsets", "weights", "message"),
    [
        ([0, -1, 2], [0, 2], None, r"table 't_C7': index -1 at position 1"),
        ([0, 1, 50], [0, 2], None, r"table 't_C7': index 50 at position 2 \(bag 1\) is outside"),
        ([0, 1, 2], [0, 2, 1], None, r"table 't_C7': offsets decrease at bag 2"),
        ([0, 1, 2], [0, 5], None, r"table 't_C7': offset 5 at bag 1 is outside the 3 indices"),
        ([0, 1, 2], [-1, 2], None, r"table 't_C7': offset -1 at bag 0"),
        ([0, 1, 2], [0, 1], [0.5, 0.5], r"table 't_C7': per_sample_weights .* \(3\)"),
    ],
)
def test_bad_input_raises_naming_table_and_position(indices, offsets, weights, message, isa):
    packed = quant.quantize_int8(torch.randn(50, 8))
    w = None if weights is None else torch.tensor(weights)
    with pytest.raises((RuntimeError, IndexError), match=message):
        ops.embedding_bag_int8(packed, torch.tensor(indices), torch.tensor(offsets),
                               per_sample_weights=w, table="t_C7")  # fmt: skip


def test_forced_path_never_exceeds_the_cpu():
    best = ops.best_isa()
    assert ops.set_isa("avx512") in ("avx512", "avx2", "scalar")
    assert ops.current_isa() == ("avx512" if best == "avx512" else ops.current_isa())
    ops.set_isa("auto")
    assert ops.current_isa() == best
    with pytest.raises(RuntimeError, match="unknown ISA 'sse9'"):
        ops.set_isa("sse9")


def test_env_var_forces_a_path_in_a_fresh_process():
    code = "from kernels import ops; print(ops.current_isa())"
    env = {"RECSYS_KERNELS_ISA": "scalar", "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=env, check=True)  # fmt: skip
    assert out.stdout.strip() == "scalar"


def test_ops_survive_export_and_script():
    packed = quant.quantize_int8(torch.randn(20, 8))

    class Lookup(torch.nn.Module):
        def forward(self, w: torch.Tensor, i: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
            return torch.ops.recsys_kernels.embedding_bag(w, i, o, 0, -1, 0, None, False, "t")

    args = (packed, torch.tensor([1, 2, 3]), torch.tensor([0, 1]))
    expected = Lookup()(*args)
    exported = torch.export.export(Lookup(), args)
    assert torch.equal(exported.module()(*args), expected)
    scripted = torch.jit.script(Lookup())
    assert torch.equal(scripted(*args), expected)


def test_wrapper_goes_through_the_operator_when_traced_or_exported():
    """kernels.ops calls the direct binding in eager mode, but a trace or an export must record
    the registered operator, never bake a lookup's output in as a constant."""
    packed = quant.quantize_int8(torch.randn(20, 8))

    class Lookup(torch.nn.Module):
        def forward(self, i: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
            return ops.embedding_bag(packed, i, o, table="t")

    first = (torch.tensor([1, 2, 3]), torch.tensor([0, 1]))
    other = (torch.tensor([4, 5, 6]), torch.tensor([0, 2]))
    direct = [Lookup()(*a) for a in (first, other)]
    assert torch.equal(direct[0], torch.ops.recsys_kernels.embedding_bag(packed, *first))
    exported = torch.export.export(Lookup(), first)
    assert "recsys_kernels.embedding_bag" in str(exported.graph)
    traced = torch.jit.trace(Lookup(), first)
    for module in (exported.module(), traced):
        for args, want in zip((first, other), direct, strict=True):
            assert torch.equal(module(*args), want)


def test_wrapper_goes_through_the_operator_under_compile_and_dispatch_modes():
    """The direct binding goes around the dispatcher, so torch.compile (dynamo) and an active
    dispatch mode (fake tensors, make_fx, FLOP counters) must get the registered operator."""
    from torch.utils._python_dispatch import TorchDispatchMode

    packed = quant.quantize_int8(torch.randn(20, 8))
    args = (torch.tensor([1, 2, 3]), torch.tensor([0, 1]))
    want = torch.ops.recsys_kernels.embedding_bag(packed, *args, 0, -1, 0, None, False, "t")

    def lookup(i: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        return ops.embedding_bag(packed, i, o, table="t")

    graphs = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    got = torch.compile(lookup, backend=backend, fullgraph=True)(*args)
    assert torch.equal(got, want)
    assert len(graphs) == 1 and "recsys_kernels.embedding_bag" in str(graphs[0].graph)

    class Seen(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Seen() as mode:
        got = lookup(*args)
    assert torch.equal(got, want)
    assert any("recsys_kernels.embedding_bag" in name for name in mode.ops)


def test_direct_binding_equals_the_operator_and_takes_any_index_types():
    g = torch.Generator().manual_seed(3)
    packed = quant.quantize_int8(torch.randn(50, 24, generator=g))
    indices = torch.randint(0, 50, (40,), generator=g)
    offsets = torch.tensor([0, 3, 3, 17, 40])
    want = torch.ops.recsys_kernels.embedding_bag(packed, indices, offsets, 0, -1, 0, None, True)
    for i, o in [(indices, offsets), (indices.int(), offsets), (indices, offsets.int()),
                 (indices.repeat_interleave(2)[::2], offsets.int())]:  # fmt: skip
        assert torch.equal(ops._direct.embedding_bag(packed, i, o, 0, -1, 0, None, True, "", None),
                           want)  # fmt: skip
        assert torch.equal(ops.embedding_bag(packed, i, o, include_last_offset=True), want)
    with pytest.raises(RuntimeError, match="table 'x'.*int32 or int64.*Float"):
        ops.embedding_bag(packed, indices.float(), offsets, table="x")


def test_eager_call_declines_what_needs_the_operator():
    """The eager call (`_direct.embedding_bag_eager`) answers only for plain tensors outside a
    trace or dispatch mode, else None, and the wrapper then takes the operator: subclassed
    tables or ids give the same bags. A Parameter counts as plain (as torch's own bindings
    treat it)."""
    packed = quant.quantize_int8(torch.randn(20, 8))
    idx, off = torch.tensor([1, 2, 3]), torch.tensor([0, 1])
    want = torch.ops.recsys_kernels.embedding_bag(packed, idx, off, 0, -1, 0, None, False, "t")
    eager = ops._direct.embedding_bag_eager
    assert torch.equal(eager(packed, idx, off, "int8", None, "sum", None, False, "t", None), want)

    class Sub(torch.Tensor):
        pass

    param = torch.nn.Parameter(packed, requires_grad=False)
    assert torch.equal(eager(param, idx, off, "int8", None, "sum", None, False, "t", None), want)
    for weight, ids in [(packed.as_subclass(Sub), idx), (packed, idx.as_subclass(Sub))]:
        assert eager(weight, ids, off, "int8", None, "sum", None, False, "t", None) is None
        assert torch.equal(ops.embedding_bag(weight, ids, off, table="t"), want)
    tables = [quant.quantize_int8(torch.randn(5, 4)), quant.quantize_int8(torch.randn(6, 8))]
    ids, offsets = torch.tensor([0, 4, 5]), torch.tensor([0, 2, 3])  # 2 tables x 1 bag
    want = torch.cat([ops.embedding_bag(tables[0], ids[:2], torch.tensor([0])),
                      ops.embedding_bag(tables[1], ids[2:], torch.tensor([0]))], 1)  # fmt: skip
    eager_bags = ops._direct.embedding_bags_eager
    with_sub = [tables[0], tables[1].as_subclass(Sub)]
    names = ["table0", "table1"]
    assert eager_bags(with_sub, [4, 8], ids, offsets, "int8", "sum", None, names, None) is None
    for ts in (tables, with_sub):
        assert torch.equal(ops.embedding_bags(ts, [4, 8], ids, offsets), want)


def test_unknown_format_or_mode_names_the_choices():
    """Both ways into the lookup (the eager call, and the operator when bags come as lengths)
    refuse an unknown format or mode by name."""
    packed = quant.quantize_int8(torch.randn(20, 8))
    idx, off, lengths = torch.tensor([1, 2]), torch.tensor([0, 1]), torch.tensor([1, 1])
    for bags in ({"offsets": off}, {"lengths": lengths}):
        with pytest.raises(ValueError, match=r"unknown format 'int9' \(one of int8, int8_half, "
                                             r"int4\)"):  # fmt: skip
            ops.embedding_bag(packed, idx, format="int9", **bags)
        with pytest.raises(ValueError, match=r"unknown mode 'max' \(one of sum, mean\)"):
            ops.embedding_bag(packed, idx, mode="max", **bags)
    with pytest.raises(ValueError, match="unknown format 'int2'"):
        ops.embedding_bags([packed], [8], idx, off, format="int2")


def test_opcheck():
    packed = quant.quantize_int8(torch.randn(20, 8))
    args = (packed, torch.tensor([1, 2, 3]), torch.tensor([0, 1]), 0, -1, 1, None, False, "t")
    torch.library.opcheck(torch.ops.recsys_kernels.embedding_bag.default, args)


def test_package_resolves_inside_the_repo():
    import kernels

    assert kernels.__file__.startswith(str(REPO / "kernels"))


def test_missing_extension_says_how_to_build_it(tmp_path):
    """A checkout whose kernels were never built: importing them names the fix."""
    package = tmp_path / "kernels"
    package.mkdir()
    for name in ("__init__.py", "ops.py"):
        (package / name).write_text((REPO / "kernels" / name).read_text())
    # -S: no site hooks, so the editable install cannot map `kernels` to this checkout; torch
    # still comes from site-packages, put on the path by hand.
    site_packages = Path(torch.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{site_packages}"}
    run = subprocess.run([sys.executable, "-S", "-c", "import kernels.ops"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert run.returncode != 0
    assert "recsys kernels are not built" in run.stderr and "make install" in run.stderr


_GUARD_PAGE_SCRIPT = r"""
import ctypes, mmap, sys
import torch
from kernels import ops, quant

libc = ctypes.CDLL(None)
PAGE = mmap.PAGESIZE
keep = []


def before_guard_page(packed):
    # A copy of `packed` whose last byte is the last readable byte: the page after it is
    # PROT_NONE, so a read past the last row's end kills the process.
    n = packed.numel()
    pages = -(-n // PAGE) + 1
    m = mmap.mmap(-1, pages * PAGE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(ctypes.c_void_p(addr + (pages - 1) * PAGE), PAGE, 0) == 0
    t = torch.frombuffer(m, dtype=torch.uint8, count=n, offset=(pages - 1) * PAGE - n)
    keep.append(m)
    return t.view(packed.shape).copy_(packed)


g = torch.Generator().manual_seed(5)
packers = {"int8": quant.quantize_int8, "int8_half": quant.quantize_int8_half,
           "int4": quant.quantize_int4}
checked = 0
for path in sys.argv[1:]:
    ops.set_isa(path)
    for dim in list(range(1, 34)) + [130]:
        table = torch.randn(37, dim, generator=g)
        last = torch.full((64,), 36, dtype=torch.int64)
        for fmt, pack in packers.items():
            packed = pack(table)
            guarded = before_guard_page(packed)
            for offsets in (torch.arange(65), torch.arange(0, 65, 8)):  # one id, eight ids
                got = ops.embedding_bag(guarded, last, offsets, format=fmt,
                                        include_last_offset=True)
                want = ops.embedding_bag(packed, last, offsets, format=fmt,
                                         include_last_offset=True)
                assert torch.equal(got, want), (path, dim, fmt)
                checked += 1
            for bad_id in (37, -1, 2**40):  # past the last row: an error, nothing read
                ids = torch.tensor([36, bad_id, 36])
                try:
                    ops.embedding_bag(guarded, ids, torch.tensor([0, 1]), format=fmt)
                except IndexError as e:
                    assert f"index {bad_id} at position 1" in str(e), str(e)
                else:
                    raise AssertionError(("no error", path, dim, fmt, bad_id))
print(checked)
"""


def test_last_row_before_an_unreadable_page_is_read_in_bounds():
    """Every format, dims 1-33 and 130, every path: the table's last row ends on the last byte
    before a PROT_NONE page, and lookups of it (one-id bags and bags of eight) must not read
    past it, nor may ids past the table (an error instead): a read there would kill the child
    process instead of printing the count."""
    out = subprocess.run([sys.executable, "-c", _GUARD_PAGE_SCRIPT, *PATHS], cwd=REPO,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) == len(PATHS) * 34 * 3 * 2
