"""ImageNet-LT: ResNet-50 (or model.arch=resnext50), 90 epochs, on 8 GPU workers.

    allnc shards --out /mnt/shared/shards/imagenet_lt --list ImageNet_LT_train.txt \
        --image-root /data/imagenet --split train --processes 32
    allnc shards --out /mnt/shared/shards/imagenet_lt --list ImageNet_LT_test.txt \
        --image-root /data/imagenet --split test --processes 32
    ray job submit --working-dir . -- python jobs/imagenet_lt.py \
        --data /mnt/shared/shards/imagenet_lt --num-workers 8 --gpus-per-worker 1 \
        --storage-path /mnt/shared/ray_results

Every flag: `--help` (allnc_dist/launch.py).
"""

import sys
from pathlib import Path

from allnc_dist.launch import job_main

if __name__ == "__main__":
    sys.exit(job_main(Path(__file__).parent / "configs" / "imagenet_lt.yaml"))
