"""Raw Criteo click logs (Kaggle, 1TB) -> the recsys Parquet format; see docs/preprocess.md.

Modules, one job each: `sources` (find and stream raw files), `parse` (lines -> validated
columns), `transform` (dense and categorical values -> model inputs), `vocab` (counting values),
`splits` (row -> split), `work` (what a worker does per chunk), `totals` (counts and the
manifest), `pipeline` (the passes, resume, publishing).
"""

from recsys.preprocess.errors import PreprocessError

__all__ = ["PreprocessError", "preprocess"]


def __getattr__(name: str):
    if name == "preprocess":
        from recsys.preprocess.pipeline import preprocess

        return preprocess
    raise AttributeError(name)
