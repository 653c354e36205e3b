"""docs/RESULTS.md: what AllNC does, measured by the project's own tools.

    python bench/results_report.py                 # train the ablations (local engine), then write the doc
    python bench/results_report.py --report-only   # rewrite the doc from the JSON and figures already made
    python bench/results_report.py --smoke --out /tmp/results   # tiny version, for the test suite

Inputs and outputs:
- The study of each method as its sweep chose it, on every proxy: `bench/results/tuned_<proxy>.json` and
  `bench/results/sweeps/`, written by `python bench/tuned_study.py` (its own command: it needs the sweeps).
- The unconstrained-features studies across imbalance ratios and across class counts:
  `bench/results/ufm_imbalance.json` and `bench/results/ufm_classes.json`, written by
  `python bench/ufm_study.py --imbalance-grid` and `--class-grid` (their own commands: separate studies).
- The ablation job (`jobs/ablation.py --local`) on each dataset of ABLATIONS, 5 seeds: its runs go to
  `runs/results/<config>/`, its `ablation.json` is copied to `bench/results/ablation_<config>.json`,
  and the CE and AllNC heatmaps of the first seed go to `docs/figures/`.
- The reconstructed choices of METHOD.md (CHOICES): AllNC on digits-LT with one choice switched from
  its default at a time, 5 seeds each, through the same job (`--variants allnc`); their runs go to
  `runs/results/choices_digits_lt/<choice>/`, the summary to `bench/results/choices_digits_lt.json`.
- The doc: the tables, the figures, the comparisons computed from the numbers, and the discussion
  from `docs/results_discussion.md` (written by hand after reading the numbers).

The jobs run two at a time, one process (and one thread) each, untracked (bench/ablation_jobs.py).
Finished runs are reused, so an interrupted report picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from allnc_dist.ablation import VARIANTS, ablation_table, load_finished_run  # noqa: E402
from allnc_dist.compare import TABLE_NOTE, display_name, plot_geometry  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))  # bench/ is not a package
from ablation_jobs import AblationJob, run_ablations  # noqa: E402
from tuned_study import tuned_sections  # noqa: E402
from ufm_study import mean_pm_std  # noqa: E402  (the study's own format for its cells)

# (config file, what the doc calls it)
ABLATIONS = {
    "digits_lt": "digits-LT (10 classes, IR 100, small CNN)",
    "synthetic100_small": "synthetic-LT (100 classes, IR 100, 8×8 images, small CNN)",
}
ABLATION_OVERRIDES = {"synthetic100_small": ["train.epochs=30", "train.eval_every=30", "train.checkpoint_every=30"]}
# Choices METHOD.md leaves to us, each tried against AllNC's default on CHOICES_CONFIG: a name, what
# the choice is (against the default), and the overrides that make it.
CHOICES_CONFIG = "digits_lt"
CHOICES = {
    "p2p_contrastive": ("P2P as the bidirectional CE (METHOD.md's first form), not MSE + ETF Gram",
                        ["method.p2p.form=contrastive"]),
    "gbbn_linear": ("α_t linear, not parabolic 1 − (t/T)²", ["method.gbbn.schedule=linear"]),
    "hycon_prototypes": ("HyCon against the prototypes only, not prototypes and batch samples",
                         ["method.hycon.negatives=prototypes"]),
    "beta_0.5": ("class-mean EMA β = 0.5, not 0.9", ["method.class_means.beta=0.5"]),
}
NOT_RUN = ("Not measured with the current losses yet: `python bench/results_report.py` trains it (its earlier "
           "figures measured the losses before issue 13 and were withdrawn).")
SMOKE_OVERRIDES = ["train.epochs=1", "train.eval_every=1", "train.checkpoint_every=1", "data.batch_size=64"]
SMOKE_VARIANTS = "ce,allnc"
SMOKE_CHOICES = 2
UFM_KEYS = (("few_cos_classifier", "few cos W"), ("few_cos_means", "few cos means"), ("nc3", "NC3"))
UFM_CLASS_KEYS = (("few_cos_classifier", "few cos W"), ("few_cos_means", "few cos means"),
                  ("few_self_duality", "few self-duality"))
# The ablation job's variants that switch one of the study's options on (allnc_dist.ablation.VARIANTS).
STUDY_OPTIONS = ("allnc_aux_alpha", "allnc_sqrt_sampler", "allnc_la_by_loss", "allnc_light", "allnc_balanced_sampler",
                 "allnc_ce_la_by_loss", "allnc_reweight", "allnc_la_reweight", "allnc_la_alpha")


def ablation_jobs(work_root: Path, smoke: bool) -> list[AblationJob]:
    """The ablation of every config in ABLATIONS, then AllNC under each reconstructed choice."""
    def overrides(config: str, extra: list[str]) -> tuple[str, ...]:
        return (*extra, *(SMOKE_OVERRIDES if smoke else ABLATION_OVERRIDES.get(config, [])))

    jobs = [AblationJob(config, work_root / config, SMOKE_VARIANTS if smoke else None, overrides(config, []))
            for config in ABLATIONS]
    choices = list(CHOICES.items())[:SMOKE_CHOICES] if smoke else CHOICES.items()
    return jobs + [AblationJob(CHOICES_CONFIG, choices_root(work_root) / name, "allnc", overrides(CHOICES_CONFIG, extra))
                   for name, (_, extra) in choices]


def choices_root(work_root: Path) -> Path:
    return work_root / f"choices_{CHOICES_CONFIG}"


def collect_ablation(config: str, work: Path, results_dir: Path, figures_dir: Path) -> None:
    """Keep the ablation's JSON and the CE / AllNC heatmaps of its first seed next to the doc."""
    shutil.copyfile(work / "ablation.json", results_dir / f"ablation_{config}.json")
    first_seed = min(int(s) for s in json.loads((work / "ablation.json").read_text())["runs"]["ce"])
    runs = {name: load_finished_run(work / name / f"seed{first_seed}") for name in ("ce", "allnc")}
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
                                       "seeds": len(data["runs"]["allnc"]), "aggregates": data["aggregates"]["allnc"]}
    (results_dir / f"choices_{CHOICES_CONFIG}.json").write_text(json.dumps(record, indent=2) + "\n")


def choices_section(results_dir: Path) -> str:
    """AllNC with its defaults (from the ablation) against AllNC with each choice switched, and the
    choices ordered by how far they move overall accuracy."""
    choices = json.loads((results_dir / f"choices_{CHOICES_CONFIG}.json").read_text())["choices"]
    default = json.loads((results_dir / f"ablation_{CHOICES_CONFIG}.json").read_text())["aggregates"]["allnc"]
    rows = {"AllNC (defaults)": default, **{name: c["aggregates"] for name, c in choices.items()}}

    def delta(name: str, key: str) -> float:
        return choices[name]["aggregates"][key]["mean"] - default[key]["mean"]

    moved = sorted(choices, key=lambda name: -abs(delta(name, "acc_top1")))
    lines = [f"- `{name}` ({' '.join(choices[name]['overrides'])}): {choices[name]['what']}. "
             f"{delta(name, 'acc_top1'):+.1f} points overall, {delta(name, 'acc_few'):+.1f} on Few, "
             f"NC1 {delta(name, 'nc1'):+.3f}, few cos W {delta(name, 'few_cos_classifier'):+.3f}."
             for name in moved]
    seeds = {c["seeds"] for c in choices.values()}
    return "\n\n".join([
        f"### AllNC's reconstructed choices ({ABLATIONS[CHOICES_CONFIG]})",
        f"AllNC with one choice of METHOD.md switched from its default at a time, {'/'.join(map(str, sorted(seeds)))} "
        f"seed(s) each, the same data and recipe as the ablation above. Source: "
        f"`{os.path.relpath(results_dir / f'choices_{CHOICES_CONFIG}.json', ROOT)}`.",
        ablation_table(rows),
        "Against AllNC with its defaults, largest change in overall accuracy first:\n\n" + "\n".join(lines),
    ])


def ufm_table(groups: dict, group_label: str, keys: tuple[tuple[str, str], ...]) -> str:
    """One row per (group, variant) of a UFM study: each key's mean ± std over seeds."""
    lines = [f"| {group_label} | variant | " + " | ".join(label for _, label in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for group, variants in groups.items():
        for name, cell in variants.items():
            lines.append(f"| {group} | {name} | " + " | ".join(mean_pm_std(cell[key]) for key, _ in keys) + " |")
    return "\n".join(lines)


def class_grid_label(k: str, variants: dict) -> str:
    cell = next(iter(variants.values()))
    return f"{k} ({cell['simplex_cosine']:+.3f}; {cell['protocol']['steps']}, {len(cell['per_seed'])})"


def ufm_class_section(path: Path) -> list[str]:
    study = json.loads(path.read_text())
    return [
        "### Across class counts",
        f"K classes in D = K: K/2 majority classes of {study['majority_samples']} samples and K/2 minority (Few) "
        "classes of 1, the protocol above with the weight decay scaled by √(10/K), so that the balance between "
        "loss and decay that decides whether H = W = 0 is the only minimiser stays the one at K = 10. Steps and "
        f"seeds per K are in the first column. Source: `{os.path.relpath(path, ROOT)}` "
        "(`python bench/ufm_study.py --class-grid`).",
        ufm_table({class_grid_label(k, variants): variants for k, variants in study["classes"].items()},
                  "K (simplex cos; steps, seeds)", UFM_CLASS_KEYS),
    ]


def mean_of(aggregates: dict, variant: str, key: str) -> float:
    return aggregates[variant][key]["mean"]


def comparisons(aggregates: dict) -> list[str]:
    """Plain statements computed from the table: AllNC against CE and the best baseline, and what
    each part of AllNC is worth (the full method minus each ablation)."""
    baselines = [v for v in ("ce", "la", "ldam_drw", "bbn", "etf_dr") if v in aggregates]
    lines = []
    for key, label in (("acc_top1", "overall"), ("acc_few", "Few")):
        allnc = mean_of(aggregates, "allnc", key)
        best = max(baselines, key=lambda v: mean_of(aggregates, v, key))
        lines.append(f"- {label} accuracy: AllNC {allnc:.1f} %, CE {mean_of(aggregates, 'ce', key):.1f} %, "
                     f"best baseline {display_name(best)} {mean_of(aggregates, best, key):.1f} % "
                     f"(AllNC {allnc - mean_of(aggregates, best, key):+.1f} points).")
    for ablation in ("allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn"):
        if ablation in aggregates:
            delta = mean_of(aggregates, "allnc", "acc_top1") - mean_of(aggregates, ablation, "acc_top1")
            few = mean_of(aggregates, "allnc", "acc_few") - mean_of(aggregates, ablation, "acc_few")
            lines.append(f"- {display_name(ablation)}: the full method is {delta:+.1f} points overall and "
                         f"{few:+.1f} on Few against it.")
    for option in STUDY_OPTIONS:
        if option in aggregates:
            delta = mean_of(aggregates, option, "acc_top1") - mean_of(aggregates, "allnc", "acc_top1")
            few = mean_of(aggregates, option, "acc_few") - mean_of(aggregates, "allnc", "acc_few")
            lines.append(f"- {display_name(option)}: {delta:+.1f} points overall and {few:+.1f} on Few against "
                         "AllNC's defaults.")
    return lines


def ablation_section(config: str, title: str, results_dir: Path, figures_dir: Path, doc_dir: Path) -> str:
    data = json.loads((results_dir / f"ablation_{config}.json").read_text())
    aggregates = {name: data["aggregates"][name] for name in VARIANTS if name in data["aggregates"]}
    seeds = len(next(iter(data["runs"].values())))
    figures = figures_dir / config
    images = "\n\n".join(f"![{kind}]({os.path.relpath(figures / f'heatmap_{kind}.png', doc_dir)})"
                         for kind in ("classifier", "class_means"))
    return "\n\n".join([
        f"### {title}",
        f"{seeds} seed(s) (train.seed 0..{seeds - 1}; the data split is fixed), {data['epochs']} epochs, "
        f"mean ± sample std. Source: `{os.path.relpath(results_dir / f'ablation_{config}.json', ROOT)}`.",
        ablation_table(aggregates),
        "\n".join(comparisons(aggregates)) if "allnc" in aggregates and "ce" in aggregates else "",
        f"CE (left) and AllNC (right), first seed: cosines of the centred classifier vectors and class "
        f"means, classes sorted by training count (head first).\n\n{images}",
    ])


def write_doc(out: Path, results_dir: Path, figures_dir: Path, ufm_path: Path, discussion: Path) -> None:
    sections = [
        "# Results: what AllNC does",
        f"Generated by `python bench/results_report.py` on {time.strftime('%Y-%m-%d')} (CPU, "
        f"{os.cpu_count()} cores). Rerun it to reproduce every number here; `--report-only` rewrites "
        "this page from the JSON in `bench/results/`.",
        "## Minority collapse in the unconstrained-features model",
    ]
    if ufm_path.exists():
        study = json.loads(ufm_path.read_text())
        sections += [
            f"{study['protocol_text']} Source: `{os.path.relpath(ufm_path, ROOT)}` "
            "(`python bench/ufm_study.py --imbalance-grid`). A Few cosine near +1 is minority collapse; the "
            f"simplex ETF has {-1 / 9:+.3f} (K = 10).",
            ufm_table(study["ratios"], "IR", UFM_KEYS),
        ]
    else:
        sections.append(f"Not run yet: `{os.path.relpath(ufm_path, ROOT)}` is missing.")
    if ufm_path.with_name("ufm_classes.json").exists():
        sections += ufm_class_section(ufm_path.with_name("ufm_classes.json"))
    sections += tuned_sections(results_dir)
    sections.append("## Ablation: baselines, AllNC without each of its parts, and AllNC with the study's options")
    for config, title in ABLATIONS.items():
        if (results_dir / f"ablation_{config}.json").exists():
            sections.append(ablation_section(config, title, results_dir, figures_dir, out.parent))
        else:
            sections.append(f"### {title}\n\n{NOT_RUN}")
    if (results_dir / f"choices_{CHOICES_CONFIG}.json").exists():
        sections.append(choices_section(results_dir))
    else:
        sections.append(f"### AllNC's reconstructed choices ({ABLATIONS[CHOICES_CONFIG]})\n\n{NOT_RUN}")
    sections.append(TABLE_NOTE)
    if discussion.exists():
        sections.append(discussion.read_text().strip())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(s for s in sections if s) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny ablations (2 variants, 1 seed, 1 epoch)")
    parser.add_argument("--report-only", action="store_true", help="write the doc from existing JSON only")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="folder for the doc, JSON and figures (default: the repo's)")
    args = parser.parse_args()
    if args.out is None:
        doc, results_dir, figures_dir, work_root = (ROOT / "docs" / "RESULTS.md", ROOT / "bench" / "results",
                                                    ROOT / "docs" / "figures", ROOT / "runs" / "results")
    else:
        doc, results_dir, figures_dir, work_root = (args.out / "RESULTS.md", args.out, args.out / "figures",
                                                    args.out / "runs")
    results_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_ablations(ablation_jobs(work_root, args.smoke), 1 if args.smoke else args.seeds)
        for config in ABLATIONS:
            collect_ablation(config, work_root / config, results_dir, figures_dir)
        collect_choices(work_root, results_dir)
    write_doc(doc, results_dir, figures_dir, results_dir / "ufm_imbalance.json", ROOT / "docs" / "results_discussion.md")
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
