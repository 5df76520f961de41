"""The lookup benchmarks' method: every sample on ids no earlier sample looked up, and the
prefetch-policy benchmark's argument check and setting read.

Until 2026-11-30 each op looked up its own one id set in every round, so on 10M-row tables its
rows came from the L3 instead of DRAM; the first tests pin the fix."""

from __future__ import annotations

import pytest
import torch

from benchmarks import embedding_bag as eb
from benchmarks import prefetch_lead, prefetch_policy


def _record(names: list[str], reps: int, calls: int, n_sets: int) -> tuple[dict, list[int]]:
    """Runs `interleaved` on tagged id sets (set k is the tensor [k]) and returns, per case,
    the set tags its calls saw, and the order of all calls."""
    seen: dict[str, list[int]] = {name: [] for name in names}
    order: list[int] = []

    def case(name: str):
        def call(ids: torch.Tensor) -> None:
            seen[name].append(int(ids[0]))
            order.append(int(ids[0]))

        return call

    sets = [torch.tensor([k]) for k in range(n_sets)]
    times = eb.interleaved({n: case(n) for n in names}, reps, sets, calls=calls)
    assert all(len(times[n]) == reps for n in names)
    return seen, order


def test_no_id_set_is_looked_up_twice_when_there_are_enough():
    names, reps, calls = ["a", "b", "c"], 5, 4
    need = eb.sets_needed(len(names), reps, calls)
    seen, order = _record(names, reps, calls, need)
    timed = [k for n in names for k in seen[n][1:]]  # after each case's warm-up call
    assert len(timed) == len(names) * reps * calls
    assert len(order) == len(set(order))  # warm-up and timed calls: all different sets
    assert max(order) < need


def test_each_case_sees_different_sets_from_round_to_round_even_when_sets_are_few():
    """With fewer sets than samples they are reused cyclically, never a case's own set twice in
    a row (the old scheme gave case k set k in every round)."""
    names, reps = ["a", "b", "c"], 6
    seen, _ = _record(names, reps, 1, 4)
    for name in names:
        timed = seen[name][1:]
        assert len(set(timed)) > 1
        assert all(x != y for x, y in zip(timed, timed[1:], strict=False))


def test_ids_returns_one_row_per_set_and_stays_in_the_table():
    many = eb.ids(1000, 50, "zipf", seed=3, sets=7)
    assert many.shape == (7, 50) and many.dtype == torch.int64
    assert int(many.min()) >= 0 and int(many.max()) < 1000
    one = eb.ids(1000, 50, "uniform", seed=3)
    assert one.shape == (50,)
    assert not torch.equal(many[0], many[1])


def test_prefetch_policy_rejects_zero_rounds_before_measuring(capsys):
    with pytest.raises(SystemExit) as stop:
        prefetch_policy.main(["--reps", "0"])
    assert stop.value.code == 2
    assert "--reps must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--reps", "0"], "--reps must be at least 1, got 0"),
     (["--out", "/nonexistent-dir/lead.json"], "--out: no directory /nonexistent-dir")],
)  # fmt: skip
def test_prefetch_lead_rejects_bad_arguments_before_measuring(capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        prefetch_lead.main(args)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert prefetch_lead.current_leads() == (4, 16)  # settings untouched


def test_policy_setting_reads_without_changing():
    before = prefetch_policy.current_setting()
    assert prefetch_policy.current_setting() == before
    # far distance, far size, mid size, mid near distance
    assert before[0] == 64 and before[1] > before[2] > 0 and before[3] == 8


@pytest.mark.parametrize("flag, value", [("--dims", "0"), ("--sizes", "-5"), ("--pools", "x"),
                                         ("--reps", "0")])  # fmt: skip
def test_embedding_bag_benchmark_rejects_bad_shapes_before_measuring(capsys, flag, value):
    with pytest.raises(SystemExit) as stop:
        eb.main([flag, value])
    assert stop.value.code == 2
    assert f"expected an integer >= 1, got '{value}'" in capsys.readouterr().err


def test_cases_run_behind_different_neighbours_from_round_to_round():
    """Each round runs the cases in a new (seeded) order: a case's time depends on the op run
    just before it, so no case may keep one neighbour (a rotation would)."""
    names, reps = ["a", "b", "c", "d"], 12
    ran: list[str] = []
    cases = {n: (lambda ids, n=n: ran.append(n)) for n in names}
    sets = [torch.tensor([k]) for k in range(eb.sets_needed(len(names), reps, 1))]
    eb.interleaved(cases, reps, sets)
    rounds = [ran[len(names) * (r + 1) : len(names) * (r + 2)] for r in range(reps)]
    assert all(sorted(order) == names for order in rounds)  # every case once a round
    before = {
        n: {order[i - 1] for order in rounds for i in range(1, 4) if order[i] == n} for n in names
    }
    assert all(len(b) >= 2 for b in before.values())
    assert len({tuple(order) for order in rounds}) > 3


def test_scripted_call_loops_make_every_call_and_match_the_eager_ops():
    """The call-cost entries for TorchScript: each scripted loop makes `reps` real lookups (its
    results kept, so none is dropped as dead code) and returns what the eager ops return."""
    table = eb.packed_table(50, 16, "int8", 0)
    idx, off = torch.tensor([3], dtype=torch.int64), torch.tensor([0, 1])
    want = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
        table, idx, off, False, 0, False, None, None, True
    )
    for loop in (eb._ours_scripted, eb._fbgemm_scripted):
        got = torch.jit.script(loop)(table, idx, off, 3)
        assert len(got) == 3
        for y in got:
            torch.testing.assert_close(y, want)


def test_summary_gives_each_ops_share_of_the_fetch_only_probe_by_table_size():
    """Ours' and FBGEMM's time against the fetch-only probe: median and max over the rows of each
    table size, per format; no figure for an op or format without rows."""

    def config(rows, dim, ours_share, fb_share):
        key = {"rows": rows, "dim": dim, "pool": 20, "ids": "uniform", "threads": 1}
        ours = {"op": "ours int8", **key, "mids_per_s": 1.0, "vs_fbgemm": 1.1,
                "vs_fetch_only": ours_share, "check_cost": 0.01}  # fmt: skip
        fbgemm = {"op": "fbgemm int8", **key, "mids_per_s": 1.0, "vs_fetch_only": fb_share}
        return [ours, fbgemm]

    rows = (
        config(10**7, 128, 0.80, 0.90)
        + config(10**7, 64, 0.70, 0.60)
        + config(10**7, 16, 0.95, 0.73)
        + config(10**5, 128, 1.50, 0.99)
    )
    out = eb.summarise(rows)
    assert out["ours int8 / fetch only (10,000,000 rows) median"] == 0.8
    assert out["ours int8 / fetch only (10,000,000 rows) max"] == 0.95
    assert out["fbgemm int8 / fetch only (10,000,000 rows) median"] == 0.73
    assert out["fbgemm int8 / fetch only (10,000,000 rows) max"] == 0.9
    assert out["ours int8 / fetch only (100,000 rows) median"] == 1.5
    assert out["fbgemm int8 / fetch only (100,000 rows) max"] == 0.99
    assert not any(k.startswith("ours int4 / fetch only") for k in out)  # no int4 rows
