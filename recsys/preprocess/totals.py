"""Run totals: every input line is written, rejected (per reason) or down-sampled, never lost.

`RunTotals` adds up the per-chunk counts; `check_balance` proves rows in = written + rejected +
down-sampled; `check_bad_fraction` enforces `max_bad_fraction`; `build_manifest` writes it all
into the data set's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.data.features import DatasetManifest, SparseFeature, SplitInfo
from recsys.preprocess.errors import PreprocessError
from recsys.preprocess.parse import DENSE_NAMES, SPARSE_NAMES
from recsys.preprocess.splits import SPLITS


@dataclass
class RunTotals:
    rows_in: int = 0
    downsampled: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    splits: dict[str, dict] = field(
        default_factory=lambda: {s: {"files": [], "rows": 0, "positives": 0} for s in SPLITS}
    )

    def add(self, stats: dict) -> None:
        """Fold in one chunk's counts (as `work.convert_chunk` returns them)."""
        self.rows_in += stats["rows_in"]
        self.downsampled += stats.get("downsampled", 0)
        for mine, theirs in ((self.rejected, stats["rejected"]), (self.repaired, stats["repaired"]),
                             (self.missing, stats["missing"])):  # fmt: skip
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for name, part in stats["splits"].items():
            split = self.splits[name]
            split["files"].append(part["file"])
            split["rows"] += part["rows"]
            split["positives"] += part["positives"]

    @property
    def written(self) -> int:
        return sum(s["rows"] for s in self.splits.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def summary(self) -> dict:
        return {
            "rows_in": self.rows_in, "rows_written": self.written,
            "rows_rejected": self.rejected_total, "rows_downsampled": self.downsampled,
            "rejected": dict(sorted(self.rejected.items())),
            "repaired": dict(sorted(self.repaired.items())),
            "splits": {k: v["rows"] for k, v in self.splits.items()},
        }  # fmt: skip


def check_balance(totals: RunTotals) -> None:
    accounted = totals.written + totals.rejected_total + totals.downsampled
    if accounted != totals.rows_in:
        raise PreprocessError(
            f"internal error: {totals.rows_in} lines read but {accounted} accounted for "
            f"({totals.summary()})"
        )


def check_bad_fraction(rows_in: int, rejected: int, limit: float, where: str) -> None:
    """Abort when more than `limit` of the lines read so far were rejected."""
    if rows_in and rejected / rows_in > limit:
        raise PreprocessError(
            f"{rejected} of {rows_in} lines ({100 * rejected / rows_in:.3f}%) were rejected, "
            f"more than data.preprocess.max_bad_fraction={limit}; see {where} for each line and "
            "its reason (raise max_bad_fraction to accept them)"
        )


def build_manifest(
    name: str, totals: RunTotals, table_sizes: list[int], negative_sample_rate: float,
    sources: list[dict], transform: dict,
) -> DatasetManifest:  # fmt: skip
    written = totals.written
    missing = {c: (totals.missing.get(c, 0) / written if written else 0.0)
               for c in DENSE_NAMES + SPARSE_NAMES}  # fmt: skip
    splits = {
        k: SplitInfo(sorted(v["files"]), v["rows"], v["positives"])
        for k, v in totals.splits.items()
    }
    return DatasetManifest(
        name=name,
        dense_features=list(DENSE_NAMES),
        sparse_features=[
            SparseFeature(n, s) for n, s in zip(SPARSE_NAMES, table_sizes, strict=True)
        ],
        splits=splits,
        negative_sample_rate=negative_sample_rate,
        missing_rate=missing,
        sources=sources,
        rejects=dict(sorted(totals.rejected.items())),
        transform=transform,
        extra={"preprocess": totals.summary()},
    )
