"""A hyperparameter sweep on Ray Tune: AllNC's temperatures, loss weights, class-mean EMA, learning rate
and weight decay on digits-LT, selected on the validation split, weak trials stopped early by ASHA.

    python jobs/sweep.py [SWEEP_YAML] [--config BASE] [--out DIR] [--num-samples N] [section.field=value ...]
    python jobs/sweep.py --resume --out DIR

Default sweep file: jobs/configs/sweeps/digits_allnc.yaml. Every flag: `python jobs/sweep.py --help`
(allnc_dist/sweep/job.py); the sweep file's format: docs/sweeps.md.
"""

import sys
from pathlib import Path

from allnc_dist.sweep.job import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent / "configs" / "sweeps" / "digits_allnc.yaml"))
