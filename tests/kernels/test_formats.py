"""Compact int8, fp16/bf16 output, threads, prefetch settings, batched tables and the probe."""

from __future__ import annotations

import itertools
import subprocess

import fbgemm_gpu  # noqa: F401  (registers torch.ops.quantized.*)
import pytest
import torch
import torch.nn.functional as F

from kernels import _C, ops, quant
from tests.kernels.conftest import PACKERS


def _case(rows: int, dim: int, lengths: list[int], seed: int, dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, dim, generator=g)
    indices = torch.randint(0, rows, (sum(lengths),), generator=g).to(dtype)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.tensor(lengths).cumsum(0)])
    return table, indices, offsets.to(dtype)


# Every last-vector count on AVX2 (1-8 columns; 3 and 4 are where its tail load goes from 4
# bytes to 8) and some on AVX-512; rows of one vector and of several.
@pytest.mark.parametrize("dim", [1, 3, 4, 5, 7, 12, 16, 33, 130])
def test_int8_half_matches_its_dequantized_table(dim, isa):
    table, indices, offsets = _case(120, dim, [4, 0, 9, 1, 30], seed=dim, dtype=torch.int32)
    packed = quant.quantize_int8_half(table)
    assert packed.shape == (120, dim + 4)
    weights = torch.rand(indices.numel(), generator=torch.Generator().manual_seed(1))
    got = ops.embedding_bag(packed, indices, offsets, format="int8_half",
                            per_sample_weights=weights, include_last_offset=True)  # fmt: skip
    dense = quant.dequantize_int8_half(packed)
    expected = F.embedding_bag(indices.long(), dense, offsets.long(), mode="sum",
                               per_sample_weights=weights, include_last_offset=True)  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_int8_half_error_bound():
    g = torch.Generator().manual_seed(5)
    table = torch.randn(300, 40, generator=g) * torch.rand(300, 1, generator=g) * 5
    lo16 = table.min(1, keepdim=True).values.half().float()
    hi = table.max(1, keepdim=True).values
    s16 = ((hi - lo16) / 255).half().float()
    bound = s16 / 2 + (table.min(1, keepdim=True).values - lo16).abs()
    bound = bound + (hi - 255 * s16 - lo16).clamp(min=0)
    err = (quant.dequantize_int8_half(quant.quantize_int8_half(table)) - table).abs()
    assert torch.all(err <= bound * (1 + 1e-3) + 1e-6)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_low_precision_output_is_the_rounded_fp32_result(out_dtype, isa):
    table, indices, offsets = _case(80, 24, [3, 5, 0, 2], seed=6)
    packed = quant.quantize_int8(table)
    ref = ops.embedding_bag_int8(packed, indices, offsets, include_last_offset=True)
    got = ops.embedding_bag_int8(packed, indices, offsets, include_last_offset=True,
                                 out_dtype=out_dtype)  # fmt: skip
    assert got.dtype == out_dtype
    assert torch.equal(got, ref.to(out_dtype))


def test_threads_and_prefetch_settings_do_not_change_results():
    table, indices, offsets = _case(5000, 48, [int(x) for x in torch.arange(300) % 17], seed=7)
    packed = quant.quantize_int4(table)
    threads = torch.get_num_threads()
    old_mid = ops.set_mid_prefetch(1 << 62, 0)
    try:
        torch.set_num_threads(1)
        expected = ops.embedding_bag_int4(packed, indices, offsets, include_last_offset=True)
        for n_threads, distance, far, mid_near in itertools.product(
            (1, 2), (0, 1, 16, 64), (False, True), (None, 0, 1, 8, 64)
        ):  # into L1; into L2 as for a table beyond the caches; or the mid plan, L2 and L1
            torch.set_num_threads(n_threads)
            old = ops.set_prefetch_distance(distance)
            old_far = ops.set_far_prefetch(distance, 0 if far else 1 << 62)
            ops.set_mid_prefetch(1 << 62 if mid_near is None else 0, mid_near or 0)
            got = ops.embedding_bag_int4(packed, indices, offsets, include_last_offset=True)
            ops.set_prefetch_distance(old)
            ops.set_far_prefetch(*old_far)
            assert torch.equal(got, expected), (n_threads, distance, far, mid_near)
    finally:
        torch.set_num_threads(threads)
        ops.set_mid_prefetch(*old_mid)


def _thread_loads(grain: int, batch: int, n_tables: int, threads: int) -> list[int]:
    """Bags each thread pools: at::parallel_for gives thread k the tasks [k c, (k + 1) c),
    c = ceil(tasks / threads); a task is a run of `grain` bags of one table (the last shorter)."""
    runs = -(-batch // grain)
    sizes = [min(grain, batch - r * grain) for _ in range(n_tables) for r in range(runs)]
    chunk = -(-len(sizes) // threads)
    return [sum(sizes[k * chunk : (k + 1) * chunk]) for k in range(threads)]


def test_split_calls_balance_their_threads():
    """A call split over the threads makes a multiple of them in tasks, of equal runs: no thread
    pools more than 1.12x its share of the bags (batch 512 in bags of 5 ids on 2 threads had made
    runs of 205, 205 and 102 bags, 410 on one thread: 1.6x). Small calls stay one task."""
    worst = 0.0
    for batch, pool, n_tables, threads in itertools.product(
        (100, 256, 512, 1000, 4096), (1, 2, 3, 4, 5, 7, 10, 20, 50, 100), (1, 2, 3, 5, 8, 26),
        (2, 3, 4, 8),
    ):  # fmt: skip
        n_bags = batch * n_tables
        grain = _C.bag_grain(n_bags * pool, n_bags, batch, n_tables, threads, True, 1 << 20)
        loads = _thread_loads(grain, batch, n_tables, threads)
        assert sum(loads) == n_bags
        worst = max(worst, max(loads) / (n_bags / threads))
    assert 1.0 <= worst <= 1.12
    assert _thread_loads(_C.bag_grain(2560, 512, 512, 1, 2, True, 1 << 20), 512, 1, 2) == [
        256, 256
    ]  # fmt: skip
    # 100 one-id bags of a cached table (< 64 KiB, not far): one task, one thread.
    assert _C.bag_grain(100, 100, 100, 1, 2, False, 4000) == 100


@pytest.mark.parametrize("dim", [16, 64, 128])
@pytest.mark.parametrize("lengths", [[1] * 300, [int(x) for x in torch.arange(300) % 9]])
def test_prefetch_plans_do_not_change_results(lengths, dim, isa):
    """Every prefetch plan: near (into L1), far (into L2; with an L1 half `near` ids ahead, which
    beyond the far size rows of 3 lines and runs of small bags take: none, up to 3 ids a bag on
    average, every run), mid (into L2 and, `near` ids ahead, into L1 too: within, and beyond,
    the distance, then ignored); with a row's first line prefetched `lead` rows before its
    others (rows of 3 lines: 128-wide int8, the only ones a lead applies to), leads shorter
    than, equal to and beyond the distance (then ignored); rows of 2 lines (64-wide int8) and
    rows shorter than a line (16-wide int8, 24 bytes: their own short-row prefetch); one-id bags
    (the singles path) and bags of 0-8 ids with weights: results equal the lookup with no
    prefetch at all, bit for bit, and FBGEMM's operator."""
    table, indices, offsets = _case(4000, dim, lengths, seed=11)
    weights = torch.rand(indices.numel(), generator=torch.Generator().manual_seed(2))
    packed = torch.ops.quantized.embedding_bag_byte_prepack(table)
    fbgemm = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
        packed, indices, offsets, False, 0, False, weights, None, True
    )
    never = 1 << 62
    old = (ops.set_prefetch_distance(0), ops.set_far_prefetch(0, never),
           ops.set_prefetch_lead(0, 0), ops.set_mid_prefetch(never, 0),
           ops.set_far_near_bags(3))  # fmt: skip
    plans = {
        "near": (never, never, 0),
        "far": (0, 0, 0),
        "far with L1 half": (0, 0, 3),
        "mid": (never, 0, 3),
        "mid beyond": (never, 0, 30),
    }  # (far size, mid size, mid near distance)
    try:
        expected = ops.embedding_bag_int8(packed, indices, offsets, per_sample_weights=weights,
                                          include_last_offset=True)  # fmt: skip
        torch.testing.assert_close(expected, fbgemm, rtol=1e-5, atol=1e-5)
        for distance, lead, plan, bags in itertools.product(
            (0, 1, 8, 24), (1, 4, 8, 30), plans, (0, 3, 1024)
        ):  # fmt: skip
            far_bytes, mid_bytes, near = plans[plan]
            ops.set_far_near_bags(bags)
            ops.set_prefetch_distance(distance)
            ops.set_far_prefetch(distance, far_bytes)
            ops.set_mid_prefetch(mid_bytes, near)
            ops.set_prefetch_lead(lead, lead)
            got = ops.embedding_bag_int8(packed, indices, offsets, per_sample_weights=weights,
                                         include_last_offset=True)  # fmt: skip
            assert torch.equal(got, expected), (distance, lead, plan, bags)
    finally:
        ops.set_prefetch_distance(old[0])
        ops.set_far_prefetch(*old[1])
        ops.set_prefetch_lead(*old[2])
        ops.set_mid_prefetch(*old[3])
        ops.set_far_near_bags(old[4])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_ids_prefetch_does_not_change_results_or_checks(dtype, isa):
    """Each run of bags prefetches the next run's ids (on by default): calls of several runs
    (one table, and two tables whose runs stop at the table's ids) give the same results with
    it on and off, bit for bit, and a bad id in the last run is still reported by position."""
    lengths = [int(x) for x in torch.arange(600) % 23]  # ~11 ids a bag: ~90 bags a run
    table, indices, offsets = _case(3000, 64, lengths, seed=12, dtype=dtype)
    packed = torch.ops.quantized.embedding_bag_byte_prepack(table)
    half = len(lengths) // 2  # two tables of 300 bags each, the same rows
    assert ops.set_prefetch_ids(True) is True  # the default
    try:
        results = {}
        for on in (True, False):
            ops.set_prefetch_ids(on)
            one = ops.embedding_bag_int8(packed, indices, offsets, include_last_offset=True)
            two = ops.embedding_bags([packed, packed], [64, 64], indices, offsets)
            results[on] = (one, two)
            bad = indices.clone()
            bad[-3] = 3000
            with pytest.raises(IndexError, match=f"index 3000 at position {bad.numel() - 3}"):
                ops.embedding_bag_int8(packed, bad, offsets, include_last_offset=True)
        assert torch.equal(results[True][0], results[False][0])
        assert torch.equal(results[True][1], results[False][1])
        assert torch.equal(
            results[True][1], torch.cat([results[True][0][:half], results[True][0][half:]], 1)
        )
    finally:
        ops.set_prefetch_ids(True)


@pytest.mark.parametrize("switch", [ops.set_prefetch_ids, ops.set_far_split])
def test_on_off_settings_refuse_what_is_not_a_bool(switch):
    for bad in (None, 0, 2, "yes"):
        with pytest.raises(TypeError, match=f"{switch.__name__} takes True or False, got"):
            switch(bad)
    assert switch(True) is True  # unchanged: still on (the default)


def test_far_near_bags_refuses_bad_values():
    """Ids per bag outside [0, 1024] or not an int: a clear error, the setting unchanged."""
    assert ops.set_far_near_bags(3) == 3  # the default
    for bad, error, text in ((-1, RuntimeError, r"in \[0, 1024\], got -1"),
                             (1025, RuntimeError, r"in \[0, 1024\], got 1025"),
                             (2.5, TypeError, "takes an int, got 2.5"),
                             (True, TypeError, "takes an int, got True")):  # fmt: skip
        with pytest.raises(error, match=text):
            ops.set_far_near_bags(bad)
    assert ops.set_far_near_bags(3) == 3


@pytest.mark.parametrize("fmt", list(PACKERS))
@pytest.mark.parametrize("dim", [72, 100, 128, 200])
@pytest.mark.parametrize("singles", [False, True])
def test_far_split_does_not_change_results(singles, dim, fmt, isa):
    """Beyond the far size the AVX2 path pools int8 rows of 97-128 columns in two passes of
    column blocks (100 and 128 here; 72 keeps one pass, its last block of one vector would take
    two FMA chains; 200 is wider than one pass under every plan; int4 rows keep one pass): with
    the split on and off, and under the near plan, results are equal bit for bit, for one-id
    bags (which keep one pass) and for bags of 0-10 ids with weights, sum and mean; a bad id is
    still reported by position."""
    lengths = [1] * 300 if singles else [int(x) for x in torch.arange(300) % 11]
    table, indices, offsets = _case(3000, dim, lengths, seed=dim, dtype=torch.int32)
    packed = PACKERS[fmt](table)
    weights = torch.rand(indices.numel(), generator=torch.Generator().manual_seed(3))
    never = 1 << 62
    old_far = ops.set_far_prefetch(8, never)
    assert ops.set_far_split(True) is True  # the default
    try:
        results = {}
        for plan, split in (("near", True), ("far", True), ("far", False)):
            ops.set_far_prefetch(8, 0 if plan == "far" else never)
            ops.set_far_split(split)
            results[plan, split] = [
                ops.embedding_bag(
                    packed,
                    indices,
                    offsets,
                    format=fmt,
                    dim=dim,
                    mode=mode,
                    per_sample_weights=w,
                    include_last_offset=True,
                )
                for mode, w in (("sum", weights), ("mean", None))
            ]
            bad = indices.clone()
            bad[-2] = -1
            with pytest.raises(IndexError, match=f"index -1 at position {bad.numel() - 2}"):
                ops.embedding_bag(packed, bad, offsets, format=fmt, dim=dim,
                                  include_last_offset=True)  # fmt: skip
        for key, got in results.items():
            for g, e in zip(got, results["near", True], strict=True):
                assert torch.equal(g, e), key
    finally:
        ops.set_far_prefetch(*old_far)
        ops.set_far_split(True)


def test_prefetch_lead_defaults_and_bad_settings():
    """Leads of 4 rows (near plan) and 16 (far plan) by default; a lead outside [0, 256] is
    refused by name and leaves both as they were."""
    leads = ops.set_prefetch_lead(0, 0)
    assert leads == (4, 16)
    ops.set_prefetch_lead(*leads)
    for bad in ((-1, 16), (4, 257)):
        with pytest.raises(RuntimeError, match=r"prefetch leads must be in \[0, 256\], got"):
            ops.set_prefetch_lead(*bad)
    assert ops.set_prefetch_lead(*leads) == leads  # unchanged


def test_far_prefetch_defaults_and_bad_settings():
    distance, min_bytes = ops.set_far_prefetch(64, 1 << 20)
    assert ops.set_far_prefetch(distance, min_bytes) == (64, 1 << 20)
    assert distance == 64 and min_bytes > 0  # half the last-level cache (32 MiB if unknown)
    with pytest.raises(RuntimeError, match="distance in \\[0, 256\\] and min_table_bytes >= 0"):
        ops.set_far_prefetch(300, 0)
    with pytest.raises(RuntimeError, match="got 8 and -1"):
        ops.set_far_prefetch(8, -1)
    assert ops.set_far_prefetch(distance, min_bytes) == (distance, min_bytes)  # unchanged


def test_mid_plan_defaults_and_bad_settings():
    """Calls take the mid plan from twice the L2 on (4 MiB when the OS reports no L2), its L1
    half 8 ids ahead; a negative size or a distance outside [0, 256] is refused and leaves the
    setting as it was."""
    out = subprocess.run(["getconf", "LEVEL2_CACHE_SIZE"], capture_output=True, text=True)
    text = out.stdout.strip()  # glibc's sysconf, as ours; "undefined" or "0" when unknown
    l2 = int(text) if out.returncode == 0 and text.isdigit() else 0
    default = ops.set_mid_prefetch(1 << 20, 3)
    assert ops.set_mid_prefetch(*default) == (1 << 20, 3)
    assert default == (2 * l2 if l2 > 0 else 4 << 20, 8)
    with pytest.raises(RuntimeError, match="min_table_bytes >= 0 and a near distance in "):
        ops.set_mid_prefetch(-5, 8)
    with pytest.raises(RuntimeError, match=r"\[0, 256\], got 100 and 257"):
        ops.set_mid_prefetch(100, 257)
    assert ops.set_mid_prefetch(*default) == default  # unchanged


def test_near_prefetch_default_and_bad_settings():
    """Calls below the far size prefetch 24 ids ahead by default (16 until 2026-11-30); a
    distance outside [0, 256] is refused and leaves the setting as it was."""
    distance = ops.set_prefetch_distance(24)
    assert distance == 24
    for bad in (-1, 257):
        with pytest.raises(RuntimeError, match=r"prefetch distance must be in \[0, 256\]"):
            ops.set_prefetch_distance(bad)
    assert ops.set_prefetch_distance(distance) == 24  # unchanged


def test_batched_int4_matches_per_table_lookups(isa):
    dims, rows, batch = [8, 30, 64], [50, 9, 400], 5
    tables, ids, lengths = [], [], []
    for t, (d, r) in enumerate(zip(dims, rows, strict=True)):
        table, idx, off = _case(r, d, [t + 1, 0, 2, 3, 1], seed=10 + t)
        tables.append(quant.quantize_int4(table))
        ids.append(idx)
        lengths.append(off.diff())
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cat(lengths).cumsum(0)])
    got = ops.embedding_bags(tables, dims, torch.cat(ids), offsets, format="int4", mode="mean")
    expected = torch.cat([ops.embedding_bag_int4(t, i, lengths=n, mode="mean")
                          for t, i, n in zip(tables, ids, lengths, strict=True)], 1)  # fmt: skip
    assert got.shape == (batch, sum(dims))
    assert torch.equal(got, expected)


def test_batched_bad_index_names_its_table():
    tables = [quant.quantize_int8(torch.randn(10, 4)), quant.quantize_int8(torch.randn(3, 4))]
    indices = torch.tensor([1, 2, 9, 0, 3])  # table "small" has 3 rows: id 3 at position 4
    offsets = torch.tensor([0, 2, 3, 4, 5])
    with pytest.raises(IndexError, match=r"table 'small': index 3 at position 4 \(bag 1\)"):
        ops.embedding_bags(tables, [4, 4], indices, offsets, names=["big", "small"])


def test_wrong_row_width_is_rejected():
    with pytest.raises(RuntimeError, match=r"table 'x': 12 bytes per row do not fit"):
        ops.embedding_bag_int4(torch.zeros(5, 12, dtype=torch.uint8), torch.tensor([0]),
                               torch.tensor([0]), dim=5, table="x")  # fmt: skip


def test_unchecked_kernels_agree_on_valid_ids():
    table, indices, offsets = _case(1000, 40, [7] * 20, seed=8)
    packed = quant.quantize_int8(table)
    expected = ops.embedding_bag_int8(packed, indices, offsets, include_last_offset=True)
    previous = ops.set_index_checks(False)
    try:
        got = ops.embedding_bag_int8(packed, indices, offsets, include_last_offset=True)
    finally:
        ops.set_index_checks(previous)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("level", ["L1", "L2"])
def test_gather_probe_reads_each_line_of_the_rows(index_dtype, level):
    """The probe's checksum is the sum, over ids, of the first byte of every 64-byte line of the
    row and its last byte: it read exactly the lines a lookup touches, split over the threads."""
    gen = torch.Generator().manual_seed(11)
    table = torch.randint(0, 256, (300, 136), dtype=torch.uint8, generator=gen)
    ids = torch.randint(0, 300, (1001,), generator=gen).to(index_dtype)
    rows = table[ids.long()].long()
    expected = int(rows[:, 0::64].sum() + rows[:, -1].sum())
    for distance in (0, 1, 16, 5000):
        assert ops.gather_probe(table, ids, distance, level) == expected
    for out_row_bytes, ids_per_row in ((512, 1), (100, 7), (64, 2000)):  # writes change nothing
        got = ops.gather_probe(table, ids, 16, level, out_row_bytes, ids_per_row)
        assert got == expected


@pytest.mark.parametrize("row_bytes, lines", [(136, 3), (72, 2), (24, 2), (64, 1)])
@pytest.mark.parametrize("level", ["L1", "L2"])
def test_gather_probe_fetch_only_prefetches_every_line_of_every_row(row_bytes, lines, level):
    """Fetch-only mode (the benchmark's "fetch only") reads nothing and prefetches, per id, the
    most lines a row of the table can span from its 2 MiB-aligned base (136-byte rows start at
    most 56 bytes into a line: 3; 24-byte ones 2; 64-byte ones 1), on any thread count, bad ids
    clamped, output rows or not."""
    table = ops.to_hugepages(torch.zeros(500, row_bytes, dtype=torch.uint8))
    ids = torch.randint(0, 500, (777,), generator=torch.Generator().manual_seed(5))
    ids[[0, 100, 776]] = torch.tensor([-1, 500, 10**12])
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for out_row_bytes, ids_per_row in ((0, 1), (512, 1), (64, 20)):
                got = ops.gather_probe(table, ids, 0, level, out_row_bytes, ids_per_row, False)
                assert got == 777 * lines
    finally:
        torch.set_num_threads(before)


def test_gather_probe_clamps_bad_ids_and_rejects_bad_arguments():
    table = torch.arange(10, dtype=torch.uint8).repeat_interleave(8).reshape(10, 8)
    assert ops.gather_probe(table, torch.tensor([-1, 10, 10**12])) == 3 * 2 * 9  # last row
    with pytest.raises(ValueError, match="level"):
        ops.gather_probe(table, torch.tensor([0]), level="L3")
    with pytest.raises(RuntimeError, match="prefetch_distance"):
        ops.gather_probe(table, torch.tensor([0]), prefetch_distance=-1)
    with pytest.raises(RuntimeError, match="ids_per_row >= 1, got 64 and 0"):
        ops.gather_probe(table, torch.tensor([0]), out_row_bytes=64, ids_per_row=0)


def test_gather_probe_fetch_only_rejects_bad_arguments():
    """Fetch-only mode checks its arguments as the reading probe does: a clear error naming the
    argument for a bad level, output row size or table/index shape, nothing prefetched."""
    table = torch.zeros(10, 24, dtype=torch.uint8)
    with pytest.raises(ValueError, match="level"):
        ops.gather_probe(table, torch.tensor([0]), 0, "L3", reads=False)
    with pytest.raises(RuntimeError, match="ids_per_row >= 1, got 64 and 0"):
        ops.gather_probe(table, torch.tensor([0]), 0, "L1", 64, 0, reads=False)
    with pytest.raises(RuntimeError, match="int32 or int64 indices"):
        ops.gather_probe(table, torch.tensor([0.5]), 0, "L1", reads=False)
    with pytest.raises(RuntimeError, match=r"\[rows >= 1, bytes >= 1\] table"):
        ops.gather_probe(torch.zeros(0, 24, dtype=torch.uint8), torch.tensor([0]), reads=False)


# (FBGEMM's prepack, FBGEMM's lookup, ours) for its byte and 4-bit formats.
_FBGEMM_PAIRS = (
    (torch.ops.quantized.embedding_bag_byte_prepack,
     torch.ops.quantized.embedding_bag_byte_rowwise_offsets, ops.embedding_bag_int8),
    (torch.ops.quantized.embedding_bag_4bit_prepack,
     torch.ops.quantized.embedding_bag_4bit_rowwise_offsets, ops.embedding_bag_int4),
)  # fmt: skip


@pytest.mark.parametrize("dim", [16, 64])
def test_many_small_bags_split_into_runs_match_fbgemm(dim, isa):
    """3,000 bags of 0-2 ids: the op cuts them into several runs (one kernel call each) spread
    over 2 threads; every bag must still match FBGEMM's operators."""
    lengths = [int(x) for x in torch.arange(3000) % 3]
    table, indices, offsets = _case(2000, dim, lengths, seed=dim)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for pack, op, ours in _FBGEMM_PAIRS:
            packed = pack(table)
            expected = op(packed, indices, offsets, False, 0, False, None, None, True)
            got = ours(packed, indices, offsets, include_last_offset=True)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(threads)


def test_bad_index_in_a_late_run_names_its_bag(isa):
    lengths = [int(x) for x in torch.arange(3000) % 3]  # bag k holds k % 3 ids
    table, indices, offsets = _case(100, 8, lengths, seed=3)
    bag = 2501  # 2 ids, starting at offsets[bag]
    position = int(offsets[bag]) + 1
    indices[position] = 100
    with pytest.raises(IndexError, match=rf"index 100 at position {position} \(bag {bag}\)"):
        ops.embedding_bag_int8(quant.quantize_int8(table), indices, offsets,
                               include_last_offset=True, table="t")  # fmt: skip


def _one_id_bags_on_two_threads(dim: int, bags: int, bad_at: int, bad_id: int) -> None:
    """`bags` one-id bags of a 3000-row table: on 2 threads the same as on 1 and as FBGEMM's
    operators, and a bad id at `bad_at` named by its position and bag."""
    table, indices, offsets = _case(3000, dim, [1] * bags, seed=dim + bags)
    threads = torch.get_num_threads()
    try:
        for pack, op, ours in _FBGEMM_PAIRS:
            packed = pack(table)
            expected = op(packed, indices, offsets, False, 0, False, None, None, True)
            torch.set_num_threads(1)
            one = ours(packed, indices, offsets, include_last_offset=True)
            torch.set_num_threads(2)
            two = ours(packed, indices, offsets, include_last_offset=True)
            assert torch.equal(one, two)
            torch.testing.assert_close(two, expected, rtol=1e-5, atol=1e-5)
            bad = indices.clone()
            bad[bad_at] = bad_id
            message = rf"index {bad_id} at position {bad_at} \(bag {bad_at}\)"
            with pytest.raises(IndexError, match=message):
                ours(packed, bad, offsets, include_last_offset=True)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dim", [64, 130])
def test_few_wide_one_id_bags_split_over_two_threads_match_fbgemm(dim, isa):
    """512 one-id bags of wide rows move >= 64 KiB but make one task by id count: with 2 threads
    the op splits them so each thread gets a run. Results equal FBGEMM's and the 1-thread ones,
    and a bad id in the second thread's run is still named by its position and bag."""
    _one_id_bags_on_two_threads(dim, 512, bad_at=400, bad_id=3000)


@pytest.mark.parametrize("bags", [512, 510])
def test_one_id_bags_of_a_far_table_split_over_two_threads_match_fbgemm(bags, isa):
    """512 one-id bags of 16-wide rows move 45 KB, under the 64 KiB split rule, but a call whose
    rows come from DRAM (here: every table counts as far) is split once each thread gets 256
    ids; 510 are not split. Either way results equal FBGEMM's and the 1-thread ones, and a bad
    id in the second half is named by its position and bag."""
    old = ops.set_far_prefetch(64, 0)
    try:
        _one_id_bags_on_two_threads(16, bags, bad_at=300, bad_id=-1)
    finally:
        ops.set_far_prefetch(*old)


@pytest.mark.parametrize("dim", [200, 300])
def test_rows_of_several_column_blocks_match_fbgemm(dim, isa):
    """Rows wider than one pass (256 columns on AVX-512, 128 on AVX2) are pooled bag by bag in
    column blocks (128 / 64 columns, the last one partial): 300 columns make 3 blocks on AVX-512
    and 5 on AVX2, 200 one pass on AVX-512 and 4 blocks on AVX2. One-id bags, longer bags, an
    empty bag and per-sample weights equal FBGEMM's operators; mean pooling (which FBGEMM's ops
    do not offer) equals ATen's over the dequantized table."""
    lengths = [1, 1, 7, 0, 1, 30, 2, 1]
    table, indices, offsets = _case(500, dim, lengths, seed=dim)
    weights = torch.rand(indices.numel(), generator=torch.Generator().manual_seed(1))
    dequantized = (quant.dequantize_int8, lambda p: quant.dequantize_int4(p, dim))
    for (pack, op, ours), dequantize in zip(_FBGEMM_PAIRS, dequantized, strict=True):
        packed = pack(table)
        for w in (None, weights):
            expected = op(packed, indices, offsets, False, 0, False, w, None, True)
            got = ours(packed, indices, offsets, per_sample_weights=w, include_last_offset=True)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
        mean = ours(packed, indices, offsets, mode="mean", include_last_offset=True)
        expected = F.embedding_bag(indices, dequantize(packed), offsets, mode="mean",
                                   include_last_offset=True)  # fmt: skip
        torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [6, 16, 64, 100, 200, 300])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_one_id_bags_equal_fbgemm_bit_for_bit(dim, index_dtype, isa):
    """A bag of one id is one fused multiply-add per column, scale * code + bias, as in FBGEMM's
    kernels: on the SIMD paths its result equals FBGEMM's exactly, whether its run holds only
    one-id bags or longer bags too, with or without weights, in one pass or in column blocks.
    (The scalar path rounds the product and the sum apart: within 1e-5, checked elsewhere.)"""
    if isa == "scalar":
        pytest.skip("the portable path does not fuse the multiply and the add")
    singles = [1] * 300
    mixed = [1, 3, 1, 0, 1, 20, 1, 1, 2, 1] * 30
    for lengths in (singles, mixed):
        table, indices, offsets = _case(700, dim, lengths, seed=dim, dtype=index_dtype)
        weights = torch.rand(indices.numel(), generator=torch.Generator().manual_seed(2))
        one_id = torch.tensor(lengths) == 1
        for pack, op, ours in _FBGEMM_PAIRS:
            packed = pack(table)
            for w in (None, weights):
                expected = op(packed, indices, offsets, False, 0, False, w, None, True)
                got = ours(packed, indices, offsets, per_sample_weights=w,
                           include_last_offset=True)  # fmt: skip
                assert torch.equal(got[one_id], expected[one_id])
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
