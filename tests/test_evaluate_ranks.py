"""Evaluation over ranks, in real processes joined by gloo: each of W ranks evaluates its own share of
the test and training shards (304 and 500 samples: with W = 3 two shares are one short, so those ranks
re-read a sample, marked as padding and left out), the counts and sums are all-reduced, and every rank
gets what one process gets on the whole splits."""

from dataclasses import asdict

import pytest
import torch
import torch.distributed as dist
from distributed import run_workers

from allnc_dist.config import load_config
from allnc_dist.engine.evaluate import evaluate
from allnc_dist.engine.streams import ShardStreams
from allnc_dist.method.network import build_network
from allnc_dist.metrics import one_process

WORLD_SIZE = 3


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    summed = tensor.clone()
    dist.all_reduce(summed)
    return summed


def evaluate_share(rank: int, world_size: int, shards, out) -> None:
    cfg = load_config(None, ["data.source=shards", f"data.shards={shards}", "model.width=8", "data.batch_size=64"])
    streams = ShardStreams(cfg, rank, world_size)
    torch.manual_seed(0)  # the same untrained network on every rank
    model = build_network(cfg, streams.image_shape[0], len(streams.class_counts))
    test, train_eval = streams.eval_loaders()
    evaluation = evaluate(model, test, train_eval, streams.class_counts, 0.5, torch.device("cpu"),
                          sum_over_ranks=all_reduce_sum if world_size > 1 else one_process)
    torch.save(asdict(evaluation), out / f"rank{rank}-of-{world_size}.pt")


def test_every_rank_gets_the_evaluation_of_one_process(digits_shards, tmp_path):
    evaluate_share(0, 1, digits_shards, tmp_path)
    run_workers(evaluate_share, WORLD_SIZE, tmp_path, digits_shards, tmp_path)
    one = torch.load(tmp_path / "rank0-of-1.pt", weights_only=True)
    for rank in range(WORLD_SIZE):
        ranks = torch.load(tmp_path / f"rank{rank}-of-{WORLD_SIZE}.pt", weights_only=True)
        # Counts are exact: accuracies equal to the last bit; float64 sums differ only in their order.
        for key, value in one["metrics"].items():
            if key.startswith("acc_"):
                assert ranks["metrics"][key] == value, key
            else:
                assert ranks["metrics"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        torch.testing.assert_close(ranks["per_class_accuracy"], one["per_class_accuracy"], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(ranks["classifier"], one["classifier"], rtol=0, atol=0)
        torch.testing.assert_close(ranks["class_means"], one["class_means"], rtol=1e-6, atol=1e-7)
    assert 0 < one["metrics"]["acc_top1"] < 100 and one["metrics"]["nc1"] > 0
