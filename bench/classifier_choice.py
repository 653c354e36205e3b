"""Issue 13's classifier choice at 100 classes: linear or cosine for each swept method, on a validation split.

Each swept method's chosen configuration trains with a linear and with a cosine classifier on synthetic-100,
and the two are ranked on its validation split (never the test split).

    python -m bench.classifier_choice                      # 2 seeds per candidate, 16 runs: about 25 minutes here
    python -m bench.classifier_choice --smoke --out /tmp/choice   # tiny version, for the tests

The digits-LT sweeps never searched method.classifier, and with 10 classes they could not judge it:
the study's test splits showed the cosine classifier deciding the Few classes at 100 and 1000 classes
and costing 1-3 points at 10. This is the search over that one knob, on a validation split with 100
classes (data.val_per_class images per class, drawn apart from the training and test splits), with
the same budget for every method: each candidate trains with train.seed 0..N-1, and a method keeps its
own classifier unless the other's mean validation accuracy (the sweeps' metric) is higher by more than
two standard errors of the difference, the seed noise.
bench/results/classifier_choice.json records both candidates and the choice; the study's proxies with
at least 100 classes then train each method with its chosen classifier (bench/tuned_study.py).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from allnc_dist.config.method import MethodConfig
from bench.ablation_jobs import SMOKE_OVERRIDES, AblationJob, run_ablations
from bench.tuned_study import CLASSIFIER_CHOICE_PROXY, PROXIES, SWEPT, choice_file, chosen_overrides

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIERS = ("linear", "cosine")
VAL_PER_CLASS = 20
VALIDATION_SPLIT = (f"data.val_per_class={VAL_PER_CLASS}", "train.eval_split=val")


def candidate_jobs(method: str, method_overrides: tuple[str, ...], work_root: Path, smoke: bool
                   ) -> dict[str, AblationJob]:
    """classifier -> the job that trains the method's configuration with it on the validation split."""
    recipe = (*(SMOKE_OVERRIDES if smoke else PROXIES[CLASSIFIER_CHOICE_PROXY].overrides), *VALIDATION_SPLIT)
    work = work_root / "classifier_choice" / method
    return {classifier: AblationJob(CLASSIFIER_CHOICE_PROXY, work / classifier, method,
                                    (*recipe, *method_overrides, f"method.classifier={classifier}"))
            for classifier in CLASSIFIERS}


def chosen_classifier(candidates: dict[str, dict], own: str) -> str:
    """The method's own classifier, unless the other's mean is higher by more than two standard errors
    of the difference. `candidates`: classifier -> {"mean", "std", "n"} over seeds (one seed: no std,
    and any gain decides)."""
    other = next(classifier for classifier in candidates if classifier != own)
    noise = math.sqrt(sum((c["std"] or 0.0) ** 2 / c["n"] for c in candidates.values()))
    return other if candidates[other]["mean"] - candidates[own]["mean"] > 2 * noise else own


def record_choice(own: str, jobs: dict[str, AblationJob]) -> dict:
    """Both candidates' validation aggregates (overall, Many, Medium, Few) and the choice."""
    aggregates = {classifier: json.loads((job.work / "ablation.json").read_text())["aggregates"][job.variants]
                  for classifier, job in jobs.items()}
    top1 = {classifier: agg["acc_top1"] for classifier, agg in aggregates.items()}
    return {"own": own, "chosen": chosen_classifier(top1, own), "overrides": list(jobs["linear"].overrides[:-1]),
            "seeds": aggregates["linear"]["acc_top1"]["n"],
            "validation": {classifier: {split: agg[f"acc_{split}"] for split in ("top1", "many", "medium", "few")}
                           for classifier, agg in aggregates.items()}}


def own_classifier(method: str) -> str:
    """The classifier the method's preset uses."""
    return MethodConfig(preset=method).classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(SWEPT), help=f"comma-separated subset of {', '.join(SWEPT)}")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1 seed")
    parser.add_argument("--out", type=Path, help="folder for the JSON and the runs (default: the repo's)")
    args = parser.parse_args()
    results_dir, work_root = ((ROOT / "bench" / "results", ROOT / "runs" / "results") if args.out is None
                              else (args.out, args.out / "runs"))
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in SWEPT]
    if unknown:
        raise SystemExit(f"unknown method {', '.join(unknown)}: choose from {', '.join(SWEPT)}")
    # The method's configuration as the digits-LT sweep chose it, before any classifier choice.
    proxy = PROXIES[CLASSIFIER_CHOICE_PROXY]
    jobs = {m: candidate_jobs(m, chosen_overrides(m, proxy, results_dir, classifier_choice=False), work_root,
                              args.smoke) for m in methods}
    run_ablations([job for candidates in jobs.values() for job in candidates.values()], 1 if args.smoke else args.seeds)
    path = choice_file(results_dir)
    record = json.loads(path.read_text()) if path.exists() else {
        "proxy": CLASSIFIER_CHOICE_PROXY, "split": f"validation split ({VAL_PER_CLASS} images per class)",
        "metric": "acc_top1", "methods": {}}
    record["methods"].update({m: record_choice(own_classifier(m), jobs[m]) for m in methods})
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    for m in methods:
        scores = ", ".join(f"{c} {v['top1']['mean']:.1f}" for c, v in record["methods"][m]["validation"].items())
        print(f"{m}: {record['methods'][m]['chosen']} (validation accuracy: {scores})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
