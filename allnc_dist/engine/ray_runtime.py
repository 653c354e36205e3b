"""The runtime of one Ray Train worker: this rank's part of the shards, a DeepSpeed (ZeRO) engine for
the update, and checkpoints reported to Ray Train (`ray.train.report`), from which a restarted
worker group resumes.

The class-mean tracker and HyCon's global batch use the default process group, which Ray Train
created before the loop starts and DeepSpeed reuses, so the per-class sums are all-reduced over every
rank in the same order every step. Parameters are broadcast by DeepSpeed at start-up; the fixed ETF
classifier is a buffer built from the same seed on every rank, so it is identical everywhere.

Every rank reports at the same steps (`ray.train.report` is a barrier). Rank 0 writes the
checkpoint file and the run directory. Every rank evaluates its own share of the evaluated splits (in
the same number of batches, as ZeRO-3's forward passes are collective), and the counts and sums of the
metrics are all-reduced: every rank holds the metrics of the whole splits, rank 0 reports them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from ..config import RunConfig
from ..data import LongTailData
from ..data.builtin_shards import shards_on_this_node
from ..method.objective import AllNCObjective
from ..shards import ShardIndex
from ..shards.index import verify_across_ranks
from ..tracking import RunDirectory
from .checkpoint import CHECKPOINT_FILE, OUTPUTS_FOLDER, load_checkpoint, save_checkpoint
from .local_runtime import autocast_for
from .runtime import Checkpoint
from .streams import ShardStreams, TrainingStreams
from .trainer import Trainer


def deepspeed_config(cfg: RunConfig, world_size: int) -> dict:
    """DeepSpeed's config for this run on `world_size` workers. The optimiser and schedule are ours
    (passed as client objects), so no DeepSpeed op is JIT-built on CPU."""
    d = cfg.distributed
    config = {
        "train_micro_batch_size_per_gpu": cfg.data_per_worker(world_size).batch_size,
        "gradient_accumulation_steps": d.grad_accumulation,
        "zero_optimization": {"stage": d.zero_stage, "stage3_param_persistence_threshold": d.zero3_persistence_threshold},
        # bf16 on GPU is torch autocast in the step (as in the local runtime), over fp32 weights: the
        # inputs need no cast and the class means stay fp32. DeepSpeed's own bf16 mode stays off.
        "bf16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # SGD with momentum is not on DeepSpeed's tested list
        # DeepSpeed clips at norm 1.0 unless told otherwise; the local runtime clips only when asked.
        "gradient_clipping": float(cfg.optim.grad_clip or 0.0),
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    return config


class DeepSpeedOptimization:
    """Backward and update through the DeepSpeed engine: it scales for accumulation, averages the
    gradients over ranks, clips, steps the optimiser and the schedule, and zeroes the gradients.

    Its state is torch's optimiser layout with full tensors, as `TorchOptimization` writes it: under
    ZeRO each rank holds a slice of the optimiser state, which DeepSpeed's fragment API gathers
    (collectively) for a checkpoint and scatters back on restore."""

    def __init__(self, engine, model: torch.nn.Module, scheduler) -> None:
        self.engine, self.network, self.scheduler = engine, engine, scheduler
        self.params = [p for p in model.parameters() if p.requires_grad]  # build_optimizer's order
        self.stage = engine.zero_optimization_stage()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer_state(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        if self.stage == 0:  # the client optimiser itself
            self.engine.optimizer.load_state_dict(state["optimizer"])
            return
        from deepspeed.utils import safe_set_full_optimizer_state  # noqa: PLC0415

        base = self.engine.optimizer.optimizer  # the client optimiser, now over ZeRO's flat partitions
        hyper = {k: v for k, v in state["optimizer"]["param_groups"][0].items() if k != "params"}
        for group in base.param_groups:
            group.update(hyper)  # the learning rate the schedule last set, among others
        saved = state["optimizer"]["state"]
        if not saved:  # saved before the first update: nothing more to restore
            return
        self.create_optimizer_state(saved[0])
        for i, param in enumerate(self.params):
            for key, value in saved[i].items():
                if value.dim() > 0:
                    safe_set_full_optimizer_state(param, value.to(param.device), key)

    def create_optimizer_state(self, example: dict) -> None:
        """DeepSpeed creates the optimiser state of its flat partitions at the first update. A restore
        comes before it: create the entries now (zeros, and the per-parameter scalars such as AdamW's
        step, which are the same for every parameter) and link them to the parameters' fragments."""
        from deepspeed.utils import lazy_init_hp_params_optimizer_state  # noqa: PLC0415

        zero = self.engine.optimizer
        flats = zero.fp32_partitioned_groups_flat if self.stage == 3 else zero.single_partition_of_fp32_groups
        for flat in flats:
            zero.optimizer.state[flat].update({k: v.clone() if v.dim() == 0 else torch.zeros_like(flat)
                                               for k, v in example.items()})
        if self.stage < 3:  # ZeRO-1/2 reach the state through fragments linked to each parameter
            for bit16_group, flat in zip(zero.bit16_groups, flats):
                lazy_init_hp_params_optimizer_state(bit16_group, flat, zero.optimizer.state)

    def optimizer_state(self) -> dict:
        """Every rank: torch's layout, gathered from the ZeRO partitions when there are any."""
        if self.stage == 0:
            return self.engine.optimizer.state_dict()
        from deepspeed.utils import safe_get_full_optimizer_state  # noqa: PLC0415

        base = self.engine.optimizer.optimizer
        flat_state = next(iter(base.state.values()), {})
        scalars = {k: v.detach().cpu().clone() for k, v in flat_state.items() if torch.is_tensor(v) and v.dim() == 0}
        sliced = sorted(k for k, v in flat_state.items() if torch.is_tensor(v) and v.dim() > 0)
        state = {i: {**scalars, **{k: safe_get_full_optimizer_state(p, k).detach().cpu() for k in sliced}}
                 for i, p in enumerate(self.params)}
        hyper = {k: v for k, v in base.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**hyper, "params": list(range(len(self.params)))}]}

    def full_parameters(self) -> contextlib.AbstractContextManager:
        """Every rank: under ZeRO-3, gather the partitioned parameters for reading."""
        if self.stage != 3:
            return contextlib.nullcontext()
        import deepspeed  # noqa: PLC0415

        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None)


def check_consistency(model: torch.nn.Module, objective: AllNCObjective, step: int, world_size: int) -> None:
    """Raise unless every rank holds bit-identical parameters, buffers (such as the fixed ETF
    classifier) and class means. BatchNorm's running statistics are per rank by design."""
    state = [p.detach().float().flatten() for p in model.parameters()]
    state += [b.float().flatten() for m in model.modules() if not isinstance(m, _BatchNorm)
              for b in m.buffers(recurse=False)]
    device = state[0].device
    state += [t["ema"].float().flatten().to(device) for t in objective.state_dict()["trackers"]]
    mine = torch.cat(state)
    gathered = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(gathered, mine)
    for rank, theirs in enumerate(gathered):
        if not torch.equal(theirs, gathered[0]):
            worst = (theirs - gathered[0]).abs().max().item()
            raise RuntimeError(f"step {step}: rank {rank}'s parameters or class means differ from "
                               f"rank 0's (max |difference| {worst:.3g})")


class RayDeepSpeedRuntime:
    restarts_in_place = True  # a restarted worker group, or the same run name and storage again

    def __init__(self, cfg: RunConfig, run_dir: str | Path) -> None:
        import ray  # noqa: PLC0415
        import ray.train  # noqa: PLC0415

        context = ray.train.get_context()
        self.cfg, self.run_dir = cfg, RunDirectory(run_dir)  # rank 0 writes the run folder on its node
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.accumulation = cfg.distributed.grad_accumulation
        self.device = self.pick_device(context.get_local_rank())
        self.consistent_steps = 0  # steps whose parameters and class means were checked equal on all ranks
        self.node_addresses = self.gather_objects(ray.util.get_node_ip_address())  # each rank's node, for the report

    def pick_device(self, local_rank: int) -> torch.device:
        if self.cfg.distributed.gpus_per_worker > 0:
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
        return torch.device("cpu")

    def build_streams(self, cfg: RunConfig, data: LongTailData | None) -> TrainingStreams:
        data = shards_on_this_node(cfg.data_per_worker(self.world_size))  # this worker's share of the global batch
        return ShardStreams(cfg.model_copy(update={"data": data}), self.rank, self.world_size, self.verify_shards)

    def verify_shards(self, indexes: list[ShardIndex]) -> None:
        verify_across_ranks(indexes, self.rank, self.world_size, self.gather_objects)

    def gather_objects(self, value) -> list:
        """Every rank: `value` of every rank, in rank order."""
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def optimization(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> DeepSpeedOptimization:
        import deepspeed  # noqa: PLC0415

        if self.device.type == "cpu":
            # DeepSpeed's shared-memory all-reduce is a C++ op built at first use (~25 s, needs g++);
            # gloo through torch.distributed does the same job here.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        ds_logger = logging.getLogger("DeepSpeed")
        level = ds_logger.level
        ds_logger.setLevel(logging.ERROR)  # its warning about our deliberately allowed SGD optimiser
        try:
            engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=deepspeed_config(self.cfg, self.world_size))
        finally:
            ds_logger.setLevel(level)
        if self.cfg.distributed.zero_stage == 3:
            # The network's forward reads its classifiers' weights outside their own forward (for
            # P2P): DeepSpeed gathers them for the whole forward once told so.
            for classifier in model.classifiers:
                if isinstance(classifier.weight, torch.nn.Parameter):
                    deepspeed.zero.register_external_parameter(model, classifier.weight)
            model.copies_classifier_weights = True
        return DeepSpeedOptimization(engine, model, scheduler)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.device, self.cfg.train.bf16)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The run's last reported checkpoint; rank 0 also puts the run folder back as it was then,
        on whichever node it now runs (rows logged after the checkpoint are dropped: they come again)."""
        import ray.train  # noqa: PLC0415

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            saved = Path(folder) / OUTPUTS_FOLDER
            if self.rank == 0 and saved.is_dir():
                self.run_dir.restore_outputs(RunDirectory(saved))
            return Checkpoint(load_checkpoint(folder), checkpoint.path)

    def report(self, metrics: dict, checkpoint: dict | None = None) -> None:
        """All ranks; rank 0 alone writes the checkpoint file into the folder it hands to Ray, with the
        run folder as it stands (its outputs, once the run has finished): a restart on another node,
        and the driver, take it from Ray's storage."""
        import ray.train  # noqa: PLC0415

        if checkpoint is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="allnc-checkpoint-") as folder:
            reported = None
            if self.rank == 0:
                save_checkpoint(checkpoint, Path(folder) / CHECKPOINT_FILE)
                self.run_dir.copy_outputs(Path(folder) / OUTPUTS_FOLDER)
                reported = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=reported)

    def after_step(self, model: torch.nn.Module, objective: AllNCObjective, step: int) -> None:
        if self.cfg.distributed.check_consistency:
            check_consistency(model, objective, step, self.world_size)
            self.consistent_steps += 1

    def global_epoch_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        names = sorted(k for k in metrics if k.startswith("loss"))
        losses = torch.tensor([metrics[k] for k in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(losses)
        averaged = dict(zip(names, (losses / self.world_size).tolist()))
        return {**metrics, **averaged, "images_per_s": metrics["images_per_s"] * self.world_size}

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        # On the worker's device: an NCCL process group has no CPU backend.
        summed = tensor.to(self.device, copy=True)
        dist.all_reduce(summed)
        return summed.to(tensor.device)

    def describe(self) -> dict:
        return {"device": str(self.device), "workers": self.world_size, "zero_stage": self.cfg.distributed.zero_stage,
                "consistent_steps": self.consistent_steps, "worker_nodes": self.node_addresses}

    def finish(self) -> None:
        dist.barrier()  # the run directory is complete before any rank returns


def not_the_training_error(record: logging.LogRecord) -> bool:
    """Ray Train logs a failed training function's traceback from every rank; the driver reports the
    same error in one line (allnc_dist/errors.py), and Ray's worker log files keep the traceback."""
    return not record.getMessage().startswith("Error in training function")


def quiet_worker_console(cfg: RunConfig) -> None:
    """Keep a worker's console (which Ray forwards to the job's log) to our progress lines and real
    warnings. Ray Train's per-report INFO lines stay in its own log files; DeepSpeed is told the
    accelerator instead of warning that it guessed it; the FutureWarning is torch's, about the
    collective DeepSpeed's ZeRO calls, not ours to fix."""
    for logger in (logging.getLogger("ray.train"), logging.getLogger()):
        for handler in logger.handlers:
            if handler.get_name() == "console":
                handler.setLevel(logging.WARNING)
                handler.addFilter(not_the_training_error)
    if cfg.distributed.gpus_per_worker == 0:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)


def worker_run_dir(loop_config: dict) -> Path:
    """Where this worker keeps the run folder: the driver's `run_dir` on the driver's node. On another
    node that path may not exist or be writable, and nothing there would read it: the folder goes to
    this node's scratch (one per fit of the driver), and reaches the driver with each checkpoint."""
    from .ray_driver import this_node_id  # noqa: PLC0415

    run_dir = Path(loop_config["run_dir"])
    if this_node_id() == loop_config["driver_node_id"]:
        return run_dir
    return Path(tempfile.gettempdir()) / "allnc-runs" / f"{run_dir.name}-{loop_config['fit_id']}"


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's entry point on every worker."""
    cfg = RunConfig.model_validate(loop_config["config"])
    quiet_worker_console(cfg)
    run_dir = worker_run_dir(loop_config)
    Trainer(cfg, run_dir, RayDeepSpeedRuntime(cfg, run_dir), mlflow_run_id=loop_config.get("mlflow_run_id")).fit()
