"""Synthetic Criteo-shaped CTR data drawn from a planted model whose optimum is known.

The planted click model (per row, features f with ids i_f and dense values z_j):

    logit = b0 + sum_f bias_f[i_f] + sum_{(f,g) in P} <u_f[i_f], u_g[i_g]> + sum_j w_j z_j

per-id biases, latent-factor interactions on a random set of feature pairs P (exactly the
structure DLRM's dot interaction can represent) and a linear dense part. `b0` is calibrated so the
base CTR is `target_ctr`. Ids follow a Zipf law per feature (rank r has probability ~ (r+1)^-alpha,
ranks scattered over the id space by a fixed bijection), dense features are heavy-tailed counts
stored as log(1 + count) with some missing (stored as 0, as the Criteo transform does).

Every row stores its true click probability (`ctr_true`), so any split's Bayes-optimal AUC and
logloss can be computed from the file. Generation is chunked (bounded memory), each chunk seeded
from (seed, split, chunk index), so the output is deterministic for a config.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys.config import SyntheticConfig
from recsys.data.features import DatasetManifest, SparseFeature, SplitInfo
from recsys.data.schema import SplitWriter
from recsys.utils.atomic import atomic_directory

GENERATOR_VERSION = 1
SPLITS = ("train", "valid", "test")
TRUE_CTR_COLUMN = "ctr_true"


def scaled_cardinalities(cfg: SyntheticConfig) -> list[int]:
    """Criteo-shaped table sizes scaled by `cardinality_scale`; tiny tables keep their size."""
    return [
        max(min(c, cfg.min_cardinality), math.ceil(c * cfg.cardinality_scale))
        for c in cfg.cardinalities
    ]


def config_key(cfg: SyntheticConfig) -> str:
    """Stable short hash of everything that changes the generated rows (not chunking/file size)."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in ("rows_per_file",)}
    fields["version"] = GENERATOR_VERSION
    blob = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class PlantedCTRModel:
    """The ground-truth click model: draws feature rows and their true click probabilities."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.cardinalities = scaled_cardinalities(cfg)
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        n_sparse = len(self.cardinalities)
        k = cfg.latent_dim
        self.biases = [
            rng.normal(0, cfg.bias_std, v).astype(np.float32) for v in self.cardinalities
        ]
        all_pairs = [(f, g) for f in range(n_sparse) for g in range(f + 1, n_sparse)]
        chosen = rng.choice(len(all_pairs), size=min(cfg.num_pairs, len(all_pairs)), replace=False)
        self.pairs = [all_pairs[i] for i in sorted(chosen)]
        factor_std = math.sqrt(cfg.pair_scale) / k**0.25  # each pair's term has std pair_scale
        self.factors = [
            rng.normal(0, factor_std, (v, k)).astype(np.float32) for v in self.cardinalities
        ]
        self.dense_weights = rng.normal(0, cfg.dense_weight_std, cfg.num_dense).astype(np.float32)
        self.dense_mu = rng.uniform(0.0, 4.0, cfg.num_dense)  # log-count location per column
        self.dense_sigma = rng.uniform(0.5, 1.5, cfg.num_dense)
        self.dense_missing = rng.uniform(0.0, 2 * cfg.dense_missing_rate, cfg.num_dense)
        self._zipf_cdf = [self._zipf(v, cfg.zipf_alpha) for v in self.cardinalities]
        self._scatter = [self._bijection(v, rng) for v in self.cardinalities]
        self.intercept = 0.0
        self.intercept = self._calibrate_intercept(cfg.target_ctr)

    @staticmethod
    def _zipf(v: int, alpha: float) -> np.ndarray:
        w = np.arange(1, v + 1, dtype=np.float64) ** -alpha
        cdf = np.cumsum(w)
        return cdf / cdf[-1]

    @staticmethod
    def _bijection(v: int, rng: np.random.Generator) -> tuple[int, int]:
        """(a, c) with gcd(a, v) = 1, so rank -> (a * rank + c) mod v is a permutation."""
        while True:
            a = int(rng.integers(1, max(v, 2)))
            if math.gcd(a, v) == 1:
                return a, int(rng.integers(0, v))

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Draw n rows: {'ids': [n, F] int64, 'dense': [n, D] float32, 'ctr': [n], 'label': [n]}."""
        ids = np.empty((n, len(self.cardinalities)), dtype=np.int64)
        for f, (cdf, (a, c)) in enumerate(zip(self._zipf_cdf, self._scatter, strict=True)):
            ranks = np.searchsorted(cdf, rng.random(n), side="right")
            np.minimum(ranks, len(cdf) - 1, out=ranks)
            ids[:, f] = (ranks * a + c) % len(cdf)
        counts = np.floor(rng.lognormal(self.dense_mu, self.dense_sigma, (n, self.cfg.num_dense)))
        dense = np.log1p(counts).astype(np.float32)
        dense[rng.random(dense.shape) < self.dense_missing] = 0.0  # missing -> 0
        ctr = self._sigmoid(self._logit(ids, dense))
        label = (rng.random(n) < ctr).astype(np.int8)
        return {"ids": ids, "dense": dense, "ctr": ctr.astype(np.float32), "label": label}

    def _logit(self, ids: np.ndarray, dense: np.ndarray) -> np.ndarray:
        logit = np.full(ids.shape[0], self.intercept, dtype=np.float64)
        for f, bias in enumerate(self.biases):
            logit += bias[ids[:, f]]
        for f, g in self.pairs:
            logit += np.einsum("nk,nk->n", self.factors[f][ids[:, f]], self.factors[g][ids[:, g]])
        z = (dense - self.dense_mu.astype(np.float32)) / self.dense_sigma.astype(np.float32)
        logit += z @ self.dense_weights
        return logit

    @staticmethod
    def _sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    def _calibrate_intercept(self, target_ctr: float, pilot_rows: int = 200_000) -> float:
        """Bisect the intercept so the mean true CTR of a pilot sample equals target_ctr."""
        rng = np.random.default_rng([self.cfg.seed, 0xCA11B])
        pilot = self.sample(rng, pilot_rows)
        base = self._logit(pilot["ids"], pilot["dense"])  # intercept currently 0
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if self._sigmoid(base + mid).mean() < target_ctr:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2


def dense_names(n: int) -> list[str]:
    return [f"I{j + 1}" for j in range(n)]


def sparse_names(n: int) -> list[str]:
    return [f"C{f + 1}" for f in range(n)]


def rows_table(rows: dict[str, np.ndarray]) -> pa.Table:
    """Arrow table in the recsys schema from a `PlantedCTRModel.sample` result."""
    cols: dict[str, pa.Array] = {"label": pa.array(rows["label"])}
    for j, name in enumerate(dense_names(rows["dense"].shape[1])):
        cols[name] = pa.array(rows["dense"][:, j])
    for f, name in enumerate(sparse_names(rows["ids"].shape[1])):
        cols[name] = pa.array(rows["ids"][:, f])
    cols[TRUE_CTR_COLUMN] = pa.array(rows["ctr"])
    return pa.table(cols)


def generate(cfg: SyntheticConfig, out_dir: Path) -> DatasetManifest:
    """Generate train/valid/test into `out_dir` atomically and return the manifest."""
    model = PlantedCTRModel(cfg)
    names = sparse_names(len(model.cardinalities))
    generator = {
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "intercept": model.intercept,
        "pairs": [list(p) for p in model.pairs],
    }
    manifest = DatasetManifest(
        name=f"synthetic-{config_key(cfg)}",
        dense_features=dense_names(cfg.num_dense),
        sparse_features=[
            SparseFeature(n, v) for n, v in zip(names, model.cardinalities, strict=True)
        ],
        splits={},
        true_ctr_column=TRUE_CTR_COLUMN,
        extra={"generator": generator},
    )
    rows = {"train": cfg.rows_train, "valid": cfg.rows_valid, "test": cfg.rows_test}
    with atomic_directory(out_dir, overwrite=True) as staging:
        splits: dict[str, SplitInfo] = {}
        for split_id, split in enumerate(SPLITS):
            writer = SplitWriter(staging, split, manifest, cfg.rows_per_file)
            for chunk, start in enumerate(range(0, rows[split], cfg.chunk_rows)):
                n = min(cfg.chunk_rows, rows[split] - start)
                rng = np.random.default_rng([cfg.seed, split_id, chunk])
                writer.write(rows_table(model.sample(rng, n)))
            writer.close()
            splits[split] = SplitInfo(writer.files, writer.rows, writer.positives)
        manifest = DatasetManifest(**{**manifest.__dict__, "splits": splits})
        manifest.save(staging)
    return manifest
