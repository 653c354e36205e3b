"""Several methods trained on one base config: one validated config per method preset, each run in its
own run directory under one output folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .config import RunConfig, config_from_dict, deep_merge

if TYPE_CHECKING:
    from .data import LongTailData
    from .engine.trainer import TrainResult

Train = Callable[[RunConfig, Path], "TrainResult"]


def method_configs(raw: dict, methods: Sequence[str], streams_shards: bool = False) -> dict[str, RunConfig]:
    """One validated config per method preset. `raw` is the config before validation, so each preset
    fills in its own fields and only what the user wrote explicitly carries over to every method.
    `streams_shards`: the job writes a built-in dataset as shards first (config_from_dict)."""
    return {
        preset: config_from_dict(deep_merge(raw, {"name": preset, "method": {"preset": preset}}), streams_shards)
        for preset in methods
    }


def run_methods(configs: dict[str, RunConfig], out_dir: str | Path, train: Train | None = None
                ) -> dict[str, TrainResult]:
    """Train each method's config in its own run directory under `out_dir`. By default in this process,
    every run on one shared dataset."""
    if train is None:
        from .engine.trainer import train_locally  # noqa: PLC0415 (torch import, after the configs check out)

        data = shared_data(next(iter(configs.values())))
        train = lambda cfg, run_dir: train_locally(cfg, run_dir, data=data)  # noqa: E731
    return {preset: train(cfg, Path(out_dir) / preset) for preset, cfg in configs.items()}


def shared_data(cfg: RunConfig) -> LongTailData | None:
    """The in-memory dataset that every local run of a comparison trains on, built once (their data
    sections agree); None when the runs stream shards, which each run reads itself."""
    from .data import build_data  # noqa: PLC0415

    return build_data(cfg.data) if cfg.data.source == "memory" else None
