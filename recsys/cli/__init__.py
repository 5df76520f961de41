"""Command-line entry points; the only modules that see Hydra's DictConfig."""
