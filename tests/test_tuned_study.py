"""The study's last mile: a sweep's best trial as best.json, and bench/tuned_study.py training each
method's chosen configuration from it (smoke size: CE and AllNC, one epoch, real local runs)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from allnc_dist.engine.evaluate import Outputs
from allnc_dist.sweep.results import TrialOutcome, best_trial, summary
from allnc_dist.sweep.spec import SweepConfig
from bench.posthoc_shift import method_runs, same_runs, shifted_accuracies
from bench.tuned_study import KNOBS, PROXIES, chosen_overrides, collect_proxy, isolates, run_config
from bench.validation_choice import base_overrides, chosen_value, trained_values, with_earlier_passes
from tests.bench_run import ROOT, publish, run_bench

SPEC = SweepConfig(name="best", base=ROOT / "jobs" / "configs" / "digits_lt.yaml", num_samples=2,
                   space={"optim.lr": {"loguniform": [0.01, 0.1]}, "method.p2p.weight": {"choice": [0.25, 1.0]}})


def outcome(trial: str, acc: float, p2p_weight: float) -> TrialOutcome:
    knobs = {"optim.lr": 0.05, "method.p2p.weight": p2p_weight}
    return TrialOutcome(trial, knobs, {"epoch": 40, "eval/acc_top1": acc}, 40, errored=False)


def test_best_trial_is_the_first_ranked_with_its_knobs_as_overrides() -> None:
    best = best_trial([outcome("a", 81.5, 0.25), outcome("b", 70.0, 1.0)], SPEC)
    assert best == {"trial": "a", "metric": "eval/acc_top1", "value": 81.5,
                    "knobs": {"optim.lr": 0.05, "method.p2p.weight": 0.25},
                    "overrides": ["optim.lr=0.05", "method.p2p.weight=0.25"]}
    assert "Best: trial a, eval/acc_top1 = 81.50: optim.lr=0.05, method.p2p.weight=0.25" in summary(
        [outcome("a", 81.5, 0.25)], SPEC)


def test_no_best_trial_when_none_reported_the_metric() -> None:
    silent = TrialOutcome("a", {"optim.lr": 0.05, "method.p2p.weight": 1.0}, {}, 40, errored=True)
    assert best_trial([silent], SPEC) is None and best_trial([], SPEC) is None
    assert "Best:" not in summary([silent], SPEC)


def test_a_trial_that_failed_is_never_the_best_even_with_a_high_last_report() -> None:
    failed = TrialOutcome("a", {"optim.lr": 0.5, "method.p2p.weight": 1.0}, {"epoch": 10, "eval/acc_top1": 99.0},
                          40, errored=True)
    assert best_trial([failed, outcome("b", 70.0, 1.0)], SPEC)["trial"] == "b"
    assert best_trial([failed], SPEC) is None and "Best:" not in summary([failed], SPEC)


def test_smoke_study_trains_the_chosen_configuration(tmp_path: Path) -> None:
    sweeps = tmp_path / "sweeps"
    (sweeps / "digits_allnc").mkdir(parents=True)
    chosen = {"trial": "t1", "metric": "eval/acc_top1", "value": 80.0,
              "knobs": {"optim.lr": 0.03, "method.p2p.weight": 0.25},
              "overrides": ["optim.lr=0.03", "method.p2p.weight=0.25"]}
    (sweeps / "digits_allnc" / "best.json").write_text(json.dumps(chosen))
    (sweeps / "digits_allnc" / "summary.md").write_text("# Sweep study_digits_allnc\n")
    out = tmp_path / "out"
    run_bench("tuned_study", "--smoke", "--proxies", "digits_lt", "--methods", "ce,allnc", "--sweeps", sweeps,
              "--out", out)

    assert json.loads((out / "sweeps" / "digits_allnc_best.json").read_text()) == chosen
    record = json.loads((out / "tuned_digits_lt.json").read_text())
    assert set(record["methods"]) == {"ce", "allnc"}
    allnc = record["methods"]["allnc"]
    # The sweep's fixed method overrides, then its best knobs; lr applies on the proxy it was tuned on.
    assert allnc["overrides"][-5:] == ["method.preset=allnc", "method.loss=la", "method.gbbn.rebalance=logit_adjust",
                                        "optim.lr=0.03", "method.p2p.weight=0.25"]
    run_config = yaml.safe_load((out / "runs" / "tuned_digits_lt" / "allnc" / "allnc" / "seed0" / "config.yaml")
                                .read_text())
    assert run_config["method"]["p2p"]["weight"] == 0.25 and run_config["optim"]["lr"] == 0.03
    assert run_config["method"]["gbbn"]["rebalance"] == "logit_adjust" and run_config["method"]["loss"] == "la"
    assert math.isfinite(allnc["aggregates"]["acc_top1"]["mean"])
    # Each seed's accuracies are kept beside the mean they make.
    assert set(allnc["per_seed"]) == {"0"}
    assert allnc["per_seed"]["0"]["acc_few"] == pytest.approx(allnc["aggregates"]["acc_few"]["mean"])
    assert record["methods"]["ce"]["overrides"][-1] == "method.preset=ce"

    # The post-hoc shift reloads each final model; at tau = 0 it must give the accuracy the study reports.
    run_bench("posthoc_shift", "--proxy", "digits_lt", "--runs", out / "runs", "--out", out)
    shifted = json.loads((out / "posthoc_digits_lt.json").read_text())["methods"]
    for name in ("ce", "allnc"):
        reported = record["methods"][name]["aggregates"]
        assert shifted[name]["accuracy"]["0.0"]["top1"] == pytest.approx(reported["acc_top1"]["mean"], abs=0.01)
        assert shifted[name]["accuracy"]["0.0"]["few"] == pytest.approx(reported["acc_few"]["mean"], abs=0.01)
        assert set(shifted[name]["row_norms"]) == {"many", "medium", "few"}
        assert all(norm > 0 for norm in shifted[name]["row_norms"].values())


def test_the_post_hoc_shift_moves_decisions_towards_the_rare_class() -> None:
    """Two classes with prior 0.9 / 0.1. At tau = 1 the logits gain -log(pi): 0.105 for class 0 and 2.303
    for class 1, which flips the first two samples' predictions to class 1; the third stays class 0."""
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.5], [5.0, 0.0]])
    outputs = Outputs(logits, torch.zeros(3, 1), torch.tensor([1, 0, 0]))
    prior_log = torch.tensor([0.9, 0.1]).log()
    accuracies = shifted_accuracies(outputs, prior_log, (0.0, 1.0), {"many": [0], "few": [1]})
    assert accuracies[0.0] == pytest.approx({"top1": 200 / 3, "many": 100.0, "few": 0.0})
    assert accuracies[1.0] == pytest.approx({"top1": 200 / 3, "many": 50.0, "few": 100.0})


def test_a_post_hoc_entry_is_kept_only_for_the_runs_the_study_table_shows() -> None:
    study = ["method.preset=allnc", "method.classifier=cosine", "method.gbbn.enabled=true"]
    # The same configuration in other words (the preset's own value spelt out) is the same runs.
    assert same_runs(["method.classifier=cosine", "method.preset=allnc"], study, "synthetic100_small")
    assert not same_runs([*study, "method.gbbn.enabled=false"], study, "synthetic100_small")
    assert not same_runs([], study, "synthetic100_small")  # recorded before entries said what ran


def test_the_post_hoc_shift_finds_an_entry_s_runs_by_configuration(tmp_path: Path) -> None:
    def folder(name: str, overrides: list[str], seeds: int) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "overrides.json").write_text(json.dumps(overrides))
        for seed in range(seeds):
            (tmp_path / name / "allnc" / f"seed{seed}").mkdir(parents=True)
            (tmp_path / name / "allnc" / f"seed{seed}" / "report.json").write_text("{}")

    contrastive = ["method.preset=allnc", "method.p2p.form=contrastive"]
    folder("allnc", contrastive, 1)  # AllNC's runs before its form changed
    folder("allnc_gram", ["method.preset=allnc", "method.p2p.form=contrastive_gram"], 2)
    # The study took the gap row's runs for AllNC (collect_proxy): its own folder holds another configuration.
    runs = method_runs(tmp_path, "allnc", ["method.preset=allnc"], "digits_lt")
    assert [run.path.parent.parent.name for run in runs] == ["allnc_gram", "allnc_gram"]
    runs = method_runs(tmp_path, "allnc_contrastive", contrastive, "digits_lt")
    assert [run.path.parent.parent.name for run in runs] == ["allnc"]
    assert method_runs(tmp_path, "allnc", [*contrastive, "method.gbbn.enabled=false"], "digits_lt") == []


def test_the_acceptance_gives_a_verdict_only_where_allnc_and_the_best_baseline_have_five_seeds() -> None:
    from bench.publish.study import acceptance

    def method(overall: float, few: float, seeds: int = 5) -> dict:
        return {"seeds": seeds, "aggregates": {"acc_top1": {"mean": overall}, "acc_few": {"mean": few}}}

    methods = {"ce": method(60.0, 30.0), "la": method(70.0, 50.0), "allnc": method(71.0, 45.0)}
    assert acceptance(methods) == [
        "- overall: AllNC 71.0 %, best baseline LA 70.0 % (AllNC +1.0 points: met).",
        "- Few: AllNC 45.0 %, best baseline LA 50.0 % (AllNC -5.0 points: not met)."]
    assert all("1 seed(s), no verdict: the acceptance needs 5" in line
               for line in acceptance({**methods, "allnc": method(71.0, 45.0, 1)}))
    # The best baseline short of seeds: no verdict. Another one short of seeds: named beside the verdict.
    assert "3 seed(s), no verdict" in acceptance({**methods, "la": method(70.0, 50.0, 3)})[0]
    lines = acceptance({**methods, "ce": method(60.0, 30.0, 2)})
    assert "(AllNC +1.0 points: met)" in lines[0]
    assert lines[-1] == "- Baselines with fewer than 5 seeds, compared by their mean so far: CE (2)."


def test_smoke_choices_rank_on_the_validation_split_in_order_and_the_large_proxies_take_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    printed = run_bench("validation_choice", "--smoke", "--methods", "allnc", "--out", out).stdout
    classifier = json.loads((out / "classifier_choice.json").read_text())["methods"]["allnc"]
    branches = json.loads((out / "branches_choice.json").read_text())["methods"]["allnc"]
    p2p = json.loads((out / "p2p_weight_choice.json").read_text())["methods"]["allnc"]
    assert classifier["own"] == "linear" and classifier["chosen"] == chosen_value(classifier["validation"], "linear")
    assert branches["own"] == "two" and f"branches, allnc: {branches['chosen']}" in printed
    assert p2p["own"] == "1" and f"p2p_weight, allnc: {p2p['chosen']}" in printed
    form = json.loads((out / "p2p_form_choice.json").read_text())["methods"]["allnc"]
    # Without a sweep AllNC runs its preset, whose form has the gap; the contrastive form is trained but excluded.
    assert form["own"] == form["chosen"] == "contrastive_gram" and "p2p_form, allnc: contrastive_gram" in printed
    assert set(form["excluded"]) == {"contrastive"} and "contrastive" in form["validation"]

    def run_config(knob: str, value: str) -> dict:
        return yaml.safe_load((out / "runs" / f"{knob}_choice" / "allnc" / value / "allnc" / "seed0"
                               / "config.yaml").read_text())

    for value in ("linear", "cosine"):
        assert run_config("classifier", value)["method"]["classifier"] == value
    for value, enabled in (("two", True), ("one", False)):
        # The branches are chosen with the classifier already chosen.
        method = run_config("branches", value)["method"]
        assert method["gbbn"]["enabled"] is enabled and method["classifier"] == classifier["chosen"]
    for value in ("0.1", "3"):
        # P2P's weight is chosen with the classifier and the branches already chosen.
        method = run_config("p2p_weight", value)["method"]
        assert method["p2p"]["weight"] == float(value) and method["classifier"] == classifier["chosen"]
        assert method["gbbn"]["enabled"] is (branches["chosen"] == "two")
    for value in ("contrastive", "contrastive_gram"):
        # P2P's form is chosen with its weight already chosen.
        method = run_config("p2p_form", value)["method"]
        assert method["p2p"]["form"] == value and method["p2p"]["weight"] == float(p2p["chosen"])
    for knob, value in (("classifier", "linear"), ("branches", "one"), ("p2p_weight", "0.3"),
                        ("p2p_form", "contrastive_gram")):
        # Ranked on the validation split, never the test split.
        config = run_config(knob, value)
        assert config["train"]["eval_split"] == "val" and config["data"]["val_per_class"] == 20

    # The 100-class proxy trains AllNC with every choice; digits-LT (10 classes) keeps its own values.
    run_bench("tuned_study", "--smoke", "--proxies", "synthetic100_small", "--methods", "allnc", "--out", out)
    study = yaml.safe_load((out / "runs" / "tuned_synthetic100_small" / "allnc" / "allnc" / "seed0" / "config.yaml")
                           .read_text())
    assert study["method"]["classifier"] == classifier["chosen"] and study["train"]["eval_split"] == "test"
    assert study["method"]["gbbn"]["enabled"] is (branches["chosen"] == "two")
    assert study["method"]["p2p"]["weight"] == float(p2p["chosen"])
    assert study["method"]["p2p"]["form"] == form["chosen"]
    digits = chosen_overrides("allnc", "digits_lt", out)
    assert not any(o.startswith(("method.classifier", "method.gbbn.enabled", "method.p2p.weight")) for o in digits)
    assert digits[-1] == f"method.p2p.form={form['chosen']}"  # P2P's form is chosen for every proxy
    publish(out, out, "RESULTS.md")
    page = (out / "RESULTS.md").read_text()
    linear = " / ".join(f"{classifier['validation']['linear'][split]['mean']:.1f}" for split in ("top1", "many"))
    assert f"| AllNC | 1 | {linear} / " in page and f"| two: overall / Many / Medium / Few (%) |" in page
    assert f"| linear | **{classifier['chosen']}** |" in page and f"| two | **{branches['chosen']}** |" in page

    # The JSON is the record: without the run folders, collecting again keeps the method's entry.
    shutil.rmtree(out / "runs" / "tuned_synthetic100_small")
    collect_proxy("synthetic100_small", out / "runs", out, smoke=True)
    assert "allnc" in json.loads((out / "tuned_synthetic100_small.json").read_text())["methods"]
    # The record is kept by configuration: runs recorded under another row that ran AllNC's configuration are
    # AllNC's, and not that row's (its own configuration is another).
    tuned = out / "tuned_synthetic100_small.json"
    record = json.loads(tuned.read_text())
    record["methods"] = {"allnc_contrastive": record["methods"]["allnc"]}
    tuned.write_text(json.dumps(record))
    collect_proxy("synthetic100_small", out / "runs", out, smoke=True)
    assert list(json.loads(tuned.read_text())["methods"]) == ["allnc"]
    # Once a choice changes, the runs made before it are not the method's any more: left out, not mislabelled.
    record = json.loads((out / "branches_choice.json").read_text())
    record["methods"]["allnc"]["chosen"] = "one" if branches["chosen"] == "two" else "two"
    (out / "branches_choice.json").write_text(json.dumps(record))
    collect_proxy("synthetic100_small", out / "runs", out, smoke=True)
    assert "allnc" not in json.loads((out / "tuned_synthetic100_small.json").read_text())["methods"]


def test_a_choice_switches_only_when_another_value_wins_by_more_than_the_seed_noise() -> None:
    def seeds(*accuracies: float) -> dict:
        mean = sum(accuracies) / len(accuracies)
        n = len(accuracies)
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (n - 1)) if n > 1 else None
        return {"mean": mean, "std": std, "n": n}

    def scores(top1: dict, few: dict | None = None) -> dict:
        return {"top1": top1, "few": few or seeds(10.0)}

    # LA on synthetic-100: cosine 33.0 / 32.3 against linear 27.6 / 27.8. The standard error of the
    # difference is sqrt(0.495^2 / 2 + 0.141^2 / 2) = 0.364, and 4.95 > 2 * 0.364: switch.
    assert chosen_value({"linear": scores(seeds(27.6, 27.8)), "cosine": scores(seeds(33.0, 32.3))},
                        "linear") == "cosine"
    # LDAM-DRW: linear 27.9 / 29.3 against its own cosine 28.4 / 28.4. 0.2 < 2 * sqrt(0.99^2 / 2) = 1.4: keep.
    assert chosen_value({"linear": scores(seeds(27.9, 29.3)), "cosine": scores(seeds(28.4, 28.4))},
                        "cosine") == "cosine"
    assert chosen_value({"linear": scores(seeds(30.0)), "cosine": scores(seeds(30.5))}, "linear") == "cosine"
    assert chosen_value({"linear": scores(seeds(30.0)), "cosine": scores(seeds(30.0))}, "cosine") == "cosine"
    # Of three values, two beat the own one beyond the noise: the higher mean wins.
    assert chosen_value({"a": scores(seeds(20.0)), "b": scores(seeds(25.0)), "c": scores(seeds(24.0))}, "a") == "b"


def test_few_accuracy_decides_only_where_the_overall_means_are_within_the_noise() -> None:
    def seeds(mean: float, std: float) -> dict:
        return {"mean": mean, "std": std, "n": 3}

    # The 1000-class branches: one branch 36.52 +- 0.23 / Few 22.30 +- 0.26 against two 36.31 +- 0.27 /
    # 17.95 +- 0.74. Overall: 0.21 < 2 * sqrt((0.23^2 + 0.27^2) / 3) = 0.41, a tie; Few: 4.35 > 0.91.
    two, one = {"top1": seeds(36.31, 0.27), "few": seeds(17.95, 0.74)}, {"top1": seeds(36.52, 0.23),
                                                                            "few": seeds(22.30, 0.26)}
    assert chosen_value({"two": two, "one": one}, "two") == "one"
    # The same Few gain 0.1 point lower overall: still a tie overall, still chosen.
    assert chosen_value({"two": two, "one": {**one, "top1": seeds(36.21, 0.23)}}, "two") == "one"
    # A Few gain within its noise decides nothing.
    assert chosen_value({"two": two, "one": {**one, "few": seeds(18.5, 0.26)}}, "two") == "two"
    # Beyond the noise overall, overall decides, whatever Few does: less Few does not stop a better overall
    # (the 100-class classifier: AllNC's cosine 30.8 / 12.95 against linear 28.05 / 14.2) ...
    assert chosen_value({"linear": {"top1": seeds(28.05, 0.3), "few": seeds(14.2, 0.2)},
                         "cosine": {"top1": seeds(30.8, 0.3), "few": seeds(12.95, 0.2)}}, "linear") == "cosine"
    # ... and more Few does not save a worse one.
    assert chosen_value({"linear": {"top1": seeds(28.05, 0.3), "few": seeds(14.2, 0.2)},
                         "cosine": {"top1": seeds(30.8, 0.3), "few": seeds(12.95, 0.2)}}, "cosine") == "cosine"


def test_every_committed_choice_follows_the_rule_from_its_recorded_validation_figures() -> None:
    records = sorted((ROOT / "bench" / "results").glob("*_choice*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        for method, entry in record["methods"].items():
            excluded = entry.get("excluded", {})
            assert excluded == {v: why for v, why in KNOBS[record["knob"]].excluded.items() if v in entry["validation"]}
            assert entry["chosen"] == chosen_value(entry["validation"], entry["own"], excluded), (path.name, method)


def test_an_excluded_value_is_never_chosen_and_an_excluded_own_value_gives_way_to_the_best_other() -> None:
    def scores(top1: float, few: float) -> dict:
        return {"top1": {"mean": top1, "std": 0.1, "n": 6}, "few": {"mean": few, "std": 0.1, "n": 6}}

    candidates = {"a": scores(31.6, 13.4), "b": scores(31.2, 12.9), "c": scores(30.0, 12.0)}
    assert chosen_value(candidates, "c") == "a"
    assert chosen_value(candidates, "c", excluded={"a"}) == "b"  # a wins by far more than the noise, but fails
    assert chosen_value(candidates, "a", excluded={"a"}) == "b"  # the own value fails: the best of the others
    assert chosen_value(candidates, "b", excluded={"a"}) == "b"
    with pytest.raises(ValueError, match="fails a requirement"):
        chosen_value({"a": candidates["a"]}, "a", excluded={"a"})


def test_an_isolation_run_that_repeats_its_base_method_on_a_proxy_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "classifier_choice.json").write_text(json.dumps({"methods": {"la": {"chosen": "cosine"}}}))
    large, small = "synthetic100_small", "digits_lt"
    # At 100 classes LA already runs with its chosen cosine classifier; at 10 it keeps its linear one.
    assert not isolates("la_cosine", large, tmp_path) and isolates("la_linear", large, tmp_path)
    assert isolates("la_cosine", small, tmp_path) and not isolates("la_linear", small, tmp_path)
    assert isolates("la", large, tmp_path) and isolates("ldam_without_drw", large, tmp_path)
    # AllNC with one branch chosen at 100 classes: the isolation run is the one with GBBN, not without.
    (tmp_path / "branches_choice.json").write_text(json.dumps({"methods": {"allnc": {"chosen": "one"}}}))
    assert not isolates("allnc_one_branch", large, tmp_path) and isolates("allnc_two_branches", large, tmp_path)
    assert isolates("allnc_one_branch", small, tmp_path) and not isolates("allnc_two_branches", small, tmp_path)


def test_a_larger_proxy_refines_the_choices_from_the_100_class_ones(tmp_path: Path) -> None:
    def choose(file: str, value: str) -> None:
        (tmp_path / file).write_text(json.dumps({"methods": {"allnc": {"chosen": value}}}))

    def method(proxy: str, overrides: tuple[str, ...]):
        return run_config(PROXIES[proxy], overrides).method

    large = "synthetic1000_imagenet_lt"
    choose("classifier_choice.json", "cosine")
    choose("branches_choice.json", "two")
    choose("p2p_weight_choice.json", "0.1")
    # At 1000 classes the branches' refinement starts from every 100-class choice: its own value is theirs.
    base = base_overrides("allnc", large, tmp_path, smoke=False)
    start = method(large, base)
    assert (start.classifier, start.gbbn.enabled, start.p2p.weight) == ("cosine", True, 0.1)
    assert run_config(PROXIES[large], base).train.eval_split == "val"

    choose(f"branches_choice_{large}.json", "one")
    # The weight's refinement takes the branches refined there, and the 100-class weight as its own.
    start = method(large, base_overrides("allnc", large, tmp_path, smoke=False))
    assert (start.classifier, start.gbbn.enabled, start.p2p.weight) == ("cosine", False, 0.1)
    # The study trains each proxy with its own refinements, and the 100-class choices elsewhere.
    assert (method(large, chosen_overrides("allnc", large, tmp_path)).gbbn.enabled,
            method("synthetic100_small", chosen_overrides("allnc", "synthetic100_small", tmp_path)).gbbn.enabled) \
        == (False, True)
    assert method(large, chosen_overrides("allnc", large, tmp_path)).p2p.weight == 0.1


def test_a_second_pass_chooses_a_knob_with_the_later_choices_and_keeps_the_first(tmp_path: Path) -> None:
    def choose(file: str, value: str, entry: dict | None = None) -> None:
        (tmp_path / file).write_text(json.dumps({"methods": {"allnc": {"chosen": value, **(entry or {})}}}))

    def p2p_weight(overrides: tuple[str, ...]) -> float:
        return run_config(PROXIES[small], overrides).method.p2p.weight

    small = "synthetic100_small"
    choose("classifier_choice.json", "cosine")
    first = base_overrides("allnc", small, tmp_path, smoke=False)
    # The first pass of the branches ran before P2P's weight was chosen: the preset's weight.
    assert p2p_weight(first) == 1.0
    choose("branches_choice.json", "two")
    choose("p2p_weight_choice.json", "0.1")
    second = base_overrides("allnc", small, tmp_path, smoke=False)
    # The second pass: the chosen weight, and the first choice of the branches as the value to beat.
    assert p2p_weight(second) == 0.1 and run_config(PROXIES[small], second).method.gbbn.enabled

    def entry(overrides: tuple[str, ...], chosen: str) -> dict:
        return {"own": "two", "chosen": chosen, "overrides": list(overrides), "seeds": 6, "validation": {}}

    kept = with_earlier_passes(entry(second, "one"), entry(first, "two"), small)
    assert kept["chosen"] == "one" and [e["overrides"] for e in kept["earlier"]] == [list(first)]
    # Choosing again with the same configuration replaces the pass; the earlier one stays.
    again = with_earlier_passes(entry(second, "two"), kept, small)
    assert again["chosen"] == "two" and [e["overrides"] for e in again["earlier"]] == [list(first)]
    assert "earlier" not in with_earlier_passes(entry(first, "two"), entry(first, "one"), small)

    scores = {value: {split: {"mean": mean, "std": 0.1, "n": 6} for split in ("top1", "many", "medium", "few")}
              for value, mean in (("two", 31.0), ("one", 32.0))}
    choose("branches_choice.json", "one", {"own": "two", "seeds": 6, "validation": scores, "overrides": list(second),
                                           "earlier": [{**entry(first, "two"), "validation": scores}]})
    record = json.loads((tmp_path / "branches_choice.json").read_text())
    for name in ("classifier_choice.json", "p2p_weight_choice.json"):  # stand-ins without figures to publish
        (tmp_path / name).unlink()
    (tmp_path / "branches_choice.json").write_text(json.dumps({**record, "knob": "branches", "proxy": small,
                                                               "split": "validation split"}))
    publish(tmp_path, tmp_path, "RESULTS.md")
    page = (tmp_path / "RESULTS.md").read_text()
    assert "| AllNC | 6 | 32.0 / 32.0 / 32.0 / 32.0 | 31.0 / 31.0 / 31.0 / 31.0 | two | **one** |" not in page
    assert "| AllNC | 6 | 31.0 / 31.0 / 31.0 / 31.0 | 32.0 / 32.0 / 32.0 / 32.0 | two | **one** |" in page
    earlier = "| AllNC, *earlier pass* (p2p_weight 1) | 6 | 31.0 / 31.0 / 31.0 / 31.0 | 32.0 / 32.0 / 32.0 / 32.0 |"
    assert f"{earlier} two | **two** |" in page and "(a second pass)" in page

    # A pass that differs from the next only in the knob's own starting value names no other knob.
    record = json.loads((tmp_path / "branches_choice.json").read_text())
    record["methods"]["allnc"]["earlier"][0]["overrides"] = [*second, "method.gbbn.enabled=false"]
    record["methods"]["allnc"]["earlier"][0]["own"] = "one"
    (tmp_path / "branches_choice.json").write_text(json.dumps(record))
    publish(tmp_path, tmp_path, "RESULTS.md")
    assert "| AllNC, *earlier pass* | 6 | 31.0 / 31.0 / 31.0 / 31.0 | 32.0 / 32.0 / 32.0 / 32.0 | one | **two** |" \
        in (tmp_path / "RESULTS.md").read_text()


def test_a_refined_choice_is_published_with_the_values_it_trained(tmp_path: Path) -> None:
    def scores(top1: float) -> dict:
        return {split: {"mean": top1 - offset, "std": 0.1, "n": 3}
                for offset, split in enumerate(("top1", "many", "medium", "few"))}

    entry = {"own": "0.1", "chosen": "0.1", "overrides": [], "seeds": 3,
             "validation": {"0.1": scores(36.5), "1": scores(36.2)}}
    (tmp_path / "p2p_weight_choice_synthetic1000_imagenet_lt.json").write_text(json.dumps(
        {"knob": "p2p_weight", "proxy": "synthetic1000_imagenet_lt", "split": "validation split (20 images per class)",
         "metric": "acc_top1", "methods": {"allnc": entry}}))
    publish(tmp_path, tmp_path, "RESULTS.md")
    page = (tmp_path / "RESULTS.md").read_text()
    # The command shown trains what the record holds: 3 seeds (the knob's own is 6), two of the four values.
    assert ("`python -m bench.validation_choice --proxy synthetic1000_imagenet_lt --knobs p2p_weight --seeds 3 "
            "--values 0.1,1` refines") in page
    assert "| AllNC | 3 | 36.5 / 35.5 / 34.5 / 33.5 | 36.2 / 35.2 / 34.2 / 33.2 | 0.1 | **0.1** |" in page
    assert "0.3: overall" not in page


def test_a_subset_of_values_always_trains_the_method_s_own() -> None:
    assert trained_values("p2p_weight", "0.1", {"1"}) == ("0.1", "1")
    assert trained_values("p2p_weight", "1", None) == ("0.1", "0.3", "1", "3")
    assert trained_values("branches", "one", {"one", "two"}) == ("two", "one")
