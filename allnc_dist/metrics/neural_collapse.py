"""Neural Collapse metrics (Papyan et al. 2020), measured around a class-balanced centre.

On a long-tailed training set the sample mean of all features is dominated by the head classes, so
every quantity here centres on mu_G = (1/K) sum_k mu_k and weights every class equally, whatever
its number of samples. All arithmetic is in float64: NC1 inverts a rank-deficient matrix and the
NC2 deviations of a well-collapsed network are small differences of cosines near -1/(K-1).

Over several ranks, each holding its own samples, pass `sum_over_ranks` (a sum of a tensor over the
ranks, such as an all-reduce): the class sums and counts, then the within-class scatter around the
global means, are summed over the ranks, so every rank gets the metrics of all the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# Sigma_B has rank <= K-1, so its remaining eigenvalues are rounding noise of order
# eps * lambda_max. A relative cut-off far above that noise and far below any genuine
# between-class direction inverts exactly the span of the centred class means.
_PINV_RTOL = 1e-8

SumOverRanks = Callable[[Tensor], Tensor]  # a tensor summed over the ranks (returned, same shape and dtype)


def one_process(tensor: Tensor) -> Tensor:
    """The SumOverRanks of a single process."""
    return tensor


def centred(rows: Tensor) -> Tensor:
    """The rows minus their (unweighted) mean row."""
    return rows - rows.mean(dim=0, keepdim=True)


def pairwise_cosines(rows: Tensor) -> Tensor:
    """(K, K) matrix of cosines between the rows; a zero row gives NaN in its row and column."""
    unit_rows = rows / rows.norm(dim=1, keepdim=True)
    return unit_rows @ unit_rows.T


def class_counts_and_means(features: Tensor, labels: Tensor, num_classes: int,
                           sum_over_ranks: SumOverRanks = one_process) -> tuple[Tensor, Tensor]:
    """(K,) sample counts and (K, D) per-class means of the features (in their dtype), over all ranks.

    Raises ValueError naming the classes that have no sample, because a mean over nothing would
    silently enter every metric as a zero vector.
    """
    counts = sum_over_ranks(torch.bincount(labels, minlength=num_classes))
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"classes with no sample: {empty}")
    sums = sum_over_ranks(features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features))
    return counts, sums / counts.unsqueeze(1).to(features.dtype)


def class_means(features: Tensor, labels: Tensor, num_classes: int,
                sum_over_ranks: SumOverRanks = one_process) -> Tensor:
    """(K, D) per-class means of the features, in their dtype (see `class_counts_and_means`)."""
    return class_counts_and_means(features, labels, num_classes, sum_over_ranks)[1]


def _off_diagonal(square: Tensor) -> Tensor:
    """The entries k != k' of a square matrix, flattened (each unordered pair appears twice)."""
    return square[~torch.eye(square.shape[0], dtype=torch.bool, device=square.device)]


def _within_class_covariance(features: Tensor, labels: Tensor, counts: Tensor, means: Tensor,
                             sum_over_ranks: SumOverRanks) -> Tensor:
    """Sigma_W = (1/K) sum_k (1/n_k) sum_{i in k} (h_i - mu_k)(h_i - mu_k)^T, with the global n_k and mu_k."""
    num_classes = means.shape[0]
    deviations = features - means[labels]
    sample_weights = 1.0 / (num_classes * counts.to(features.dtype)[labels])
    return sum_over_ranks((deviations * sample_weights.unsqueeze(1)).T @ deviations)


def _nc1(within: Tensor, centred_means: Tensor) -> float:
    """(1/K) Tr(Sigma_W Sigma_B^+), with Sigma_B = (1/K) sum_k mu~_k mu~_k^T."""
    num_classes = centred_means.shape[0]
    between = centred_means.T @ centred_means / num_classes
    between_pinv = torch.linalg.pinv(between, hermitian=True, rtol=_PINV_RTOL)
    return (torch.trace(within @ between_pinv) / num_classes).item()


def _nc2(centred_rows: Tensor, prefix: str) -> dict[str, float]:
    """Equinorm, equiangularity and max-angle deviation of K centred rows."""
    num_classes = centred_rows.shape[0]
    norms = centred_rows.norm(dim=1)
    cosines = _off_diagonal(pairwise_cosines(centred_rows))
    simplex_cosine = -1.0 / (num_classes - 1)
    return {
        f"{prefix}equinorm": (norms.std(unbiased=False) / norms.mean()).item(),
        f"{prefix}equiangular": cosines.std(unbiased=False).item(),
        f"{prefix}maxangle": (cosines - simplex_cosine).abs().mean().item(),
    }


def _nc3(classifier: Tensor, centred_means: Tensor) -> float:
    """|| W/||W||_F - M~/||M~||_F ||_F^2: how far the classifier is from the centred means."""
    gap = classifier / classifier.norm() - centred_means / centred_means.norm()
    return gap.pow(2).sum().item()


def branch_nc3(means: Tensor, classifiers: Sequence[Tensor]) -> list[float]:
    """NC3 as P2P defines it, per branch: || W~_b/||W~_b||_F - M~_b/||M~_b||_F ||_F^2 with the centred
    classifier W~_b of branch b and the centred class means M~_b of that branch's features. `means`
    holds the branches' class means side by side, in the order and widths of `classifiers`."""
    widths = [classifier.shape[1] for classifier in classifiers]
    if means.shape[1] != sum(widths):
        raise ValueError(f"class means have {means.shape[1]} columns, the branch classifiers {widths}")
    return [_nc3(centred(classifier.detach().double().to(means.device)), centred(branch_means))
            for branch_means, classifier in zip(means.double().split(widths, dim=1), classifiers)]


def _mean_pairwise_cosine(rows: Tensor) -> float:
    """Mean cosine over pairs k != k' of the rows; NaN for fewer than two rows."""
    if rows.shape[0] < 2:
        return float("nan")
    return _off_diagonal(pairwise_cosines(rows)).mean().item()


def _minority_collapse(
    centred_classifier: Tensor, centred_means: Tensor, few_classes: Sequence[int]
) -> dict[str, float]:
    """How tightly the Few classes' rows crowd together, and how well each w~_k aligns with its mu~_k."""
    few = torch.as_tensor(list(few_classes), dtype=torch.long)
    few_classifier, few_means = centred_classifier[few], centred_means[few]
    if len(few) == 0:
        self_duality = float("nan")
    else:
        self_duality = torch.nn.functional.cosine_similarity(few_classifier, few_means, dim=1).mean().item()
    return {
        "few_cos_classifier": _mean_pairwise_cosine(few_classifier),
        "few_cos_means": _mean_pairwise_cosine(few_means),
        "few_self_duality": self_duality,
    }


def _check_inputs(features: Tensor, labels: Tensor, classifier: Tensor, few_classes: Sequence[int]) -> None:
    num_classes, dim = classifier.shape
    if num_classes < 2:
        raise ValueError(f"Neural Collapse metrics need at least 2 classes, got {num_classes}")
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(f"features must be (N, {dim}) to match the classifier, got {tuple(features.shape)}")
    if labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be ({features.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    outside = [k for k in few_classes if not 0 <= k < num_classes]
    if outside:
        raise ValueError(f"few_classes outside 0..{num_classes - 1}: {outside}")


def nc_metrics(
    features: Tensor, labels: Tensor, classifier: Tensor, few_classes: Sequence[int] = (),
    sum_over_ranks: SumOverRanks = one_process,
) -> dict[str, float]:
    """All Neural Collapse metrics of one set of features and a linear classifier, in float64 (of
    the samples of every rank, with `sum_over_ranks`); `nc_metrics_and_means` also returns the class
    means they were measured from.

    Args:
        features: (N, D) features h_i.
        labels: (N,) labels y_i in 0..K-1; every class needs at least one sample.
        classifier: (K, D) classifier W (bias, if any, is not part of it).
        few_classes: indices of the Few (tail) classes for the minority-collapse keys.

    Returns a dict of floats:
        nc1: (1/K) Tr(Sigma_W Sigma_B^+), with the class-balanced Sigma_W and Sigma_B.
        nc2_means_* / nc2_classifier_*: for the centred means mu_k - mu_G and the centred
            classifier rows w_k - mean_k w_k,
            equinorm = std / mean of the row norms,
            equiangular = std of the cosines over pairs k != k',
            maxangle = mean over pairs k != k' of |cos + 1/(K-1)|.
            Both std are population std (divide by the count, unbiased=False).
        nc3: || W/||W||_F - M~/||M~||_F ||_F^2, with W as given (not centred).
        few_cos_classifier / few_cos_means: mean cosine over pairs k != k' of Few classes of the
            centred classifier rows / centred means; NaN when fewer than two Few classes.
        few_self_duality: mean over Few classes of cos(w~_k, mu~_k); NaN when there is none.
    All metrics are 0 at perfect collapse onto a simplex ETF (the minority keys excepted).
    """
    return nc_metrics_and_means(features, labels, classifier, few_classes, sum_over_ranks)[0]


def nc_metrics_and_means(
    features: Tensor, labels: Tensor, classifier: Tensor, few_classes: Sequence[int] = (),
    sum_over_ranks: SumOverRanks = one_process,
) -> tuple[dict[str, float], Tensor]:
    """`nc_metrics`, and the (K, D) float64 class means (over every rank) that they measure."""
    _check_inputs(features, labels, classifier, few_classes)
    features, classifier = features.detach().double(), classifier.detach().double().to(features.device)
    labels = labels.to(features.device)
    counts, means = class_counts_and_means(features, labels, classifier.shape[0], sum_over_ranks)
    centred_means, centred_classifier = centred(means), centred(classifier)
    metrics = {
        "nc1": _nc1(_within_class_covariance(features, labels, counts, means, sum_over_ranks), centred_means),
        **_nc2(centred_means, "nc2_means_"),
        **_nc2(centred_classifier, "nc2_classifier_"),
        "nc3": _nc3(classifier, centred_means),
        **_minority_collapse(centred_classifier, centred_means, few_classes),
    }
    return metrics, means
