"""The ablations and AllNC's reconstructed choices that docs/RESULTS.md reports, trained by the
project's own job (`jobs/ablation.py --local`).

    python -m bench.ablations                        # 5 seeds each, then `python -m bench.publish`
    python -m bench.ablations --smoke --out /tmp/results   # tiny version, for the test suite

- The ablation job on each dataset of ABLATIONS: its runs go to `runs/results/<config>/`, its
  `ablation.json` is copied to `bench/results/ablation_<config>.json`, and the CE and AllNC-paper heatmaps
  of the first seed go to `docs/figures/<config>/` (drawn from the runs, which are not kept beside the
  JSON: the one output of a bench that goes to docs/).
- The reconstructed choices of METHOD.md (CHOICES): AllNC's paper form on digits-LT with one choice
  switched at a time, through the same job (`--variants allnc_paper`); their runs go to
  `runs/results/choices_digits_lt/<choice>/`, the summary to `bench/results/choices_digits_lt.json`.

With `--out DIR` the JSON goes to DIR, the figures to DIR/figures and the runs to DIR/runs
(`python -m bench.publish --results DIR --docs DIR RESULTS.md` then writes DIR/RESULTS.md). The jobs
run two at a time (bench/ablation_jobs.py); finished runs are reused, so an interrupted study picks up
where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from allnc_dist.engine.trainer import TrainResult
from allnc_dist.results_table import plot_geometry
from bench.ablation_jobs import SMOKE_OVERRIDES, AblationJob, run_ablations

ROOT = Path(__file__).resolve().parents[1]
# (config file, what the doc calls it)
ABLATIONS = {
    "digits_lt": "digits-LT (10 classes, IR 100, small CNN)",
    "synthetic100_small": "synthetic-LT (100 classes, IR 100, 8×8 images, small CNN)",
}
ABLATION_OVERRIDES = {"synthetic100_small": ["train.epochs=30", "train.eval_every=30", "train.checkpoint_every=30"]}
# Choices METHOD.md leaves to us, each tried against AllNC's paper form (allnc_paper) on CHOICES_CONFIG:
# a name, what the choice is (against the paper form), and the overrides that make it.
CHOICES_CONFIG = "digits_lt"
CHOICES = {
    "p2p_contrastive": ("P2P as the bidirectional CE (METHOD.md's first form), not MSE + ETF Gram",
                        ["method.p2p.form=contrastive"]),
    "gbbn_linear": ("α_t linear, not parabolic 1 − (t/T)²", ["method.gbbn.schedule=linear"]),
    "hycon_prototypes": ("HyCon against the prototypes only, not prototypes and batch samples",
                         ["method.hycon.negatives=prototypes"]),
    "beta_0.5": ("class-mean EMA β = 0.5, not 0.9", ["method.class_means.beta=0.5"]),
}
CHOICES_FILE = f"choices_{CHOICES_CONFIG}.json"
SMOKE_VARIANTS = "ce,allnc_paper"
PAPER = "allnc_paper"  # the variant whose heatmaps and choices these are
SMOKE_CHOICES = 2


def ablation_file(config: str) -> str:
    return f"ablation_{config}.json"


def ablation_jobs(work_root: Path, smoke: bool) -> list[AblationJob]:
    """The ablation of every config in ABLATIONS, then AllNC under each reconstructed choice."""
    def overrides(config: str, extra: list[str]) -> tuple[str, ...]:
        return (*extra, *(SMOKE_OVERRIDES if smoke else ABLATION_OVERRIDES.get(config, [])))

    jobs = [AblationJob(config, work_root / config, SMOKE_VARIANTS if smoke else None, overrides(config, []))
            for config in ABLATIONS]
    choices = list(CHOICES.items())[:SMOKE_CHOICES] if smoke else CHOICES.items()
    return jobs + [AblationJob(CHOICES_CONFIG, choices_root(work_root) / name, PAPER, overrides(CHOICES_CONFIG, extra))
                   for name, (_, extra) in choices]


def choices_root(work_root: Path) -> Path:
    return work_root / f"choices_{CHOICES_CONFIG}"


def collect_ablation(config: str, work: Path, results_dir: Path, figures_dir: Path) -> None:
    """Keep the ablation's JSON and the CE / AllNC-paper heatmaps of its first seed next to the doc."""
    shutil.copyfile(work / "ablation.json", results_dir / ablation_file(config))
    first_seed = min(int(s) for s in json.loads((work / "ablation.json").read_text())["runs"]["ce"])
    runs = {name: TrainResult.load(work / name / f"seed{first_seed}") for name in ("ce", PAPER)}
    folder = figures_dir / config
    folder.mkdir(parents=True, exist_ok=True)
    plot_geometry(runs, runs["ce"].report["class_counts"], folder)


def collect_choices(work_root: Path, results_dir: Path) -> None:
    """AllNC's aggregates under each choice that has run, with what the choice is, in one JSON."""
    record = {"config": CHOICES_CONFIG, "choices": {}}
    for name, (what, overrides) in CHOICES.items():
        path = choices_root(work_root) / name / "ablation.json"
        if path.exists():
            data = json.loads(path.read_text())
            record["choices"][name] = {"what": what, "overrides": overrides, "epochs": data["epochs"],
                                       "seeds": len(data["runs"][PAPER]), "aggregates": data["aggregates"][PAPER]}
    (results_dir / CHOICES_FILE).write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny ablations (2 variants, 1 seed, 1 epoch)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="folder for the JSON, figures and runs (default: the repo's)")
    args = parser.parse_args()
    if args.out is None:
        results_dir, figures_dir = ROOT / "bench" / "results", ROOT / "docs" / "figures"
        work_root = ROOT / "runs" / "results"
    else:
        results_dir, figures_dir, work_root = args.out, args.out / "figures", args.out / "runs"
    results_dir.mkdir(parents=True, exist_ok=True)
    run_ablations(ablation_jobs(work_root, args.smoke), 1 if args.smoke else args.seeds)
    for config in ABLATIONS:
        collect_ablation(config, work_root / config, results_dir, figures_dir)
    collect_choices(work_root, results_dir)
    print(f"wrote {', '.join([*map(ablation_file, ABLATIONS), CHOICES_FILE])} to {results_dir} and the heatmaps "
          f"to {figures_dir}")


if __name__ == "__main__":
    main()
