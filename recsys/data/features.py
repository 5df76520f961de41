"""The feature contract shared by preprocessing, training, export and serving.

A `DatasetManifest` describes one data set on disk: its label, dense and sparse features (with
table sizes), the files of each split and their row counts. It is pure Python and round-trips
through JSON (`manifest.json` beside the Parquet files), so a serving host can read it without
the training stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class DatasetError(RecsysError, ValueError):
    """A data set on disk does not match its manifest or the recsys format."""


@dataclass(frozen=True)
class SparseFeature:
    """One categorical feature: its Parquet column and the size of its embedding table.

    `multi_hot` features are stored as list<int64> columns; single-hot ones as int64 columns.
    Ids are in [0, num_embeddings) unless the model hashes them into the table.
    """

    name: str
    num_embeddings: int
    multi_hot: bool = False


@dataclass(frozen=True)
class SplitInfo:
    """Files (relative to the manifest's directory) and counts of one split."""

    files: list[str]
    rows: int
    positives: int

    @property
    def ctr(self) -> float:
        return self.positives / self.rows if self.rows else float("nan")


@dataclass(frozen=True)
class DatasetManifest:
    """Everything a reader needs to know about a data set in the recsys Parquet format."""

    name: str
    dense_features: list[str]
    sparse_features: list[SparseFeature]
    splits: dict[str, SplitInfo]
    label: str = "label"
    true_ctr_column: str | None = None
    negative_sample_rate: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Provenance, filled by recsys-preprocess (empty for synthetic data; optional in JSON):
    missing_rate: dict[str, float] = field(default_factory=dict)  # column -> share missing
    sources: list[dict[str, Any]] = field(default_factory=list)  # path, size, lines, crc32
    rejects: dict[str, int] = field(default_factory=dict)  # reason -> rejected lines
    transform: dict[str, Any] = field(default_factory=dict)  # how raw values became columns

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse_features]

    @property
    def table_sizes(self) -> list[int]:
        return [f.num_embeddings for f in self.sparse_features]

    @property
    def base_ctr(self) -> float:
        """Click-through rate of the training split (as stored, before any correction)."""
        return self.split("train").ctr

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise DatasetError(
                f"data set {self.name!r} has no split {name!r} (has: {sorted(self.splits)})"
            )
        return self.splits[name]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "<manifest>") -> DatasetManifest:
        try:
            version = obj.get("format_version", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise DatasetError(f"{source}: format_version {version}, expected {FORMAT_VERSION}")
            return cls(
                name=obj["name"],
                dense_features=list(obj["dense_features"]),
                sparse_features=[SparseFeature(**f) for f in obj["sparse_features"]],
                splits={k: SplitInfo(**v) for k, v in obj["splits"].items()},
                label=obj.get("label", "label"),
                true_ctr_column=obj.get("true_ctr_column"),
                negative_sample_rate=float(obj.get("negative_sample_rate", 1.0)),
                extra=dict(obj.get("extra", {})),
                missing_rate={k: float(v) for k, v in obj.get("missing_rate", {}).items()},
                sources=[dict(s) for s in obj.get("sources", [])],
                rejects={k: int(v) for k, v in obj.get("rejects", {}).items()},
                transform=dict(obj.get("transform", {})),
            )
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{source}: malformed manifest ({type(e).__name__}: {e})") from e

    @classmethod
    def load(cls, directory: str | Path) -> DatasetManifest:
        """Read `<directory>/manifest.json`, with an error that names the path if absent."""
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise DatasetError(
                f"no data set at {Path(directory)}: {path} does not exist "
                "(generate it with data=synthetic or convert raw data with recsys-preprocess)"
            )
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e})") from e
        return cls.from_json(obj, source=str(path))

    def save(self, directory: str | Path) -> None:
        """Write `<directory>/manifest.json` atomically (last step of writing a data set)."""
        from recsys.utils.atomic import atomic_write_json

        atomic_write_json(Path(directory) / MANIFEST_NAME, self.to_json())
