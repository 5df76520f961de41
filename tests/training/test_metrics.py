"""Metrics equal scikit-learn's on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from recsys.training.metrics import PredictionAccumulator, auc, binary_metrics, entropy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(5000) < 0.3).astype(np.float32)
    scores = np.round(rng.random(5000) * 0.5 + 0.3 * labels, 2).astype(np.float32)  # many ties
    assert auc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )


def test_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    labels = (rng.random(20_000) < 0.25).astype(np.float32)
    probs = np.clip(0.25 + 0.3 * (labels - 0.25) + rng.normal(0, 0.15, 20_000), 0.01, 0.99)
    probs = probs.astype(np.float32)
    m = binary_metrics(torch.from_numpy(probs), torch.from_numpy(labels))
    ctr = labels.mean()
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-10)
    assert m["logloss"] == pytest.approx(log_loss(labels, probs), rel=1e-6)
    base = log_loss(labels, np.full_like(probs, ctr))
    assert m["ne"] == pytest.approx(log_loss(labels, probs) / base, rel=1e-6)
    assert m["calibration"] == pytest.approx(probs.mean() / ctr, rel=1e-6)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, probs >= 0.5), abs=1e-12)


def test_entropy_of_half_is_ln2():
    assert entropy(0.5) == pytest.approx(math.log(2))


def test_auc_single_class_is_nan():
    assert math.isnan(auc(torch.rand(10), torch.zeros(10)))


def test_accumulator_reports_bayes_yardstick():
    rng = np.random.default_rng(7)
    true = rng.random(4000).astype(np.float32)
    labels = (rng.random(4000) < true).astype(np.float32)
    acc = PredictionAccumulator()
    for part in np.array_split(np.arange(4000), 3):
        model_probs = np.clip(true[part] + rng.normal(0, 0.2, len(part)), 0.01, 0.99)
        acc.add(torch.from_numpy(model_probs), torch.from_numpy(labels[part]),
                torch.from_numpy(true[part]))  # fmt: skip
    out = acc.compute()
    assert out["bayes_auc"] == pytest.approx(roc_auc_score(labels, true), abs=1e-10)
    assert out["bayes_logloss"] == pytest.approx(log_loss(labels, np.clip(true, 1e-7, 1)), rel=1e-5)
    assert out["auc"] < out["bayes_auc"]
    assert out["auc_gap_closed"] == pytest.approx((out["auc"] - 0.5) / (out["bayes_auc"] - 0.5))
