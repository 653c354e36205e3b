"""docs/RESULTS.md from the JSON in bench/results/: the unconstrained-features studies
(bench/ufm_study.py), the method study (study.py), the ablations and AllNC's reconstructed choices
(bench/ablations.py), the comparisons computed from their numbers, and the discussion written by hand
after reading them (docs/results_discussion.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from allnc_dist.ablation import VARIANTS, ablation_table
from allnc_dist.results_table import TABLE_NOTE, display_name
from bench.ablations import ABLATIONS, CHOICES_CONFIG, CHOICES_FILE, PAPER, ablation_file
from bench.publish.formatting import PUBLISH, ROOT, shown
from bench.publish.study import study_sections
from bench.ufm_study import mean_pm_std  # the study's own format for its cells

DISCUSSION = ROOT / "docs" / "results_discussion.md"
ABLATIONS_RUN = "python -m bench.ablations"
UFM_STUDY = "python -m bench.ufm_study"
NOT_RUN = (f"Not measured with the current losses yet: `{ABLATIONS_RUN}` trains it (its earlier "
           "figures measured the losses before issue 13 and were withdrawn).")
UFM_KEYS = (("few_cos_classifier", "few cos W"), ("few_cos_means", "few cos means"), ("nc3", "NC3"))
UFM_CLASS_KEYS = (("few_cos_classifier", "few cos W"), ("few_cos_means", "few cos means"),
                  ("few_self_duality", "few self-duality"), ("few_norm_ratio_classifier", "Few/Many norm of W"))
# The ablation job's variants that switch one of the study's options on (allnc_dist.ablation.VARIANTS).
STUDY_OPTIONS = ("allnc_aux_alpha", "allnc_sqrt_sampler", "allnc_la_by_loss", "allnc_light", "allnc_balanced_sampler",
                 "allnc_ce_la_by_loss", "allnc_reweight", "allnc_la_reweight", "allnc_la_alpha")


def choices_section(results_dir: Path) -> str:
    """AllNC's paper form (from the ablation) against it with each choice switched, and the choices
    ordered by how far they move overall accuracy."""
    choices = json.loads((results_dir / CHOICES_FILE).read_text())["choices"]
    default = json.loads((results_dir / ablation_file(CHOICES_CONFIG)).read_text())["aggregates"][PAPER]
    rows = {display_name(PAPER): default, **{name: c["aggregates"] for name, c in choices.items()}}

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
        f"AllNC's paper form with one choice of METHOD.md switched at a time, {'/'.join(map(str, sorted(seeds)))} "
        f"seed(s) each, the same data and recipe as the ablation above. Source: "
        f"`{shown(results_dir / CHOICES_FILE)}`.",
        ablation_table(rows),
        "Against the paper form, largest change in overall accuracy first:\n\n" + "\n".join(lines),
    ])


def ufm_table(groups: dict, group_label: str, keys: tuple[tuple[str, str], ...], drift_key: str | None = None) -> str:
    """One row per (group, variant) of a UFM study: each key's mean ± std over seeds, and with `drift_key`
    how far that metric still moved over the run's last third (worst seed)."""
    labels = [label for _, label in keys] + ([f"{dict(keys)[drift_key]}, moved in the last third"] if drift_key else [])
    lines = [f"| {group_label} | variant | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for group, variants in groups.items():
        for name, cell in variants.items():
            values = [mean_pm_std(cell[key]) for key, _ in keys]
            if drift_key:
                values.append(f"{cell['max_drift_last_third'][drift_key]:.3f}")
            lines.append(f"| {group} | {name} | " + " | ".join(values) + " |")
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
        "seeds per K are in the first column; K = 1000 runs longer because its Few classes move more slowly "
        "(each class holds a tenth of its share at K = 100, and the decay is weaker). The last column is how far "
        "the Few cosine of W moved between 2/3 of the run and its end (worst seed): a small figure means the "
        "geometry has settled. The Few/Many norm of W is the Few classifier vectors' mean length over the Many "
        "ones': near 0, the Few logits stay small whatever their angle. "
        f"Source: `{shown(path)}` (`{UFM_STUDY} --class-grid`).",
        ufm_table({class_grid_label(k, variants): variants for k, variants in study["classes"].items()},
                  "K (simplex cos; steps, seeds)", UFM_CLASS_KEYS, drift_key="few_cos_classifier"),
    ]


def mean_of(aggregates: dict, variant: str, key: str) -> float:
    return aggregates[variant][key]["mean"]


def comparisons(aggregates: dict) -> list[str]:
    """Plain statements computed from the table: each form of AllNC that ran (the default, the paper
    form) against CE and the best baseline, what each part of the paper form is worth (it minus each
    ablation), and what each of the study's options does to it."""
    baselines = [v for v in ("ce", "la", "ldam_drw", "bbn", "etf_dr") if v in aggregates]
    lines = []
    for form in (f for f in ("allnc", PAPER) if f in aggregates):
        for key, label in (("acc_top1", "overall"), ("acc_few", "Few")):
            allnc = mean_of(aggregates, form, key)
            best = max(baselines, key=lambda v: mean_of(aggregates, v, key))
            lines.append(f"- {label} accuracy: {display_name(form)} {allnc:.1f} %, "
                         f"CE {mean_of(aggregates, 'ce', key):.1f} %, best baseline {display_name(best)} {mean_of(aggregates, best, key):.1f} % "
                         f"({display_name(form)} {allnc - mean_of(aggregates, best, key):+.1f} points).")
    if PAPER not in aggregates:
        return lines
    for ablation in ("allnc_no_hycon", "allnc_no_p2p", "allnc_no_gbbn"):
        if ablation in aggregates:
            delta = mean_of(aggregates, PAPER, "acc_top1") - mean_of(aggregates, ablation, "acc_top1")
            few = mean_of(aggregates, PAPER, "acc_few") - mean_of(aggregates, ablation, "acc_few")
            lines.append(f"- {display_name(ablation)}: the whole paper form is {delta:+.1f} points overall and "
                         f"{few:+.1f} on Few against it.")
    for option in STUDY_OPTIONS:
        if option in aggregates:
            delta = mean_of(aggregates, option, "acc_top1") - mean_of(aggregates, PAPER, "acc_top1")
            few = mean_of(aggregates, option, "acc_few") - mean_of(aggregates, PAPER, "acc_few")
            lines.append(f"- {display_name(option)}: {delta:+.1f} points overall and {few:+.1f} on Few against "
                         "the paper form.")
    return lines


def ablation_section(config: str, title: str, results_dir: Path, figures_dir: Path, doc_dir: Path) -> str:
    path = results_dir / ablation_file(config)
    data = json.loads(path.read_text())
    aggregates = {name: data["aggregates"][name] for name in VARIANTS if name in data["aggregates"]}
    seeds = len(next(iter(data["runs"].values())))
    figures = figures_dir / config
    images = "\n\n".join(f"![{kind}]({os.path.relpath(figures / f'heatmap_{kind}.png', doc_dir)})"
                         for kind in ("classifier", "class_means"))
    return "\n\n".join([
        f"### {title}",
        f"{seeds} seed(s) (train.seed 0..{seeds - 1}; the data split is fixed), {data['epochs']} epochs, "
        f"mean ± sample std. Source: `{shown(path)}`.",
        ablation_table(aggregates),
        "\n".join(comparisons(aggregates)) if "ce" in aggregates else "",
        f"CE (left) and AllNC-paper (right), first seed: cosines of the centred classifier vectors and class "
        f"means, classes sorted by training count (head first).\n\n{images}",
    ])


def results_page(results_dir: Path, figures_dir: Path, doc_dir: Path) -> str:
    """docs/RESULTS.md from the JSON in `results_dir`, with links to the heatmaps in `figures_dir` as seen
    from `doc_dir`, and the discussion written by hand."""
    sections = [
        "# Results: what AllNC does",
        f"Generated by `{PUBLISH}` from the JSON in `{shown(results_dir)}/`. `{ABLATIONS_RUN}` retrains the "
        "ablations and the choice runs (on the CPU); every other section names the command behind its numbers.",
        "## Minority collapse in the unconstrained-features model",
    ]
    ufm_path = results_dir / "ufm_imbalance.json"
    if ufm_path.exists():
        study = json.loads(ufm_path.read_text())
        sections += [
            f"{study['protocol_text']} Source: `{shown(ufm_path)}` "
            f"(`{UFM_STUDY} --imbalance-grid`). A Few cosine near +1 is minority collapse; the "
            f"simplex ETF has {-1 / 9:+.3f} (K = 10).",
            ufm_table(study["ratios"], "IR", UFM_KEYS),
        ]
    else:
        sections.append(f"Not run yet: `{shown(ufm_path)}` is missing.")
    if (results_dir / "ufm_classes.json").exists():
        sections += ufm_class_section(results_dir / "ufm_classes.json")
    sections += study_sections(results_dir)
    sections.append("## Ablation: baselines, AllNC's paper form without each of its parts, "
                    "and with the study's options")
    for config, title in ABLATIONS.items():
        if (results_dir / ablation_file(config)).exists():
            sections.append(ablation_section(config, title, results_dir, figures_dir, doc_dir))
        else:
            sections.append(f"### {title}\n\n{NOT_RUN}")
    if (results_dir / CHOICES_FILE).exists():
        sections.append(choices_section(results_dir))
    else:
        sections.append(f"### AllNC's reconstructed choices ({ABLATIONS[CHOICES_CONFIG]})\n\n{NOT_RUN}")
    sections.append(TABLE_NOTE)
    if DISCUSSION.exists():
        sections.append(DISCUSSION.read_text().strip())
    return "\n\n".join(s for s in sections if s) + "\n"
