"""Binary-classification metrics for CTR models, exact and gathered over all ranks.

- AUC: exact, by the rank-sum (Mann-Whitney) formula with tied scores given their average rank
  (what scikit-learn's `roc_auc_score` computes).
- logloss: mean binary cross-entropy, probabilities clipped to [eps, 1 - eps].
- NE (normalized entropy): logloss / entropy of the set's own CTR; 1.0 is "predicts the base
  rate", lower is better. The metric ads ranking teams report.
- calibration: mean prediction / mean label (1.0 is calibrated).
- accuracy: threshold 0.5.
When true click probabilities are known (synthetic data), the same metrics of the true CTR are
the Bayes-optimal yardstick: `bayes_auc`, `bayes_logloss`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

EPS = 1e-7


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC with ties averaged; NaN if only one class is present."""
    scores = scores.double().flatten()
    labels = labels.double().flatten()
    n_pos = float(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    # average rank of each group of tied scores (1-based)
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1) / 2
    ranks = avg_rank[inverse]
    pos_rank_sum = float((ranks * labels[order]).sum())
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def logloss(probs: torch.Tensor, labels: torch.Tensor) -> float:
    p = probs.double().clamp(EPS, 1 - EPS)
    y = labels.double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def entropy(ctr: float) -> float:
    c = min(max(ctr, EPS), 1 - EPS)
    return -(c * math.log(c) + (1 - c) * math.log(1 - c))


def binary_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    ll = logloss(probs, labels)
    mean_label = float(labels.double().mean())
    return {
        "auc": auc(probs, labels),
        "logloss": ll,
        "ne": ll / entropy(mean_label),
        "calibration": float(probs.double().mean()) / mean_label if mean_label else float("nan"),
        "accuracy": float(((probs >= 0.5).double() == labels.double()).double().mean()),
        "ctr": mean_label,
        "rows": float(labels.numel()),
    }


class PredictionAccumulator:
    """Collects (probability, label, true CTR) per batch; computes metrics over all ranks."""

    def __init__(self) -> None:
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._true: list[torch.Tensor] = []

    def add(self, probs: torch.Tensor, labels: torch.Tensor, true_ctr: torch.Tensor | None) -> None:
        self._probs.append(probs.detach().float().cpu())
        self._labels.append(labels.detach().float().cpu())
        if true_ctr is not None:
            self._true.append(true_ctr.detach().float().cpu())

    def _local(self) -> torch.Tensor:
        cols = (
            [torch.cat(self._probs), torch.cat(self._labels)]
            if self._probs
            else [torch.empty(0)] * 2
        )
        if self._true:
            cols.append(torch.cat(self._true))
        return torch.stack(cols, dim=1) if cols[0].numel() else torch.empty(0, len(cols))

    def compute(self) -> dict[str, float]:
        """Metrics of every rank's predictions together (same result as one process)."""
        rows = _gather_rows(self._local())
        probs, labels = rows[:, 0], rows[:, 1]
        out = binary_metrics(probs, labels)
        if rows.shape[1] > 2:
            bayes = binary_metrics(rows[:, 2], labels)
            out["bayes_auc"] = bayes["auc"]
            out["bayes_logloss"] = bayes["logloss"]
            out["bayes_ne"] = bayes["ne"]
            out["auc_gap_closed"] = (out["auc"] - 0.5) / (bayes["auc"] - 0.5)
        return out


def _gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Concatenate [n_r, C] tensors from all ranks in rank order (gloo/nccl-safe)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    parts: list[torch.Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return torch.cat([p for p in parts if p is not None])
