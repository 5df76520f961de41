"""Data: the feature contract, the Parquet format, the synthetic generator and the loader."""
