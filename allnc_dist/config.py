"""Typed, validated run configuration.

One `RunConfig` holds everything a run needs, grouped the way the data flows: data, model, method,
optimisation, distributed, tracking, plus the run loop itself (`train`). Configs come from YAML files
with `a.b=value` overrides on top; any wrong key, type or value fails here, before any work starts,
with a message naming the field (`ConfigError`).

Every knob of the method (docs/method.md) is a field with its documented default. `method.preset`
fills in the fields that make up a named method (AllNC or a baseline); fields given explicitly win.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in, recursively; values of `override` win."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged



class ConfigError(ValueError):
    """A configuration that cannot run; the message names every offending field."""


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
    batch_size: int = Field(128, ge=1)
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


# ------------------------------------------------------------------------------------------- method
class ClassMeansConfig(Section):
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="EMA factor of the global class means.")
    sync: Literal["auto", "all_reduce", "all_gather"] = Field(
        "auto", description="How per-class sums cross workers; auto picks the smaller payload."
    )


class HyConConfig(Section):
    weight: float = Field(1.0, ge=0.0, description="lambda_h")
    tau: float = Field(0.1, gt=0.0)
    negatives: Literal["global", "local", "prototypes"] = Field(
        "global",
        description="Sample set of each anchor: the all-gathered global batch, or prototypes only (pure "
        "two-view form), both exact across workers (W x B == 1 x WB); or the local batch, which needs no "
        "all-gather but is only approximately equivalent.",
    )
    projection_dim: int | None = Field(
        None, ge=1, description="Width of a projection head before normalisation; None: no head."
    )
    projection_head: Literal["linear", "mlp"] = Field(
        "linear",
        description="linear: bias-free, commutes with class means; mlp: Linear-ReLU-Linear, after BCL's head "
        "(prototypes are then the head applied to the centred class means).",
    )


class P2PConfig(Section):
    weight: float = Field(1.0, ge=0.0, description="lambda_p")
    tau: float = Field(0.1, gt=0.0)
    form: Literal["contrastive", "mse_gram"] = Field(
        "mse_gram",
        description="mse_gram: alignment ||M_k - W_k||^2 + ETF Gram regulariser (default, robust in the UFM "
        "study); contrastive: the bidirectional CE of METHOD's first formula.",
    )


class GBBNConfig(Section):
    enabled: bool = True
    rebalance: Literal["reversed", "class_balanced", "tempered", "logit_adjust", "reweight"] = Field(
        "reversed",
        description="Re-balancing branch: a second sampler with p_k ∝ n_k^q (reversed: q=-1, class_balanced: "
        "q=0, tempered: q=gbbn.sampler_q) or a loss on the uniform batch (logit_adjust, reweight).",
    )
    sampler_q: float = Field(
        0.5, ge=-2.0, le=1.0,
        description="Exponent q of the tempered sampler p_k ∝ n_k^q (rebalance=tempered): 1 instance, 0.5 "
        "square-root, 0 class-balanced, -1 reversed.",
    )
    shared_stage: bool = Field(
        False, description="Light bilateral network: one shared last stage feeding both classifiers (≈ CE's FLOPs) "
        "instead of a last stage per branch.",
    )
    schedule: Literal["parabolic", "linear", "cosine", "step"] = Field(
        "parabolic", description="alpha_t: parabolic 1-(t/T)^2 (BBN), linear, cosine, or a hard switch."
    )
    switch_epoch: float | None = Field(None, ge=0.0, description="Epoch of the hard switch (schedule=step).")
    test_alpha: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def sampler_exponent(self) -> float | None:
        """q of the re-balancing sampler p_k ∝ n_k^q, or None when the branch re-balances by loss."""
        return {"reversed": -1.0, "class_balanced": 0.0, "tempered": self.sampler_q}.get(self.rebalance)

    @property
    def rebalances_by_sampler(self) -> bool:
        """A second, re-balanced batch that removes (part of) the label prior: q < 1."""
        return self.enabled and self.sampler_exponent is not None and self.sampler_exponent < 1.0


class AuxConfig(Section):
    """How the auxiliary losses (HyCon, P2P) are weighted over the branches and over training."""

    branch_weights: Literal["equal", "alpha"] = Field(
        "equal",
        description="equal: each branch's HyCon and P2P weigh 1/2; alpha: alpha_t on the conventional branch and "
        "1 - alpha_t on the re-balancing one, following GBBN's classification weights.",
    )
    warmup_epochs: float = Field(
        0.0, ge=0.0, description="lambda_h and lambda_p ramp linearly from 0 over these epochs (class means are noisy early)."
    )


METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "allnc": {},
    "ce": {"gbbn": {"enabled": False}, "hycon": {"weight": 0.0}, "p2p": {"weight": 0.0}},
    "la": {"loss": "la", "gbbn": {"enabled": False}, "hycon": {"weight": 0.0}, "p2p": {"weight": 0.0}},
    "ldam_drw": {
        "loss": "ldam",
        "classifier": "cosine",
        "drw_start": 0.8,
        "gbbn": {"enabled": False},
        "hycon": {"weight": 0.0},
        "p2p": {"weight": 0.0},
    },
    "bbn": {"gbbn": {"enabled": True}, "hycon": {"weight": 0.0}, "p2p": {"weight": 0.0}},
    "etf_dr": {
        "loss": "dr",
        "classifier": "etf",
        "gbbn": {"enabled": False},
        "hycon": {"weight": 0.0},
        "p2p": {"weight": 0.0},
    },
}


class MethodConfig(Section):
    preset: Literal["allnc", "ce", "la", "ldam_drw", "bbn", "etf_dr"] = "allnc"
    loss: Literal["ce", "la", "ldam", "dr"] = Field("ce", description="Classification loss l.")
    classifier: Literal["linear", "cosine", "etf"] = "linear"
    la_tau: float = Field(1.0, ge=0.0, description="Logit-adjustment strength (Menon et al. 2021).")
    ldam_max_margin: float = Field(0.5, gt=0.0)
    cosine_scale: float = Field(30.0, gt=0.0, description="Scale s of cosine logits (LDAM uses 30).")
    drw_start: float | None = Field(
        None, gt=0.0, le=1.0, description="Deferred re-weighting from this fraction of the epochs."
    )
    drw_beta: float = Field(0.9999, gt=0.0, lt=1.0, description="Effective-number beta of DRW weights.")
    etf_seed: int = 0
    class_means: ClassMeansConfig = Field(default_factory=ClassMeansConfig)
    hycon: HyConConfig = Field(default_factory=HyConConfig)
    p2p: P2PConfig = Field(default_factory=P2PConfig)
    gbbn: GBBNConfig = Field(default_factory=GBBNConfig)
    aux: AuxConfig = Field(default_factory=AuxConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset", "allnc")
            if preset in METHOD_PRESETS:
                return deep_merge(METHOD_PRESETS[preset], data)
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> MethodConfig:
        if self.loss == "dr" and self.classifier != "etf":
            raise ValueError("method.loss='dr' (dot regression) needs method.classifier='etf'")
        if self.loss == "ldam" and self.classifier == "etf":
            raise ValueError("method.loss='ldam' needs a learned classifier ('linear' or 'cosine')")
        if self.gbbn.schedule == "step" and self.gbbn.switch_epoch is None:
            raise ValueError("method.gbbn.schedule='step' needs method.gbbn.switch_epoch")
        self._check_one_prior_correction()
        return self

    def _check_one_prior_correction(self) -> None:
        """A re-balancing sampler already removes the label prior from its batch; a prior-correcting
        loss on that batch would correct a second time and over-favour the tail (METHOD.md, GBBN)."""
        if not self.gbbn.rebalances_by_sampler:
            return
        sampler = f"method.gbbn.rebalance={self.gbbn.rebalance!r}"
        if self.loss in ("la", "ldam"):
            raise ValueError(
                f"method.loss={self.loss!r} with {sampler} corrects for the label prior twice on the re-balanced "
                "batch: use method.loss='ce' with a re-balancing sampler, or re-balance by loss "
                "(method.gbbn.rebalance='logit_adjust' or 'reweight') with a uniform batch only"
            )
        if self.drw_start is not None:
            raise ValueError(
                f"method.drw_start (deferred re-weighting) with {sampler} corrects for the label prior twice on the "
                "re-balanced batch: drop one of the two"
            )

    @property
    def uses_class_means(self) -> bool:
        return self.hycon.weight > 0 or self.p2p.weight > 0


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
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU).")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="0: CPU workers (gloo); else NCCL.")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="Logical CPUs Ray reserves per worker.")
    zero_stage: Literal[0, 1, 2, 3] = 1
    grad_accumulation: int = Field(1, ge=1, description="Batches per optimiser update (DeepSpeed).")
    storage_path: str | None = Field(
        None, description="Ray Train's checkpoint storage: shared (NFS, S3) for multi-node; default <run dir>/ray."
    )
    max_failures: int = Field(0, ge=0, description="Worker-group restarts after a failure (Ray FailureConfig).")
    check_consistency: bool = Field(
        False, description="After every step, check that parameters and class means agree on all ranks (debugging)."
    )
    rendezvous: Literal["auto", "file", "tcp"] = Field(
        "auto", description="auto: a file store on one node (no port opened), Ray's TCP rendezvous across nodes."
    )

    @model_validator(mode="after")
    def _check_consistency_needs_whole_parameters(self) -> DistributedConfig:
        if self.check_consistency and self.zero_stage == 3:
            raise ValueError("distributed.check_consistency compares whole parameters, which ZeRO-3 partitions")
        return self


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
    progress: bool = True
    # Fault injection for tests of crash safety: hard-kill the process half-way through writing the
    # checkpoint of this epoch (1-based), leaving a partial temporary file behind.
    crash_in_checkpoint_write_at_epoch: int | None = Field(None, ge=1)
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N steps inside an epoch (needs data.source=shards)."
    )
    # Fault injection for tests of fault tolerance: rank fail_rank exits at step fail_at_step, unless
    # the run resumed from a checkpoint.
    fail_at_step: int | None = Field(None, ge=1)
    fail_rank: int = Field(0, ge=0)
    eval_split: Literal["test", "val"] = Field(
        "test", description="Split the periodic and final evaluation measure accuracy on; 'val' for model "
        "selection (sweeps). Neural-Collapse metrics are always measured on the training set.",
    )


class RunConfig(Section):
    name: str = "run"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check_cross_section(self) -> RunConfig:
        if self.distributed.zero_stage == 3 and self.method.p2p.weight > 0:
            raise ValueError(
                "distributed.zero_stage=3 partitions the classifier weights, which P2P reads outside the forward "
                "pass: use ZeRO stage 0-2 for AllNC, or method.p2p.weight=0"
            )
        if self.train.checkpoint_every_steps and self.data.source != "shards":
            raise ValueError(
                "train.checkpoint_every_steps needs data.source='shards': only the shard reader resumes inside an epoch"
            )
        if self.train.eval_split == "val" and self.data.source == "memory" and self.data.val_per_class == 0:
            raise ValueError(
                "train.eval_split='val' needs a validation split: set data.val_per_class > 0 (images per class "
                "held out of training), or stream shards that have a val/ set (data.source=shards)"
            )
        if self.data.name.startswith("cifar") and self.data.root is None:
            raise ValueError(
                f"data.root is required for data.name={self.data.name!r}: the folder that holds "
                "cifar-10-batches-py or cifar-100-python"
            )
        return self


# ------------------------------------------------------------------------------------ load & parse
def parse_overrides(overrides: list[str]) -> dict:
    """Turn `a.b=value` strings into a nested dict; values are parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a field inside {part!r}, which is a value")
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the config section at `loc` (the parent of an unknown key)."""
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, str))
        field = ".".join(loc) or "<config>"
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_fields(RunConfig, loc))
            lines.append(f"  {field}: unknown field (allowed here: {allowed})")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {field}: {e['msg']}{shown}")
    return "invalid config:\n" + "\n".join(lines)


def config_from_dict(data: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_raw(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """The YAML config (or {}) with `a.b=value` overrides merged in, not yet validated."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return deep_merge(data, parse_overrides(overrides or []))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults), apply `a.b=value` overrides, validate."""
    return config_from_dict(load_raw(path, overrides))


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
