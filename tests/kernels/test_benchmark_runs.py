"""`benchmarks.embedding_bag_runs`: several runs of the lookup benchmark read together (counts
of rows at the target in median / every run / some run), and its errors on bad run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import embedding_bag_runs as runs


def _row(op: str, dim: int, ratio: float, key: str = "vs_fbgemm") -> dict:
    return {"op": op, "rows": 100_000, "dim": dim, "pool": 20, "ids": "zipf", "threads": 1,
            key: ratio, "ns_per_id": 1.0}  # fmt: skip


def _write(path: Path, int8: list[float], int4: list[float]) -> Path:
    rows = [_row("ours int8", 16 * (k + 1), r) for k, r in enumerate(int8)]
    rows += [_row("ours int4", 16 * (k + 1), r) for k, r in enumerate(int4)]
    rows.append(_row("fbgemm int8", 16, 0.0, key="unrelated"))  # not a comparison: ignored
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_counts_per_comparison(tmp_path):
    files = [
        _write(tmp_path / "a.json", [1.30, 1.19, 1.10], [1.5, 1.5, 1.5]),
        _write(tmp_path / "b.json", [1.25, 1.21, 1.15], [1.5, 1.5, 1.5]),
        _write(tmp_path / "c.json", [1.21, 1.22, 1.25], [1.5, 1.5, 1.19]),
    ]
    summary = runs.combine({str(f): runs.load_ratios(f) for f in files})
    int8 = summary["comparisons"]["ours int8 vs_fbgemm"]
    assert int8["rows"] == 3
    assert int8["at target in median"] == 2  # medians 1.25, 1.21, 1.15
    assert int8["at target in every run"] == 1  # only the first row never dips below 1.2
    assert int8["at target in some run"] == 3
    (below,) = int8["below target in median"]
    assert (below["dim"], below["median"], below["min"], below["max"]) == (48, 1.15, 1.1, 1.25)
    int4 = summary["comparisons"]["ours int4 vs_fbgemm"]
    assert (int4["at target in median"], int4["at target in every run"]) == (3, 2)
    text = runs.report(summary)
    assert "dim 48" in text and "median 1.15 (runs 1.1-1.25)" in text


def test_main_writes_json_and_prints(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [1.3, 1.1], [1.4, 1.4])
    b = _write(tmp_path / "b.json", [1.3, 1.2], [1.4, 1.4])
    out = tmp_path / "summary.json"
    runs.main([str(a), str(b), "--out", str(out)])
    summary = json.loads(out.read_text())
    assert summary["comparisons"]["ours int8 vs_fbgemm"]["per row"][1]["median"] == 1.15
    assert "ours int8 vs_fbgemm: 2 rows; at 1.2 in median 1" in capsys.readouterr().out


def test_grids_that_differ_are_refused_by_name(tmp_path):
    a = _write(tmp_path / "a.json", [1.3, 1.2], [1.4, 1.4])
    b = _write(tmp_path / "b.json", [1.3], [1.4, 1.4])
    with pytest.raises(runs.RunsError, match=r"b\.json and .*a\.json cover different grids"):
        runs.combine({str(a): runs.load_ratios(a), str(b): runs.load_ratios(b)})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"machine": {}}', "no 'rows' list"),
        ('{"rows": [{"op": "ours int8", "rows": 1, "vs_fbgemm": 1.3}]}',
         "row 0 has no 'dim' field"),
        ('{"rows": [{"op": "ours int8", "rows": 1, "dim": 1, "pool": 1, "ids": "u", '
         '"threads": 1, "vs_fbgemm": "fast"}]}', "row 0: a config field or ratio is malformed"),
        ('{"rows": [{"op": "fbgemm int8"}]}', "no row compares ours with FBGEMM"),
    ],
)  # fmt: skip
def test_bad_run_files_name_the_file_and_problem(tmp_path, content, message):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(runs.RunsError, match=message) as e:
        runs.load_ratios(path)
    assert str(path) in str(e.value)


def test_a_directory_is_refused_by_name(tmp_path):
    with pytest.raises(runs.RunsError, match=r"cannot be read \(Is a directory\)"):
        runs.load_ratios(tmp_path)


def test_one_run_is_a_usage_error(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [1.3], [1.4])
    with pytest.raises(SystemExit) as e:
        runs.main([str(a)])
    assert e.value.code == 2 and "at least two run files" in capsys.readouterr().err


def test_a_bad_file_is_a_usage_error_naming_it(tmp_path, capsys):
    a = _write(tmp_path / "a.json", [1.3], [1.4])
    with pytest.raises(SystemExit):
        runs.main([str(a), str(tmp_path / "missing.json")])
    assert "missing.json: no such file" in capsys.readouterr().err
