"""A data set's feature manifest without its rows: what planning on paper needs.

Sources, first found wins: the manifest on disk (a converted or generated data set), the
synthetic generator's table sizes (computed, nothing generated), `data.table_sizes`.
"""

from __future__ import annotations

from recsys.config import DataConfig
from recsys.data.features import MANIFEST_NAME, DatasetError, DatasetManifest, SparseFeature
from recsys.data.registry import dataset_dir
from recsys.data.synthetic import dense_names, scaled_cardinalities, sparse_names

CRITEO_NUM_DENSE = 13


def paper_manifest(cfg: DataConfig) -> tuple[DatasetManifest, str]:
    """(manifest with feature names and table sizes, where the sizes came from)."""
    directory = dataset_dir(cfg)
    if (directory / MANIFEST_NAME).is_file():
        return DatasetManifest.load(directory), f"manifest {directory / MANIFEST_NAME}"
    if cfg.kind == "synthetic":
        sizes, num_dense = scaled_cardinalities(cfg.synthetic), cfg.synthetic.num_dense
        source = f"synthetic sizes (scale {cfg.synthetic.cardinality_scale:g})"
    elif cfg.table_sizes:
        sizes, num_dense = list(cfg.table_sizes), CRITEO_NUM_DENSE
        source = f"data.table_sizes of data={cfg.name}"
    else:
        raise DatasetError(
            f"no table sizes for data={cfg.name}: no manifest at {directory} and no "
            f"data.table_sizes (convert it with recsys-preprocess, or set data.table_sizes)"
        )
    features = [SparseFeature(n, s) for n, s in zip(sparse_names(len(sizes)), sizes, strict=True)]
    manifest = DatasetManifest(cfg.name, dense_names(num_dense), features, splits={})
    return manifest, source
