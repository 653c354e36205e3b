"""Minority collapse in the unconstrained-features model: CE, LA and AllNC variants over seeds.

    python bench/ufm_study.py [--seeds 5] [--out bench/results/ufm_study.json]

Prints, per variant, the Few classes' mean pairwise cosine of the classifier vectors and of the class
means (ideal -1/(K-1) = -0.111) and their self-duality, mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from allnc_dist.analysis.unconstrained_features import train_unconstrained_features
from allnc_dist.config import MethodConfig
from allnc_dist.metrics import nc_metrics

COUNTS = [100] * 5 + [1] * 5
FEW = list(range(5, 10))
KEYS = ("few_cos_classifier", "few_cos_means", "few_self_duality")

# name -> (method config fields, steps to convergence)
VARIANTS = {
    "CE": ({"preset": "ce"}, 4000),
    "LA": ({"preset": "la"}, 4000),
    "AllNC (P2P contrastive, first cut)": ({"p2p": {"form": "contrastive"}}, 3000),
    "AllNC (P2P contrastive, tau_p=1)": ({"p2p": {"form": "contrastive", "tau": 1.0}}, 3000),
    "AllNC (default: P2P mse_gram)": ({}, 1200),
    "AllNC, prototype-only HyCon": ({"hycon": {"negatives": "prototypes"}}, 1200),
}


def run(seeds: int) -> dict:
    results = {}
    for name, (fields, steps) in VARIANTS.items():
        method = MethodConfig(**{"gbbn": {"enabled": False}, **fields})
        per_seed = []
        for seed in range(seeds):
            h, y, w = train_unconstrained_features(COUNTS, method, dim=32, seed=seed, steps=steps)
            m = nc_metrics(h, y, w, few_classes=FEW)
            per_seed.append({k: m[k] for k in KEYS})
        results[name] = {"per_seed": per_seed, **{
            k: {"mean": statistics.fmean(r[k] for r in per_seed), "std": statistics.pstdev(r[k] for r in per_seed)}
            for k in KEYS}}
        row = "  ".join(f"{k}={results[name][k]['mean']:+.3f}±{results[name][k]['std']:.3f}" for k in KEYS)
        print(f"{name:40s} {row}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ufm_study.json")
    args = parser.parse_args()
    results = run(args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"counts": COUNTS, "dim": 32, "weight_decay": 1e-2, "variants": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
