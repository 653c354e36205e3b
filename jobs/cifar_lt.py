"""CIFAR-100-LT (or CIFAR-10-LT with --config jobs/configs/cifar10_lt.yaml): ResNet-32, 200 epochs.

    python jobs/cifar_lt.py data.root=/data --num-workers 4 --gpus-per-worker 1
    python jobs/cifar_lt.py --data shards/cifar100_lt --num-workers 4 --gpus-per-worker 1

Without --data, the CIFAR-LT training split (data.root, data.imbalance_ratio) is written as shards
under the output folder first. Every flag: `--help` (allnc_dist/launch.py).
"""

import sys
from pathlib import Path

from allnc_dist.launch import job_main

if __name__ == "__main__":
    sys.exit(job_main(Path(__file__).parent / "configs" / "cifar100_lt.yaml"))
