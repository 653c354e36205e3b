"""allnc_dist: long-tailed image classification with All-around Neural Collapse (AllNC).

The public names, by stage of the data flow:

- data:     `build_data`, `exponential_profile`
- model:    `build_backbone`, `BranchedNetwork`
- method:   `simplex_etf`, `ClassMeanTracker`, `hycon_loss`, `p2p_loss`, `cumulative_alpha`,
            `AllNCObjective`
- engine:   `Trainer`, `LocalRuntime`, `train_locally`, `train_step`, `evaluate`
- metrics:  `nc_metrics`, `class_splits`, `accuracy_by_split`
- config:   `RunConfig`, `load_config`, `ConfigError`

Imports are lazy, so `import allnc_dist` stays cheap and `allnc check` validates a config
before torch is loaded.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "config",
    "load_config": "config",
    "ConfigError": "config",
    "build_data": "data",
    "exponential_profile": "data",
    "build_backbone": "models",
    "BranchedNetwork": "method",
    "simplex_etf": "method",
    "ClassMeanTracker": "method",
    "hycon_loss": "method",
    "p2p_loss": "method",
    "cumulative_alpha": "method",
    "AllNCObjective": "method",
    "Trainer": "engine",
    "LocalRuntime": "engine",
    "train_locally": "engine",
    "train_step": "engine",
    "evaluate": "engine",
    "nc_metrics": "metrics",
    "class_splits": "metrics",
    "accuracy_by_split": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'allnc_dist' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
