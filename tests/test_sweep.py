"""Sweeps (allnc_dist/sweep): the sweep file's checks, the concurrency derived from the cluster, and one
real sweep on Ray Tune: 2 trials x 2 epochs of digits-LT under ASHA, each trial one Ray Train worker,
logging through the private MLflow server the sweep puts in front of a SQLite store; then --resume.
The sweep runs once (module fixture): its Ray Tune, Ray Train and MLflow server start-up dominates."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from allnc_dist.cli import main
from allnc_dist.config import ConfigError, DistributedConfig
from allnc_dist.engine.ray_driver import ensure_ray
from allnc_dist.sweep import check_space, load_sweep
from allnc_dist.sweep.spec import sweep_base
from allnc_dist.sweep.tune_run import default_max_concurrent_trials

ROOT = Path(__file__).parents[1]
DIGITS = ROOT / "jobs" / "configs" / "digits_lt.yaml"
EXPERIMENT = "sweep-test"
KNOBS = ["method.hycon.tau", "optim.lr"]


def write_sweep(folder: Path, **fields) -> Path:
    path = folder / f"{fields.get('name', 'sweep')}.yaml"
    path.write_text(yaml.safe_dump({"base": str(DIGITS), "overrides": ["data.val_per_class=15"], **fields}))
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["sweep", *map(str, argv)])
    return code, stdout.getvalue(), stderr.getvalue()


# ------------------------------------------------------------------------------- the sweep file
@pytest.mark.parametrize("space,message", [
    ({"method.hycon.tauu": {"loguniform": [0.05, 0.5]}},
     r"(?s)space\[method\.hycon\.tauu\].*method\.hycon\.tauu: unknown field \(allowed here: negatives, projection_dim, projection_head, tau"),
    ({"method.class_means.beta": {"choice": [0.5, 1.0]}},
     r"(?s)space\[method\.class_means\.beta\]: choice value 1\.0 is not valid.*less than 1"),
    ({"method.hycon.tau": {"lognormal": [0.05, 0.5]}},
     r"space\[method\.hycon\.tau\]\.lognormal: unknown field \(allowed here: loguniform, uniform, randint, choice, grid\)"),
    ({"optim.lr": {"loguniform": [0.0, 0.5]}}, r"space\[optim\.lr\]: loguniform: low must be > 0"),
    ({"optim.lr": {"uniform": [0.5, 0.1]}}, r"space\[optim\.lr\]: uniform: low must be below high"),
    ({"optim.lr": {"uniform": [0.1, 0.5], "choice": [0.1]}}, r"space\[optim\.lr\]: give exactly one of"),
    ({"train.eval_split": {"choice": ["test"]}}, r"space\[train\.eval_split\]: the sweep sets this field itself"),
    ({"data.imbalance_ratio": {"choice": [10, 100]}}, r"space\[data\.imbalance_ratio\]: selects the dataset's samples"),
])
def test_a_bad_knob_fails_naming_it(tmp_path, space, message):
    with pytest.raises(ConfigError, match=message):
        spec = load_sweep(write_sweep(tmp_path, space=space))
        check_space(spec, sweep_base(spec, []))


@pytest.mark.parametrize("fields,message", [
    ({"search": "bayes"}, r"search: Input should be 'random' or 'optuna'"),
    ({"scheduler": {"type": "hyperband"}}, r"scheduler: .*'hyperband'.*expected tags: 'asha', 'fifo'"),
    ({"search": "optuna", "space": {"optim.lr": {"grid": [0.1, 0.2]}}}, r"grid \(optim\.lr\) needs search: random"),
    ({"metric": "acc_top1"}, r"metric: String should match pattern"),
    ({"num_sample": 4}, r"num_sample: unknown field \(allowed here: base, max_concurrent_trials, metric"),
    ({"scheduler": {"type": "asha", "grace": 2}},
     r"scheduler\.grace: unknown field \(allowed here: grace_period, max_t, reduction_factor, type\)"),
    ({"scheduler": {"type": "asha", "reduction_factor": 1}}, r"scheduler\.reduction_factor: Input should be greater than 1"),
])
def test_a_bad_sweep_setting_fails_naming_the_field(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(write_sweep(tmp_path, **{"space": {"optim.lr": {"uniform": [0.01, 0.1]}}, **fields}))


def test_the_command_rejects_a_bad_sweep_file_before_starting_anything(tmp_path):
    sweep = write_sweep(tmp_path, space={"method.hycon.tauu": {"uniform": [0.1, 0.2]}})
    code, _, errors = run_cli(sweep, "--out", tmp_path / "out")
    assert code == 2 and "space[method.hycon.tauu]" in errors
    assert not (tmp_path / "out").exists()


def test_the_job_takes_overrides_without_a_sweep_file(tmp_path, capsys):
    from allnc_dist.sweep.job import main as job_main

    default = ROOT / "jobs" / "configs" / "sweeps" / "digits_allnc.yaml"
    assert job_main(default, ["train.epochs=0", "--out", str(tmp_path / "out")]) == 2
    errors = capsys.readouterr().err
    assert "digits_lt.yaml with the overrides" in errors and "train.epochs" in errors  # the default sweep's base
    assert not (tmp_path / "out").exists()


def test_the_sweep_selects_on_the_validation_split(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, overrides=[], space={"optim.lr": {"uniform": [0.01, 0.1]}}))
    with pytest.raises(ConfigError, match=r"eval_split='val' needs a validation split: set data.val_per_class"):
        check_space(spec, sweep_base(spec, []))
    base = check_space(spec, sweep_base(spec, ["data.val_per_class=15", "train.eval_every=7"]))
    assert (base.train.eval_split, base.train.eval_every) == ("val", 1)


@pytest.mark.parametrize("resources,distributed,expected", [
    ({"CPU": 3.0}, {"num_workers": 1, "cpus_per_worker": 0.5}, 2),  # 2 cores: (1 driver + 0.5) per trial
    ({"CPU": 16.0}, {"num_workers": 2, "cpus_per_worker": 1.0}, 5),
    ({"CPU": 3.0}, {"num_workers": 2, "cpus_per_worker": 1.0}, 1),  # at least one
    ({"CPU": 3.0}, {"num_workers": 10, "cpus_per_worker": 0.2}, 1),  # 3 / 3.0, exactly
    ({"CPU": 64.0, "GPU": 8.0}, {"num_workers": 2, "gpus_per_worker": 1.0}, 4),  # by GPUs
    ({"CPU": 64.0, "GPU": 8.0}, {"num_workers": 8, "gpus_per_worker": 1.0, "cpus_per_worker": 8}, 1),
    ({"CPU": 64.0, "GPU": 1.0}, {"num_workers": 1, "gpus_per_worker": 0.25}, 4),
    ({"CPU": 64.0}, {"num_workers": 1, "gpus_per_worker": 1.0}, 1),  # no GPU yet: at least one
])
def test_concurrent_trials_follow_from_the_cluster(resources, distributed, expected):
    assert default_max_concurrent_trials(resources, DistributedConfig(**distributed)) == expected


def test_the_shipped_sweeps_check_out():
    for name in ("digits_allnc", "imagenet_lt"):
        spec = load_sweep(ROOT / "jobs" / "configs" / "sweeps" / f"{name}.yaml")
        base = check_space(spec, sweep_base(spec, []))
        assert base.train.eval_split == "val" and spec.scheduler.type == "asha"
        assert {"method.hycon.tau", "method.hycon.weight", "method.p2p.weight", "method.class_means.beta", "optim.lr",
                "optim.weight_decay"} <= spec.space.keys()


def test_the_study_sweeps_give_every_method_the_same_budget_and_search():
    specs = {path.stem: load_sweep(path) for path in (ROOT / "jobs" / "configs" / "sweeps" / "study").glob("*.yaml")}
    assert specs.keys() == {"digits_allnc", "digits_la", "digits_ldam_drw", "digits_bbn"}
    for name, spec in specs.items():
        base = check_space(spec, sweep_base(spec, []))
        assert base.method.preset == name.removeprefix("digits_") and base.train.eval_split == "val"
        assert (spec.num_samples, spec.search, spec.scheduler, spec.space["optim.lr"], spec.space["optim.weight_decay"]) == (
            specs["digits_la"].num_samples, specs["digits_la"].search, specs["digits_la"].scheduler,
            specs["digits_la"].space["optim.lr"], specs["digits_la"].space["optim.weight_decay"])
    assert {"method.hycon.weight", "method.p2p.weight", "method.aux.branch_weights", "method.p2p.form"} <= (
        specs["digits_allnc"].space.keys())


# ------------------------------------------------------------------------------- on Ray Tune
@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ensure_ray(num_cpus_needed=3)  # 4 logical CPUs: 2 trials of (1 driver + 0.5 worker) at once
    yield
    ray.shutdown()


@pytest.mark.parametrize("search,width", [("random", {"grid": [8, 16]}), ("optuna", {"choice": [8, 16]})])
def test_each_search_draws_the_space_and_asha_stops_by_epoch(ray_cluster, tmp_path, search, width):
    from ray import tune

    from allnc_dist.sweep import SweepConfig
    from allnc_dist.sweep.tune_run import scheduler, search_algorithm, search_space

    def report_three_epochs(config: dict) -> None:
        """A stand-in trial that reports as the Train workers do (defined here: Ray pickles it by
        value, as the test module cannot be imported on a worker). The wider the model, the worse."""
        for epoch in (1, 2, 3):
            tune.report({"epoch": epoch, "eval/acc_top1": 100 / config["model.width"] + config["optim.lr"]})

    spec = SweepConfig(name=search, base=DIGITS, num_samples=1 if search == "random" else 3, search=search,
                       scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
                       space={"optim.lr": {"loguniform": [0.01, 0.1]}, "model.width": width})
    results = tune.Tuner(
        tune.with_resources(report_three_epochs, {"CPU": 1}), param_space=search_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                                    search_alg=search_algorithm(spec, 1), scheduler=scheduler(spec, 3)),
        run_config=tune.RunConfig(name=search, storage_path=str(tmp_path), verbose=0),
    ).fit()
    trials = sorted(((r.metrics["epoch"], r.config["model.width"], r.config["optim.lr"]) for r in results),
                    reverse=True)
    assert len(trials) == (2 if search == "random" else 3)  # a grid's values each num_samples times
    assert all(w in (8, 16) and 0.01 <= lr <= 0.1 for _, w, lr in trials)
    if search == "random":
        # One trial at a time, the grid in order: width 16 trails width 8's epoch 1, and ASHA stops it there.
        assert [(epochs, w) for epochs, w, _ in trials] == [(3, 8), (1, 16)]


# ------------------------------------------------------------------------------- a real sweep
@pytest.fixture(scope="module")
def sweep(tmp_path_factory, ray_cluster):
    """A finished 2-trial sweep: its folder, the SQLite store, the sweep file and what it printed."""
    root = tmp_path_factory.mktemp("sweep")
    db = root / "mlflow.db"
    sweep_file = write_sweep(
        root, name="digits_test", num_samples=2, search="random", seed=1,
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        overrides=["data.val_per_class=15", "train.epochs=2", "train.checkpoint_every=2",
                   "model.width=8", "data.batch_size=64", "data.augment=none", "distributed.num_workers=1",
                   "distributed.cpus_per_worker=0.5", "tracking.system_metrics=false",
                   f"tracking.experiment={EXPERIMENT}", f"tracking.mlflow_uri=sqlite:///{db}"],
        space={"method.hycon.tau": {"loguniform": [0.05, 0.5]}, "optim.lr": {"choice": [0.02, 0.1]}},
    )
    out = root / "out"
    code, printed, errors = run_cli(sweep_file, "--out", out)
    assert code == 0, errors
    return {"out": out, "db": db, "file": sweep_file, "printed": printed}


@pytest.fixture(scope="module")
def mlflow_store(sweep):
    """A client of the SQLite store the sweep's private server wrote (the server is gone with the sweep)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{sweep['db']}")


def runs_of(client) -> list:
    return client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])


def trial_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "trials").iterdir() if p.is_dir())


def table_cells(summary: str) -> tuple[list[str], list[list[str]]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in summary.splitlines()
            if line.startswith("|")]
    return rows[0], rows[2:]


def test_every_trial_trains_on_ray_train_and_reports_each_epoch(sweep):
    state = json.loads((sweep["out"] / "sweep.json").read_text())
    assert state["finished"] and state["base_config"]["train"]["eval_split"] == "val"
    trials = trial_dirs(sweep["out"])
    assert len(trials) == 2
    for trial in trials:
        config = yaml.safe_load((trial / "config.yaml").read_text())
        assert config["train"]["eval_split"] == "val" and config["train"]["eval_every"] == 1
        assert config["name"].endswith(trial.name)  # the Tune trial's name
        evaluated = [r["epoch"] for r in map(json.loads, (trial / "metrics.jsonl").read_text().splitlines())
                     if r["split"] == "eval"]
        # ASHA may stop the weaker trial after its first epoch; the other runs both.
        assert evaluated in ([1], [1, 2])
    assert any((trial / "report.json").exists() for trial in trials)


def test_the_summary_ranks_both_trials_and_the_plot_is_written(sweep):
    summary = (sweep["out"] / "summary.md").read_text()
    assert summary in sweep["printed"]
    header, cells = table_cells(summary)
    assert header == ["trial", *KNOBS, "val acc (%)", "val Few (%)", "epochs", "stopped early"]
    assert sorted(c[0] for c in cells) == [t.name for t in trial_dirs(sweep["out"])]
    accuracies = [float(c[3]) for c in cells]
    assert accuracies == sorted(accuracies, reverse=True) and all(0 <= a <= 100 for a in accuracies)
    for c in cells:
        assert (c[5], c[6]) in (("2", "no"), ("1", "yes"))
        assert c[2] in ("0.02", "0.1") and 0.05 <= float(c[1]) <= 0.5
    best = json.loads((sweep["out"] / "best.json").read_text())
    assert best["trial"] == cells[0][0] and best["value"] == pytest.approx(float(cells[0][3]), abs=0.01)
    assert best["overrides"] == [f"{knob}={best['knobs'][knob]}" for knob in KNOBS]
    from PIL import Image

    with Image.open(sweep["out"] / "sweep_params.png") as image:
        assert image.format == "PNG" and image.size[0] > 600


def test_trials_nest_under_the_sweeps_parent_run(sweep, mlflow_store):
    runs = runs_of(mlflow_store)
    (parent,) = [r for r in runs if r.info.run_name == "digits_test"]
    parent_id = parent.info.run_id
    assert json.loads((sweep["out"] / "sweep.json").read_text())["parent_run_id"] == parent_id
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.info.run_id != parent_id]
    assert len(children) == 2 and all(r.data.tags.get("mlflow.parentRunId") == parent_id for r in children)
    statuses = []
    for trial in trial_dirs(sweep["out"]):
        (run,) = [r for r in children if r.info.run_name.endswith(trial.name)]
        assert (trial / "mlflow_run_id").read_text().strip() == run.info.run_id
        # A trial that ran to its end wrote everything and ended its run; one ASHA stopped is closed as
        # KILLED, not left RUNNING (its workers may have written a report before they were killed).
        statuses.append(run.info.status)
        if run.info.status == "FINISHED":
            assert (trial / "report.json").exists() and (trial / "model.pt").exists()
        else:
            assert run.info.status == "KILLED"
        assert "eval/acc_top1" in run.data.metrics
    assert "FINISHED" in statuses  # the first trial at each rung always goes on

    params = parent.data.params
    assert params["sweep.search"] == "random" and params["sweep.num_samples"] == "2"
    _, cells = table_cells((sweep["out"] / "summary.md").read_text())
    best = cells[0]
    assert (params["best.trial"], params["best.optim.lr"]) == (best[0], best[2])
    assert float(params["best.method.hycon.tau"]) == pytest.approx(float(best[1]), rel=1e-3)
    assert parent.data.metrics["best/eval/acc_top1"] == pytest.approx(float(best[3]), abs=0.01)
    # The server stored the parent's artifacts in its artifact destination, next to the SQLite file.
    stored = {p.name for p in (sweep["db"].parent / "mlartifacts").glob(f"*/{parent_id}/artifacts/*")}
    assert {"summary.md", "sweep_params.png"} <= stored


def test_resuming_a_finished_sweep_reports_it_and_trains_nothing(sweep, mlflow_store):
    reports = {p: p.stat().st_mtime_ns for p in (sweep["out"] / "trials").glob("*/report.json")}
    metrics = {p: p.read_text() for p in (sweep["out"] / "trials").glob("*/metrics.jsonl")}
    runs_before = sorted(r.info.run_id for r in runs_of(mlflow_store))

    code, printed, errors = run_cli("--resume", "--out", sweep["out"])
    assert code == 0, errors
    assert (sweep["out"] / "summary.md").read_text() in printed and "nothing to resume" in printed
    assert {p: p.stat().st_mtime_ns for p in reports} == reports
    assert {p: p.read_text() for p in metrics} == metrics
    assert sorted(r.info.run_id for r in runs_of(mlflow_store)) == runs_before


def test_runs_of_trials_that_never_finished_are_closed(sweep, mlflow_store, tmp_path):
    """A trial the scheduler stops is killed mid-run: its MLflow run is closed as KILLED (FAILED when
    it errored), also when it wrote its report before it was killed; a run the trial ended is left as
    it is. (On the sweep's store, in an experiment of its own: a fresh SQLite store takes seconds to
    set up.)"""
    from allnc_dist.sweep.results import TrialOutcome
    from allnc_dist.sweep.tracking import close_unfinished_trial_runs
    from allnc_dist.tracking import RunDirectory

    client = mlflow_store
    experiment = client.create_experiment("closing", artifact_location=(tmp_path / "artifacts").as_uri())
    outcomes, run_ids = [], {}
    # (wrote its report, ended its run, errored)
    kinds = {"stopped": (False, False, False), "failed": (False, False, True), "done": (True, True, False),
             "killed_after_its_report": (True, False, False)}
    for trial, (reported, ended, errored) in kinds.items():
        run_ids[trial] = client.create_run(experiment, run_name=trial).info.run_id
        RunDirectory(tmp_path / "trials" / trial).record_mlflow_run_id(run_ids[trial])
        if reported:
            RunDirectory(tmp_path / "trials" / trial).write_report({})
        if ended:
            client.set_terminated(run_ids[trial], "FINISHED")
        outcomes.append(TrialOutcome(trial, {}, {"epoch": 1}, 2, errored))
    close_unfinished_trial_runs(f"sqlite:///{sweep['db']}", outcomes, tmp_path / "trials")
    status = {trial: client.get_run(run_id).info.status for trial, run_id in run_ids.items()}
    assert status == {"stopped": "KILLED", "failed": "FAILED", "done": "FINISHED", "killed_after_its_report": "KILLED"}


def test_resume_refuses_new_settings(sweep):
    code, _, errors = run_cli("--resume", "--out", sweep["out"], "--num-samples", "4")
    assert code == 2 and "recorded settings" in errors
    changed = write_sweep(sweep["file"].parent, name="digits_test", space={"optim.lr": {"uniform": [0.01, 0.1]}})
    code, _, errors = run_cli(changed, "--resume", "--out", sweep["out"])
    assert code == 2 and "differs from the settings" in errors


def test_a_sweep_on_several_nodes_needs_an_mlflow_server_they_all_reach(tmp_path):
    """Checked before any trial starts: a SQLite store, which the sweep serves on 127.0.0.1, cannot take
    the logs of trials on other machines; an http server on the cluster network can."""
    from allnc_dist.config import load_config  # noqa: PLC0415
    from allnc_dist.sweep.tune_run import check_trials_reach_every_node  # noqa: PLC0415

    nodes = ["10.0.0.1", "10.0.0.2"]

    def trial(uri: str):
        return load_config(None, [f"tracking.mlflow_uri={uri}", f"distributed.storage_path={tmp_path}"])

    with pytest.raises(ConfigError, match=r"serves sqlite:///sweep.db through an MLflow server on 127.0.0.1 only"):
        check_trials_reach_every_node(trial("http://127.0.0.1:5000"), "sqlite:///sweep.db", nodes)
    with pytest.raises(ConfigError, match="loopback address the other nodes do not reach") as refused:
        check_trials_reach_every_node(trial("http://127.0.0.1:5000"), "http://127.0.0.1:5000", nodes)
    assert "The sweep serves" not in str(refused.value)
    check_trials_reach_every_node(trial("http://10.0.0.1:5000"), "http://10.0.0.1:5000", nodes)
    check_trials_reach_every_node(trial("http://127.0.0.1:5000"), "sqlite:///sweep.db", ["127.0.0.1"])
