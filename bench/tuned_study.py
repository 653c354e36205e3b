"""Issue 13's study: every method with the configuration its sweep chose, 5 seeds, on every proxy.

    python -m bench.tuned_study                            # collect the sweeps, train, write the JSON
    python -m bench.tuned_study --proxies digits_lt        # one proxy
    python -m bench.tuned_study --smoke --sweeps DIR --out /tmp/tuned   # tiny version, for the tests

The sweeps come first, each on digits-LT's validation split (never its test split), with the same
budget and the same learning-rate / weight-decay search for every method:

    export RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=900   # see below
    for m in la allnc ldam_drw bbn; do
      allnc sweep jobs/configs/sweeps/study/digits_$m.yaml --out runs/sweeps/digits_$m
    done

(On 2 busy cores a trial's Ray Train worker can take longer than Ray's default 60 s to start, and
the trial then retries in a loop; the variable gives it 15 minutes.)

The 10-class sweeps cannot judge some knobs (KNOBS: the classifier, AllNC's branches, P2P's weight and
form), so `python -m bench.validation_choice` then picks their values on 100-class synthetic-LT's validation
split; the proxies with at least 100 classes train each method with them, or with the values they refined
on their own validation split (`--proxy`). P2P's form is a requirement first (the UFM geometry: KNOBS), and
its choice holds on every proxy.

This script copies each sweep's summary.md and best.json to bench/results/sweeps/, then trains each
method's chosen configuration on each proxy of PROXIES with train.seed 0..4 and writes
bench/results/tuned_<proxy>.json (`python -m bench.publish` shows them in docs/RESULTS.md). CE has no
sweep: it runs with the proxy's own recipe, as the reference. The chosen learning rate and weight
decay apply on digits-LT, where they were chosen; the other proxies keep their own recipe and take the
method's chosen knobs only (a method's defaults are what the study is about; a dataset's optimiser
settings are not).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from allnc_dist.config import MethodConfig, RunConfig, load_config
from allnc_dist.sweep.spec import load_sweep
from bench.ablation_jobs import SMOKE_OVERRIDES, AblationJob, run_ablations

ROOT = Path(__file__).resolve().parents[1]

SWEPT = ("la", "ldam_drw", "bbn", "allnc")
# Runs that isolate where a method's chosen configuration gains or loses: each is a method of the
# study (its preset, sweep choice and chosen values of KNOBS) plus these overrides. AllNC's bilateral
# network without the auxiliary losses (GBBN alone, also where the choice dropped GBBN); AllNC without
# the bilateral network (the losses on one branch) and with it; AllNC without the Gram gap in its P2P (the
# contrastive form the 10-class sweep chose, whose Few classes in the unconstrained-features model settle
# past the simplex angle); the three parts LDAM-DRW differs from LA by at K = 1000 (the cosine
# classifier, on LA and on AllNC; DRW); and LA, AllNC and BBN with the linear classifier. On a proxy
# where the base method already runs with the overrides (a value chosen there) an isolation run would
# repeat it, and the study leaves it out.
ISOLATION: dict[str, tuple[str, tuple[str, ...]]] = {
    "allnc_without_aux": ("allnc", ("method.gbbn.enabled=true", "method.hycon.weight=0", "method.p2p.weight=0")),
    "allnc_one_branch": ("allnc", ("method.gbbn.enabled=false",)),
    "allnc_two_branches": ("allnc", ("method.gbbn.enabled=true",)),
    "allnc_contrastive": ("allnc", ("method.p2p.form=contrastive",)),
    "allnc_cosine": ("allnc", ("method.classifier=cosine",)),
    "la_cosine": ("la", ("method.classifier=cosine",)),
    "allnc_linear": ("allnc", ("method.classifier=linear",)),
    "la_linear": ("la", ("method.classifier=linear",)),
    "bbn_linear": ("bbn", ("method.classifier=linear",)),
    "ldam_without_drw": ("ldam_drw", ("method.drw_start=null",)),
}
METHODS = ("ce", *SWEPT, *ISOLATION)
SWEEP_SPECS = ROOT / "jobs" / "configs" / "sweeps" / "study"
OVERRIDES_FILE = "overrides.json"
# The accuracies recorded per value and per seed: metrics acc_<split>.
SPLITS = ("top1", "many", "medium", "few")
# bench/validation_choice.py chooses the knobs of KNOBS on this proxy's validation split (a larger proxy may
# refine them on its own).
CHOICE_PROXY = "synthetic100_small"


@dataclass(frozen=True)
class Knob:
    """A method knob the 10-class sweeps could not judge. bench/validation_choice.py chooses its value for
    each of `methods` on CHOICE_PROXY's validation split, with the knobs before it in KNOBS already chosen;
    the proxies with at least 100 classes then train each method with its choices, or with the ones they
    refined on their own validation split (every proxy, for a knob `on_every_proxy`)."""
    about: str  # what the knob is, for the docs
    values: dict[str, str]  # value -> the override that sets it
    methods: tuple[str, ...]
    value_of: Callable[[MethodConfig], str]  # the value a method configuration has
    seeds: int  # train.seed 0..seeds-1 for each value
    # value -> the requirement it fails: trained, so that the record shows what the requirement costs on
    # validation, but never chosen.
    excluded: dict[str, str] = field(default_factory=dict)
    # The choice applies on the 10-class proxies too (their sweeps never searched the knob's values).
    on_every_proxy: bool = False


KNOBS = {
    "classifier": Knob("`method.classifier` (linear or cosine)",
                       {"linear": "method.classifier=linear", "cosine": "method.classifier=cosine"}, SWEPT,
                       lambda method: method.classifier, 2),
    # Searched after the 1000-class isolation runs (test split) showed AllNC without GBBN at or above LA on
    # overall and Few accuracy, and AllNC with it 4 points below on Few; the choice itself sees only the
    # 100-class validation split. 6 seeds: with 3, the margin went from 1.7 points on one machine to 0.4
    # on another (docs/method.md, "Seeds").
    "branches": Knob("`method.gbbn.enabled` (AllNC's two GBBN branches, or its losses on one branch)",
                     {"two": "method.gbbn.enabled=true", "one": "method.gbbn.enabled=false"}, ("allnc",),
                     lambda method: "two" if method.gbbn.enabled else "one", 6),
    # P2P is the auxiliary part AllNC keeps (HyCon's sweep weight is 0), at a weight the 10-class sweep chose:
    # searched again on a log grid around that value, with as many seeds as the branches.
    "p2p_weight": Knob("`method.p2p.weight` (λ_p, the weight of AllNC's P2P loss)",
                       {w: f"method.p2p.weight={w}" for w in ("0.1", "0.3", "1", "3")}, ("allnc",),
                       lambda method: f"{method.p2p.weight:g}", 6),
    # Issue 13 requires the UFM geometry of AllNC's default (Few cosines within 0.1 of the simplex angle):
    # the contrastive form, the 10-class sweep's choice, leaves the UFM's Few classes at their own simplex,
    # outside that bound (docs/method.md), and adding the Gram gap brings them to the angle. So the form is
    # a requirement first and the validation split measures its cost; the 10-class sweep never searched the
    # gap, so the choice holds on every proxy.
    "p2p_form": Knob("`method.p2p.form` (P2P contrastive, or contrastive with the Gram gap)",
                     {f: f"method.p2p.form={f}" for f in ("contrastive", "contrastive_gram")}, ("allnc",),
                     lambda method: method.p2p.form, 6,
                     excluded={"contrastive": "its Few classes in the unconstrained-features model settle past "
                               "the simplex angle, outside issue 13's bound of 0.1 (docs/method.md)"},
                     on_every_proxy=True),
}


@dataclass(frozen=True)
class Proxy:
    config: str  # jobs/configs/<config>.yaml
    title: str
    overrides: tuple[str, ...]  # the proxy's recipe on top of its config
    tuned_optimiser: bool  # the sweeps ran here: the chosen lr and weight decay apply
    # >= 100 classes: each method trains with the values of KNOBS chosen on CHOICE_PROXY's validation split
    # (bench/validation_choice.py), which the 10-class sweeps could not judge, or refined on its own.
    takes_choices: bool = False


PROXIES = {
    "digits_lt": Proxy("digits_lt", "digits-LT (10 classes, IR 100, small CNN, 60 epochs)", (), True),
    # The terminal phase: Fang et al. (2021)'s step imbalance (5 majority classes of 124 images, 5
    # minority classes of one), no augmentation, weight decay 5e-3 and 200 epochs, so every method fits
    # its training set; CE's minority classifiers then collapse (Few cosine of W 0.999 in a probe run).
    "digits_lt_terminal": Proxy(
        "digits_lt", "digits-LT, terminal phase (step imbalance, 5 × 124 and 5 × 1 images, 200 epochs)",
        ("data.profile=step", "data.imbalance_ratio=100", "data.augment=none", "optim.weight_decay=5e-3",
         "train.epochs=200", "train.eval_every=200", "train.checkpoint_every=200"), False),
    "synthetic100_small": Proxy(
        "synthetic100_small", "synthetic-LT (100 classes, IR 100, 8×8 images, small CNN, 30 epochs)",
        ("train.epochs=30", "train.eval_every=30", "train.checkpoint_every=30"), False, True),
    "synthetic1000_imagenet_lt": Proxy(
        "synthetic1000_imagenet_lt",
        "synthetic-LT at ImageNet-LT's class count (1000 classes, ImageNet-LT's count profile, 8×8 images, 10 epochs)",
        (), False, True),
}


def tuned_file(results_dir: Path, proxy_name: str) -> Path:
    """The study's JSON of one proxy."""
    return results_dir / f"tuned_{proxy_name}.json"


def best_file(results_dir: Path, method: str) -> Path:
    """A swept method's best trial, as collect_sweeps keeps it."""
    return results_dir / "sweeps" / f"digits_{method}_best.json"


def choice_name(knob: str, proxy_name: str = CHOICE_PROXY) -> str:
    """The name of a knob's validation choice on a proxy: its record's file and its runs' folder."""
    return f"{knob}_choice" if proxy_name == CHOICE_PROXY else f"{knob}_choice_{proxy_name}"


def choice_file(results_dir: Path, knob: str, proxy_name: str = CHOICE_PROXY) -> Path:
    """bench/validation_choice.py's record of one knob on a proxy: each value's validation accuracy and the
    choice per method."""
    return results_dir / f"{choice_name(knob, proxy_name)}.json"


def knob_override(method: str, knob: str, results_dir: Path, proxy_name: str) -> tuple[str, ...]:
    """The override of the knob's value chosen for the method on the proxy: chosen on its own validation split
    where the choice was refined there, else on CHOICE_PROXY's; none before any choice has run for it."""
    for name in dict.fromkeys((proxy_name, CHOICE_PROXY)):
        path = choice_file(results_dir, knob, name)
        choice = json.loads(path.read_text())["methods"].get(method) if path.exists() else None
        if choice:
            return (KNOBS[knob].values[choice["chosen"]],)
    return ()


def choice_overrides(method: str, proxy_name: str, results_dir: Path, knobs: tuple[str, ...]) -> tuple[str, ...]:
    """The method's chosen values of `knobs` on the proxy, as overrides."""
    return tuple(o for knob in knobs for o in knob_override(method, knob, results_dir, proxy_name))


def collect_sweeps(sweeps: Path, results_dir: Path) -> None:
    """Copy each finished study sweep's summary.md and best.json next to the doc."""
    target = results_dir / "sweeps"
    target.mkdir(parents=True, exist_ok=True)
    for method in SWEPT:
        folder = sweeps / f"digits_{method}"
        if (folder / "best.json").exists():
            shutil.copyfile(folder / "best.json", best_file(results_dir, method))
            shutil.copyfile(folder / "summary.md", target / f"digits_{method}_summary.md")


def chosen_overrides(method: str, proxy_name: str, results_dir: Path, knobs: tuple[str, ...] = tuple(KNOBS)
                     ) -> tuple[str, ...]:
    """The method's preset and fixed sweep overrides, then its sweep's best knobs (without lr and weight
    decay where the proxy keeps its own recipe), then its values of `knobs` where the proxy takes the
    choices (of the knobs chosen for every proxy, everywhere). A method without a finished sweep runs its
    preset."""
    if method in ISOLATION:
        base, extra = ISOLATION[method]
        return (*chosen_overrides(base, proxy_name, results_dir, knobs), *extra)
    if method not in SWEPT:
        return (f"method.preset={method}",)
    proxy = PROXIES[proxy_name]
    spec = load_sweep(SWEEP_SPECS / f"digits_{method}.yaml")
    fixed = [o for o in spec.overrides if o.startswith("method.")]
    best_path = best_file(results_dir, method)
    best = json.loads(best_path.read_text()) if best_path.exists() else None
    sweep_knobs = best["overrides"] if best else []
    taken = knobs if proxy.takes_choices else tuple(knob for knob in knobs if KNOBS[knob].on_every_proxy)
    choices = choice_overrides(method, proxy_name, results_dir, taken)
    return (*fixed, *(o for o in sweep_knobs if proxy.tuned_optimiser or not o.startswith("optim.")), *choices)


def run_config(proxy: Proxy, overrides: tuple[str, ...] | list[str]) -> RunConfig:
    """The configuration the overrides give on the proxy's job config."""
    return load_config(ROOT / "jobs" / "configs" / f"{proxy.config}.yaml", list(overrides))


def same_configuration(proxy: Proxy, overrides: list[str] | tuple[str, ...], other: list[str] | tuple[str, ...]
                       ) -> bool:
    """Whether two override lists give one configuration on the proxy (a record's runs against a choice)."""
    return run_config(proxy, overrides) == run_config(proxy, other)


def isolates(method: str, proxy_name: str, results_dir: Path) -> bool:
    """Whether the method trains something of its own on the proxy: an isolation run whose method
    section comes out as its base method's would train the base again."""
    if method not in ISOLATION:
        return True
    proxy = PROXIES[proxy_name]
    base = run_config(proxy, chosen_overrides(ISOLATION[method][0], proxy_name, results_dir)).method
    return run_config(proxy, chosen_overrides(method, proxy_name, results_dir)).method != base


def recipe(proxy: Proxy, smoke: bool) -> tuple[str, ...]:
    """The proxy's training recipe, or the tests' tiny one."""
    return SMOKE_OVERRIDES if smoke else proxy.overrides


def job_overrides(proxy_name: str, method: str, results_dir: Path, smoke: bool) -> tuple[str, ...]:
    """What the method trains with on the proxy: the proxy's recipe, then the method's chosen overrides."""
    proxy = PROXIES[proxy_name]
    return (*recipe(proxy, smoke), *chosen_overrides(method, proxy_name, results_dir))


def tuned_jobs(proxy_name: str, methods: list[str], work_root: Path, results_dir: Path,
               smoke: bool) -> list[AblationJob]:
    proxy = PROXIES[proxy_name]
    return [AblationJob(proxy.config, work_root / f"tuned_{proxy_name}" / method, variant(method),
                        job_overrides(proxy_name, method, results_dir, smoke))
            for method in methods if isolates(method, proxy_name, results_dir)]


def variant(method: str) -> str:
    """The ablation job's variant a method of the study runs as."""
    return ISOLATION[method][0] if method in ISOLATION else method


def run_tuned(jobs: list[AblationJob], seeds: int) -> None:
    """Each job records its overrides beside its runs first, so that the JSON says what ran."""
    for job in jobs:
        job.work.mkdir(parents=True, exist_ok=True)
        (job.work / OVERRIDES_FILE).write_text(json.dumps(list(job.overrides)) + "\n")
    run_ablations(jobs, seeds)


def collect_proxy(proxy_name: str, work_root: Path, results_dir: Path, smoke: bool = False) -> None:
    """One JSON per proxy: the overrides, seeds and aggregates of each method that has run on it. A method
    with runs under `work_root` takes them; one without keeps its entry of the JSON already there (run folders
    are scratch, the JSON is the record), or takes the entry of another row there that ran its configuration
    (a choice can make an isolation run the method itself). Left out: an isolation run that repeats its base
    method there, and runs made before the method's choices changed (their recorded overrides give another
    configuration than the study's now: train them again)."""
    proxy = PROXIES[proxy_name]
    path = tuned_file(results_dir, proxy_name)
    recorded = json.loads(path.read_text())["methods"] if path.exists() else {}
    methods = {}
    for method in METHODS:
        if not isolates(method, proxy_name, results_dir):
            continue
        current = job_overrides(proxy_name, method, results_dir, smoke)
        own = [e for e in (run_entry(work_root / f"tuned_{proxy_name}" / method, method), recorded.get(method)) if e]
        others = (e for name, e in recorded.items() if name != method)
        entry = next((e for e in (*own, *others) if same_configuration(proxy, e["overrides"], current)), None)
        if entry is None and own:
            print(f"left out of {proxy_name}: {method} ran {own[0]['overrides']}, before the current choice "
                  f"{list(current)}")
        if entry is not None:
            methods[method] = entry
    record = {"proxy": proxy_name, "title": proxy.title, "config": proxy.config, "methods": methods}
    path.write_text(json.dumps(record, indent=2) + "\n")


def run_entry(work: Path, method: str) -> dict | None:
    """A method's entry of the study's JSON from its run folder, if it has finished runs there."""
    if not (work / "ablation.json").exists():
        return None
    data, name = json.loads((work / "ablation.json").read_text()), variant(method)
    # Per seed too: a later run can then be compared with this one seed by seed, not only by the mean.
    per_seed = {seed: {f"acc_{split}": run["metrics"][f"acc_{split}"] for split in SPLITS}
                for seed, run in data["runs"][name].items()}
    return {"overrides": json.loads((work / OVERRIDES_FILE).read_text()), "epochs": data["epochs"],
            "seeds": len(data["runs"][name]), "aggregates": data["aggregates"][name], "per_seed": per_seed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", default=",".join(PROXIES), help=f"comma-separated subset of {', '.join(PROXIES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sweeps", type=Path, default=ROOT / "runs" / "sweeps", help="the study sweeps' folders")
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1 seed")
    parser.add_argument("--out", type=Path, help="folder for the JSON and the runs (default: the repo's)")
    args = parser.parse_args()
    results_dir, work_root = ((ROOT / "bench" / "results", ROOT / "runs" / "results") if args.out is None
                              else (args.out, args.out / "runs"))
    results_dir.mkdir(parents=True, exist_ok=True)
    proxies, methods = args.proxies.split(","), args.methods.split(",")
    unknown = [name for name in proxies if name not in PROXIES] + [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown proxy or method {', '.join(unknown)}: proxies are {', '.join(PROXIES)}; "
                         f"methods are {', '.join(METHODS)}")
    collect_sweeps(args.sweeps, results_dir)
    for name in proxies:
        run_tuned(tuned_jobs(name, methods, work_root, results_dir, args.smoke), 1 if args.smoke else args.seeds)
        collect_proxy(name, work_root, results_dir, args.smoke)
        print(f"wrote {tuned_file(results_dir, name)}")


if __name__ == "__main__":
    main()
