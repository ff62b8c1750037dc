"""Exploration on a Gaussian multi-armed bandit: ε-greedy, a count bonus (UCB1) and MEX.

Every agent keeps per-arm counts ``n_k`` and means ``r̄_k`` and pulls the arm with the largest
index (each arm once first); runs are vectorised over independent bandits. ``regret`` is the
expected regret ``Σ_t (μ* − μ_{a_t})`` against the true means.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def mex_index(means: np.ndarray, counts: np.ndarray, eta: float) -> np.ndarray:
    """The value MEX (Maximize to Explore) gives each arm on a Gaussian bandit ("One Objective to
    Rule Them All: A Maximization Objective Fusing Estimation and Planning for Exploration"): MEX
    picks the hypothesis

        f = argmax_μ  max_k μ_k − η Σ_j n_j (μ_j − r̄_j)²

    (the optimal value under μ minus η times its squared-error loss on the data, the best fit's
    loss subtracted) and acts greedily in it. For the arm k that the max picks, the best μ sets
    μ_j = r̄_j for j ≠ k and μ_k = r̄_k + 1/(2η n_k), worth ``r̄_k + 1/(4η n_k)``: MEX is greedy
    in that index, a count bonus 1/n rather than UCB's 1/√n, derived instead of added."""
    if not eta > 0:
        raise ValueError(f"eta: expected a positive float, got {eta}")
    return means + 1.0 / (4.0 * eta * counts)


def ucb_index(means: np.ndarray, counts: np.ndarray, t: int, c: float = 2.0) -> np.ndarray:
    """UCB1's count bonus: ``r̄_k + sqrt(c log t / n_k)``."""
    return means + np.sqrt(c * math.log(max(t, 1)) / counts)


AGENTS = ("epsilon-greedy", "ucb", "mex")


def bandit_regret(
    agent: str,
    arm_means: np.ndarray,
    steps: int,
    *,
    epsilon: float = 0.1,
    c: float = 2.0,
    eta: float = 0.05,
    noise: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Run ``agent`` on bandits with ``arm_means`` ``[runs, K]`` and rewards ``N(μ_k, noise²)``
    for ``steps`` pulls; rows ``step`` and ``regret`` (cumulative expected regret, mean over
    runs) and ``regret_std`` (its spread over runs)."""
    if agent not in AGENTS:
        raise ValueError(f"agent: expected one of {AGENTS}, got {agent!r}")
    arm_means = np.atleast_2d(np.asarray(arm_means, dtype=np.float64))
    runs, K = arm_means.shape
    if steps < K:
        raise ValueError(f"steps: expected at least one pull per arm ({K}), got {steps}")
    rng = np.random.default_rng(seed)
    counts = np.zeros((runs, K))
    sums = np.zeros((runs, K))
    best = arm_means.max(1)
    regret = np.zeros((runs, steps))
    rows = np.arange(runs)
    for t in range(steps):
        if t < K:
            arm = np.full(runs, t)
        else:
            means = sums / counts
            if agent == "mex":
                index = mex_index(means, counts, eta)
            elif agent == "ucb":
                index = ucb_index(means, counts, t, c)
            else:
                index = np.where(rng.random((runs, 1)) < epsilon, rng.random((runs, K)), means)
            arm = index.argmax(1)
        reward = arm_means[rows, arm] + noise * rng.standard_normal(runs)
        counts[rows, arm] += 1
        sums[rows, arm] += reward
        regret[:, t] = best - arm_means[rows, arm]
    cum = regret.cumsum(1)
    return pd.DataFrame(
        {"step": np.arange(1, steps + 1), "regret": cum.mean(0), "regret_std": cum.std(0)}
    )
