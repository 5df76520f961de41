"""Synthetic generator: deterministic, calibrated, with a true CTR that is really the truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from recsys.data.features import DatasetManifest
from recsys.data.synthetic import PlantedCTRModel, config_key, generate, scaled_cardinalities


def test_same_seed_same_rows(tiny_config):
    a = PlantedCTRModel(tiny_config).sample(np.random.default_rng(3), 1000)
    b = PlantedCTRModel(tiny_config).sample(np.random.default_rng(3), 1000)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_base_ctr_calibrated_to_target(tiny_config):
    model = PlantedCTRModel(tiny_config)
    rows = model.sample(np.random.default_rng(11), 100_000)
    assert rows["ctr"].mean() == pytest.approx(tiny_config.target_ctr, abs=0.01)
    # labels are Bernoulli(ctr): their mean is within 4 sigma of the mean ctr
    sigma = np.sqrt(0.25 * 0.75 / 100_000)
    assert abs(rows["label"].mean() - rows["ctr"].mean()) < 4 * sigma


def test_true_ctr_beats_any_other_score(tiny_config):
    """The planted CTR is the Bayes-optimal score: a noisy version of it ranks worse."""
    rows = PlantedCTRModel(tiny_config).sample(np.random.default_rng(5), 60_000)
    bayes = roc_auc_score(rows["label"], rows["ctr"])
    noisy = rows["ctr"] + np.random.default_rng(6).normal(0, 0.1, len(rows["ctr"]))
    assert 0.7 < bayes < 0.9
    assert roc_auc_score(rows["label"], noisy) < bayes


def test_zipf_ids_head_heavy_and_in_range(tiny_config):
    model = PlantedCTRModel(tiny_config)
    rows = model.sample(np.random.default_rng(1), 50_000)
    sizes = np.array(model.cardinalities)
    assert (rows["ids"] >= 0).all() and (rows["ids"] < sizes).all()
    biggest = int(np.argmax(sizes))
    counts = np.bincount(rows["ids"][:, biggest], minlength=sizes[biggest])
    top = np.sort(counts)[::-1]
    assert top[0] > 20 * np.median(counts)  # power law: the head id dwarfs the median id


def test_cardinalities_scale_but_keep_tiny_tables(tiny_config):
    sizes = scaled_cardinalities(tiny_config)
    assert len(sizes) == 26
    assert sizes[8] == 3 and sizes[19] == 4  # Criteo's 3- and 4-value features keep their size
    assert sizes[2] == int(np.ceil(10131227 * tiny_config.cardinality_scale))


def test_generated_files_match_manifest(tiny_dataset, tiny_config):
    directory, manifest = tiny_dataset
    again = DatasetManifest.load(directory)
    assert again == manifest
    assert manifest.split("train").rows == tiny_config.rows_train
    table = pq.read_table(directory / manifest.split("test").files[0])
    assert table.schema.field("C3").type == "int64"
    assert table.schema.field("I1").type == "float"
    total_pos = sum(
        int(pq.read_table(directory / f, columns=["label"])["label"].to_numpy().sum())
        for f in manifest.split("train").files
    )
    assert total_pos == manifest.split("train").positives
    assert 0.22 < manifest.base_ctr < 0.28


def test_generation_is_deterministic(tmp_path, tiny_config):
    small = replace(tiny_config, rows_train=5000, rows_valid=1000, rows_test=1000)
    a = generate(small, tmp_path / "a")
    b = generate(small, tmp_path / "b")
    ta = pq.read_table(tmp_path / "a" / a.split("train").files[0])
    tb = pq.read_table(tmp_path / "b" / b.split("train").files[0])
    assert ta.equals(tb)


def test_config_key_changes_with_generator_settings(tiny_config):
    assert config_key(tiny_config) != config_key(replace(tiny_config, zipf_alpha=1.3))
    assert config_key(tiny_config) == config_key(replace(tiny_config, rows_per_file=77))
