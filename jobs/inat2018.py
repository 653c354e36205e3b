"""iNaturalist 2018: ResNet-50, 90 epochs, on 8 GPU workers.

    allnc shards --out /mnt/shared/shards/inat2018 --inat-json train2018.json --image-root /data/inat \
        --split train --processes 32
    allnc shards --out /mnt/shared/shards/inat2018 --inat-json val2018.json --image-root /data/inat \
        --split test --processes 32
    ray job submit --working-dir . -- python jobs/inat2018.py \
        --data /mnt/shared/shards/inat2018 --num-workers 8 --gpus-per-worker 1 \
        --storage-path /mnt/shared/ray_results

Every flag: `--help` (allnc_dist/launch.py).
"""

import sys
from pathlib import Path

from allnc_dist.launch import job_main

if __name__ == "__main__":
    sys.exit(job_main(Path(__file__).parent / "configs" / "inat2018.yaml"))
