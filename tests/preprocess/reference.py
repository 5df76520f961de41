"""An independent, deliberately plain parse of Criteo lines, and a helper to run the pipeline."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.config import PreprocessConfig

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "criteo_kaggle_sample"


def ref_row(line: str, labelled: bool = True) -> dict:
    """label, dense (log1p of max(int, 0); missing 0), raw hex values (None = missing)."""
    fields = line.rstrip("\r\n").split("\t")
    n = 40 if labelled else 39
    fields += [""] * (n - len(fields))
    label = int(fields[0]) if labelled else 0
    start = 1 if labelled else 0
    dense = [math.log1p(max(int(v), 0)) if v else 0.0 for v in fields[start : start + 13]]
    cats = [int(v, 16) if v else None for v in fields[start + 13 : start + 39]]
    return {"label": label, "dense": dense, "cats": cats}


def read_split(directory: Path, split: str) -> dict[str, np.ndarray]:
    """All columns of a split, in file order."""
    import json

    files = json.loads((directory / "manifest.json").read_text())["splits"][split]["files"]
    tables = [pq.read_table(directory / f) for f in files]
    if not tables:
        return {}
    return {
        name: np.concatenate([t[name].to_numpy() for t in tables])
        for name in tables[0].column_names
    }


def mixed_file(tmp_path: Path, clean_after: bool = False) -> Path:
    """train.tsv: the clean fixture 4 times, the bad-rows fixture, a blank line, and (when
    `clean_after`) the clean fixture once more after the bad rows."""
    clean = (FIXTURES / "kaggle_clean.tsv").read_bytes()
    raw = tmp_path / "train.tsv"
    bad = (FIXTURES / "kaggle_bad.tsv").read_bytes()
    raw.write_bytes(clean * 4 + bad + b"\n" + (clean if clean_after else b""))
    return raw


def config(**kw) -> PreprocessConfig:
    """Test settings: one worker, no progress bar, everything else as given."""
    return replace(PreprocessConfig(workers=1, progress=False), **kw)


def run(raw: Path | str, out: Path, **kw):
    from recsys.preprocess.pipeline import preprocess

    return preprocess(out.name, out, str(raw), config(**kw))
