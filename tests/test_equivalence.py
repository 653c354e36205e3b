"""The equivalence invariant: W workers x batch B train exactly like 1 worker x batch W*B.

AllNC's paper form (GBBN with both sampled streams, HyCon with global or prototype negatives, P2P,
class-mean EMA), and AllNC's default (logit adjustment, the re-balancing branch by loss on one shared
last stage, contrastive P2P with the Gram gap), on a BN-free network, two steps, in float64. Gradients
of the workers are averaged as DeepSpeed and DDP do.
"""

import pytest
import torch
import torch.distributed as dist

from allnc_dist.config import load_config
from allnc_dist.method.network import BranchedNetwork
from allnc_dist.method.objective import AllNCObjective
from allnc_dist.models import build_backbone
from distributed import run_workers

K, B, W, STEPS = 4, 6, 2, 2
COUNTS = [40, 20, 8, 2]
# case -> its method overrides
CASES = {
    "paper-global": ["method.preset=allnc_paper", "method.hycon.negatives=global"],
    "paper-prototypes": ["method.preset=allnc_paper", "method.hycon.negatives=prototypes"],
    "default": ["method.preset=allnc"],
}


def _config(case):
    return load_config(None, ["model.norm=none", "model.width=4", "method.hycon.projection_dim=5",
                              "method.class_means.beta=0.5", *CASES[case]])


def _setup(case):
    cfg = _config(case)
    torch.manual_seed(0)
    model = BranchedNetwork(build_backbone(cfg.model, in_channels=1), K, cfg.method).double()
    objective = AllNCObjective(cfg.method, COUNTS, model.feature_dim, model.num_branches, total_epochs=10)
    return model, objective, cfg.method.gbbn.rebalances_by_sampler


def _global_batches():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(W * B, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, K, (W * B,), generator=g),
         torch.randn(W * B, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, K, (W * B,), generator=g))
        for _ in range(STEPS)
    ]


def _train(model, objective, sampler, batches, average_grads):
    """Two SGD steps; returns per step the (global) loss and the averaged gradients. Without a
    re-balancing sampler the re-balanced batch is not drawn."""
    history = []
    for step, (x, y, xr, yr) in enumerate(batches):
        xr, yr = (xr, yr) if sampler else (None, None)
        model.zero_grad()
        out = model(x, xr, alpha=0.7)
        losses = objective(out, y, yr, alpha=0.7, epoch=float(step))
        losses.total.backward()
        loss = average_grads(model, losses.total.detach())
        history.append({"loss": loss, "p2p": losses.p2p.detach(),
                        "grads": {n: p.grad.clone() for n, p in model.named_parameters()}})
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    return history


def _worker(rank, world_size, out_dir):
    def average(model, loss):
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world_size
        dist.all_reduce(loss)
        return loss / world_size

    for case in CASES:  # every case in the same processes: one start for all
        model, objective, sampler = _setup(case)
        local = [tuple(t[rank * B : (rank + 1) * B] for t in batch) for batch in _global_batches()]
        history = _train(model, objective, sampler, local, average)
        torch.save({"history": history, "trackers": objective.state_dict()}, out_dir / f"{case}-rank{rank}.pt")


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    """The folder where the W workers left each case's history, per rank."""
    out = tmp_path_factory.mktemp("workers")
    run_workers(_worker, W, out, out)
    return out


@pytest.mark.parametrize("case", CASES)
def test_two_workers_equal_one_worker_with_the_double_batch(worker_results, case):
    model, objective, sampler = _setup(case)
    reference = _train(model, objective, sampler, _global_batches(), lambda m, loss: loss)
    for rank in range(W):
        got = torch.load(worker_results / f"{case}-rank{rank}.pt", weights_only=True)
        for step, (g, r) in enumerate(zip(got["history"], reference)):
            torch.testing.assert_close(g["loss"], r["loss"], rtol=1e-5, atol=0)
            assert g["grads"].keys() == r["grads"].keys()
            for name in r["grads"]:
                torch.testing.assert_close(g["grads"][name], r["grads"][name], rtol=1e-5, atol=1e-10,
                                           msg=lambda m, n=name, s=step: f"step {s}, {n}: {m}")
        for t_got, t_ref in zip(got["trackers"]["trackers"], objective.state_dict()["trackers"]):
            torch.testing.assert_close(t_got["ema"], t_ref["ema"], rtol=1e-5, atol=1e-10)
    # The objective did use its parts: P2P in every case, and in the paper form the HyCon projections
    # of both branches got gradient.
    assert all(step["p2p"] > 0 for step in reference)
    if case.startswith("paper"):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projections.parameters())
