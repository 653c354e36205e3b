"""Minority collapse in the unconstrained-features model (UFM), mean ± sample std over seeds.

    python -m bench.ufm_study [--seeds 5] [--out bench/results/ufm_study.json]
    python -m bench.ufm_study --imbalance-grid [--seeds 5] [--out bench/results/ufm_imbalance.json]
    python -m bench.ufm_study --imbalance-grid --smoke --out /tmp/ufm.json   # seconds, for the tests
    python -m bench.ufm_study --class-grid [--seeds 5] [--out bench/results/ufm_classes.json]

The first form is the design study behind the paper form's P2P (docs/method.md): 10 classes, 5 with 100
samples and 5 with 1, full batch; CE, LA, AllNC's default, the default without the Gram gap in its P2P
and variants of its paper form. The second is the study across imbalance ratios (docs/RESULTS.md): CE,
AllNC, AllNC without the gap (P2P `contrastive`), AllNC-paper, and the paper form's P2P only and HyCon
only at IR 1, 10, 100, 1000, with 5 majority classes of IR samples and 5 minority classes of 1 sample,
trained on mini-batches. The third is the study across class counts: CE, AllNC, AllNC without the gap
and AllNC-paper at K = 10, 100, 1000 (half majority classes of 10 samples, half minority classes of 1,
D = K), the check that the losses keep their balance at any K:

    python -m bench.ufm_study --class-grid --classes 1000 --seeds 1 --variants "CE,AllNC"

adds (or replaces) the cells it names and keeps the other cells of bench/results/ufm_classes.json. The
grid runs 3000 steps at K = 10 and 100 and 20000 at K = 1000, where the Few classes move more slowly.

Both print, per cell, the Few (minority) classes' mean pairwise cosine of the centred classifier
vectors and of the centred class means (ideal -1/(K-1) = -0.111, collapse = +1) and more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from allnc_dist.ablation import PAPER, summary
from allnc_dist.analysis.unconstrained_features import train_unconstrained_features, ufm_training
from allnc_dist.config import MethodConfig
from allnc_dist.metrics import nc_metrics
from allnc_dist.metrics.neural_collapse import class_means

RESULTS = Path(__file__).parent / "results"
NUM_MAJORITY = NUM_MINORITY = 5
FEW = list(range(NUM_MAJORITY, NUM_MAJORITY + NUM_MINORITY))

# ---------------------------------------------------------------- the design study (full batch, IR 100)
COUNTS = [100] * NUM_MAJORITY + [1] * NUM_MINORITY
STUDY_KEYS = ("few_cos_classifier", "few_cos_means", "few_self_duality")
# AllNC's default (the digits-LT sweep's choice with the Gram gap; with GBBN off as everywhere here: LA,
# P2P contrastive + Gram gap, no HyCon), and the default without the gap: the contrastive P2P the sweep
# chose, which alone leaves the Few classes at their own simplex, past the simplex angle.
DEFAULT = {"preset": "allnc"}
WITHOUT_GAP = {"preset": "allnc", "p2p": {"form": "contrastive"}}
# name -> (method config fields, steps to convergence)
# The AllNC variants are METHOD.md's form (allnc_paper) with one change each, and AllNC's default with and
# without the gap.
STUDY_VARIANTS = {
    "CE": ({"preset": "ce"}, 4000),
    "LA": ({"preset": "la"}, 4000),
    "AllNC-paper, P2P contrastive (first cut)": ({**PAPER, "p2p": {"form": "contrastive"}}, 3000),
    "AllNC-paper, P2P contrastive, tau_p=1": ({**PAPER, "p2p": {"form": "contrastive", "tau": 1.0}}, 3000),
    "AllNC-paper (P2P mse_gram)": (PAPER, 1200),
    "AllNC-paper, prototype-only HyCon": ({**PAPER, "hycon": {"negatives": "prototypes"}}, 1200),
    "AllNC (default)": (DEFAULT, 1200),
    "AllNC (default) without the gap": (WITHOUT_GAP, 2000),
}

# ------------------------------------------------------------------------ the imbalance-ratio grid
RATIOS = (1, 10, 100, 1000)
GRID_VARIANTS = {
    "CE": {"preset": "ce"},
    "AllNC": DEFAULT,
    "AllNC without gap": WITHOUT_GAP,
    "AllNC-paper": PAPER,
    "P2P only": {**PAPER, "hycon": {"weight": 0.0}},
    "HyCon only": {**PAPER, "p2p": {"weight": 0.0}},
}
# Few-class norms relative to the Many classes: a +1 cosine with a ratio near 0 is collapse onto a
# vanishing vector (the minority is given up), with a ratio near 1 collapse onto a shared direction.
NORM_KEYS = ("few_norm_ratio_classifier", "few_norm_ratio_means")
METRIC_KEYS = ("few_cos_classifier", "few_cos_means", "nc3", "few_self_duality")
GRID_KEYS = (*METRIC_KEYS, *NORM_KEYS)
TABLE_KEYS = ("few_cos_classifier", "few_cos_means", "nc3")
# Full batch at IR 100 is the design study above, so IR 100 is the reference size: there the
# protocol's objective is the study's. HyCon costs O(batch^2), so a full batch of the 5005 samples
# of IR 1000 costs 1.4 s a step; 256 keeps a step in milliseconds and equals full batch at IR 1, 10.
PROTOCOL = {"dim": 32, "steps": 3000, "lr": 0.1, "weight_decay": 1e-2, "batch_size": 256,
            "reference_size": sum(COUNTS)}
SMOKE_RATIOS, SMOKE_STEPS = (1, 100), 400
CHECKPOINT_FRACTION = 2 / 3  # the metrics are also taken here, to show they no longer move
LOSS_WINDOW_FRACTION = 0.1  # mini-batch losses are noisy: each checkpoint reports a window's mean


def method_config(fields: dict) -> MethodConfig:
    # The UFM has one feature set and one classifier: no GBBN branches.
    return MethodConfig(**{"gbbn": {"enabled": False}, **fields})


def summarise(per_seed: list[dict], keys: tuple[str, ...]) -> dict:
    """Mean and sample std over seeds of each key (std is None for a single seed), as the ablation's."""
    return {key: summary([run[key] for run in per_seed]) for key in keys}


def mean_pm_std(stat: dict) -> str:
    return f"{stat['mean']:+.3f}" + ("" if stat["std"] is None else f" ± {stat['std']:.3f}")


def format_cell(cell: dict, keys: tuple[str, ...]) -> str:
    return "  ".join(f"{key}={mean_pm_std(cell[key])}" for key in keys)


def norm_ratio(rows: torch.Tensor, few: list[int]) -> float:
    """Mean row norm of the Few classes over that of the others."""
    norms = rows.double().norm(dim=1)
    is_few = torch.zeros(len(rows), dtype=torch.bool)
    is_few[few] = True
    return (norms[is_few].mean() / norms[~is_few].mean()).item()


def grid_geometry(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, few: list[int]) -> dict:
    metrics = nc_metrics(features, labels, classifier, few_classes=few)
    means = class_means(features, labels, len(classifier))
    return {**{key: metrics[key] for key in METRIC_KEYS},
            "few_norm_ratio_classifier": norm_ratio(classifier, few), "few_norm_ratio_means": norm_ratio(means, few)}


def run_study(seeds: int) -> dict:
    """The design study: full batch, each variant run to its own convergence."""
    results = {}
    for name, (fields, steps) in STUDY_VARIANTS.items():
        per_seed = []
        for seed in range(seeds):
            h, y, w = train_unconstrained_features(COUNTS, method_config(fields), dim=32, seed=seed, steps=steps)
            m = nc_metrics(h, y, w, few_classes=FEW)
            per_seed.append({k: m[k] for k in STUDY_KEYS})
        results[name] = {"per_seed": per_seed, **summarise(per_seed, STUDY_KEYS)}
        print(f"{name:40s} {format_cell(results[name], STUDY_KEYS)}", flush=True)
    return {"counts": COUNTS, "dim": 32, "weight_decay": 1e-2, "variants": results}


def grid_run(counts: list[int], fields: dict, seed: int, protocol: dict, few: list[int]) -> dict:
    """One training run: the geometry and the recent loss at the end and at the checkpoint before."""
    steps = protocol["steps"]
    checkpoints = (round(steps * CHECKPOINT_FRACTION), steps)
    window = max(1, round(steps * LOSS_WINDOW_FRACTION))
    losses, taken = [], {}
    training = ufm_training(counts, method_config(fields), seed=seed, **protocol)
    for step, (loss, features, labels, classifier) in enumerate(training, start=1):
        losses.append(loss)
        if step in checkpoints:
            geometry = grid_geometry(features, labels, classifier, few)
            taken[step] = {**geometry, "loss": statistics.fmean(losses[-window:])}
    return {**taken[steps], "previous_checkpoint": {"step": checkpoints[0], **taken[checkpoints[0]]}}


def grid_cell(counts: list[int], fields: dict, seeds: int, protocol: dict, few: list[int]) -> dict:
    per_seed = [grid_run(counts, fields, seed, protocol, few) for seed in range(seeds)]
    # How far each metric still moved over the last third of the run, worst seed.
    drift = {key: max(abs(run[key] - run["previous_checkpoint"][key]) for run in per_seed)
             for key in (*GRID_KEYS, "loss")}
    return {"per_seed": per_seed, **summarise(per_seed, GRID_KEYS), "max_drift_last_third": drift}


# ------------------------------------------------------------------------- the class-count grid
CLASS_COUNTS_K = (10, 100, 1000)
CLASS_GRID_VARIANTS = {"CE": {"preset": "ce"}, "AllNC": DEFAULT, "AllNC without gap": WITHOUT_GAP, "AllNC-paper": PAPER}
CLASS_GRID_MAJORITY_SAMPLES = 10
CLASS_GRID_KEYS = ("few_cos_classifier", "few_cos_means", "few_self_duality", "nc3")
# Steps per K. At K = 1000 each class holds a tenth of K = 100's share of the samples and the decay is
# sqrt(10) weaker, so the Few classifier vectors move far more slowly: after 2000 steps (the grid's former
# K = 1000 protocol) CE's Few cosine of W was +0.002, short of the collapse; after 20000 it is +0.95.
CLASS_GRID_STEPS = {10: PROTOCOL["steps"], 100: PROTOCOL["steps"], 1000: 20000}


def class_grid_protocol(num_classes: int, steps: int) -> dict:
    """The imbalance grid's protocol at K classes in D = K (a simplex ETF fits). The weight decay shrinks
    as 1/sqrt(K), so that K · N_ref · wd_W · wd_H, which decides whether H = W = 0 is the only minimiser,
    stays what it is at K = 10."""
    return {**PROTOCOL, "dim": num_classes, "steps": steps,
            "weight_decay": PROTOCOL["weight_decay"] * (10 / num_classes) ** 0.5}


def run_class_grid(seeds: int, steps: int | None, sizes: tuple[int, ...], variants: tuple[str, ...]) -> dict:
    """Each cell as the imbalance grid's (with the checkpoint at 2/3 of the run), at `steps`, or when it
    is None at the K's own number of steps (CLASS_GRID_STEPS)."""
    start = time.perf_counter()
    results = {}
    for k in sizes:
        majority = k // 2
        counts = [CLASS_GRID_MAJORITY_SAMPLES] * majority + [1] * (k - majority)
        protocol = class_grid_protocol(k, steps or CLASS_GRID_STEPS[k])
        results[str(k)] = {}
        for name in variants:
            cell_start = time.perf_counter()
            cell = grid_cell(counts, CLASS_GRID_VARIANTS[name], seeds, protocol, list(range(majority, k)))
            cell.update(simplex_cosine=-1 / (k - 1), protocol=protocol, wall_s=time.perf_counter() - cell_start)
            results[str(k)][name] = cell
            print(f"K {k:<5d} {name:17s} {format_cell(cell, CLASS_GRID_KEYS)}  (simplex {-1 / (k - 1):+.3f}, "
                  f"{protocol['steps']} steps, {cell['wall_s']:.0f} s)", flush=True)
    return {"majority_samples": CLASS_GRID_MAJORITY_SAMPLES, "minority_samples": 1,
            "classes": results, "wall_s": time.perf_counter() - start}


def merged_class_grid(path: Path, new: dict) -> dict:
    """`new` with the cells of an earlier run at `path` that it did not run (each cell keeps its own seeds,
    protocol and time), in the grid's order: `--classes 1000` then adds K = 1000 to a grid of K = 10 and
    100. A cell of a variant the grid no longer has is dropped."""
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    if old.get("majority_samples") != new["majority_samples"]:
        return new
    sizes = sorted({*old["classes"], *new["classes"]}, key=int)
    cells = {k: {**old["classes"].get(k, {}), **new["classes"].get(k, {})} for k in sizes}
    classes = {k: {name: cells[k][name] for name in CLASS_GRID_VARIANTS if name in cells[k]} for k in sizes}
    wall_s = sum(cell["wall_s"] for variants in classes.values() for cell in variants.values())
    return {**new, "classes": classes, "wall_s": wall_s}


def protocol_text(protocol: dict, seeds: int) -> str:
    return (
        f"Unconstrained-features model: K = 10 classes, 5 majority classes of IR samples and 5 minority "
        f"(Few) classes of 1 sample, free features and classifier in D = {protocol['dim']}. SGD with momentum "
        f"0.9 for {protocol['steps']} steps on uniformly drawn batches of {protocol['batch_size']} (full batch "
        f"when N is smaller), classifier lr {protocol['lr']} and weight decay {protocol['weight_decay']}; the "
        f"features' weight decay is {protocol['weight_decay']} × {protocol['reference_size']}/N and their lr "
        f"{protocol['lr']} × N/{protocol['reference_size']}, so at every ratio each sample's loss and decay "
        f"keep the balance of the IR-100 set (N = {protocol['reference_size']}); a fixed decay on the N "
        f"features leaves H = W = 0 as the only minimiser at IR 1000. {seeds} seed(s), mean ± sample std."
    )


def run_grid(seeds: int, protocol: dict, ratios: tuple[int, ...]) -> dict:
    start = time.perf_counter()
    results = {}
    for ratio in ratios:
        counts = [ratio] * NUM_MAJORITY + [1] * NUM_MINORITY
        results[str(ratio)] = {}
        for name, fields in GRID_VARIANTS.items():
            cell_start = time.perf_counter()
            cell = grid_cell(counts, fields, seeds, protocol, FEW)
            cell["wall_s"] = time.perf_counter() - cell_start
            results[str(ratio)][name] = cell
            print(f"IR {ratio:<5d} {name:17s} {format_cell(cell, GRID_KEYS)}  ({cell['wall_s']:.0f} s)", flush=True)
    return {
        "protocol": {**protocol, "classes": NUM_MAJORITY + NUM_MINORITY, "majority_classes": NUM_MAJORITY,
                     "minority_samples": 1, "majority_samples": "IR", "momentum": 0.9, "seeds": seeds,
                     "checkpoint_step": round(protocol["steps"] * CHECKPOINT_FRACTION),
                     "variants": GRID_VARIANTS},
        "protocol_text": protocol_text(protocol, seeds),
        "ratios": results,
        "wall_s": time.perf_counter() - start,
    }


def print_table(grid: dict) -> None:
    print(f"\n{'IR':>5s}  {'variant':17s}" + "".join(f"{key:>20s}" for key in TABLE_KEYS))
    for ratio, variants in grid["ratios"].items():
        for name, cell in variants.items():
            print(f"{ratio:>5s}  {name:17s}" + "".join(f"{mean_pm_std(cell[key]):>20s}" for key in TABLE_KEYS))
    print(f"wall time {grid['wall_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imbalance-grid", action="store_true", help="the study across imbalance ratios")
    parser.add_argument("--smoke", action="store_true",
                        help=f"with --imbalance-grid: 1 seed, IR {SMOKE_RATIOS}, {SMOKE_STEPS} steps")
    parser.add_argument("--class-grid", action="store_true", help="the study across class counts K")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, help="with --class-grid: SGD steps at every K (default: per K, "
                        + ", ".join(f"{steps} at K = {k}" for k, steps in CLASS_GRID_STEPS.items()) + ")")
    parser.add_argument("--classes", default=",".join(map(str, CLASS_COUNTS_K)), help="with --class-grid: the K")
    parser.add_argument("--variants", default=",".join(CLASS_GRID_VARIANTS),
                        help=f"with --class-grid: a comma-separated subset of {', '.join(CLASS_GRID_VARIANTS)}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.smoke and not args.imbalance_grid:
        parser.error("--smoke goes with --imbalance-grid")
    torch.set_num_threads(1)  # tiny tensors: more threads only contend with whatever else runs
    if args.class_grid:
        sizes, variants = tuple(int(k) for k in args.classes.split(",")), tuple(args.variants.split(","))
        unknown = [name for name in variants if name not in CLASS_GRID_VARIANTS]
        if unknown:
            parser.error(f"unknown --variants {', '.join(unknown)}: the class grid has "
                         f"{', '.join(CLASS_GRID_VARIANTS)}")
        if args.steps is None and set(sizes) - set(CLASS_GRID_STEPS):
            parser.error(f"--classes {args.classes}: only K = {', '.join(map(str, CLASS_GRID_STEPS))} have a "
                         "default number of steps; give --steps")
        out = args.out or RESULTS / "ufm_classes.json"
        results = merged_class_grid(out, run_class_grid(args.seeds, args.steps, sizes, variants))
    elif args.imbalance_grid:
        protocol, ratios, seeds = dict(PROTOCOL), RATIOS, args.seeds
        if args.smoke:
            protocol["steps"], ratios, seeds = SMOKE_STEPS, SMOKE_RATIOS, 1
        results = run_grid(seeds, protocol, ratios)
        print_table(results)
        out = args.out or RESULTS / "ufm_imbalance.json"
    else:
        results = run_study(args.seeds)
        out = args.out or RESULTS / "ufm_study.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
