"""Typed, validated run configuration.

One `RunConfig` holds everything a run needs, grouped the way the data flows: data, model, method,
optimisation, distributed, tracking, plus the run loop itself (`train`). Configs come from YAML files
with `a.b=value` overrides on top; any wrong key, type or value fails here, before any work starts,
with a message naming the field (`ConfigError`).

Every knob of the method (docs/method.md) is a field with its documented default. `method.preset`
fills in the fields that make up a named method (AllNC or a baseline); fields given explicitly win.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, model_validator

from .method import (
    METHOD_PRESETS,
    AuxConfig,
    ClassMeansConfig,
    GBBNConfig,
    HyConConfig,
    MethodConfig,
    P2PConfig,
    deep_merge,
)
from .sections import (
    DataConfig,
    DistributedConfig,
    ModelConfig,
    OptimConfig,
    Section,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "METHOD_PRESETS", "AuxConfig", "ClassMeansConfig", "ConfigError", "DataConfig", "DistributedConfig", "GBBNConfig",
    "HyConConfig", "MethodConfig", "ModelConfig", "OptimConfig", "P2PConfig", "RunConfig", "Section", "TrackingConfig",
    "TrainConfig", "config_from_dict", "deep_merge", "dump_config", "load_config", "load_raw", "parse_overrides",
]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every offending field."""


# Validation context: the run streams shards whatever data.source says (see config_from_dict).
STREAMS_SHARDS = "streams_shards"



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
    def _check_cross_section(self, info: ValidationInfo) -> RunConfig:
        streams_shards = self.data.source == "shards" or (info.context or {}).get(STREAMS_SHARDS, False)
        if self.train.checkpoint_every_steps and not streams_shards:
            raise ValueError(
                "train.checkpoint_every_steps needs a run that streams shards (data.source='shards', or a job on "
                "Ray Train, which writes a built-in dataset as shards): only the shard reader resumes inside an epoch"
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
        self._check_worker_shares()
        return self

    def _check_worker_shares(self) -> None:
        """An elastic run keeps its global batch (and resampled epoch) on any number of workers: each
        count it may train on must split them evenly."""
        n = self.distributed.num_workers
        sizes = {"batch_size": self.data.batch_size,
                 "epoch_length": self.data.epoch_length if self.data.resampled else None}
        for name, size in sizes.items():
            uneven = [w for w in self.distributed.worker_counts() if size is not None and (n * size) % w]
            if uneven:
                raise ValueError(
                    f"distributed.min_workers={self.distributed.min_workers}: the global data.{name} "
                    f"({n} workers x {size} = {n * size}) does not split evenly over {', '.join(map(str, uneven))} "
                    f"worker(s); choose min_workers (or data.{name}) so that every count from min_workers to "
                    f"num_workers divides it"
                )

    def data_per_worker(self, world_size: int) -> DataConfig:
        """`data` as each of `world_size` workers reads it: its share of the global batch of num_workers x
        data.batch_size (and of a resampled epoch), which stays the same when an elastic run resizes."""
        n = self.distributed.num_workers
        if world_size == n:
            return self.data
        update = {"batch_size": self.data.batch_size * n // world_size}
        if self.data.resampled:
            update["epoch_length"] = self.data.epoch_length * n // world_size
        return self.data.model_copy(update=update)


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


def config_from_dict(data: dict, streams_shards: bool = False) -> RunConfig:
    """Validate `data` as a RunConfig. `streams_shards`: the job writes a built-in dataset (data.source
    'memory') as shards and trains from those (the Ray engine streams shards only), so the rules of a
    run that streams shards apply."""
    try:
        return RunConfig.model_validate(data, context={STREAMS_SHARDS: streams_shards})
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

