"""Where data sets live and how a `data` config becomes a directory plus its manifest.

Synthetic data sets are generated on first use under `<root>/synthetic/<config hash>` (so any
change of the generator config gets its own cache entry); Parquet data sets (e.g. written by
`recsys-preprocess`) live at `<root>/<name>` unless `data.path` says otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from recsys.config import DataConfig
from recsys.data.features import DatasetError, DatasetManifest
from recsys.data.synthetic import config_key, generate

log = logging.getLogger(__name__)

REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else REPO_DATA_DIR


def dataset_dir(cfg: DataConfig) -> Path:
    """The directory holding `manifest.json` for this data config."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    if cfg.kind == "synthetic":
        return data_root(cfg) / "synthetic" / config_key(cfg.synthetic)
    if cfg.kind == "parquet":
        return data_root(cfg) / cfg.name
    raise DatasetError(f"data.kind must be 'synthetic' or 'parquet', got {cfg.kind!r}")


def prepare_dataset(
    cfg: DataConfig, is_writer: bool = True, barrier: Callable[[], None] | None = None
) -> tuple[Path, DatasetManifest]:
    """Return (directory, manifest), generating synthetic data first if it is not cached.

    Only the writer (rank 0) generates; the others wait at `barrier`, then read the manifest.
    """
    directory = dataset_dir(cfg)
    if cfg.kind == "synthetic" and is_writer and not (directory / "manifest.json").is_file():
        log.info("generating synthetic data set into %s", directory)
        generate(cfg.synthetic, directory)
    if barrier is not None:
        barrier()
    if cfg.kind == "parquet" and not directory.is_dir():
        raise DatasetError(
            f"data set {cfg.name!r} not found at {directory} (data.root={data_root(cfg)}): "
            f"convert the raw files first with `recsys-preprocess data={cfg.name} data.raw=...`"
        )
    return directory, DatasetManifest.load(directory)
