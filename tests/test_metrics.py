"""rlnb.metrics against hand-computed cases and a plain pairwise loop."""

import math

import numpy as np
import pytest
import torch

from rlnb.metrics import (
    auc,
    brier_score,
    calibration,
    expected_calibration_error,
    mmd,
    total_variation,
)


def pairwise_auc(scores, labels):
    """The definition: over every (positive, negative) pair, 1 if the positive scores higher,
    ½ on a tie."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_cases():
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # the sklearn docs' example
    assert auc([1, 2, 3], [0, 1, 1]) == 1.0
    assert auc([3, 2, 1], [0, 1, 1]) == 0.0
    assert auc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts half


def test_auc_matches_the_pairwise_loop_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, size=30).astype(float)  # many ties
        y = rng.integers(0, 2, size=30)
        if y.min() == y.max():
            continue
        assert auc(s, y) == pytest.approx(pairwise_auc(s, y), abs=1e-12)


def test_auc_of_one_class_is_chance():
    assert auc([0.2, 0.9], [1, 1]) == 0.5


def test_calibration_hand_case():
    # two bins: [0, .5) holds p = .2, .4 (labels 0, 1), [.5, 1] holds p = .6, .8, 1.0 (1, 1, 0)
    cal = calibration([0.2, 0.4, 0.6, 0.8, 1.0], [0, 1, 1, 1, 0], n_bins=2)
    assert cal.count.tolist() == [2, 3]
    assert cal.confidence == pytest.approx([0.3, 0.8])
    assert cal.accuracy == pytest.approx([0.5, 2 / 3])
    assert cal.ece == pytest.approx(2 / 5 * 0.2 + 3 / 5 * (0.8 - 2 / 3))
    assert cal.edges.tolist() == [0.0, 0.5, 1.0]


def test_calibration_of_a_calibrated_predictor_is_zero_and_empty_bins_are_zero():
    cal = calibration([0.5, 0.5, 0.5, 0.5], [0, 1, 1, 0], n_bins=4)
    assert cal.ece == 0.0
    assert cal.count.tolist() == [0, 0, 4, 0]
    assert cal.accuracy[0] == 0.0 and cal.confidence[0] == 0.0
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == 1.0


def test_brier_hand_cases():
    assert brier_score([0.5] * 4, [0, 1, 0, 1]) == 0.25
    assert brier_score([1.0, 0.0, 0.7], [1, 0, 0]) == pytest.approx(0.49 / 3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: auc([], []), "scores, labels"),
        (lambda: auc([0.1, 0.2], [0]), "same length"),
        (lambda: auc([float("nan"), 0.2], [0, 1]), "scores: expected finite"),
        (lambda: auc([0.1, 0.2], [0, 2]), "labels: expected 0/1"),
        (lambda: brier_score([1.5], [1]), "p: expected probabilities"),
        (lambda: calibration([0.5], [1], n_bins=0), "n_bins"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mmd_against_a_loop():
    gen = torch.Generator().manual_seed(11)
    x, y = torch.randn(7, 2, generator=gen), torch.randn(5, 2, generator=gen) + 1
    h = 0.7

    def k(a, b):
        return math.exp(-sum((u - v) ** 2 for u, v in zip(a, b)) / (2 * h * h))

    xs, ys = x.tolist(), y.tolist()
    kxx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j) / (7 * 6)
    kyy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j) / (5 * 4)
    kxy = sum(k(a, b) for a in xs for b in ys) / 35
    assert mmd(x, y, h) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    same = mmd(torch.randn(2000, 2, generator=gen), torch.randn(2000, 2, generator=gen))
    assert abs(same) < 0.002 and mmd(x, y + 3) > 0.1
    with pytest.raises(ValueError, match="x, y"):
        mmd(x[:1], y)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, y, 0.0)


def test_total_variation():
    assert total_variation([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    assert total_variation([1.0], [1.0]) == 0.0
    with pytest.raises(ValueError, match="p, q"):
        total_variation([1.0], [0.5, 0.5])
