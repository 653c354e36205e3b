"""The study's trained models under post-hoc logit adjustment: accuracy by split when the test logits
are shifted by -tau log(pi), pi the training label prior (Menon et al. 2021, post-hoc correction).

    python -m bench.posthoc_shift --proxy synthetic1000_imagenet_lt

It tells two reasons for missing the Few classes apart. If training left the decision threshold
biased, some tau recovers Few accuracy and overall accuracy with it. If the features and classifiers
do not separate the Few classes, no tau reaches the trade-off of a method whose do. tau = 0 is the
accuracy the study reports. Beside it, the mean norm of the classifier's rows per split (both branches
side by side; a cosine classifier divides them out). It covers the methods of the study's table, so it
needs the study's run folders and JSON (`python -m bench.tuned_study` first); it writes
bench/results/posthoc_<proxy>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader

from allnc_dist.config import RunConfig, load_config
from allnc_dist.data import LongTailData, build_data
from allnc_dist.engine.evaluate import Outputs, collect_outputs, inference_classifier
from allnc_dist.method.classification import log_prior
from allnc_dist.method.network import BranchedNetwork, build_network
from allnc_dist.metrics import accuracy_by_split, class_splits
from allnc_dist.tracking import RunDirectory
from bench.tuned_study import OVERRIDES_FILE, PROXIES, same_configuration, tuned_file, variant

ROOT = Path(__file__).resolve().parents[1]
TAUS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def shifted_accuracies(outputs: Outputs, prior_log: torch.Tensor, taus: Sequence[float],
                       splits: dict[str, Sequence[int]]) -> dict[float, dict[str, float]]:
    """tau -> accuracy by split (top1 and one key per split) of argmax(logits - tau log pi)."""
    return {tau: accuracy_by_split((outputs.logits - tau * prior_log).argmax(1), outputs.labels, splits)
            for tau in taus}


def final_network(run_dir: RunDirectory, data: LongTailData) -> tuple[BranchedNetwork, RunConfig]:
    """A finished run's final model, on the CPU, and its config."""
    cfg = load_config(run_dir.config_path)
    network = build_network(cfg, data.image_shape[0], data.num_classes)
    network.load_state_dict(torch.load(run_dir.model_path, weights_only=True)["model"])
    return network, cfg


def final_test_outputs(network: BranchedNetwork, cfg: RunConfig, data: LongTailData) -> Outputs:
    """The network's logits on the test split, in fp32 on the CPU, as the run's evaluation mixed them."""
    loader = DataLoader(data.test, batch_size=cfg.data.batch_size)
    return collect_outputs(network, loader, cfg.method.gbbn.test_alpha, torch.device("cpu"))


def row_norms(network: BranchedNetwork, splits: dict[str, Sequence[int]]) -> dict[str, float]:
    """Mean L2 norm of the classifier's rows (the branches side by side) over each split's classes."""
    norms = inference_classifier(network).norm(dim=1)
    return {name: norms[list(classes)].mean().item() for name, classes in splits.items()}


def one_seed(run_dir: RunDirectory, data: LongTailData, prior_log: torch.Tensor,
             splits: dict[str, Sequence[int]]) -> tuple[dict[float, dict[str, float]], dict[str, float]]:
    """One finished run's accuracies by tau, and its classifier's row norms by split."""
    network, cfg = final_network(run_dir, data)
    accuracies = shifted_accuracies(final_test_outputs(network, cfg, data), prior_log, TAUS, splits)
    return accuracies, row_norms(network, splits)


def method_runs(work: Path, method: str, overrides: list[str], proxy: str) -> list[RunDirectory]:
    """The finished seeds (a report means the run finished) of the study entry's configuration: in the
    method's own folder, or in another row's where the study took that row's runs (collect_proxy)."""
    folders = sorted(work.glob("*/" + OVERRIDES_FILE), key=lambda path: path.parent.name != method)
    for folder in (path.parent for path in folders):
        if same_runs(json.loads((folder / OVERRIDES_FILE).read_text()), overrides, proxy):
            seeds = sorted((folder / variant(method)).glob("seed*"))
            return [RunDirectory(path) for path in seeds if RunDirectory(path).report_path.exists()]
    return []


def mean_over_seeds(per_seed: list[dict[float, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """tau -> split -> mean accuracy over the seeds (JSON keys are strings)."""
    return {str(tau): {key: statistics.fmean(seed[tau][key] for seed in per_seed) for key in per_seed[0][tau]}
            for tau in per_seed[0]}


def same_runs(recorded: list[str], study: list[str], proxy: str) -> bool:
    """Whether a recorded entry's overrides give the configuration of the study table's runs."""
    return bool(recorded) and same_configuration(PROXIES[proxy], recorded, study)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="synthetic1000_imagenet_lt", choices=list(PROXIES))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "results", help="the study's run root")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    work, study = args.runs / f"tuned_{args.proxy}", tuned_file(args.out, args.proxy)
    if not study.exists():
        raise SystemExit(f"{study} is missing: run `python -m bench.tuned_study --proxies {args.proxy}` first")
    path = args.out / f"posthoc_{args.proxy}.json"
    recorded = json.loads(path.read_text())["methods"] if path.exists() else {}
    data, results = None, {}
    for method, entry in json.loads(study.read_text())["methods"].items():  # the study table's, not stale folders
        runs = method_runs(work, method, entry["overrides"], args.proxy)
        if not runs:
            # Without run folders here, the recorded entry stays while it is of the runs the study table shows.
            kept = recorded.get(method)
            if kept and same_runs(kept.get("overrides", []), entry["overrides"], args.proxy):
                results[method] = kept
            continue
        if data is None:  # every method of a proxy trains on the same data
            data = build_data(load_config(runs[0].config_path).data)
            splits, prior_log = class_splits(data.class_counts), log_prior(data.class_counts)
        accuracies, norms = zip(*(one_seed(run, data, prior_log, splits) for run in runs))
        results[method] = {"overrides": entry["overrides"], "seeds": len(runs),
                           "accuracy": mean_over_seeds(list(accuracies)),
                           "row_norms": {name: statistics.fmean(n[name] for n in norms) for name in splits}}
        print(method, json.dumps(results[method]["accuracy"]), flush=True)
    if not results:
        raise SystemExit(f"no finished run under {work}: run `python -m bench.tuned_study --proxies {args.proxy}`")
    path.write_text(json.dumps({"proxy": args.proxy, "taus": list(TAUS), "methods": results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
