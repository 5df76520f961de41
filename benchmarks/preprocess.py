"""Benchmark recsys-preprocess against a straightforward pandas conversion on one Criteo file.

    .venv/bin/python benchmarks/preprocess.py                     # 2M rows, both modes + pandas
    .venv/bin/python benchmarks/preprocess.py --rows 200000 --skip-baseline   # quick iteration
    .venv/bin/python benchmarks/preprocess.py --compression none   # recsys output uncompressed

Generates a Criteo-format TSV (cached under --cache, default /tmp/recsys_bench), then runs each
variant in its own process while sampling the resident memory of that process and all its
children (workers included) from /proc. Writes a table to stdout and JSON to --json. The full
Kaggle time is extrapolated from the measured rows/s (45,840,617 rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
KAGGLE_ROWS = 45_840_617
CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
                 142572]  # fmt: skip


def generate(path: Path, rows: int, seed: int = 0, block: int = 262_144) -> None:
    """Criteo-shaped rows: Zipf ids per feature hashed to 8 hex digits, counts with negatives,
    about 14% missing cells (as in the real file)."""
    rng = np.random.default_rng(seed)
    salts = rng.integers(1, 2**31, 26)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as sink:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            cols = {"label": pa.array((rng.random(n) < 0.256).astype(np.int8))}
            for j in range(13):
                v = np.floor(rng.lognormal(1.0 + j % 4, 1.3, n)).astype(np.int64) - (j == 1) * 3
                cols[f"I{j + 1}"] = pa.array(
                    v, mask=rng.random(n) < (0.45 if j in (0, 9, 11) else 0.05)
                )
            hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
            for f, card in enumerate(CARDINALITIES):
                rank = np.minimum(rng.zipf(1.15, n), card) + int(salts[f])
                h = (rank.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
                nib = (h[:, None] >> np.arange(28, -4, -4, dtype=np.uint64)) & np.uint64(15)
                text = hexdigits[nib.astype(np.intp)].view("S8").ravel()
                cols[f"C{f + 1}"] = pa.array(text, pa.binary(), mask=rng.random(n) < 0.1)
            opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
            pacsv.write_csv(pa.table(cols), sink, opts)
    tmp.replace(path)


def baseline(raw: Path, out: Path) -> None:
    """pandas read_csv of the whole file, then per-column conversion, then Parquet."""
    import pandas as pd

    names = ["label"] + [f"I{j + 1}" for j in range(13)] + [f"C{f + 1}" for f in range(26)]
    types = {n: "float64" if n[0] == "I" else "object" for n in names[1:]}
    df = pd.read_csv(raw, sep="\t", header=None, names=names, dtype=types)
    for n in names[1:14]:
        df[n] = np.log1p(df[n].fillna(0).clip(lower=0)).astype("float32")
    for n in names[14:]:
        df[n] = df[n].map(lambda x: int(x, 16) % 40_000_000 + 1, na_action="ignore").fillna(0)
        df[n] = df[n].astype("int64")
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "part-0.parquet", index=False)


def run_variant(name: str, raw: Path, out: Path, workers: int, compression: str) -> None:
    """Runs in a child process (the parent samples its memory)."""
    if name == "pandas":
        baseline(raw, out / "pandas")
        return
    from recsys.config import PreprocessConfig
    from recsys.preprocess.pipeline import preprocess

    cfg = PreprocessConfig(categorical=name, workers=workers, progress=False, resume=False,
                           compression=compression)  # fmt: skip
    preprocess(f"bench_{name}", out / f"bench_{name}", str(raw), cfg)


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def measure(name: str, raw: Path, out: Path, workers: int, compression: str) -> dict:
    cmd = [sys.executable, __file__, "--run-one", name, "--input", str(raw), "--out", str(out),
           "--workers", str(workers), "--compression", compression]  # fmt: skip
    load = os.getloadavg()[0]  # the cores are shared: what else ran shows here
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, cwd=REPO)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"variant": name, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(peak / 2**20), "load_avg_1m_at_start": round(load, 2)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--cache", type=Path, default=Path("/tmp/recsys_bench"))
    p.add_argument("--workers", type=int, default=0, help="0 = all cores")
    p.add_argument("--modes", default="hash,vocab")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--compression", default="snappy", help="Parquet codec of recsys's output")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks/results/preprocess.json")
    p.add_argument("--run-one", help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_one:
        return run_variant(args.run_one, args.input, args.out, args.workers, args.compression)
    args.cache.mkdir(parents=True, exist_ok=True)
    raw = args.cache / f"criteo_{args.rows}.tsv"
    if not raw.is_file():
        print(f"generating {raw} ({args.rows:,} rows) ...", flush=True)
        generate(raw, args.rows)
    size = raw.stat().st_size
    variants = args.modes.split(",") + ([] if args.skip_baseline else ["pandas"])
    results = []
    for name in variants:
        r = measure(name, raw, args.cache / "out", args.workers, args.compression)
        if name != "pandas":
            r["compression"] = args.compression
        r["rows_per_s"] = round(args.rows / r["seconds"])
        r["mb_per_s"] = round(size / 2**20 / r["seconds"], 1)
        r["kaggle_extrapolated_s"] = round(KAGGLE_ROWS / r["rows_per_s"])
        # what the run would take if it had all cores to itself (CPU time spread over them)
        r["kaggle_cpu_bound_s"] = round(KAGGLE_ROWS * r["cpu_s"] / args.rows / os.cpu_count())
        results.append(r)
        print(json.dumps(r), flush=True)
    _report(results, args, size)


def _report(results: list[dict], args: argparse.Namespace, size: int) -> None:
    base = next((r for r in results if r["variant"] == "pandas"), None)
    print(f"\n{args.rows:,} rows, {size / 2**20:.0f} MiB, {os.cpu_count()} cores")
    print(f"{'variant':<8} {'seconds':>8} {'rows/s':>10} {'MB/s':>7} {'peak RSS MB':>12} "
          f"{'x pandas':>9} {'Kaggle est.':>11} {'CPU s':>7} {'Kaggle CPU/cores':>16}")  # fmt: skip
    for r in results:
        if base:
            r["speedup_vs_pandas"] = round(r["rows_per_s"] / base["rows_per_s"], 2)
        print(f"{r['variant']:<8} {r['seconds']:>8.1f} {r['rows_per_s']:>10,} {r['mb_per_s']:>7} "
              f"{r['peak_rss_mb']:>12,} {r.get('speedup_vs_pandas', float('nan')):>9.2f} "
              f"{r['kaggle_extrapolated_s'] / 60:>9.1f} m {r['cpu_s']:>7.1f} "
              f"{r['kaggle_cpu_bound_s'] / 60:>14.1f} m")  # fmt: skip
    sys.path.insert(0, str(REPO))
    from benchmarks.machine import cpu_model

    doc = {"rows": args.rows, "file_mb": round(size / 2**20, 1), "workers": args.workers,
           "cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
           "load_avg_1m_at_end": os.getloadavg()[0], "results": results}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
