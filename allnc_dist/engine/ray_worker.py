"""What each Ray Train worker runs: the local engine's loop, with this rank's part of the shards,
DeepSpeed (ZeRO) for the update, and checkpoints through `engine.save_checkpoint` + `ray.train.report`.

The class-mean tracker and HyCon's global batch use the default process group, which Ray Train
created before the loop starts and DeepSpeed reuses, so the per-class sums are all-reduced over every
rank in the same order every step. Parameters are broadcast by DeepSpeed at start-up; the fixed ETF
classifier is a buffer built from the same seed on every rank, so it is identical everywhere.

Every rank saves and reports at the same steps (`ray.train.report` is a barrier, and DeepSpeed's
save is collective). Rank 0 alone writes the run directory. Evaluation runs on rank 0, except under
ZeRO-3, where every rank must take part in each forward pass.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from ..config import RunConfig
from ..data import LongTailData
from ..tracking import RunDirectory
from .evaluate import Evaluation
from .local import LocalTrainer, TrainResult
from .streams import ShardStreams, TrainingStreams

CHECKPOINT_TAG = "checkpoint"


def deepspeed_config(cfg: RunConfig) -> dict:
    """DeepSpeed's config for this run. The optimiser and schedule are ours (passed as client objects),
    so no DeepSpeed op is JIT-built on CPU."""
    d = cfg.distributed
    config = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": d.grad_accumulation,
        "zero_optimization": {"stage": d.zero_stage},
        # bf16 on GPU is torch autocast in the step (as in the local engine), over fp32 weights: the
        # inputs need no cast and the class means stay fp32. DeepSpeed's own bf16 mode stays off.
        "bf16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # SGD with momentum is not on DeepSpeed's tested list
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if cfg.optim.grad_clip is not None:
        config["gradient_clipping"] = float(cfg.optim.grad_clip)
    return config


class DeepSpeedOptimization:
    """Backward and update through the DeepSpeed engine: it scales for accumulation, averages the
    gradients over ranks, clips, steps the optimiser and the schedule, and zeroes the gradients."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()


def weights_only_checkpoints(engine) -> None:
    """Make DeepSpeed read its checkpoint files with torch.load(weights_only=True): a checkpoint
    holds tensors and plain values only, and never runs code. The ZeRO optimiser files also hold
    three small DeepSpeed data classes, allowed by name."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine  # noqa: PLC0415
    from deepspeed.runtime.fp16.loss_scaler import LossScaler  # noqa: PLC0415
    from deepspeed.runtime.zero.config import ZeroStageEnum  # noqa: PLC0415
    from deepspeed.utils.tensor_fragment import fragment_address  # noqa: PLC0415

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):
                return torch.load(path, map_location=map_location, weights_only=True)

    if type(engine.checkpoint_engine) is TorchCheckpointEngine:
        engine.checkpoint_engine.__class__ = WeightsOnlyCheckpointEngine


class RayTrainWorker(LocalTrainer):
    """One rank of a Ray Train run; `fit()` resumes from Ray's latest checkpoint when there is one."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, mlflow_run_id: str | None = None) -> None:
        import ray.train  # noqa: PLC0415

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.local_rank = context.get_local_rank()
        self.consistent_steps = 0  # steps whose parameters and class means were checked equal on all ranks
        super().__init__(cfg, run_dir)
        self.mlflow_run_id = mlflow_run_id  # opened by the driver; rank 0 logs to it

    # -------------------------------------------------------------------------------- parts
    @property
    def accumulation(self) -> int:
        return self.cfg.distributed.grad_accumulation

    def pick_device(self) -> torch.device:
        if self.cfg.distributed.gpus_per_worker > 0:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def build_streams(self, data: LongTailData | None) -> TrainingStreams:
        return ShardStreams(self.cfg, self.rank, self.world_size)

    def build_optimization(self) -> DeepSpeedOptimization:
        import deepspeed  # noqa: PLC0415

        if self.device.type == "cpu":
            # DeepSpeed's shared-memory all-reduce is a C++ op built at first use (~25 s, needs g++);
            # gloo through torch.distributed does the same job here.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        engine, _, _, _ = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler,
            config=deepspeed_config(self.cfg),
        )
        weights_only_checkpoints(engine)
        self.engine = engine
        self.network = engine
        return DeepSpeedOptimization(engine)

    # --------------------------------------------------------------------------- the loop
    def start(self, resume: bool) -> None:
        """Continue from Ray's latest checkpoint if this run has one (a restart after a failure, or
        the same run name and storage path again); otherwise rank 0 starts the run directory."""
        import ray.train  # noqa: PLC0415

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            if self.rank == 0 and not self.run_dir.config_path.exists():
                self.run_dir.create(self.cfg)
            return
        with checkpoint.as_directory() as folder:
            self.restore_from(Path(folder))
        self.resumed = True
        self.log({"split": "resume", "epoch": self.epoch, "step": self.step, "streams": self.streams.state_dict(),
                  "tracker_steps": [t["step"] for t in self.objective.state_dict()["trackers"]]})

    def train_epoch(self) -> dict[str, float]:
        """The epoch's metrics; the loss parts averaged over all ranks (the loss of the global batch)."""
        metrics = super().train_epoch()
        names = sorted(k for k in metrics if k.startswith("loss"))
        losses = torch.tensor([metrics[k] for k in names], dtype=torch.float64)
        dist.all_reduce(losses)
        metrics.update(zip(names, (losses / self.world_size).tolist()))
        metrics["images_per_s"] *= self.world_size  # every rank moves as many images
        return metrics

    def after_step(self) -> None:
        if self.cfg.distributed.check_consistency:
            self.check_consistency()
        super().after_step()

    def check_consistency(self) -> None:
        """Raise unless every rank holds bit-identical parameters, buffers (such as the fixed ETF
        classifier) and class means. BatchNorm's running statistics are per rank by design."""
        state = [p.detach().float().flatten().cpu() for p in self.model.parameters()]
        state += [b.float().flatten().cpu() for m in self.model.modules() if not isinstance(m, _BatchNorm)
                  for b in m.buffers(recurse=False)]
        state += [t["ema"].float().flatten() for t in self.objective.state_dict()["trackers"]]
        mine = torch.cat(state)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        for rank, theirs in enumerate(gathered):
            if not torch.equal(theirs, gathered[0]):
                worst = (theirs - gathered[0]).abs().max().item()
                raise RuntimeError(f"step {self.step}: rank {rank}'s parameters or class means differ from "
                                   f"rank 0's (max |difference| {worst:.3g})")
        self.consistent_steps += 1

    def evaluate(self) -> Evaluation | None:
        if self.rank == 0 or self.cfg.distributed.zero_stage == 3:
            return super().evaluate()
        return None

    def end_epoch(self, evaluation: Evaluation | None, checkpoint: bool) -> None:
        """Every rank reports when an evaluation or a checkpoint was due (the same epochs on all
        ranks); rank 0's report carries the evaluation, which Ray Tune reads (`TuneReportCallback`)."""
        evaluated = self._due(self.cfg.train.eval_every)
        if not (evaluated or checkpoint):
            return
        metrics = {f"eval/{k}": v for k, v in evaluation.metrics.items()} if evaluation is not None else {}
        if checkpoint:
            self.save(metrics)
        else:
            import ray.train  # noqa: PLC0415

            ray.train.report({"epoch": self.epoch, "step": self.step, **metrics})

    def save(self, metrics: dict | None = None) -> None:
        """All ranks: DeepSpeed's collective save into a fresh folder, then report it to Ray."""
        import ray.train  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="allnc-checkpoint-") as folder:
            self.engine.save_checkpoint(folder, tag=CHECKPOINT_TAG, client_state=self.loop_state())
            report = {"epoch": self.epoch, "step": self.step, **(metrics or {})}
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def restore_from(self, folder: Path) -> None:
        _, client_state = self.engine.load_checkpoint(str(folder), tag=CHECKPOINT_TAG)
        if client_state is None:
            raise RuntimeError(f"{folder} holds no DeepSpeed checkpoint tagged {CHECKPOINT_TAG!r}")
        self.load_loop_state(client_state)

    def finish(self, report: dict, final: Evaluation | None) -> None:
        with self.full_parameters():
            if self.rank == 0:
                report["workers"] = self.world_size
                report["zero_stage"] = self.cfg.distributed.zero_stage
                report["consistent_steps"] = self.consistent_steps
                super().finish(report, final)
        if dist.is_initialized():
            dist.barrier()  # the run directory is complete before any rank returns

    def full_parameters(self) -> contextlib.AbstractContextManager:
        """All ranks: under ZeRO-3, gather the partitioned parameters so rank 0 can save the model."""
        if self.cfg.distributed.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed  # noqa: PLC0415

        return deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)

    def report(self, final: Evaluation | None, seconds: float) -> dict:
        if final is None:
            return {}
        return super().report(final, seconds)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's entry point on every worker."""
    cfg = RunConfig.model_validate(loop_config["config"])
    RayTrainWorker(cfg, RunDirectory(loop_config["run_dir"]).path, loop_config.get("mlflow_run_id")).fit()
