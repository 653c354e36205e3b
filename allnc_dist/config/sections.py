"""The config sections other than the method's: data, model, optimisation, distributed, tracking
and the run loop (`train`). `Section` is the base of every section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)



# --------------------------------------------------------------------------------------------- data
class DataConfig(Section):
    name: Literal["digits_lt", "synthetic_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt", "inat2018"] = Field(
        "digits_lt", description="The dataset; imagenet_lt and inat2018 exist as shards only (data.source=shards)."
    )
    root: str | None = Field(None, description="Folder holding cifar-10-batches-py / cifar-100-python.")
    imbalance_ratio: float = Field(100.0, ge=1.0, description="n_max / n_min of the exponential profile.")
    # digits-LT: images per class held out for the balanced test split.
    test_per_class: int = Field(50, ge=1)
    # synthetic-LT shape (ImageNet-LT: num_classes=1000, max_per_class=1280, imbalance_ratio=256).
    num_classes: int = Field(10, ge=2)
    max_per_class: int = Field(500, ge=1)
    profile: Literal["exponential", "step", "imagenet_lt"] = Field(
        "exponential",
        description="Built-in datasets' class counts: exponential (n_max IR^(-k/(K-1))), step (half the classes "
        "at n_max, half at n_max / IR: Fang et al. 2021's minority-collapse setting), or imagenet_lt "
        "(synthetic-LT only), ImageNet-LT's count shape (1000 classes, 1280 down to 5) scaled to max_per_class; "
        "imbalance_ratio is then unused.",
    )
    image_size: int = Field(32, ge=4)
    channels: int = Field(3, ge=1)
    synthetic_test_per_class: int = Field(20, ge=1)
    val_per_class: int = Field(
        0, ge=0, description="Built-in datasets: images per class held out as a balanced validation split, "
        "disjoint from train and test (digits-LT and CIFAR-LT take them from the training images); 0: no val split.",
    )
    augment: Literal["none", "shift", "cifar", "imagenet"] = "none"
    randaugment: bool = Field(False, description="RandAugment on top of the ImageNet-style augmentation.")
    batch_size: int = Field(
        128, ge=1, description="Each worker's batch at distributed.num_workers workers (the global batch is "
        "num_workers x batch_size; an elastic run on fewer workers gives each a larger share of it).",
    )
    loader_workers: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    # Streaming from WebDataset shards written by `allnc shards` (source=shards).
    source: Literal["memory", "shards"] = Field(
        "memory", description="memory: build the dataset named by data.name; shards: stream data.shards."
    )
    shards: str | None = Field(None, description="Folder holding train/ and test/ shard sets with index.json.")
    resampled: bool = Field(False, description="Draw shards with replacement; epochs of data.epoch_length samples.")
    epoch_length: int | None = Field(None, ge=1, description="Samples per rank and epoch in resampled mode.")
    on_bad_sample: Literal["raise", "skip"] = "raise"
    verify_checksums: bool = Field(True, description="Check each shard's sha256 against index.json once per process.")
    builtin_sha256: str | None = Field(
        None, description="Set by the jobs that write the built-in dataset data.name as shards: the sha256 of the "
        "set's index files. A Ray node that cannot see data.shards writes the set again into its own scratch "
        "folder and checks it against this.",
    )

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if self.name in ("imagenet_lt", "inat2018") and self.source != "shards":
            raise ValueError(
                f"data.name={self.name!r} is read from shards: write them with `allnc shards` and set "
                "data.source=shards data.shards=<folder> (the jobs' --data)"
            )
        if self.source == "shards" and self.shards is None:
            raise ValueError("data.source='shards' needs data.shards, the folder written by `allnc shards`")
        if self.resampled and self.epoch_length is None:
            raise ValueError("data.resampled=true needs data.epoch_length (samples per rank and epoch)")
        return self


# -------------------------------------------------------------------------------------------- model
class ModelConfig(Section):
    arch: Literal["small_cnn", "resnet32", "resnet50", "resnext50"] = "small_cnn"
    norm: Literal["batch", "group", "none"] = Field(
        "batch", description="Normalisation layers (small_cnn, resnet32); 'none' gives a BN-free model."
    )
    width: int = Field(32, ge=1, description="Base channel width of small_cnn.")


# ----------------------------------------------------------------------------------------- optimise
class OptimConfig(Section):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    milestones: list[float] = Field(default_factory=lambda: [0.8, 0.9], description="Fractions of epochs.")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    grad_clip: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _check_milestones(self) -> OptimConfig:
        if any(not 0.0 < m <= 1.0 for m in self.milestones) or self.milestones != sorted(self.milestones):
            raise ValueError(f"optim.milestones must be increasing fractions in (0, 1], got {self.milestones}")
        return self


# -------------------------------------------------------------------------------------- distributed
class DistributedConfig(Section):
    num_workers: int = Field(
        1, ge=1, description="Ray Train workers (one per GPU); with min_workers, the most. 'M..N' sets min_workers=M "
        "and num_workers=N.",
    )
    min_workers: int | None = Field(
        None, ge=1, description="Elastic training: the run goes on with as few as this many workers when nodes are "
        "lost, and grows back to num_workers when they return (Ray Train's num_workers=(min, max)); the global batch "
        "stays num_workers x data.batch_size. Unset: always num_workers.",
    )
    resize_check_s: float = Field(
        60.0, gt=0.0, description="Elastic training: how often Ray Train looks for room to grow the running worker "
        "group (each resize restarts it from the last checkpoint).",
    )
    gpus_per_worker: float = Field(0.0, ge=0.0, description="0: CPU workers (gloo); else NCCL.")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="Logical CPUs Ray reserves per worker.")
    zero_stage: Literal[0, 1, 2, 3] = 1
    zero3_persistence_threshold: int = Field(
        100_000, ge=0, description="ZeRO-3 keeps parameters with at most this many elements whole on every "
        "rank (DeepSpeed's stage3_param_persistence_threshold); 0 partitions every parameter.",
    )
    grad_accumulation: int = Field(1, ge=1, description="Batches per optimiser update (DeepSpeed).")
    storage_path: str | None = Field(
        None, description="Ray Train's checkpoint storage: shared (NFS, S3) for multi-node; default <run dir>/ray."
    )
    max_failures: int = Field(0, ge=0, description="Worker-group restarts after a failure (Ray FailureConfig).")
    check_consistency: bool = Field(
        False, description="After every step, check that parameters and class means agree on all ranks (debugging)."
    )
    rendezvous: Literal["auto", "file", "tcp"] = Field(
        "auto", description="auto: a file store when the workers share one node (no port opened), Ray's TCP "
        "rendezvous when they span nodes; decided where they are placed, at every (re)start."
    )

    @model_validator(mode="before")
    @classmethod
    def _worker_range(cls, values):
        """num_workers='M..N' (Ray Train's num_workers=(M, N)) is min_workers=M, num_workers=N."""
        if isinstance(values, dict) and isinstance(values.get("num_workers"), str):
            match = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", values["num_workers"])
            if match:
                values = {**values, "min_workers": int(match[1]), "num_workers": int(match[2])}
        return values

    @model_validator(mode="after")
    def _check_combinations(self) -> DistributedConfig:
        if self.check_consistency and self.zero_stage == 3:
            raise ValueError("distributed.check_consistency compares whole parameters, which ZeRO-3 partitions")
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(f"distributed.min_workers ({self.min_workers}) is above distributed.num_workers "
                             f"({self.num_workers}), the most workers an elastic run uses")
        return self

    def worker_counts(self) -> range:
        """Every number of workers the run may train on."""
        return range(self.min_workers or self.num_workers, self.num_workers + 1)


# ----------------------------------------------------------------------------------------- tracking
class TrackingConfig(Section):
    enabled: bool = Field(True, description="Log the run to MLflow (rank 0 only).")
    experiment: str = "allnc"
    mlflow_uri: str | None = Field(
        None, description="Tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the launch directory. "
        "Runs that log concurrently (sweeps) need an http:// server: one SQLite file takes one writer.",
    )
    log_every_steps: int = Field(10, ge=1, description="Per-step loss parts go to MLflow every N steps.")
    system_metrics: bool = Field(True, description="CPU, memory, disk, network (and GPU) as system/... metrics.")
    system_metrics_interval_s: float = Field(10.0, gt=0.0, description="Sampling interval of the system metrics.")


# ------------------------------------------------------------------------------------------- train
class TrainConfig(Section):
    epochs: int = Field(30, ge=1)
    eval_every: int = Field(5, ge=1, description="Evaluate every N epochs (and after the last).")
    checkpoint_every: int = Field(5, ge=1, description="Checkpoint every N epochs (and after the last).")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(True, description="bf16 autocast when on CUDA (ignored on CPU).")
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N steps inside an epoch (needs a run that streams shards: "
        "data.source=shards, or a job on Ray Train)."
    )
    resume_from: str | None = Field(
        None, description="Continue from this checkpoint (a checkpoint.pt, or a Ray checkpoint folder holding one) "
        "written by either runtime, when the run has no checkpoint of its own. Same global batch (workers x "
        "data.batch_size) as the run that wrote it, on any number of workers.",
    )
    eval_split: Literal["test", "val"] = Field(
        "test", description="Split the periodic and final evaluation measure accuracy on; 'val' for model "
        "selection (sweeps). Neural-Collapse metrics are always measured on the training set.",
    )

