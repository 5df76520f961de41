"""Structured configs: the typed schema behind every YAML file in `conf/`.

Each dataclass is registered in Hydra's ConfigStore as the base of its group (`data/base`,
`model/base`, ...). YAML files extend them through `defaults:`, so an unknown key or a value of
the wrong type fails at start-up with Hydra's error naming it. Only `recsys.cli` reads these;
library code takes plain typed arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

# Criteo Kaggle (Display Advertising Challenge) cardinalities of C1..C26, from its preprocessed
# counts (the same figures the DLRM reference and torchrec's recipe print).
CRITEO_KAGGLE_CARDINALITIES: list[int] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]  # fmt: skip


@dataclass
class SyntheticConfig:
    """Planted CTR model and the shape of the generated data (see recsys/data/synthetic.py)."""

    rows_train: int = 2_000_000
    rows_valid: int = 100_000
    rows_test: int = 200_000
    num_dense: int = 13
    cardinalities: list[int] = field(default_factory=lambda: list(CRITEO_KAGGLE_CARDINALITIES))
    cardinality_scale: float = 0.001
    min_cardinality: int = 16
    zipf_alpha: float = 1.1
    dense_missing_rate: float = 0.15
    latent_dim: int = 4
    num_pairs: int = 24
    bias_std: float = 0.18
    pair_scale: float = 0.12
    dense_weight_std: float = 0.2
    target_ctr: float = 0.25
    seed: int = 2024
    chunk_rows: int = 262_144
    rows_per_file: int = 1_048_576


@dataclass
class PreprocessConfig:
    """Raw Criteo TSV -> recsys Parquet (recsys-preprocess; see docs/preprocess.md)."""

    layout: str = "kaggle"  # kaggle: rows cut into 7 days | 1tb: day_0..day_23, last one halved
    categorical: str = "vocab"  # vocab: contiguous ids for frequent values | hash: mod range
    frequency_threshold: int = 3  # vocab mode: values seen fewer times share the OOV id
    count_memory_mb: int = 2048  # vocab mode: value counts beyond this spill to sorted runs on disk
    max_ind_range: int = 40_000_000  # hash mode: ids = 1 + value mod this (per feature)
    max_ind_range_per_feature: dict[str, int] = field(default_factory=dict)  # e.g. {C3: 1000000}
    negative_sample_rate: float = 1.0  # keep this fraction of training negatives
    seed: int = 0  # seeds the negative down-sampling (per chunk, so resume is exact)
    max_bad_fraction: float = 0.001  # abort when more than this share of lines is rejected
    workers: int = 0  # worker processes; 0 = all cores
    chunk_mb: float = 64.0  # input read per work unit (one output part per split it touches)
    compression: str = "snappy"  # Parquet codec: snappy | lz4 | zstd | none (~3x disk, less CPU)
    labelled: bool = True  # False: the 39-field test.txt layout (all rows go to `test`)
    vocab_from: str | None = None  # vocab mode without training rows: reuse this data set's vocab
    resume: bool = True  # continue a killed run from its finished parts
    progress: bool = True  # progress bar (rows/s, ETA) on stderr


@dataclass
class DataConfig:
    """Which data set to train on and where data sets live."""

    name: str = "synthetic"
    kind: str = "synthetic"  # synthetic: generated on first use; parquet: preprocessed on disk
    root: str | None = None  # default: the repository's data/ folder
    path: str | None = None  # default: <root>/<name> (synthetic: <root>/synthetic/<config hash>)
    raw: str | None = None  # raw input for recsys-preprocess (file, glob or directory; .gz ok)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    table_sizes: list[int] | None = None  # sizes on paper (recsys-plan), when no manifest yet


@dataclass
class ModelConfig:
    """DLRM: bottom MLP on dense features, embedding bags, interaction, top MLP."""

    name: str = "dlrm"
    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [64, 32])  # + embedding_dim output
    top_mlp: list[int] = field(default_factory=lambda: [128, 64])  # + 1 logit output
    interaction: str = "dot"  # dot | concat
    interaction_self: bool = False  # dot: include each feature's dot with itself
    # dot: output padded with zero columns to a multiple of this (1: none); MKL's products on
    # the top MLP's first layer run faster on 368 columns than on Criteo's 367
    interaction_pad: int = 16
    hash_ids: bool = False  # ids >= table size are hashed (mod) instead of rejected


@dataclass
class DenseOptimConfig:
    name: str = "adam"  # adam | adagrad | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd only
    eps: float = 1e-8
    # sgd without momentum, one process: the fused MLPs take the step inside their backward
    in_backward: bool = False


@dataclass
class EmbeddingOptimConfig:
    name: str = "rowwise_adagrad"  # rowwise_adagrad | adagrad | sgd (fused into backward)
    lr: float = 0.05
    eps: float = 1e-8


@dataclass
class OptimConfig:
    dense: DenseOptimConfig = field(default_factory=DenseOptimConfig)
    embedding: EmbeddingOptimConfig = field(default_factory=EmbeddingOptimConfig)
    warmup_steps: int = 100
    warmup_start_factor: float = 0.01
    decay: str = "cosine"  # none | linear | cosine
    decay_start_step: int = 0
    final_lr_factor: float = 0.1


@dataclass
class TrainerConfig:
    batch_size: int = 2048  # per rank; the global batch is batch_size x world size
    eval_batch_size: int = 16384
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs when set
    eval_every: int = 0  # steps between validations; 0 = at the end only
    eval_rows: int | None = None  # cap on validation rows during training (None = all)
    log_every: int = 50
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto | none | <checkpoint or run directory>
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast of the dense layers)
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    # Keep freed memory mapped (glibc mallopt) instead of page-faulting it back every step.
    retain_freed_memory: bool = True
    # Embedding tables (and their fused optimizer state) moved onto 2 MiB transparent huge
    # pages after init (madvise MADV_COLLAPSE, Linux 6.1+; a no-op where unsupported).
    huge_page_tables: bool = True
    # Subnormal floats flushed to zero (x86 FTZ + DAZ, process-wide): arithmetic on them takes a
    # ~100-cycle microcode assist, and training makes them (Adam's moments of weights whose
    # gradient stays zero, the gradients of a well-fit model): 3.3x slower steps seen.
    flush_denormal: bool = True
    # CPU backward + fused update inside fbgemm's embedding tables: recsys
    # (kernels/csrc/tbe_backward.cpp, 3.5-15x fbgemm 1.8's here) | fbgemm. Same tables,
    # optimizer state and arithmetic either way.
    embedding_kernels: str = "recsys"
    # One process on the CPU in fp32: the step's forward and loss as one C++ call of the same
    # operators the modules would call (recsys/training/fused_forward.py; bit-identical), where
    # the model's configuration allows it; false always runs the modules.
    fused_forward: bool = True
    prefetch_batches: int = 4  # batches read ahead by the loader thread (at least 4,096 rows)
    shuffle: bool = True
    tensorboard: bool = True


@dataclass
class DistConfig:
    """Process group, device and sharding choices (multi-host topology lives here too)."""

    name: str = "cpu"
    backend: str = "gloo"  # gloo | nccl
    device: str = "cpu"  # cpu | cuda
    sharding_types: list[str] = field(
        default_factory=lambda: ["table_wise", "column_wise", "row_wise", "table_row_wise"]
    )
    compute_kernel: str = "fused"
    pin_sharding: dict[str, str] = field(default_factory=dict)  # table -> sharding type
    pin_kernel: dict[str, str] = field(default_factory=dict)  # table -> compute kernel
    timeout_s: int = 300
    # One host's hardware, for the sharding planner (recsys-plan). GB = 2**30 bytes and GB/s =
    # 2**30 bytes/s, as torchrec's planner counts; the defaults are the planner's own.
    gpus_per_host: int = 1  # ranks per host (the planner's local world size)
    hosts: list[int] = field(default_factory=lambda: [1])  # host counts recsys-plan plans for
    hbm_gb: float = 32.0  # device memory per GPU
    ddr_gb: float = 128.0  # host memory, shared by the host's GPUs
    hbm_bw_gbps: float = 897.0  # device memory bandwidth per GPU
    intra_host_bw_gbps: float = 600.0  # GPU-to-GPU inside a host (NVLink), per GPU
    inter_host_bw_gbps: float = 12.5  # host-to-host network, per host


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    dist: DistConfig = field(default_factory=DistConfig)


@dataclass
class PreprocessJobConfig:
    """recsys-preprocess: only the data group (the same one training reads)."""

    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class PlanOptions:
    """recsys-plan's own options (see conf/plan.yaml)."""

    batch_size: int = 2048  # per rank, as trainer.batch_size (sizes the planner's IO buffers)
    output: str | None = None  # JSON report path; default: plan.json in the run directory
    hbm_reserve_fraction: float = 0.15  # HBM kept free besides dense layers and inputs


@dataclass
class PlanJobConfig:
    """recsys-plan: shard the model on paper for each topology in dist.hosts."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    plan: PlanOptions = field(default_factory=PlanOptions)


def register_configs() -> None:
    """Register the schemas with Hydra (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="data", name="base", node=DataConfig)
    cs.store(group="model", name="base", node=ModelConfig)
    cs.store(group="optim", name="base", node=OptimConfig)
    cs.store(group="trainer", name="base", node=TrainerConfig)
    cs.store(group="dist", name="base", node=DistConfig)
