"""Issue 13's choices at 100 classes and up: the knobs the 10-class sweeps could not judge, on a validation split.

For each knob of KNOBS in turn (bench/tuned_study.py: the classifier, then AllNC's branches, then P2P's
weight, then its form), each of the knob's methods trains its configuration (every knob at its choice so far) with
every value of the knob on synthetic-100, and the values are ranked on its validation split (never the test
split).

    python -m bench.validation_choice                         # every knob: 16 + 12 + 24 + 12 runs
    python -m bench.validation_choice --knobs branches        # one knob (the ones before it must have run)
    python -m bench.validation_choice --smoke --out /tmp/choice   # tiny version, for the tests

The digits-LT sweeps had 10 classes, and the study's test splits showed the classifier and AllNC's
bilateral network deciding the Few classes at 100 and 1000 classes; without the bilateral network, P2P
is the only auxiliary part AllNC keeps, at a weight and in a form chosen with it. This is the search over those
knobs, on a validation split with 100 classes (data.val_per_class images per class, drawn apart from
the training and test splits), with the same budget for every method: each value trains with train.seed
0..N-1 (N: the knob's `seeds`), and a method keeps its own value unless another's mean validation
accuracy (the sweeps' metric) is higher by more than two standard errors of the difference, the seed
noise, or, where the overall means are within that noise, its mean Few accuracy is (the acceptance
weighs both). A value that fails one of issue 13's requirements (P2P's contrastive form: the UFM geometry)
is trained, so that the record shows what the requirement costs, but never chosen.
bench/results/<knob>_choice.json records every value and the choice; the study's proxies
with at least 100 classes then train each method with its choices (every proxy, for P2P's form:
bench/tuned_study.py).

Choosing a knob again after the ones that follow it (a second pass) trains it with their choices, and its
own value is its first choice; the record keeps the first pass beside it:

    python -m bench.validation_choice --knobs branches        # after p2p_weight: the branches at the chosen weight

A larger proxy can refine those choices on its own validation split, one knob at a time, starting from the
100-class choices (each knob's own value is then the one chosen at 100 classes):

    python -m bench.validation_choice --proxy synthetic1000_imagenet_lt --knobs branches
    python -m bench.validation_choice --proxy synthetic1000_imagenet_lt --knobs p2p_weight --values 1 --seeds 3

It writes bench/results/<knob>_choice_<proxy>.json, and that proxy alone then trains with the refined value.
`--values` trains a subset of the knob's values (always with the method's own), where a run costs too much
for the whole grid.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Collection
from pathlib import Path

from bench.ablation_jobs import AblationJob, run_ablations
from bench.tuned_study import (CHOICE_PROXY, KNOBS, PROXIES, SPLITS, choice_file, choice_name, job_overrides,
                               run_config, same_configuration)

ROOT = Path(__file__).resolve().parents[1]
VAL_PER_CLASS = 20
VALIDATION_SPLIT = (f"data.val_per_class={VAL_PER_CLASS}", "train.eval_split=val")


def base_overrides(method: str, proxy_name: str, results_dir: Path, smoke: bool) -> tuple[str, ...]:
    """The method as the study trains it on the proxy, every knob at its choice so far (on a proxy that refines
    CHOICE_PROXY's choices, CHOICE_PROXY's where it has none of its own), on the validation split. The value
    a knob has there is the method's own, the one another value must beat; a knob chosen again after the
    knobs that follow it (a second pass) is thus chosen with their values."""
    return (*job_overrides(proxy_name, method, results_dir, smoke), *VALIDATION_SPLIT)


def candidate_jobs(knob: str, method: str, proxy_name: str, base: tuple[str, ...], values: tuple[str, ...],
                   work_root: Path) -> dict[str, AblationJob]:
    """value -> the job that trains the method's configuration with it on the proxy's validation split."""
    work = work_root / choice_name(knob, proxy_name) / method
    return {value: AblationJob(PROXIES[proxy_name].config, work / value, method, (*base, KNOBS[knob].values[value]))
            for value in values}


def trained_values(knob: str, own: str, values: set[str] | None) -> tuple[str, ...]:
    """The knob's values a method trains, in KNOBS order: all of them, or `values` and its own (the one any
    other must beat)."""
    return tuple(v for v in KNOBS[knob].values if values is None or v in values or v == own)


def chosen_value(candidates: dict[str, dict[str, dict]], own: str, excluded: Collection[str] = ()) -> str:
    """The method's own value, unless another beats it: its mean overall accuracy higher by more than two
    standard errors of the difference (the seed noise), or, with the overall means within the noise, its Few
    accuracy higher by more than that. Of several such values, the highest overall mean wins. An `excluded`
    value (one that fails a requirement) is never chosen: where the own value is one, the highest overall mean
    of the others wins. `candidates`: value -> {"top1": ..., "few": ...}, each {"mean", "std", "n"} over seeds
    (one seed: no std, and any gain decides)."""
    def overall(value: str) -> float:
        return candidates[value]["top1"]["mean"]

    eligible = [value for value in candidates if value not in excluded]
    if not eligible:
        raise ValueError(f"every value trained ({', '.join(candidates)}) fails a requirement: train another "
                         "(`--values`)")
    if own in excluded:
        return max(eligible, key=overall)

    def gain(value: str, split: str) -> int:
        """+1 (-1): the value's mean is above (below) the own value's by more than the noise, else 0."""
        a, b = candidates[value][split], candidates[own][split]
        noise = 2 * math.sqrt(sum((c["std"] or 0.0) ** 2 / c["n"] for c in (a, b)))
        return (a["mean"] - b["mean"] > noise) - (b["mean"] - a["mean"] > noise)

    winners = [value for value in eligible if value != own
               and (gain(value, "top1") > 0 or (gain(value, "top1") == 0 and gain(value, "few") > 0))]
    return max(winners, key=overall) if winners else own


def record_choice(knob: str, own: str, base: tuple[str, ...], jobs: dict[str, AblationJob]) -> dict:
    """Every value's validation aggregates (overall, Many, Medium, Few), the values excluded and why, and the
    choice."""
    aggregates = {value: json.loads((job.work / "ablation.json").read_text())["aggregates"][job.variants]
                  for value, job in jobs.items()}
    validation = {value: {split: agg[f"acc_{split}"] for split in SPLITS} for value, agg in aggregates.items()}
    excluded = {value: why for value, why in KNOBS[knob].excluded.items() if value in validation}
    return {"own": own, "chosen": chosen_value(validation, own, excluded), "overrides": list(base),
            "seeds": min(score["top1"]["n"] for score in validation.values()), "validation": validation,
            **({"excluded": excluded} if excluded else {})}


def with_earlier_passes(entry: dict, before: dict | None, proxy_name: str) -> dict:
    """The new entry, keeping the one it replaces as an earlier pass where that trained another configuration
    (the knobs after this one chosen since), so that the record shows what each pass saw."""
    if before is None:
        return entry
    earlier = list(before.get("earlier", []))
    if not same_configuration(PROXIES[proxy_name], before["overrides"], entry["overrides"]):
        earlier.append({key: value for key, value in before.items() if key != "earlier"})
    return {**entry, "earlier": earlier} if earlier else entry


def choose(knob: str, methods: list[str], proxy_name: str, values: set[str] | None, seeds: int, work_root: Path,
           results_dir: Path, smoke: bool) -> Path:
    """Train the values of the knob (all of them, or `values` and each method's own) for each method on the
    proxy's validation split, then write the knob's record there."""
    bases = {m: base_overrides(m, proxy_name, results_dir, smoke) for m in methods}
    owns = {m: KNOBS[knob].value_of(run_config(PROXIES[proxy_name], bases[m]).method) for m in methods}
    jobs = {m: candidate_jobs(knob, m, proxy_name, bases[m], trained_values(knob, owns[m], values), work_root)
            for m in methods}
    run_ablations([job for candidates in jobs.values() for job in candidates.values()], seeds)
    path = choice_file(results_dir, knob, proxy_name)
    record = {"knob": knob, "proxy": proxy_name, "split": f"validation split ({VAL_PER_CLASS} images per class)",
              "metric": "acc_top1, then acc_few where acc_top1 ties",
              "methods": json.loads(path.read_text())["methods"] if path.exists() else {}}
    for m in methods:
        record["methods"][m] = with_earlier_passes(record_choice(knob, owns[m], bases[m], jobs[m]),
                                                   record["methods"].get(m), proxy_name)
        scores = ", ".join(f"{value} {v['top1']['mean']:.1f} / {v['few']['mean']:.1f}"
                           for value, v in record["methods"][m]["validation"].items())
        print(f"{knob}, {m}: {record['methods'][m]['chosen']} (validation accuracy, overall / Few: {scores})")
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knobs", default=",".join(KNOBS), help=f"comma-separated subset of {', '.join(KNOBS)}, "
                        "chosen in this order")
    parser.add_argument("--methods", help="comma-separated subset of each knob's methods (default: all of them)")
    parser.add_argument("--proxy", default=CHOICE_PROXY, choices=[n for n, p in PROXIES.items() if p.takes_choices],
                        help=f"the proxy whose validation split chooses (default {CHOICE_PROXY}; another proxy of "
                        f"at least 100 classes refines {CHOICE_PROXY}'s choices)")
    parser.add_argument("--values", help="comma-separated subset of the knob's values to train (each method's own is "
                        "always trained; default: all of them)")
    parser.add_argument("--seeds", type=int, help="seeds per value (default: the knob's own)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1 seed")
    parser.add_argument("--out", type=Path, help="folder for the JSON and the runs (default: the repo's)")
    args = parser.parse_args()
    results_dir, work_root = ((ROOT / "bench" / "results", ROOT / "runs" / "results") if args.out is None
                              else (args.out, args.out / "runs"))
    knobs = args.knobs.split(",")
    every_method = {m for knob in KNOBS.values() for m in knob.methods}
    wanted = args.methods.split(",") if args.methods else sorted(every_method)
    values = set(args.values.split(",")) if args.values else None
    every_value = {v for knob in knobs if knob in KNOBS for v in KNOBS[knob].values}
    unknown = ([k for k in knobs if k not in KNOBS] + [m for m in wanted if m not in every_method]
               + sorted((values or set()) - every_value))
    if unknown:
        raise SystemExit(f"unknown knob, method or value {', '.join(unknown)}: knobs are {', '.join(KNOBS)}; "
                         f"methods are {', '.join(sorted(every_method))}; values are {', '.join(sorted(every_value))}")
    results_dir.mkdir(parents=True, exist_ok=True)
    for knob in sorted(knobs, key=tuple(KNOBS).index):
        methods = [m for m in KNOBS[knob].methods if m in wanted]
        seeds = 1 if args.smoke else args.seeds or KNOBS[knob].seeds
        print(f"wrote {choose(knob, methods, args.proxy, values, seeds, work_root, results_dir, args.smoke)}")


if __name__ == "__main__":
    main()
