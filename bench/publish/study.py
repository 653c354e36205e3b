"""docs/RESULTS.md's study sections, from bench/tuned_study.py's JSON: the sweeps' choices, then each
proxy's table of every method as its sweep chose it, and AllNC against the best baseline."""

from __future__ import annotations

import json
from pathlib import Path

from allnc_dist.ablation import ablation_table
from allnc_dist.results_table import display_name
from allnc_dist.sweep.results import format_value
from allnc_dist.sweep.spec import load_sweep
from bench.publish.formatting import shown
from bench.tuned_study import (CHOICE_PROXY, KNOBS, METHODS, PROXIES, SPLITS, SWEEP_SPECS, SWEPT, best_file,
                               choice_file, run_config, tuned_file)

NAMES = {"allnc": "AllNC (chosen)", "allnc_without_aux": "AllNC (chosen) with GBBN, without HyCon and P2P",
         "allnc_one_branch": "AllNC (chosen) without GBBN", "allnc_two_branches": "AllNC (chosen) with GBBN",
         "allnc_contrastive": "AllNC (chosen) without the Gram gap (P2P contrastive)",
         "allnc_cosine": "AllNC (chosen), cosine classifier",
         "la_cosine": "LA, cosine classifier", "ldam_without_drw": "LDAM-DRW without DRW",
         "allnc_linear": "AllNC (chosen), linear classifier", "la_linear": "LA, linear classifier",
         "bbn_linear": "BBN, linear classifier"}
BASELINES = ("ce", "la", "ldam_drw", "bbn")
ACCEPTANCE_SEEDS = 5  # the acceptance compares means over this many seeds
STUDY = "python -m bench.tuned_study"


def sweep_table(results_dir: Path) -> str:
    """One row per swept method: the trials, the best validation accuracy and the knobs it chose."""
    lines = ["| method | trials | best val acc (%) | chosen |", "|---|---|---|---|"]
    for method in SWEPT:
        best_path = best_file(results_dir, method)
        if best_path.exists():
            best = json.loads(best_path.read_text())
            trials = load_sweep(SWEEP_SPECS / f"digits_{method}.yaml").num_samples
            knobs = ", ".join(f"`{path}={format_value(value)}`" for path, value in best["knobs"].items())
            lines.append(f"| {display_name(method)} | {trials} | {best['value']:.1f} | {knobs} |")
    return "\n".join(lines)


def choice_table(knob: str, path: Path) -> str:
    """bench/validation_choice.py's record of one knob on one proxy: each method's validation accuracy with each
    value it trained."""
    record = json.loads(path.read_text())
    values = [v for v in KNOBS[knob].values if any(v in entry["validation"] for entry in record["methods"].values())]
    large = ", ".join(f"`{name}`" for name, proxy in PROXIES.items() if proxy.takes_choices)
    takers = ("Every proxy trains" if KNOBS[knob].on_every_proxy
              else f"The proxies with at least 100 classes ({large}) train")
    rule = ("A method keeps its own value unless another's mean validation accuracy is higher by more than two "
            "standard errors of the difference or, where the overall means are within that margin, its mean Few "
            "accuracy is.")
    seeds = min(entry["seeds"] for entry in record["methods"].values())
    # The command that trains what the record holds: the knob's seeds and values unless it had others.
    options = (f" --seeds {seeds}" if seeds != KNOBS[knob].seeds else "") + (
        f" --values {','.join(values)}" if len(values) < len(KNOBS[knob].values) else "")
    if record["proxy"] == CHOICE_PROXY:
        after = " (every other knob at its choice so far)" if knob != next(iter(KNOBS)) else ""
        intro = (f"The 10-class sweeps could not judge {KNOBS[knob].about}. `python -m bench.validation_choice "
                 f"--knobs {knob}{options}` trains each method's configuration{after} with each value on "
                 f"`{CHOICE_PROXY}` and ranks them on its {record['split']}, never the test split. {rule} {takers} "
                 f"each method with its choice, unless a proxy refines it.")
    else:
        intro = (f"`python -m bench.validation_choice --proxy {record['proxy']} --knobs {knob}{options}` refines "
                 f"{KNOBS[knob].about} on `{record['proxy']}`'s {record['split']}: each method starts from its "
                 f"`{CHOICE_PROXY}` choices (the knobs above as refined here), and its own value is the one chosen "
                 f"there. {rule} `{record['proxy']}` trains each method with this choice.")
    if any(entry.get("earlier") for entry in record["methods"].values()):
        intro += (" A row marked *earlier pass* chose the knob from another starting point: the other knobs' values "
                  "it names (before they were chosen), or its own value; the row above it chose it again from the "
                  "choices made since (a second pass), and the study trains that choice.")
    excluded = {value: why for entry in record["methods"].values() for value, why in entry.get("excluded", {}).items()}
    intro += "".join(f" `{value}` is trained but never chosen: {why}." for value, why in excluded.items())
    lines = [f"{intro} Source: `{shown(path)}`.", "",
             "| method | seeds | " + " | ".join(f"{value}: overall / Many / Medium / Few (%)" for value in values)
             + " | own | chosen |", "|---|---|" + "---|" * len(values) + "---|---|"]
    for method, entry in record["methods"].items():
        lines.append(choice_row(display_name(method), entry, values))
        for before in reversed(entry.get("earlier", [])):
            named = other_knobs(knob, record["proxy"], before, entry)
            label = f"{display_name(method)}, *earlier pass*" + (f" ({named})" if named else "")
            lines.append(choice_row(label, before, values))
    return "\n".join(lines)


def other_knobs(knob: str, proxy_name: str, before: dict, entry: dict) -> str:
    """The other knobs' values an earlier pass trained with, where the later pass had others."""
    def values(pass_: dict) -> dict[str, str]:
        method = run_config(PROXIES[proxy_name], pass_["overrides"]).method
        return {name: other.value_of(method) for name, other in KNOBS.items() if name != knob}

    earlier, later = values(before), values(entry)
    return ", ".join(f"{name} {value}" for name, value in earlier.items() if value != later[name])


def choice_row(label: str, entry: dict, values: list[str]) -> str:
    """One pass of a method's choice: its validation accuracy with each value, its own value and the choice."""
    cells = [" / ".join(f"{entry['validation'][value][split]['mean']:.1f}" for split in SPLITS)
             if value in entry["validation"] else "not trained" for value in values]
    return f"| {label} | {entry['seeds']} | {' | '.join(cells)} | {entry['own']} | **{entry['chosen']}** |"


def acceptance(methods: dict) -> list[str]:
    """AllNC against the best baseline, overall and on Few, as the issue's acceptance states it: a verdict
    where both have the seeds it asks for, the gap without one otherwise. The baselines with fewer seeds
    are named, since more seeds would move their means too."""
    lines, present = [], [m for m in BASELINES if m in methods]
    for key, label in (("acc_top1", "overall"), ("acc_few", "Few")):
        best = max(present, key=lambda m: methods[m]["aggregates"][key]["mean"])
        allnc = methods["allnc"]["aggregates"][key]["mean"]
        gap = allnc - methods[best]["aggregates"][key]["mean"]
        seeds = min(methods["allnc"]["seeds"], methods[best]["seeds"])
        verdict = (('met' if gap >= 0 else 'not met') if seeds >= ACCEPTANCE_SEEDS
                   else f"{seeds} seed(s), no verdict: the acceptance needs {ACCEPTANCE_SEEDS}")
        lines.append(f"- {label}: AllNC {allnc:.1f} %, best baseline {display_name(best)} "
                     f"{methods[best]['aggregates'][key]['mean']:.1f} % (AllNC {gap:+.1f} points: {verdict}).")
    fewer = [f"{display_name(m)} ({methods[m]['seeds']})" for m in present if methods[m]["seeds"] < ACCEPTANCE_SEEDS]
    if fewer:
        lines.append(f"- Baselines with fewer than {ACCEPTANCE_SEEDS} seeds, compared by their mean so far: "
                     f"{', '.join(fewer)}.")
    return lines


def study_sections(results_dir: Path) -> list[str]:
    """The sweeps' choices, then each proxy's table of the chosen configurations (when it has run)."""
    sections = ["## The study: each method as its sweep chose it",
                f"Each method's sweep ran on digits-LT's validation split (`{STUDY}` documents "
                "the commands; the summaries are in `bench/results/sweeps/`). Then every method trained with "
                "its chosen configuration on each proxy, train.seed 0..4 (each proxy's section says how many ran); "
                "on the proxies with at least 100 classes, with the values chosen below.",
                sweep_table(results_dir)]
    sections += [choice_table(knob, choice_file(results_dir, knob, name)) for name, proxy in PROXIES.items()
                 if proxy.takes_choices for knob in KNOBS if choice_file(results_dir, knob, name).exists()]
    for name, proxy in PROXIES.items():
        path = tuned_file(results_dir, name)
        if not path.exists():
            sections.append(f"### {proxy.title}\n\nNot run yet: `{STUDY} --proxies {name}`.")
            continue
        methods = json.loads(path.read_text())["methods"]
        seeds = sorted({m["seeds"] for m in methods.values()})
        sections += [f"### {proxy.title}",
                     f"{'/'.join(map(str, seeds))} seed(s), mean ± sample std. Source: "
                     f"`{shown(path)}` (each method's overrides are recorded there).",
                     ablation_table({NAMES.get(m, display_name(m)): methods[m]["aggregates"]
                                     for m in METHODS if m in methods})]
        if "allnc" in methods and any(m in methods for m in BASELINES):
            sections.append("\n".join(acceptance(methods)))
        posthoc = results_dir / f"posthoc_{name}.json"
        if posthoc.exists():
            sections.append(posthoc_table(json.loads(posthoc.read_text()), posthoc))
    return sections


def posthoc_table(record: dict, path: Path) -> str:
    """Overall / Few accuracy of each method's final models under the post-hoc shift -tau log(pi)."""
    taus = [str(tau) for tau in record["taus"]]
    lines = [f"Post-hoc logit adjustment of the final models (`python -m bench.posthoc_shift --proxy "
             f"{record['proxy']}`, source `{shown(path)}`): overall / Few accuracy (%) when the test logits are "
             "shifted by −τ log π, π the training label prior, mean over the seeds; τ = 0 is the table above. "
             "A method whose Few classes only sit behind a biased threshold gains at some τ; one whose features "
             "do not separate them does not reach a better method's trade-off at any τ. The last column is the "
             "mean norm of the classifier's rows per split (a cosine classifier divides it out).", "",
             "| method | seeds | " + " | ".join(f"τ = {tau.removesuffix('.0')}" for tau in taus)
             + " | row norm of W, Many / Medium / Few |",
             "|---|---|" + "---|" * (len(taus) + 1)]
    for method in METHODS:
        if method in record["methods"]:
            entry = record["methods"][method]
            cells = [f"{entry['accuracy'][tau]['top1']:.1f} / {entry['accuracy'][tau]['few']:.1f}" for tau in taus]
            cells.append(" / ".join(f"{entry['row_norms'][split]:.2f}" for split in ("many", "medium", "few")))
            name = NAMES.get(method, display_name(method))
            lines.append(f"| {name} | {entry['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
