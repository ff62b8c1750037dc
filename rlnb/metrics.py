"""Scores of a predictor of a binary outcome: AUC, expected calibration error with its
reliability-diagram bins, and the Brier score. Inputs are array-likes (lists, NumPy arrays, CPU
tensors) of equal length: ``scores`` or probabilities ``p`` and 0/1 ``labels``.

Distances between distributions: ``mmd`` between two sets of samples, ``total_variation`` between
two probability vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check(values, labels, name: str, probabilities: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.size == 0 or x.size != y.size:
        raise ValueError(
            f"{name}, labels: expected two non-empty arrays of the same length, got {x.size} and "
            f"{y.size}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite numbers, got NaN or inf")
    if probabilities and ((x < 0) | (x > 1)).any():
        raise ValueError(f"{name}: expected probabilities in [0, 1]")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels: expected 0/1 (or False/True) values")
    return x, y


def auc(scores, labels) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counted as half (the Mann–Whitney U statistic over n₊·n₋). 0.5 (chance) when
    the labels are all one class, where the curve is undefined."""
    s, y = _check(scores, labels, "scores", probabilities=False)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty_like(s)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    tie_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(tie_rank, counts)
    u = ranks[y == 1].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


@dataclass
class Calibration:
    """``ece`` and the reliability diagram's bins: ``edges`` ``[n_bins + 1]``; per bin ``count``,
    ``confidence`` (mean p) and ``accuracy`` (mean label), both 0 for an empty bin."""

    ece: float
    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


def calibration(p, labels, n_bins: int = 10) -> Calibration:
    """Expected calibration error ``Σ_b (n_b / n) |acc_b − conf_b|`` over ``n_bins`` equal-width
    bins of ``p`` on [0, 1] (bin ``b`` holds ``edges[b] ≤ p < edges[b+1]``, the last bin also
    ``p = 1``), with the bins for a reliability diagram ("On Calibration of Modern Neural
    Networks")."""
    p, y = _check(p, labels, "p", probabilities=True)
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    confidence = np.bincount(which, weights=p, minlength=n_bins) / safe
    accuracy = np.bincount(which, weights=y, minlength=n_bins) / safe
    ece = float((count / p.size * np.abs(accuracy - confidence)).sum())
    return Calibration(ece, edges, count.astype(int), confidence, accuracy)


def expected_calibration_error(p, labels, n_bins: int = 10) -> float:
    """``calibration(p, labels, n_bins).ece``."""
    return calibration(p, labels, n_bins).ece


def brier_score(p, labels) -> float:
    """Mean squared error of the probabilities: ``(1/n) Σ (p_i − y_i)²`` (0 is perfect; always
    predicting 0.5 scores 0.25)."""
    p, y = _check(p, labels, "p", probabilities=True)
    return float(np.mean((p - y) ** 2))


def mmd(x, y, bandwidth: float = 0.5) -> float:
    """The squared maximum mean discrepancy between the sample sets ``x [n, d]`` and ``y [m, d]``
    under the Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2 h²))``, ``h = bandwidth``: the
    unbiased estimate ``mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean k(x_i, y_j)``
    ("A Kernel Two-Sample Test", Gretton et al.). Zero in expectation when both come from one
    distribution, so an estimate can be slightly negative. float64 throughout."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    a, b = (v.reshape(len(v), -1) for v in (a, b))
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"x, y: expected two sets of at least 2 points of one dimension, got shapes "
            f"{a.shape} and {b.shape}"
        )
    if not bandwidth > 0:
        raise ValueError(f"bandwidth: expected > 0, got {bandwidth}")

    def mean_kernel(u: np.ndarray, v: np.ndarray, same: bool) -> float:
        sq = (u**2).sum(1)[:, None] + (v**2).sum(1)[None, :] - 2 * u @ v.T
        k = np.exp(-np.maximum(sq, 0.0) / (2 * bandwidth**2))
        if same:
            return float((k.sum() - np.trace(k)) / (len(u) * (len(u) - 1)))
        return float(k.mean())

    return mean_kernel(a, a, True) + mean_kernel(b, b, True) - 2 * mean_kernel(a, b, False)


def total_variation(p, q) -> float:
    """``½ Σ_i |p_i − q_i|`` between two probability vectors of the same length."""
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    b = np.asarray(q, dtype=np.float64).reshape(-1)
    if a.size == 0 or a.size != b.size:
        raise ValueError(
            f"p, q: expected two non-empty vectors of one length, got {a.size} and {b.size}"
        )
    return float(0.5 * np.abs(a - b).sum())
