"""One configuration's training step on a fixed batch, as the step benches time it: the model,
objective, optimiser and batch of a config (`StepSetup`), and `time_steps`, the wall time per step.

bench/step_time.py times these setups against each other; bench/class_mean_sync.py times a reference
step with `time_steps`, and bench/gpu_check.py the GPU's steps.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from allnc_dist.config import load_config
from allnc_dist.engine.optimization import TorchOptimization, build_optimizer
from allnc_dist.engine.step import Batch, train_step
from allnc_dist.engine.streams import uses_rebalancing_sampler
from allnc_dist.method.class_means import ClassMeanTracker
from allnc_dist.method.network import NetworkOutput, build_network
from allnc_dist.method.objective import AllNCObjective

ALPHA, PROGRESS = 0.5, 0.0  # GBBN's two branches weigh equally (the cost does not depend on alpha)
WARMUP_STEPS = 3  # the untimed steps time_steps runs first


class StepSetup:
    """Model, objective, optimiser and one fixed batch of a configuration; `step()` is one train_step."""

    def __init__(self, overrides: list[str], image_shape, batch_size: int, num_classes: int,
                 device: torch.device) -> None:
        self.cfg = cfg = load_config(None, overrides)
        self.num_classes, self.device = num_classes, device
        torch.manual_seed(0)
        self.model = build_network(cfg, image_shape[0], num_classes).to(device)
        self.class_counts = [max(1, int(500 * 0.01 ** (k / (num_classes - 1)))) for k in range(num_classes)]
        self.objective = self.new_objective()
        optimizer = build_optimizer(cfg, self.model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        self.optimization = TorchOptimization(self.model, optimizer, scheduler, None)
        # The same images in every configuration; the second batch only where GBBN samples one.
        gen = torch.Generator().manual_seed(1)
        make = lambda: (torch.randn(batch_size, *image_shape, generator=gen),  # noqa: E731
                        torch.randint(0, num_classes, (batch_size,), generator=gen))
        (x, y), (xr, yr) = make(), make()
        second = uses_rebalancing_sampler(cfg)
        self.batch = Batch(x, y, xr if second else None, yr if second else None).to(device)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None

    @property
    def images_per_step(self) -> int:
        """Training images one step trains on: the batch, plus GBBN's re-balanced batch where it samples one."""
        second = self.batch.images_rebalanced
        return len(self.batch) + (0 if second is None else len(second))

    def new_objective(self) -> AllNCObjective:
        return AllNCObjective(self.cfg.method, self.class_counts, self.model.feature_dim, self.model.num_branches,
                              10, device=self.device)

    def step(self) -> None:
        train_step(self.model, self.objective, self.batch, ALPHA, PROGRESS, self.optimization, self.autocast)

    def objective_alone(self) -> Callable[[], None]:
        """The objective's share of a step: losses, `values()` (as train_step calls it) and their
        backward, on the network's output detached into leaves, with an objective of its own."""
        with torch.no_grad():  # keeps no graph of the network alive beside the timed steps
            out = self.model(self.batch.images, self.batch.images_rebalanced, ALPHA)
        leaf = lambda t: t.detach().requires_grad_()  # noqa: E731
        logits, features = leaf(out.logits), [leaf(f) for f in out.features]
        weights = [leaf(w) for w in out.classifier_weights]
        objective = self.new_objective()

        def run() -> None:
            detached = NetworkOutput(logits, features, weights, out.projections)
            losses = objective(detached, self.batch.labels, self.batch.labels_rebalanced, ALPHA, PROGRESS)
            losses.values()
            losses.total.backward()

        return run

    def trackers_alone(self) -> Callable[[], None]:
        """One fresh tracker per branch: update on a batch of features, then the backward through it."""
        batch, dim = len(self.batch), self.model.feature_dim
        m = self.cfg.method.class_means
        trackers = [ClassMeanTracker(self.num_classes, dim, m.beta, m.sync, device=self.device)
                    for _ in range(self.model.num_branches)]
        features = torch.randn(batch, dim, device=self.device, requires_grad=True)

        def run() -> None:
            means = [t.update(features, self.batch.labels).means for t in trackers]
            torch.stack(means).sum().backward()

        return run


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(overrides, image_shape, batch_size, num_classes, steps, device) -> float:
    """Wall seconds per train_step of one configuration after WARMUP_STEPS warm-up steps (class_mean_sync.py
    and gpu_check.py time collectives and GPUs with it, where CPU time would miss the waiting)."""
    setup = StepSetup(overrides, image_shape, batch_size, num_classes, device)
    for _ in range(WARMUP_STEPS):
        setup.step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        setup.step()
    synchronize(device)
    return (time.perf_counter() - started) / steps
