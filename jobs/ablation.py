"""The ablation job: CE, LA, LDAM-DRW, BBN, ETF+DR, AllNC, AllNC's paper form, and the paper form
without HyCon, P2P or GBBN or with one of the study's options, each trained with N seeds (train.seed =
0..N-1, the data split fixed); a mean ± std table over the seeds, every run logged to MLflow under one
parent run. Default: digits-LT on Ray Train workers.

    python jobs/ablation.py [--local] [--seeds 3] [--variants ce,allnc] [--out DIR] [section.field=value ...]

Every flag: `python jobs/ablation.py --help` (allnc_dist/ablation.py).
"""

import sys
from pathlib import Path

from allnc_dist.ablation import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent / "configs" / "digits_lt.yaml"))
