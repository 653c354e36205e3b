"""The sweep file: a typed, validated `SweepConfig`, and the check that every swept field is a field of
`RunConfig` that accepts the values it will be given. Everything here runs before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, RunConfig, config_from_dict, deep_merge, load_raw, parse_overrides

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
# Fields the sweep sets in every trial (and the tracking section): a knob there would be overwritten.
SET_BY_SWEEP = ("name", "train.eval_split", "train.eval_every", "data.source", "data.shards")
# What the summary reports of every trial besides the sweep's metric: validation accuracy, overall and Few.
OVERALL, FEW = "eval/acc_top1", "eval/acc_few"
Scalar = Union[bool, int, float, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(Strict):
    """One knob's values: exactly one of the fields, as in `{loguniform: [0.05, 0.5]}`."""

    loguniform: tuple[float, float] | None = Field(None, description="[low, high], sampled uniformly in log space")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]")
    randint: tuple[int, int] | None = Field(None, description="[low, high): integers, high excluded (Tune's randint)")
    choice: list[Scalar] | None = Field(None, min_length=1, description="one of the values, at random")
    grid: list[Scalar] | None = Field(None, min_length=1, description="every value (search: random only)")

    @model_validator(mode="after")
    def _one_valid_kind(self) -> Distribution:
        given = [kind for kind in DISTRIBUTIONS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)} (got {', '.join(given) or 'none'})")
        if self.kind in ("loguniform", "uniform", "randint"):
            low, high = self.values
            if not low < high:
                raise ValueError(f"{self.kind}: low must be below high, got [{low}, {high}]")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in DISTRIBUTIONS if getattr(self, kind) is not None)

    @property
    def values(self) -> tuple | list:
        return getattr(self, self.kind)

    def candidates(self) -> list[Scalar]:
        """Values a config is checked with: every value of a discrete knob, the low end of a range
        (a range's high end may itself be out of bounds, e.g. beta < 1, and is never drawn)."""
        return list(self.values) if self.kind in ("choice", "grid") else [self.values[0]]


class AshaScheduler(Strict):
    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(3.0, gt=1.0, description="1 / the fraction of trials kept at each rung")
    max_t: int | None = Field(None, ge=1, description="the horizon ASHA places its rungs below; default: train.epochs")


class FifoScheduler(Strict):
    type: Literal["fifo"] = "fifo"


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="names the Tune experiment and the MLflow parent run")
    base: Path = Field(description="the job config every trial starts from (relative to the current directory)")
    overrides: list[str] = Field(default_factory=list, description="section.field=value, applied to the base")
    metric: str = Field("eval/acc_top1", pattern=r"^eval/\w+$", description="an evaluation metric, eval/<name>")
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(8, ge=1)
    search: Literal["random", "optuna"] = "random"
    seed: int = Field(0, ge=0, description="seed of the search's draws")
    scheduler: Annotated[Union[AshaScheduler, FifoScheduler], Field(discriminator="type")] = Field(
        default_factory=AshaScheduler)
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: as many as the cluster holds")
    space: dict[str, Distribution] = Field(min_length=1, description="config field path -> distribution")

    @field_validator("overrides")
    @classmethod
    def _overrides_parse(cls, overrides: list[str]) -> list[str]:
        parse_overrides(overrides)  # ConfigError (a ValueError) names the malformed one
        return overrides

    @model_validator(mode="after")
    def _grid_needs_random_search(self) -> SweepConfig:
        grids = [path for path, d in self.space.items() if d.kind == "grid"]
        if grids and self.search != "random":
            raise ValueError(f"space: grid ({', '.join(grids)}) needs search: random, not {self.search!r}")
        return self


def _where(loc: tuple) -> tuple[str, list[str]]:
    """The field an error is about, as the sweep file spells it, and the fields allowed beside it."""
    parts = [str(p) for p in loc]
    if parts[0] == "space" and len(parts) > 1:  # the knob's path holds dots itself: keep it whole
        return ".".join([f"space[{parts[1]}]", *parts[2:]]), list(DISTRIBUTIONS)
    if parts[0] == "scheduler" and len(parts) > 2:  # pydantic puts the union's tag second: drop it
        model = {"asha": AshaScheduler, "fifo": FifoScheduler}[parts[1]]
        return ".".join(["scheduler", *parts[2:]]), sorted(model.model_fields)
    return ".".join(parts), sorted(SweepConfig.model_fields)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        field, allowed = _where(e["loc"]) if e["loc"] else ("<sweep>", [])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field (allowed here: {', '.join(allowed)})")
        else:
            lines.append(f"  {field}: {e['msg'].removeprefix('Value error, ')}")
    return f"invalid sweep file {source}:\n" + "\n".join(lines)


def load_sweep(path: str | Path, base: Path | None = None, num_samples: int | None = None) -> SweepConfig:
    """The sweep file, validated; `base` and `num_samples` (from the command line) replace its own.
    The sweep's name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must hold a mapping at the top level")
    data.setdefault("name", path.stem)
    if base is not None:
        data["base"] = str(base)
    if num_samples is not None:
        data["num_samples"] = num_samples
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path))) from None


def nested(path: str, value: Any) -> dict:
    """`a.b.c`, v -> {"a": {"b": {"c": v}}}."""
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def with_knobs(base_raw: dict, knobs: dict[str, Any]) -> dict:
    """The raw config `base_raw` with every knob (field path -> value) set."""
    merged = base_raw
    for path, value in knobs.items():
        merged = deep_merge(merged, nested(path, value))
    return merged


def sweep_base(spec: SweepConfig, cli_overrides: list[str]) -> dict:
    """The raw config every trial starts from: the base file, the sweep's overrides, the command
    line's, then what every trial needs: selection on the validation split, evaluated every epoch so
    that the scheduler sees each one."""
    return load_raw(spec.base, [*spec.overrides, *cli_overrides, "train.eval_split=val", "train.eval_every=1"])


def data_defining_fields() -> tuple[str, ...]:
    """The data fields that select the dataset's samples: a sweep writes its shards once, so a knob on
    one of them would change nothing the trials read."""
    from ..shards.sources import OPTIONAL_SAMPLE_DEFINING_FIELDS, SAMPLE_DEFINING_FIELDS  # noqa: PLC0415 (torch)

    return tuple(f"data.{f}" for f in (*SAMPLE_DEFINING_FIELDS, *OPTIONAL_SAMPLE_DEFINING_FIELDS, "root"))


def check_space(spec: SweepConfig, base_raw: dict) -> RunConfig:
    """Validate the base and every knob (each with each of its candidate values) against RunConfig, as
    runs that stream shards (trials run on Ray Train, a built-in dataset written as shards first); the
    error names the knob. Returns the base config."""
    try:
        base = config_from_dict(base_raw, streams_shards=True)
    except ConfigError as err:
        raise ConfigError(f"the sweep's base config ({spec.base} with the overrides, and train.eval_split=val "
                          f"that sweeps select on): {err}") from None
    data_defining = data_defining_fields()
    for path, distribution in spec.space.items():
        if path in SET_BY_SWEEP or path.startswith("tracking."):
            raise ConfigError(f"space[{path}]: the sweep sets this field itself "
                              f"({', '.join(SET_BY_SWEEP)}, tracking.*)")
        if path in data_defining:
            raise ConfigError(f"space[{path}]: selects the dataset's samples, which are written once for the whole "
                              "sweep: set it in overrides instead")
        for value in distribution.candidates():
            try:
                config_from_dict(with_knobs(base_raw, {path: value}), streams_shards=True)
            except ConfigError as err:
                raise ConfigError(
                    f"space[{path}]: {distribution.kind} value {value!r} is not valid here: {err}") from None
    check_scheduler(spec, base)
    return base


def check_scheduler(spec: SweepConfig, base: RunConfig) -> None:
    s = spec.scheduler
    if isinstance(s, AshaScheduler) and s.grace_period > (s.max_t or base.train.epochs):
        raise ConfigError(f"scheduler.grace_period={s.grace_period} exceeds scheduler.max_t "
                          f"({s.max_t or f'train.epochs={base.train.epochs}'})")
