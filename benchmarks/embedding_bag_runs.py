"""Several runs of `benchmarks.embedding_bag` read together: which rows of the grid meet the
speed target in a typical run, not only in one.

One run's worst row on this VM is partly a draw: a config's ours / FBGEMM moves by up to 0.1
between full runs of the same build (phases of the shared machine longer than a config's
rounds). Per row of the grid and per comparison of the issue's target (ours int8 / int4 against
FBGEMM's ops, int8_half / int4 against FBGEMM's table-batched op) this prints the median,
lowest and highest ratio over the runs and counts the rows at or above the target: in median,
in every run, in any run. JSON in results/ unless --out says otherwise.

    python -m benchmarks.embedding_bag --reps 22 --out /tmp/run1.json   # repeat, then
    python -m benchmarks.embedding_bag_runs /tmp/run1.json /tmp/run2.json /tmp/run3.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.embedding_bag import COMPARISONS, CONFIG_KEYS, RESULTS
from recsys.utils.atomic import atomic_write_json

TARGET = 1.2  # the target: ours at least 1.2x FBGEMM on every row
TARGETED = {(f"ours {fmt}", key): applies for fmt, key, _, applies in COMPARISONS}


class RunsError(ValueError):
    """A run file that cannot be read together with the others (named in the message)."""


def load_ratios(path: Path) -> dict[tuple[str, str], dict[tuple, float]]:
    """One run's ratios: (op, ratio key) -> {config: ratio}, for the target's comparisons."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except FileNotFoundError:
        raise RunsError(f"{path}: no such file") from None
    except OSError as e:
        raise RunsError(f"{path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunsError(f"{path}: not JSON ({e})") from None
    except (KeyError, TypeError):
        raise RunsError(f"{path}: no 'rows' list (not a benchmarks.embedding_bag result)") from None
    out: dict[tuple[str, str], dict[tuple, float]] = {}
    for n, row in enumerate(rows):
        try:
            op = row["op"]
            for fmt, key, _, _ in COMPARISONS:
                if op == f"ours {fmt}" and key in row:
                    config = tuple(row[k] for k in CONFIG_KEYS)
                    out.setdefault((op, key), {})[config] = float(row[key])
        except KeyError as e:
            raise RunsError(f"{path}: row {n} has no {e} field") from None
        except (TypeError, ValueError) as e:
            message = f"{path}: row {n}: a config field or ratio is malformed ({e})"
            raise RunsError(message) from None
    if not out:
        raise RunsError(f"{path}: no row compares ours with FBGEMM")
    return out


def combine(runs: dict[str, dict[tuple[str, str], dict[tuple, float]]]) -> dict:
    """Per comparison and grid row: median / lowest / highest ratio over the runs, and how many
    rows meet the target in median, in every run and in any run. The runs must cover the same
    grid (a row missing from one run would bias the counts)."""
    names = list(runs)
    first = runs[names[0]]
    for name in names[1:]:
        for comparison in first.keys() | runs[name].keys():
            a, b = first.get(comparison, {}), runs[name].get(comparison, {})
            if a.keys() != b.keys():
                missing = sorted(a.keys() ^ b.keys())[0]
                raise RunsError(f"{name} and {names[0]} cover different grids: {comparison[0]} "
                                f"{comparison[1]} at {missing} is in only one")  # fmt: skip
    out: dict = {"runs": names, "target": TARGET, "comparisons": {}}
    for (op, key), by_config in first.items():
        rows = []
        for config in by_config:
            ratios = [runs[name][(op, key)][config] for name in names]
            rows.append({**dict(zip(CONFIG_KEYS, config, strict=True)),
                         "median": round(statistics.median(ratios), 3),
                         "min": round(min(ratios), 3), "max": round(max(ratios), 3)})  # fmt: skip
        out["comparisons"][f"{op} {key}"] = {
            "target": TARGETED[(op, key)],
            "rows": len(rows),
            "at target in median": sum(r["median"] >= TARGET for r in rows),
            "at target in every run": sum(r["min"] >= TARGET for r in rows),
            "at target in some run": sum(r["max"] >= TARGET for r in rows),
            "below target in median": [r for r in rows if r["median"] < TARGET],
            "per row": rows,
        }
    return out


def report(summary: dict) -> str:
    """The counts per comparison and the rows below the target in median, as text (listed only
    where the target applies: COMPARISONS)."""
    lines = [f"{len(summary['runs'])} runs: {', '.join(summary['runs'])}"]
    for name, c in summary["comparisons"].items():
        lines.append(f"{name}: {c['rows']} rows; at {summary['target']} in median "
                     f"{c['at target in median']}, in every run {c['at target in every run']}, "
                     f"in some run {c['at target in some run']}")  # fmt: skip
        if not c["target"]:  # our op through torch.ops: counts only
            continue
        for r in c["below target in median"]:
            where = " ".join(f"{k} {r[k]}" for k in CONFIG_KEYS)
            lines.append(f"  below in median: {where}: median {r['median']} "
                         f"(runs {r['min']}-{r['max']})")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="JSON files of benchmarks.embedding_bag")
    p.add_argument("--out", type=Path, default=RESULTS / "embedding_bag_runs.json")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two run files")
    try:
        summary = combine({str(path): load_ratios(path) for path in args.runs})
    except RunsError as e:
        p.error(str(e))
    print(report(summary))
    atomic_write_json(args.out, summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
