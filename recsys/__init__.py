"""recsys: DLRM-centric recommendation-model training.

One data path: Hydra config -> Parquet data (or the synthetic CTR generator) -> DLRM behind
torchrec's DistributedModelParallel -> metrics, TensorBoard, checkpoints -> export -> serving.
"""

__version__ = "0.1.0"
