"""The global class-mean tracker, on 2 real gloo processes."""

import pytest
import torch

from allnc_dist.method.class_means import ClassMeanTracker
from distributed import run_workers

K, D = 5, 3
SYNCS = ("all_reduce", "all_gather")


def _batches():
    """Two ranks' batches; class 3 only on rank 0, class 4 on no rank, class 2 only on rank 1."""
    g = torch.Generator().manual_seed(0)
    labels = [torch.tensor([0, 1, 3, 3, 0, 1]), torch.tensor([1, 2, 2, 0, 1, 0])]
    return [(torch.randn(6, D, generator=g, dtype=torch.float64), y) for y in labels]


def _means_on_rank(rank, world_size, out_dir):
    batches = _batches()
    for sync in SYNCS:  # both modes in the same processes: one start for both tests
        tracker = ClassMeanTracker(K, D, beta=0.5, sync=sync)
        results = []
        for step in range(2):
            h, y = batches[rank]
            h = (h + step).requires_grad_()
            means = tracker.update(h, y)
            # Gradient of a global function of the means reaches the local features only, W-scaled.
            means.means[means.present].sum().backward()
            results.append({"means": means.means.detach(), "seen": means.seen, "present": means.present,
                            "grad": h.grad})
        torch.save({"steps": results, "state": tracker.state_dict()}, out_dir / f"{sync}-rank{rank}.pt")


def _reference():
    """One process over the concatenated batch."""
    batches = _batches()
    tracker = ClassMeanTracker(K, D, beta=0.5)
    results = []
    for step in range(2):
        h = torch.cat([b[0] for b in batches]) + step
        y = torch.cat([b[1] for b in batches])
        h.requires_grad_()
        means = tracker.update(h, y)
        means.means[means.present].sum().backward()
        results.append({"means": means.means.detach(), "seen": means.seen, "grad": h.grad})
    return results, tracker


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    """The folder where the 2 ranks left each sync mode's means and gradients."""
    out = tmp_path_factory.mktemp("ranks")
    run_workers(_means_on_rank, 2, out, out)
    return out


@pytest.mark.parametrize("sync", SYNCS)
def test_two_ranks_match_the_concatenated_batch(rank_results, sync):
    reference, _ = _reference()
    ranks = [torch.load(rank_results / f"{sync}-rank{r}.pt", weights_only=True) for r in range(2)]
    for step, ref in enumerate(reference):
        for r, got in enumerate(ranks):
            torch.testing.assert_close(got["steps"][step]["means"], ref["means"])
            assert torch.equal(got["steps"][step]["seen"], ref["seen"])
            # Each rank holds the gradient for its own rows, times W=2 (undone by gradient averaging).
            torch.testing.assert_close(got["steps"][step]["grad"], 2 * ref["grad"][6 * r : 6 * (r + 1)])
    assert ref["seen"].tolist() == [True, True, True, True, False]


def test_ema_blends_only_present_classes():
    tracker = ClassMeanTracker(2, 1, beta=0.9)
    tracker.update(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 1]))
    means = tracker.update(torch.tensor([[11.0]]), torch.tensor([0]))
    # Class 0: 0.9 * 1 + 0.1 * 11 = 2; class 1 absent keeps its EMA 3.
    torch.testing.assert_close(means.means, torch.tensor([[2.0], [3.0]]))
    torch.testing.assert_close(means.centre, torch.tensor([2.5]))
    assert means.present.tolist() == [True, False]


def test_state_round_trips_through_a_checkpoint(tmp_path):
    _, tracker = _reference()
    torch.save(tracker.state_dict(), tmp_path / "t.pt")
    restored = ClassMeanTracker(K, D, beta=0.5)
    restored.load_state_dict(torch.load(tmp_path / "t.pt", weights_only=True))
    assert restored.step == 2
    torch.testing.assert_close(restored.ema, tracker.ema.float())
    assert torch.equal(restored.seen, tracker.seen)
    h, y = torch.randn(4, D), torch.tensor([0, 1, 2, 4])
    torch.testing.assert_close(restored.update(h, y).means, tracker.update(h.double(), y).means.float())


def test_state_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"shape \(5, 3\), expected \(4, 3\)"):
        ClassMeanTracker(4, D).load_state_dict(ClassMeanTracker(K, D).state_dict())


def test_auto_sync_picks_the_smaller_payload():
    # Ring all-reduce moves ~2K(D+1) numbers per worker, all-gather W*B*(D+1): ImageNet-LT's K=1000
    # against a batch of 64 gathers; CIFAR-10's K=10 reduces.
    assert ClassMeanTracker(1000, 2048).sync_mode(local_batch=64) == "all_gather"
    assert ClassMeanTracker(10, 8).sync_mode(local_batch=64) == "all_reduce"
    assert ClassMeanTracker(1000, 2048, sync="all_reduce").sync_mode(local_batch=64) == "all_reduce"
