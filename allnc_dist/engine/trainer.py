"""The training loop, written once. It is given a runtime (engine/runtime.py) that owns the devices,
the collectives, the optimiser update and checkpoint I/O: `LocalRuntime` for one process, or
`RayDeepSpeedRuntime` for a Ray Train worker with a DeepSpeed engine.

    for each epoch:  train on its batches (step -> maybe checkpoint) -> evaluate when due
                     -> log and track -> report to the runtime, with a checkpoint when due
    then:            a final evaluation if the last epoch had none -> report -> run outputs

Every epoch reseeds the augmentation and the streams from (seed, epoch), so a run resumed from a
checkpoint replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..data import LongTailData
from ..method.gbbn import cumulative_alpha
from ..method.network import build_network
from ..method.objective import AllNCObjective
from ..tracking import MlflowTracker, RunDirectory, open_run_tracker
from .checkpoint import FORMAT_VERSION, CheckpointSchedule, load_checkpoint
from .evaluate import Evaluation, evaluate
from .faults import FaultPlan
from .local_runtime import LocalRuntime
from .machine import describe_machine
from .optimization import build_optimizer, build_scheduler
from .progress import Progress
from .run_outputs import load_geometry, write_run_outputs
from .runtime import Checkpoint, Runtime
from .step import train_step
from .streams import epoch_seed


@dataclass
class TrainResult:
    report: dict
    evaluation: Evaluation
    run_dir: RunDirectory

    @classmethod
    def load(cls, run_dir: str | Path | RunDirectory) -> TrainResult:
        """A finished run's report and final geometry, read back from its run directory."""
        run_dir = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
        report = json.loads(run_dir.report_path.read_text())
        return cls(report, load_geometry(run_dir, report["metrics"]), run_dir)


def train_locally(cfg: RunConfig, run_dir: str | Path, data: LongTailData | None = None,
                  parent_run_id: str | None = None, resume: bool = False) -> TrainResult:
    """Train `cfg` in this process (one GPU or the CPU) into `run_dir`; `resume` continues its checkpoint."""
    return Trainer(cfg, run_dir, LocalRuntime(cfg, run_dir, resume), data, parent_run_id).fit()


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, runtime: Runtime, data: LongTailData | None = None,
                 parent_run_id: str | None = None, mlflow_run_id: str | None = None) -> None:
        self.cfg, self.runtime, self.run_dir = cfg, runtime, RunDirectory(run_dir)
        self.parent_run_id = parent_run_id  # the MLflow run this one nests under (a sweep, an ablation)
        self.mlflow_run_id = mlflow_run_id  # opened by a driver that outlives restarts, if any
        torch.manual_seed(cfg.train.seed)
        self.streams = runtime.build_streams(cfg, data)
        self.class_counts = self.streams.class_counts
        self.steps_per_epoch = self.streams.steps_per_epoch  # batches (micro-batches under accumulation)
        self.model = build_network(cfg, self.streams.image_shape[0], len(self.class_counts)).to(runtime.device)
        self.objective = AllNCObjective(cfg.method, self.class_counts, self.model.feature_dim,
                                        self.model.num_branches, cfg.train.epochs, device=runtime.device)
        self.epoch = self.step = 0  # completed epochs and steps
        self.restarts = 0  # how many times this run has resumed
        self.resumed_from_workers = runtime.world_size  # the workers that wrote the checkpoint resumed from
        self.checkpoint = runtime.latest_checkpoint() or self.requested_checkpoint()
        if self.checkpoint is not None:  # before the runtime wraps the model: ZeRO-3 partitions it
            self.model.load_state_dict(self.checkpoint.state["model"])
        optimizer = build_optimizer(cfg, self.model)
        updates_per_epoch = max(1, self.steps_per_epoch // runtime.accumulation)
        self.optimization = runtime.optimization(self.model, optimizer,
                                                 build_scheduler(cfg, optimizer, updates_per_epoch))
        if self.checkpoint is not None:
            self.restore(self.checkpoint)
            # Keep where the run resumed from, not a second copy of its weights for the whole run.
            self.checkpoint = Checkpoint({}, self.checkpoint.where, self.checkpoint.own)
        self.checkpoints = CheckpointSchedule(cfg.train, self.steps_per_epoch)
        self.progress = Progress(cfg.name, cfg.train.epochs, self.steps_per_epoch, shown=runtime.rank == 0)
        self.faults = FaultPlan.from_env()
        self.tracker: MlflowTracker | None = None
        self.step_rows: list[tuple[int, dict[str, float]]] = []  # per-step losses not yet sent to MLflow

    # ---------------------------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        """Train to the last epoch and return the result (every rank holds it; rank 0 wrote the run's
        outputs). A run that stops on an error is marked FAILED in MLflow (a resume reopens it)."""
        self.start_run()
        try:
            return self.train_to_the_end()
        except BaseException as exc:
            if self.tracker is not None:
                self.tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise

    def train_to_the_end(self) -> TrainResult:
        started, started_at, final = time.time(), self.epoch, None
        while self.epoch < self.cfg.train.epochs:
            metrics = self.train_epoch()
            self.epoch += 1
            self.log("train", metrics)
            evaluation = self.evaluate() if self.evaluation_due() else None
            if evaluation is not None:
                final = evaluation
                self.log("eval", evaluation.metrics)
            self.progress.epoch_done(self.epoch, self.step, metrics, evaluation and evaluation.metrics)
            if self.epoch < self.cfg.train.epochs:
                self.report_epoch(evaluation)
        ran_last_epoch = started_at < self.cfg.train.epochs  # false when resuming a finished run
        final = final or self.evaluate()  # a resumed, already finished run evaluates once
        report = self.report(final, time.time() - started)
        self.write_outputs(report, final)
        if ran_last_epoch:
            # Reported once the outputs are complete: a sweep's scheduler may stop the trial on this
            # report, and a Ray driver on another node takes the outputs from its checkpoint.
            self.report_epoch(final)
        self.runtime.finish()
        return TrainResult(report, final, self.run_dir)

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        # Augmentation draws from the global RNG: tie it to (seed, epoch, rank) for exact resumes.
        torch.manual_seed(epoch_seed(self.cfg.train.seed, self.epoch) + 7919 * self.runtime.rank)
        first = self.step - self.epoch * self.steps_per_epoch  # > 0 when resumed inside this epoch
        totals: dict[str, float] = {}
        images, steps, started = 0, 0, time.time()
        batches = self.progress.batches(self.streams.batches(self.epoch), self.epoch, first)
        for i, batch in enumerate(batches, start=first):
            progress = self.epoch + i / self.steps_per_epoch  # fractional epochs
            alpha = self.alpha(progress)
            values = train_step(self.optimization.network, self.objective, batch.to(self.runtime.device), alpha,
                                progress, self.optimization, self.runtime.autocast(), self.step)
            self.step += 1
            steps += 1
            images += len(batch)
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            images_per_s = images / (time.time() - started)
            self.progress.step_done(values, images_per_s)
            if self.step % self.cfg.tracking.log_every_steps == 0:
                self.step_rows.append((self.step, {**{f"step/loss_{k}": v for k, v in values.items()},
                                                   "step/alpha": alpha, "step/images_per_s": images_per_s}))
            self.after_step()
        metrics = {f"loss_{k}" if k != "total" else "loss": v / max(steps, 1) for k, v in totals.items()}
        metrics.update(images_per_s=images / (time.time() - started), lr=self.optimization.lr())
        return self.runtime.global_epoch_metrics(metrics)

    def after_step(self) -> None:
        self.runtime.after_step(self.model, self.objective, self.step)
        if self.checkpoints.due_after_step(self.step):
            self.runtime.report({"epoch": self.epoch, "step": self.step}, self.checkpoint_state())
        self.faults.after_step(self.step, self.runtime.rank, self.runtime.world_size, resumed=self.restarts > 0)

    def report_epoch(self, evaluation: Evaluation | None) -> None:
        """Tell the runtime where the run stands (Ray Tune reads the evaluation); checkpoint when due
        (always after the last epoch)."""
        metrics = {"epoch": self.epoch, "step": self.step}
        if evaluation is not None:
            metrics.update({f"eval/{k}": v for k, v in evaluation.metrics.items()})
        if self.checkpoints.due_after_epoch(self.epoch):
            self.runtime.report(metrics, self.checkpoint_state())
        elif self.evaluation_due():
            self.runtime.report(metrics)

    def evaluation_due(self) -> bool:
        return self.epoch % self.cfg.train.eval_every == 0 or self.epoch == self.cfg.train.epochs

    def evaluate(self) -> Evaluation:
        """Every rank, each over its share of the splits; every rank gets the metrics of the whole splits."""
        test, train_eval = self.streams.eval_loaders()
        with self.optimization.full_parameters():  # the metrics read the classifiers' weights
            return evaluate(self.model, test, train_eval, self.class_counts, self.cfg.method.gbbn.test_alpha,
                            self.runtime.device, self.runtime.autocast(), self.runtime.sum_over_ranks)

    def alpha(self, progress: float) -> float:
        """GBBN's cumulative weight at `progress` epochs (1 with a single branch)."""
        if self.model.num_branches == 1:
            return 1.0
        return cumulative_alpha(progress, self.cfg.train.epochs, self.cfg.method.gbbn)

    # ---------------------------------------------------------------------- start, track, finish
    def start_run(self) -> None:
        """Rank 0 starts the run directory (or continues it), opens its MLflow run and says where a
        resumed run resumed from."""
        if self.runtime.rank != 0:
            return
        continues = self.checkpoint is not None and self.checkpoint.own
        if not continues and not (self.runtime.restarts_in_place and self.run_dir.config_path.exists()):
            self.run_dir.create(self.cfg)
        self.tracker = open_run_tracker(self.cfg, self.run_dir, self.mlflow_run_id, self.parent_run_id)
        if self.tracker is not None:
            self.mlflow_run_id = self.tracker.run_id or self.mlflow_run_id
            if self.cfg.tracking.system_metrics:
                self.tracker.start_system_metrics(self.cfg.tracking.system_metrics_interval_s, resume=continues)
        if self.checkpoint is not None:
            self.announce_resume(self.checkpoint)
        target = self.objective.geometry_target
        if target not in (None, "simplex_etf"):
            self.progress.say(f"P2P: {len(self.class_counts)} classes > feature dim {self.model.feature_dim} + 1, "
                              f"so no simplex ETF exists; P2P aims at a {target.replace('_', ' ')} instead "
                              "(docs/method.md)")

    def announce_resume(self, checkpoint: Checkpoint) -> None:
        workers, written_by = self.runtime.world_size, self.resumed_from_workers
        resized = f", on {workers} worker(s) instead of {written_by}" if workers != written_by else ""
        self.progress.say(f"resumed from {checkpoint.where} at epoch {self.epoch}, step {self.step} "
                          f"(restart {self.restarts}{resized})")
        self.run_dir.log({"split": "resume", "epoch": self.epoch, "step": self.step, "from": checkpoint.where,
                          "restarts": self.restarts, "workers": workers, "written_by_workers": written_by,
                          "streams": self.streams.state_dict(),
                          "tracker_steps": [t["step"] for t in self.objective.state_dict()["trackers"]]})
        if self.tracker is not None:
            self.tracker.set_tags({"resumed_from": checkpoint.where, "resumed_at": f"epoch {self.epoch}, step {self.step}",
                                   "restarts": str(self.restarts)})

    def log(self, split: str, metrics: dict[str, float]) -> None:
        """Rank 0: one row in metrics.jsonl, and the row with the pending per-step losses in MLflow."""
        if self.runtime.rank != 0:
            return
        self.run_dir.log({"split": split, "epoch": self.epoch, "step": self.step, **metrics})
        if self.tracker is not None:
            numbers = {f"{split}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
            rows, self.step_rows = self.step_rows, []
            self.tracker.log_metric_rows([*rows, (self.step, {**numbers, "epoch": self.epoch})])

    def report(self, final: Evaluation, seconds: float) -> dict:
        return {
            "name": self.cfg.name,
            "method": self.cfg.method.preset,
            "dataset": self.cfg.data.name,
            "epochs": self.epoch,
            "steps": self.step,
            "class_counts": list(self.class_counts),
            "metrics": final.metrics,
            "p2p_target": self.objective.geometry_target,
            "seconds": round(seconds, 2),
            "restarts": self.restarts,
            **self.runtime.describe(),
            "machine": describe_machine(self.runtime.device),
        }

    def write_outputs(self, report: dict, final: Evaluation) -> None:
        """Every rank (ZeRO-3 gathers the parameters); rank 0 writes the run's outputs and ends its MLflow run."""
        with self.optimization.full_parameters():
            if self.runtime.rank == 0:
                write_run_outputs(self.cfg, self.run_dir, report, final, self.model_state(), self.tracker)
        if self.tracker is not None:
            self.tracker.finish()

    def model_state(self) -> dict:
        """The trained network with its class-mean trackers, as plain tensors (load with weights_only=True)."""
        return {"model": self.model.state_dict(), "objective": self.objective.state_dict(),
                "class_counts": list(self.class_counts), "config": self.cfg.model_dump(mode="json")}

    # ------------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        """Every rank (collective under ZeRO): the one checkpoint format of both runtimes."""
        with self.optimization.full_parameters():
            model = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {
            "format": FORMAT_VERSION,
            "model": model,
            **self.optimization.state_dict(),
            "objective": self.objective.state_dict(),
            "streams": self.streams.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.runtime.world_size,
            "restarts": self.restarts,
            "config": self.cfg.model_dump(mode="json"),
            "mlflow_run_id": self.mlflow_run_id,
        }

    def requested_checkpoint(self) -> Checkpoint | None:
        """train.resume_from: a checkpoint of another run (or the other runtime) to continue from."""
        path = self.cfg.train.resume_from
        return Checkpoint(load_checkpoint(path), str(path), own=False) if path else None

    def restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"{checkpoint.where} was written with {state['steps_per_epoch']} steps per epoch, this run has "
                f"{self.steps_per_epoch}: resume with the same global batch (workers x data.batch_size)"
            )
        self.optimization.load_state_dict(state)
        self.objective.load_state_dict(state["objective"])
        if state["step"] % self.steps_per_epoch:  # inside an epoch; at its end, the next one starts afresh
            self.streams.load_state_dict(state["streams"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.resumed_from_workers = int(state["world_size"])
        self.restarts = int(state["restarts"]) + 1
        if checkpoint.own:
            self.mlflow_run_id = self.mlflow_run_id or state["mlflow_run_id"]
