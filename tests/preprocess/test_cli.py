"""recsys-preprocess then recsys-train data=criteo_kaggle, both through their real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli
from tests.preprocess.reference import FIXTURES


def _preprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, "-m", "recsys.cli.preprocess", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def _raw_rows(path: Path, copies: int) -> None:
    """Fixture rows repeated (with shuffled labels so there is something to learn)."""
    rows = (FIXTURES / "kaggle_clean.tsv").read_text().rstrip("\n").split("\n")
    out = []
    for c in range(copies):
        for i, row in enumerate(rows):
            label = "1" if (i * 7 + c) % 4 == 0 else "0"
            out.append(label + row[1:])
    path.write_text("\n".join(out) + "\n")


def test_preprocess_then_train_reads_table_sizes_from_manifest(tmp_path):
    raw, root = tmp_path / "train.txt", tmp_path / "data"
    _raw_rows(raw, 40)  # 1400 rows: train 1200, test 100, valid 100
    proc = _preprocess([f"data.raw={raw}", f"data.root={root}", "data.preprocess.workers=1",
                        "data.preprocess.progress=false", f"hydra.run.dir={tmp_path / 'pp'}"],
                       tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((root / "criteo_kaggle" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == 1200
    sizes = [f["num_embeddings"] for f in manifest["sparse_features"]]
    run_dir = tmp_path / "run"
    run_cli(["data=criteo_kaggle", f"data.root={root}", "trainer.batch_size=64",
             "trainer.eval_batch_size=256", "trainer.max_steps=4", "trainer.num_threads=1",
             "trainer.log_every=2", "model.embedding_dim=8", "optim.warmup_steps=1",
             f"hydra.run.dir={run_dir}"], cwd=tmp_path)  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["test"]["auc"] <= 1.0
    # the loader rejects ids outside the manifest's tables (model.hash_ids=false): a run that
    # trains and evaluates every split proves the tables were sized from this manifest
    assert min(sizes) >= 2 and metrics["valid"]["auc"] >= 0.0
    cfg = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "name: criteo_kaggle" in cfg and "kind: parquet" in cfg


def test_preprocess_cli_error_is_one_line(tmp_path):
    proc = _preprocess([f"data.raw={tmp_path / 'missing.txt'}", f"data.root={tmp_path}",
                        f"hydra.run.dir={tmp_path / 'pp'}"], tmp_path)  # fmt: skip
    assert proc.returncode != 0
    assert "recsys-preprocess: error: data.raw=" in proc.stderr
    assert "Traceback" not in proc.stderr
