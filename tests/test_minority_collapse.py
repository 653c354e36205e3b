"""Minority collapse in the unconstrained-features model, and AllNC undoing it.

10 classes (5 with 100 samples, 5 with 1), D = 32, free features and classifier, SGD with weight
decay 1e-2, over 5 seeds. CE and logit-adjusted CE leave the Few classes collapsed, classifier and
means alike (the paper's finding that a classifier-side fix does not restore the geometry). AllNC's
paper form (HyCon + mse_gram P2P) spreads them to the simplex angle -1/(K-1) and aligns means with
classifiers. AllNC's default (logit adjustment + contrastive P2P with the Gram gap, no HyCon) undoes the
collapse and reaches the angle too; without the gap (the contrastive P2P the 10-class sweep chose) it
spreads the Few classes past the simplex angle (docs/method.md).
"""

import functools

import pytest

from allnc_dist.analysis.unconstrained_features import train_unconstrained_features
from allnc_dist.config import MethodConfig
from allnc_dist.metrics import nc_metrics
from bench.ufm_study import WITHOUT_GAP

COUNTS = [100] * 5 + [1] * 5
FEW = list(range(5, 10))
SEEDS = range(5)
# Steps to convergence (the geometry no longer moves), with a margin: on these seeds CE's Few
# classes are fully collapsed (cos 1.000) from step 1000, and LA's by step 2000 (not yet at 1500);
# the paper form settles faster (800 and 1200 steps give the same cosines to 0.01); without the Gram gap
# the default's self-duality is still rising at 800 steps (0.5 to 0.76) and settles by 2000 (0.97 to
# 1.00); with it the default settles by 1200 (800 and 2000 steps give the same cosines to 0.002).
STEPS = {"ce": 1500, "la": 2500, "allnc_paper": 800, "allnc": 1200, "allnc_without_gap": 2000}
VARIANTS = {"allnc_without_gap": WITHOUT_GAP}  # else a preset
TARGET = -1.0 / (len(COUNTS) - 1)


@functools.cache  # several tests read the same runs
def _few_geometry(variant, seed):
    method = MethodConfig(**VARIANTS.get(variant, {"preset": variant}), gbbn={"enabled": False})
    features, labels, classifier = train_unconstrained_features(COUNTS, method, dim=32, seed=seed,
                                                                steps=STEPS[variant])
    return nc_metrics(features, labels, classifier, few_classes=FEW)


@pytest.mark.parametrize("preset", ["ce", "la"])
def test_ce_and_logit_adjustment_collapse_the_minority(preset):
    for seed in SEEDS:
        m = _few_geometry(preset, seed)
        assert m["few_cos_classifier"] > 0.9, (seed, m)
        assert m["few_cos_means"] > 0.9, (seed, m)


@pytest.mark.parametrize("variant", ["allnc_paper", "allnc", "allnc_without_gap"])
def test_allnc_undoes_the_collapse_and_aligns_means_with_classifiers(variant):
    runs = [_few_geometry(variant, seed) for seed in SEEDS]
    for seed, m in zip(SEEDS, runs):
        assert m["few_cos_classifier"] < 0 and m["few_cos_means"] < 0, (seed, m)
        assert m["few_self_duality"] >= 0.8, (seed, m)
    for key in ("few_cos_classifier", "few_cos_means"):
        mean = sum(m[key] for m in runs) / len(runs)
        assert abs(mean - TARGET) <= 0.1, (key, mean)


def test_the_paper_form_and_the_default_reach_the_simplex_angle():
    for variant in ("allnc_paper", "allnc"):
        cosines = [_few_geometry(variant, seed)["few_cos_classifier"] for seed in SEEDS]
        assert all(abs(c - TARGET) <= 0.01 for c in cosines), (variant, cosines)  # the default: -0.108


def test_without_the_gram_gap_the_default_spreads_the_few_classes_past_the_simplex_angle():
    without_gap = [_few_geometry("allnc_without_gap", seed)["few_cos_classifier"] for seed in SEEDS]
    assert all(c < TARGET - 0.02 for c in without_gap), without_gap  # -0.147 to -0.218 (two machines)
