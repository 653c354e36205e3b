"""Hand-computed checks of the Neural Collapse metrics, the Many/Medium/Few splits and the heatmap plot."""

from __future__ import annotations

import math

import pytest
import torch

from allnc_dist.metrics import (
    accuracy_by_split,
    centred,
    class_means,
    class_splits,
    nc_metrics,
    pairwise_cosines,
    per_class_accuracy,
    plot_cosine_heatmaps,
    plot_per_class_accuracy,
)

NC2_KEYS = [f"nc2_{part}_{name}" for part in ("means", "classifier") for name in ("equinorm", "equiangular", "maxangle")]


def simplex_etf_rows(num_classes: int, dim: int) -> torch.Tensor:
    """sqrt(K/(K-1)) (I - 11^T/K), padded with zero columns up to `dim`: K unit rows, cosines -1/(K-1)."""
    k = num_classes
    etf = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    return torch.cat([etf, torch.zeros(k, dim - k, dtype=torch.float64)], dim=1)


def samples_at(means: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """counts[k] samples exactly at means[k], with their labels."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return means[labels].clone(), labels


def rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


# --- building blocks ---------------------------------------------------------------------------


def test_class_means_and_centred():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    means = class_means(features, torch.tensor([0, 0, 1]), num_classes=2)
    torch.testing.assert_close(means, torch.tensor([[2.0, 1.0], [5.0, 5.0]]))
    torch.testing.assert_close(centred(means), torch.tensor([[-1.5, -2.0], [1.5, 2.0]]))


def test_class_means_names_the_empty_classes():
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        class_means(torch.zeros(2, 3), torch.tensor([0, 2]), num_classes=4)


def test_pairwise_cosines():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    expected = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    torch.testing.assert_close(pairwise_cosines(rows), expected)


# --- Neural Collapse metrics -------------------------------------------------------------------


def test_perfect_etf_has_all_metrics_zero():
    etf = simplex_etf_rows(num_classes=4, dim=5)
    # A common offset of the features must vanish in the class-balanced centring.
    features, labels = samples_at(etf + 0.7, counts=[6, 3, 2, 1])
    metrics = nc_metrics(features, labels, classifier=etf, few_classes=[2, 3])
    for key in ["nc1", *NC2_KEYS, "nc3"]:
        assert metrics[key] == pytest.approx(0.0, abs=1e-8), key
    # Minority keys at an ETF: Few rows keep the simplex angle and each w_k is its own mean.
    assert metrics["few_cos_classifier"] == pytest.approx(-1.0 / 3.0)
    assert metrics["few_cos_means"] == pytest.approx(-1.0 / 3.0)
    assert metrics["few_self_duality"] == pytest.approx(1.0)


def test_squeezed_configuration_matches_closed_form():
    # K = 3 in 2-D. Centred means  mu~_0 = (2, 0), mu~_1 = (-1, 1), mu~_2 = (-1, -1)  (they sum to 0).
    #   norms 2, sqrt2, sqrt2: mean (2 + 2 sqrt2)/3, population std (sqrt2/3)(2 - sqrt2) = (2 sqrt2 - 2)/3
    #     -> equinorm = (sqrt2 - 1)/(sqrt2 + 1) = 3 - 2 sqrt2.
    #   cosines: cos01 = cos02 = -2/(2 sqrt2) = -1/sqrt2, cos12 = (1 - 1)/2 = 0.
    #     Over the 6 ordered pairs k != k': four of -1/sqrt2, two of 0 -> a two-valued distribution
    #     with p = 2/3, so var = p(1-p)(1/sqrt2)^2 = 1/9 -> equiangular = 1/3.
    #   maxangle = mean |cos + 1/2| = (4 (1/sqrt2 - 1/2) + 2 (1/2)) / 6 = (2 sqrt2 - 1)/6.
    # Means are shifted by (3, -2) and classes get 5 / 2 / 1 samples: the class-balanced centre
    # removes the shift exactly, a sample-weighted centre would not.
    # Classifier: W = R(60 deg) M~ + (1, 1). Centring removes the (1, 1), and a rotation keeps norms
    # and cosines, so the classifier NC2 values equal the means' ones and cos(w~_k, mu~_k) = 1/2.
    #   nc3: <W, M~> = <R M~, M~> + (1,1).sum_k mu~_k = cos60 ||M~||^2 = 4, ||M~||^2 = 8,
    #   ||W||^2 = ||R M~||^2 + 3 ||(1,1)||^2 = 14  ->  nc3 = 2 - 2*4/sqrt(14*8) = 2 - 2/sqrt7.
    # Few classes {0, 1}: their pairwise cosine is -1/sqrt2 for both means and classifier rows.
    centred_means = torch.tensor([[2.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    features, labels = samples_at(centred_means + torch.tensor([3.0, -2.0], dtype=torch.float64), [5, 2, 1])
    classifier = centred_means @ rotation(math.pi / 3).T + 1.0
    metrics = nc_metrics(features, labels, classifier, few_classes=[0, 1])

    sqrt2 = math.sqrt(2.0)
    expected = {
        "nc1": 0.0,
        "nc3": 2.0 - 2.0 / math.sqrt(7.0),
        "few_cos_classifier": -1.0 / sqrt2,
        "few_cos_means": -1.0 / sqrt2,
        "few_self_duality": 0.5,
    }
    for part in ("means", "classifier"):
        expected[f"nc2_{part}_equinorm"] = 3.0 - 2.0 * sqrt2
        expected[f"nc2_{part}_equiangular"] = 1.0 / 3.0
        expected[f"nc2_{part}_maxangle"] = (2.0 * sqrt2 - 1.0) / 6.0
    assert metrics == pytest.approx(expected, abs=1e-12)


def test_few_class_keys_need_enough_classes():
    etf = simplex_etf_rows(num_classes=3, dim=3)
    features, labels = samples_at(etf, [2, 2, 2])
    one_few = nc_metrics(features, labels, etf, few_classes=[2])
    assert math.isnan(one_few["few_cos_classifier"]) and math.isnan(one_few["few_cos_means"])
    assert one_few["few_self_duality"] == pytest.approx(1.0)
    no_few = nc_metrics(features, labels, etf)
    assert math.isnan(no_few["few_self_duality"])


def test_nc1_with_known_within_class_spread():
    # K = 2, D = 1. Class 0: 1 ± s (n=2), mean 1, variance s^2.
    # Class 1: -1 - 2s, -1, -1, -1 + 2s (n=4), mean -1, variance (4s^2 + 4s^2)/4 = 2s^2.
    # Class-balanced: mu_G = 0, Sigma_B = (1 + 1)/2 = 1, Sigma_W = (s^2 + 2s^2)/2 = 1.5 s^2,
    # so nc1 = (1/K) Sigma_W / Sigma_B = 0.75 s^2 = 0.03 for s = 0.2.
    s = 0.2
    features = torch.tensor([[1 + s], [1 - s], [-1 - 2 * s], [-1.0], [-1.0], [-1 + 2 * s]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    metrics = nc_metrics(features, labels, classifier=torch.tensor([[1.0], [-1.0]]))
    assert metrics["nc1"] == pytest.approx(0.75 * s**2, abs=1e-12)


def test_nc1_ignores_spread_outside_the_span_of_the_means():
    # K = 2, D = 2, means (±1, 0): Sigma_B = diag(1, 0) has rank K-1 = 1, and its pseudo-inverse
    # diag(1, 0) keeps only the x-spread. x-deviations ±s in each class -> Sigma_W[0, 0] = s^2,
    # so nc1 = s^2 / 2, however large the y-spread t is.
    s, t = 0.3, 5.0
    features = torch.tensor(
        [[1 + s, t], [1 - s, -t], [-1 + s, t], [-1 - s, -t]],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 0, 1, 1])
    metrics = nc_metrics(features, labels, classifier=torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert metrics["nc1"] == pytest.approx(s**2 / 2, abs=1e-12)


def test_nc_metrics_accepts_float32_and_rejects_missing_classes():
    etf = simplex_etf_rows(num_classes=4, dim=5).float()
    features, labels = samples_at(etf, [3, 3, 3, 3])
    metrics = nc_metrics(features, labels, etf)
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["nc1"] == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match=r"\[3\]"):
        nc_metrics(features[:9], labels[:9], etf)


# --- accuracy splits ---------------------------------------------------------------------------


def test_class_splits_on_cifar100_lt_ir100():
    counts = [math.floor(500 * 100 ** (-k / 99)) for k in range(100)]
    splits = class_splits(counts)
    assert [len(splits[name]) for name in ("many", "medium", "few")] == [35, 35, 30]
    assert splits["many"] == list(range(35))  # counts decrease with k here, so splits are contiguous


def test_class_splits_boundaries_and_unsorted_counts():
    splits = class_splits([19, 101, 20, 100, 5000])
    assert splits == {"many": [1, 4], "medium": [2, 3], "few": [0]}


def test_accuracy_by_split_by_hand():
    splits = {"many": [0], "medium": [1, 2], "few": [3]}
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3, 3])
    predictions = torch.tensor([0, 0, 0, 1, 1, 0, 2, 0, 1])
    # many: 3/4 right; medium: 2/3 (samples 4, 6); few: 0/2; overall 5/9.
    accuracies = accuracy_by_split(predictions, labels, splits)
    assert accuracies == pytest.approx({"top1": 500 / 9, "many": 75.0, "medium": 200 / 3, "few": 0.0})


def test_per_class_accuracy_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3, 3])
    predictions = torch.tensor([0, 0, 0, 1, 1, 0, 2, 0, 1])
    # class 0: 3/4, class 1: 1/2, class 2: 1/1, class 3: 0/2, class 4: no sample.
    accuracy = per_class_accuracy(predictions, labels, num_classes=5)
    assert accuracy[:4].tolist() == pytest.approx([75.0, 50.0, 100.0, 0.0])
    assert math.isnan(accuracy[4].item())


def test_accuracy_by_split_empty_split_is_nan():
    accuracies = accuracy_by_split(torch.tensor([0, 1]), torch.tensor([0, 1]), {"many": [0, 1], "few": []})
    assert accuracies["top1"] == 100.0 and accuracies["many"] == 100.0
    assert math.isnan(accuracies["few"])


# --- plot --------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("num_classes", [10, 100])
def test_plot_cosine_heatmaps_writes_png(tmp_path, num_classes):
    generator = torch.Generator().manual_seed(0)
    panels = {
        "CE": torch.randn(num_classes, 128, generator=generator),
        "AllNC": simplex_etf_rows(num_classes, dim=128).float(),
    }
    path = tmp_path / "cosines.png"
    plot_cosine_heatmaps(panels, path, title=f"classifier cosines, K={num_classes}", class_order="by index")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000


def test_plot_per_class_accuracy_writes_a_labelled_png(tmp_path):
    from PIL import Image

    counts = [500, 300, 120, 60, 30, 15, 8, 5]  # every split present, not in index order below
    order = [3, 0, 7, 1, 5, 2, 6, 4]
    counts = [counts[i] for i in order]
    accuracy = torch.tensor([90.0, 80.0, 70.0, 60.0, 50.0, 40.0, float("nan"), 20.0])
    path = tmp_path / "per_class.png"
    plot_per_class_accuracy(accuracy, counts, path, title="test accuracy per class")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 400
