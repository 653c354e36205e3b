"""The embedded default job (what `make demo` runs): AllNC against CE on digits-LT shards, trained by
2 Ray Train CPU workers with DeepSpeed ZeRO-1, then the side-by-side table and the heatmaps.

    python jobs/digits_lt.py [--local] [--methods allnc,ce] [--out DIR] [section.field=value ...]

Every flag: `python jobs/digits_lt.py --help` (allnc_dist/launch.py).
"""

import sys
from pathlib import Path

from allnc_dist.launch import job_main

if __name__ == "__main__":
    sys.exit(job_main(Path(__file__).parent / "configs" / "digits_lt.yaml", methods="allnc,ce"))
