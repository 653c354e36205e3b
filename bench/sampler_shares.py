"""Sampler shares: the expected Many / Medium / Few share of GBBN's re-balancing batch under the tempered
sampler p_k ∝ n_k^q, from instance sampling (q = 1) to BBN's reversed sampler (q = -1).

    python -m bench.sampler_shares            # CIFAR-100-LT (IR 100) and the ImageNet-LT stand-in
    python -m bench.sampler_shares --smoke --out /tmp/sampler_shares.json   # CIFAR-100-LT only

A split's share is Σ_{k in split} p_k: the fraction of a re-balanced batch it fills, in expectation.
The splits come from the training counts, as in evaluation (`class_splits`: Many > 100 images,
Medium 20-100, Few < 20). The figures are exact arithmetic on the counts, no draws, so they do not
depend on the machine. Profiles: CIFAR-100-LT at IR 100 (`exponential_profile(500, 100, 100)`) and
ImageNet-LT's shape at K = 1000 (`imagenet_lt_profile()`, a stand-in for its real counts).
Prints a table and writes JSON (default bench/results/sampler_shares.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tabulate import tabulate

from allnc_dist.data.profiles import exponential_profile, imagenet_lt_profile
from allnc_dist.data.samplers import tempered_class_probabilities
from allnc_dist.metrics import class_splits

HERE = Path(__file__).parent
EXPONENTS = (1.0, 0.5, 0.0, -0.5, -1.0)
# The sampler each exponent is known as; -0.5 has no name of its own.
SAMPLER_NAMES = {1.0: "instance", 0.5: "square-root", 0.0: "class-balanced", -1.0: "reversed (BBN)"}
SPLITS = ("many", "medium", "few")
CIFAR100_LT = "CIFAR-100-LT IR 100"
IMAGENET_LT = "ImageNet-LT stand-in"


def profiles(smoke: bool) -> dict[str, list[int]]:
    """Training counts per class of the profiles the benchmark covers."""
    chosen = {CIFAR100_LT: exponential_profile(500, 100, 100)}
    if not smoke:
        chosen[IMAGENET_LT] = imagenet_lt_profile()
    return chosen


def split_shares(counts: list[int], q: float) -> dict[str, float]:
    """Expected share (%) of each split in a batch drawn with p_k ∝ n_k^q."""
    probabilities = tempered_class_probabilities(counts, q)
    return {split: 100 * probabilities[classes].sum().item() for split, classes in class_splits(counts).items()}


def share_rows(chosen: dict[str, list[int]]) -> list[dict]:
    """One row per profile and exponent q: the Many / Medium / Few shares of the re-balanced batch."""
    rows = []
    for name, counts in chosen.items():
        for q in EXPONENTS:
            shares = split_shares(counts, q)
            rows.append({"profile": name, "K": len(counts), "q": q, "sampler": SAMPLER_NAMES.get(q, ""),
                         **{f"{split}_%": shares[split] for split in SPLITS}})
    return rows


def profile_summary(counts: list[int]) -> dict:
    """Size and classes per split of one profile."""
    splits = class_splits(counts)
    return {"K": len(counts), "N": sum(counts), "n_max": max(counts), "n_min": min(counts),
            "classes": {split: len(splits[split]) for split in SPLITS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CIFAR-100-LT only: checks that the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sampler_shares.json")
    args = parser.parse_args()

    chosen = profiles(args.smoke)
    results = {
        "smoke": args.smoke,
        "date": time.strftime("%Y-%m-%d"),
        "what": "expected share (%) of each split in a re-balanced batch, sum of p_k = n_k^q / sum_j n_j^q "
                "over the split's classes",
        "splits": {"many": "n_k > 100", "medium": "20 <= n_k <= 100", "few": "n_k < 20"},
        "profiles": {name: profile_summary(counts) for name, counts in chosen.items()},
        "rows": share_rows(chosen),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, summary in results["profiles"].items():
        classes = ", ".join(f"{split} {count}" for split, count in summary["classes"].items())
        print(f"{name}: K = {summary['K']}, N = {summary['N']}, {summary['n_max']} -> {summary['n_min']}; "
              f"classes: {classes}")
    print()
    print(tabulate(results["rows"], headers="keys", tablefmt="github", floatfmt=".1f"))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
