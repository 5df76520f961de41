"""`recsys-train` end to end in fresh interpreters: outputs, Hydra behaviour, quality, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli, tiny_overrides


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_root) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "main"
    run_cli([*tiny_overrides(data_root), "trainer.epochs=2", "model.embedding_dim=8",
             f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)  # fmt: skip
    return run_dir


def test_run_writes_metrics_with_bayes_yardstick(trained_run):
    m = json.loads((trained_run / "metrics.json").read_text())
    assert m["steps"] == 2 * (40_000 // 512)
    for split in ("valid", "test"):
        keys = ("auc", "logloss", "ne", "calibration", "accuracy", "bayes_auc", "bayes_logloss")
        for key in keys:
            assert key in m[split], (split, key)
    test = m["test"]
    # Known optimum: the planted model's AUC. A trained DLRM must get most of the way there.
    assert 0.75 < test["bayes_auc"] < 0.85
    assert test["auc"] <= test["bayes_auc"] + 0.005
    assert test["auc_gap_closed"] > 0.6, test
    assert test["ne"] < 0.95 and 0.8 < test["calibration"] < 1.2
    assert m["train_samples_per_s"] > 0 and 0 <= m["data_wait_fraction"] < 1
    assert m["final_train_loss"] < 0.56  # entropy of a 25% CTR is 0.562


def test_run_directory_holds_config_logs_tensorboard_checkpoint(trained_run):
    cfg = (trained_run / ".hydra" / "config.yaml").read_text()
    assert "embedding_dim: 8" in cfg
    assert (trained_run / "train.log").read_text().count("TEST  auc") == 1
    assert (trained_run / "checkpoints" / "latest").read_text().startswith("step_")
    acc = EventAccumulator(str(trained_run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/auc", "train/samples_per_s", "train/data_wait_fraction"} <= tags
    assert {"eval/valid_auc", "eval/test_auc", "eval/test_ne", "eval/test_bayes_auc"} <= tags
    assert "config" in " ".join(acc.Tags()["tensors"])


def test_cfg_job_prints_resolved_overrides(tmp_path):
    proc = run_cli(["--cfg", "job", "model.embedding_dim=64", "trainer.max_steps=2000"], tmp_path)
    assert "embedding_dim: 64" in proc.stdout and "max_steps: 2000" in proc.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.embeding_dim=4", "embeding_dim"),
        ("trainer.max_steps=many", "max_steps"),
        ("trainer.flush_denormal=maybe", "flush_denormal"),
        ("model=transformer", "model"),
    ],
)
def test_config_mistakes_fail_at_start_naming_the_key(tmp_path, override, message):
    proc = run_cli([override], tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_bad_config_value_is_a_one_line_error(tmp_path, data_root):
    proc = run_cli([*tiny_overrides(data_root), "optim.dense.name=lamb",
                    f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "recsys-train: error: optim.dense.name must be one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_dataset_is_a_clear_error(tmp_path):
    proc = run_cli(["data.kind=parquet", "data.name=criteo_kaggle", f"data.root={tmp_path}",
                    f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "data set 'criteo_kaggle' not found" in proc.stderr
    assert "recsys-preprocess" in proc.stderr and "Traceback" not in proc.stderr


def test_multirun_sweep_gives_one_run_per_value(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    run_cli(["-m", *tiny_overrides(data_root), "trainer.max_steps=8", "optim.dense.lr=0.001,0.01",
             f"hydra.sweep.dir={sweep}"], tmp_path)  # fmt: skip
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [p.name for p in runs] == ["0", "1"]
    lrs = [json.loads((p / "metrics.json").read_text())["steps"] for p in runs]
    assert lrs == [8, 8]
    assert "lr: 0.01" in (runs[1] / ".hydra" / "config.yaml").read_text()
