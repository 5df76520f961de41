"""Model quality against the Bayes-optimal yardstick of the synthetic data, via the real CLI.

Runs `recsys-train` (each run in its own directory) and collects test AUC, NE, the Bayes AUC and
the share of the distance from 0.5 to the Bayes AUC that the model closes; fp32 and bf16 side by
side, so the bf16 check (test AUC within 0.001 of fp32) is read off the same table.

    python -m benchmarks.quality                        # default job + synthetic_large, fp32/bf16
    python -m benchmarks.quality --runs default         # only the default job
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine_info

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {
    "default": [],
    "synthetic_large": ["+experiment=synthetic_large"],
}


def train(overrides: list[str], run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "recsys.train", *overrides, f"hydra.run.dir={run_dir}",
           "trainer.resume=none"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            for precision in args.precisions:
                run_dir = Path(tmp) / f"{name}-{precision}"
                m = train([*RUNS[name], f"trainer.precision={precision}"], run_dir)
                t = m["test"]
                rows.append({
                    "run": name, "precision": precision, "steps": m["steps"],
                    "test_auc": round(t["auc"], 5), "test_ne": round(t["ne"], 5),
                    "test_logloss": round(t["logloss"], 5), "bayes_auc": round(t["bayes_auc"], 5),
                    "auc_gap_closed": round(t["auc_gap_closed"], 4),
                    "calibration": round(t["calibration"], 4),
                    "train_samples_per_s": round(m["train_samples_per_s"]),
                    "wall_s_incl_startup": m["wall_s"],
                })  # fmt: skip
                r = rows[-1]
                print(f"{name:<16} {precision:<5} test auc {r['test_auc']:.4f}  NE "
                      f"{r['test_ne']:.4f}  Bayes auc {r['bayes_auc']:.4f}  gap closed "
                      f"{100 * r['auc_gap_closed']:.1f}%  {r['train_samples_per_s']:,} samples/s",
                      flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(0), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
