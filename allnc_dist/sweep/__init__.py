"""Hyperparameter sweeps on Ray Tune (docs/sweeps.md): a sweep file names a base job config and the
distributions of its knobs; every trial is one Ray Train run, selected on the validation split, with
ASHA stopping weak trials early and MLflow nesting every trial under the sweep's parent run.

- `spec`: the sweep file (`SweepConfig`) and the checks that run before Ray starts.
- `tune_run`: the trials on Ray Tune (a Tune function per trial, in the Train V2 pattern).
- `results`: the ranked summary table and the accuracy-per-parameter plot.
- `tracking`: the shared MLflow store and the parent run.
- `job`: the `allnc sweep` / `jobs/sweep.py` command, start and resume.
"""

from .spec import Distribution, SweepConfig, check_space, load_sweep

__all__ = ["Distribution", "SweepConfig", "check_space", "load_sweep"]
