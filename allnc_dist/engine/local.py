"""The local engine: the whole run in one process, on one GPU or the CPU (the debug mode).

The loop, per epoch: draw the uniform and the re-balanced stream, run `train_step` on each pair of
batches, evaluate and checkpoint when due. Every epoch reseeds the random streams and the
augmentation from (seed, epoch), so a run resumed from a checkpoint replays exactly what an
uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import RunConfig
from ..data import LongTailData, build_data
from ..method.gbbn import GBBNNetwork, cumulative_alpha
from ..method.objective import AllNCObjective
from ..models import build_backbone
from ..durable_files import atomic_output
from ..metrics import plot_per_class_accuracy
from ..metrics.plots import plot_geometry
from ..tracking import MlflowTracker, RunDirectory, open_run_tracker
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import Evaluation, evaluate
from .schedule import lr_factor
from .step import train_step
from .streams import InMemoryStreams, ShardStreams, TrainingStreams, epoch_seed


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no CUDA device is visible")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def build_network(cfg: RunConfig, in_channels: int, num_classes: int) -> GBBNNetwork:
    return GBBNNetwork(build_backbone(cfg.model, in_channels), num_classes, cfg.method)


def build_streams(cfg: RunConfig, data: LongTailData | None = None) -> TrainingStreams:
    """The streams data.source names; `data` overrides the in-memory dataset built from the config."""
    if cfg.data.source == "shards":
        return ShardStreams(cfg)
    return InMemoryStreams(cfg, data or build_data(cfg.data))


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


class TorchOptimization:
    """Backward and update with a plain torch optimiser: clip, step, zero, advance the schedule."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, grad_clip: float | None):
        self.model, self.optimizer, self.scheduler, self.grad_clip = model, optimizer, scheduler, grad_clip

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()


# Exit status of a process that fault injection (train.fail_at_step) kills.
INJECTED_FAULT_EXIT = 86
FAULT_GRACE_S = 5.0


@dataclass
class TrainResult:
    report: dict
    evaluation: Evaluation
    run_dir: RunDirectory


class LocalTrainer:
    """The training loop. The distributed engine (`ray_worker.RayTrainWorker`) runs the same loop and
    overrides only where a worker differs: its streams, the DeepSpeed optimisation and checkpoints."""

    rank = 0  # this process's rank (fault injection and logging look at it)

    def __init__(self, cfg: RunConfig, run_dir: str | Path, data: LongTailData | None = None,
                 parent_run_id: str | None = None) -> None:
        self.cfg = cfg
        self.parent_run_id = parent_run_id  # the MLflow run this one nests under (a sweep, an ablation)
        self.run_dir = RunDirectory(run_dir)
        self.device = self.pick_device()
        torch.manual_seed(cfg.train.seed)
        self.streams = self.build_streams(data)
        self.class_counts = self.streams.class_counts
        self.model = build_network(cfg, self.streams.image_shape[0], len(self.class_counts)).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.steps_per_epoch = self.streams.steps_per_epoch  # batches (micro-batches under accumulation)
        updates_per_epoch = max(1, self.steps_per_epoch // self.accumulation)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda update: lr_factor(update, updates_per_epoch, cfg.train.epochs, cfg.optim)
        )
        self.objective = AllNCObjective(
            cfg.method, self.class_counts, self.model.feature_dim, self.model.num_branches, cfg.train.epochs,
            device=self.device,
        )
        self.network = self.model  # what a step runs forward through
        self.optimization = self.build_optimization()
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps (batches)
        self.resumed = False
        self.mlflow_run_id: str | None = None  # kept in checkpoints: a resumed run continues its MLflow run
        self.tracker: MlflowTracker | None = None
        self.step_rows: list[tuple[int, dict[str, float]]] = []  # per-step losses not yet sent to MLflow

    # ------------------------------------------------------------------- parts a worker replaces
    accumulation = 1  # batches per optimiser update

    def pick_device(self) -> torch.device:
        return pick_device(self.cfg.train.device)

    def build_streams(self, data: LongTailData | None) -> TrainingStreams:
        return build_streams(self.cfg, data)

    def build_optimization(self):
        return TorchOptimization(self.model, self.optimizer, self.scheduler, self.cfg.optim.grad_clip)

    # ---------------------------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> TrainResult:
        self.start(resume)
        return self.run()

    def start(self, resume: bool) -> None:
        if resume:
            self.restore()
            self.resumed = True
        else:
            self.run_dir.create(self.cfg)

    def run(self) -> TrainResult:
        self.start_tracking()
        self.announce_geometry_target()
        started = time.time()
        final = None  # the last epoch always evaluates; a resumed finished run evaluates once below
        while self.epoch < self.cfg.train.epochs:
            train_metrics = self.train_epoch()
            self.epoch += 1
            self.log({"split": "train", "epoch": self.epoch, "step": self.step, **train_metrics})
            evaluated = self._due(self.cfg.train.eval_every)
            evaluation = self.evaluate() if evaluated else None
            if evaluation is not None:  # None on the ranks that do not evaluate
                final = evaluation
                self.log({"split": "eval", "epoch": self.epoch, "step": self.step, **evaluation.metrics})
            self.end_epoch(evaluation if evaluated else None, checkpoint=self._due(self.cfg.train.checkpoint_every))
        final = final or self.evaluate()
        report = self.report(final, time.time() - started)
        self.finish(report, final)
        return TrainResult(report, final, self.run_dir)

    def announce_geometry_target(self) -> None:
        """Say so when P2P cannot aim at a simplex ETF (K > D + 1): the report records the target too."""
        target = self.objective.geometry_target
        if self.rank == 0 and target not in (None, "simplex_etf"):
            print(f"P2P: {len(self.class_counts)} classes > feature dim {self.model.feature_dim} + 1, so no simplex "
                  f"ETF exists; P2P aims at a {target.replace('_', ' ')} instead (docs/method.md)", flush=True)

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        self._reseed()
        first = self.step - self.epoch * self.steps_per_epoch  # > 0 when resumed inside this epoch
        totals: dict[str, float] = {}
        images, steps, started = 0, 0, time.time()
        bar = tqdm(self.streams.batches(self.epoch), total=self.steps_per_epoch, initial=first, leave=False,
                   dynamic_ncols=True, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                   disable=not self.cfg.train.progress or self.rank != 0)
        for i, batch in enumerate(bar, start=first):
            progress = self.epoch + i / self.steps_per_epoch
            alpha = self.alpha(progress)
            values = train_step(self.network, self.objective, batch.to(self.device), alpha, progress,
                                self.optimization, self.autocast(), self.step)
            self.step += 1
            steps += 1
            images += len(batch)
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            images_per_s = images / (time.time() - started)
            bar.set_postfix(loss=f"{values['total']:.3f}", cls=f"{values['classification']:.3f}",
                            hycon=f"{values['hycon']:.3f}", p2p=f"{values['p2p']:.3f}",
                            img_s=f"{images_per_s:.0f}", alpha=f"{alpha:.2f}")
            if self.step % self.cfg.tracking.log_every_steps == 0:
                self.step_rows.append((self.step, {**{f"step/loss_{k}": v for k, v in values.items()},
                                                   "step/alpha": alpha, "step/images_per_s": images_per_s}))
            self.after_step()
        bar.close()
        metrics = {f"loss_{k}" if k != "total" else "loss": v / max(steps, 1) for k, v in totals.items()}
        metrics.update(images_per_s=images / (time.time() - started), lr=self.scheduler.get_last_lr()[0])
        return metrics

    def log(self, record: dict) -> None:
        if self.rank != 0:
            return
        self.run_dir.log(record)
        if self.tracker is not None:
            numbers = {f"{record['split']}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and k not in ("epoch", "step")}
            rows, self.step_rows = self.step_rows, []
            self.tracker.log_metric_rows([*rows, (record["step"], {**numbers, "epoch": record["epoch"]})])

    def start_tracking(self) -> None:
        """Rank 0 opens the run's MLflow run, or reopens it when this run resumes (tracking.enabled)."""
        if self.rank != 0:
            return
        self.tracker = open_run_tracker(self.cfg, self.run_dir, self.mlflow_run_id, self.parent_run_id)
        if self.tracker is None:
            return
        self.mlflow_run_id = self.tracker.run_id or self.mlflow_run_id
        if self.cfg.tracking.system_metrics:
            self.tracker.start_system_metrics(self.cfg.tracking.system_metrics_interval_s, resume=self.resumed)

    def end_epoch(self, evaluation: Evaluation | None, checkpoint: bool) -> None:
        """After an epoch's evaluation (if one was due): checkpoint when due."""
        if checkpoint:
            self.save()

    def after_step(self) -> None:
        """Checkpoint inside the epoch when asked to, and inject the configured fault."""
        every = self.cfg.train.checkpoint_every_steps
        if every and self.step % every == 0 and self.step % self.steps_per_epoch:
            self.save()
        t = self.cfg.train
        if self.step == t.fail_at_step and self.rank == t.fail_rank and not self.resumed:
            # Wait first: Ray's controller collects reported checkpoints when it polls the workers
            # (every 2 s); a checkpoint reported just before a crash may otherwise not count yet.
            time.sleep(FAULT_GRACE_S)
            print(f"fault injection: rank {self.rank} exits at step {self.step}", flush=True)
            os._exit(INJECTED_FAULT_EXIT)

    def alpha(self, progress: float) -> float:
        """GBBN's cumulative weight at `progress` epochs (1 with a single branch)."""
        if self.model.num_branches == 1:
            return 1.0
        return cumulative_alpha(progress, self.cfg.train.epochs, self.cfg.method.gbbn)

    def evaluate(self) -> Evaluation:
        test, train_eval = self.streams.eval_loaders()
        return evaluate(self.model, test, train_eval, self.class_counts, self.cfg.method.gbbn.test_alpha, self.device,
                        self.autocast())

    def _reseed(self) -> None:
        """Augmentation draws from the global RNG: tie it to (seed, epoch, rank) for exact resumes."""
        torch.manual_seed(epoch_seed(self.cfg.train.seed, self.epoch) + 7919 * self.rank)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.cfg.train.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _due(self, every: int) -> bool:
        return self.epoch % every == 0 or self.epoch == self.cfg.train.epochs

    # ----------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.loop_state(),
        }
        crash = self.cfg.train.crash_in_checkpoint_write_at_epoch == self.epoch
        save_checkpoint(state, self.run_dir.checkpoint_path, crash_half_way=crash)

    def restore(self) -> None:
        state = load_checkpoint(self.run_dir.checkpoint_path, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.load_loop_state(state)

    def loop_state(self) -> dict:
        """What a checkpoint holds besides the model and optimiser: the tracker, the readers' place,
        the counters and the config."""
        return {
            "objective": self.objective.state_dict(),
            "streams": self.streams.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "config": self.cfg.model_dump(mode="json"),
            "mlflow_run_id": self.mlflow_run_id,
        }

    def load_loop_state(self, state: dict) -> None:
        self.objective.load_state_dict(state["objective"])
        self.streams.load_state_dict(state["streams"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.mlflow_run_id = state.get("mlflow_run_id") or self.mlflow_run_id

    def finish(self, report: dict, final: Evaluation) -> None:
        """Write the report, the final geometry (classifier, class means, per-class accuracy), the
        plots and the model with its class-mean trackers; send them to MLflow."""
        self.run_dir.write_report(report)
        torch.save({"classifier": final.classifier, "class_means": final.class_means,
                    "per_class_accuracy": final.per_class_accuracy}, self.run_dir.geometry_path)
        plots = self.plot(final)
        with atomic_output(self.run_dir.model_path) as tmp:
            torch.save(self.model_state(), tmp)
        if self.tracker is not None:
            for path in (self.run_dir.config_path, self.run_dir.report_path, self.run_dir.metrics_path):
                self.tracker.log_artifact(path)
            for path in plots:
                self.tracker.log_artifact(path, "plots")
            self.tracker.log_artifact(self.run_dir.model_path, "model")
            self.tracker.finish()

    def model_state(self) -> dict:
        """The trained network with its class-mean trackers, as plain tensors (load with weights_only=True)."""
        return {"model": self.model.state_dict(), "objective": self.objective.state_dict(),
                "class_counts": list(self.class_counts), "config": self.cfg.model_dump(mode="json")}

    def plot(self, final: Evaluation) -> list[Path]:
        """The cosine heatmaps and the per-class accuracy of the final model, in <run dir>/plots."""
        folder = self.run_dir.plots_path
        folder.mkdir(parents=True, exist_ok=True)
        paths = plot_geometry({self.cfg.name: final}, self.class_counts, folder)
        accuracy_path = folder / "per_class_accuracy.png"
        plot_per_class_accuracy(final.per_class_accuracy, self.class_counts, accuracy_path,
                                title=f"{self.cfg.name}: {self.cfg.train.eval_split} accuracy per class against training count")
        return [*paths, accuracy_path]

    # ---------------------------------------------------------------------------------- report
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
            "device": str(self.device),
        }
