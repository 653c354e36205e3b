"""Step time of AllNC against CE, same model and batch, on this machine's CPU (or GPU if present).

    python bench/step_time.py [--steps 20] [--out bench/results/step_time.json]

Ratios are measured within one run (CE and AllNC interleaved), since shared machines are noisy.
Shapes: small CNN on digits (8x8x1, batch 32) and ResNet-32 on CIFAR (32x32x3, batch 128).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from allnc_dist.config import load_config
from allnc_dist.engine.local import TorchOptimization, build_optimizer, pick_device
from allnc_dist.engine.step import Batch, train_step
from allnc_dist.method.gbbn import GBBNNetwork
from allnc_dist.method.objective import AllNCObjective
from allnc_dist.models import build_backbone

SHAPES = {
    "small_cnn digits 8x8 b32": (["model.arch=small_cnn"], (1, 8, 8), 32, 10),
    "resnet32 cifar 32x32 b128": (["model.arch=resnet32"], (3, 32, 32), 128, 100),
}


def time_steps(overrides, image_shape, batch_size, num_classes, steps, device) -> float:
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    model = GBBNNetwork(build_backbone(cfg.model, image_shape[0]), num_classes, cfg.method).to(device)
    counts = [max(1, int(500 * 0.01 ** (k / (num_classes - 1)))) for k in range(num_classes)]
    objective = AllNCObjective(cfg.method, counts, model.feature_dim, model.num_branches, 10, device=device)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    optimization = TorchOptimization(model, optimizer, scheduler, None)
    two = model.num_branches == 2
    make = lambda: (torch.randn(batch_size, *image_shape), torch.randint(0, num_classes, (batch_size,)))  # noqa: E731
    (x, y), (xr, yr) = make(), make()
    batch = Batch(x, y, xr if two else None, yr if two else None).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    for _ in range(3):  # warm-up
        train_step(model, objective, batch, 0.5, 0.0, optimization, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, objective, batch, 0.5, 0.0, optimization, autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_time.json")
    args = parser.parse_args()
    device = pick_device("auto")
    results = {"device": str(device), "threads": torch.get_num_threads(), "shapes": {}}
    for name, (overrides, shape, batch, k) in SHAPES.items():
        ce = time_steps(overrides + ["method.preset=ce"], shape, batch, k, args.steps, device)
        allnc = time_steps(overrides + ["method.preset=allnc"], shape, batch, k, args.steps, device)
        results["shapes"][name] = {"ce_s": ce, "allnc_s": allnc, "ratio": allnc / ce,
                                   "ce_images_per_s": batch / ce, "allnc_images_per_s": batch / allnc}
        print(f"{name:28s} CE {ce * 1e3:7.1f} ms  AllNC {allnc * 1e3:7.1f} ms  ratio {allnc / ce:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
