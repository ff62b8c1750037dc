"""Notebook 01's explorer: the λ-return as a weighted average of n-step returns."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.envs.tabular import random_walk
from rlnb.estimators import lambda_returns, n_step_returns
from rlnb.widgets.base import explorer


def lambda_return_weights(lmbda: float, horizon: int) -> torch.Tensor:
    """Weights of the n-step returns ``G^(1..horizon)`` in the λ-return of a state ``horizon``
    steps before the end of its episode: ``(1 − λ) λ^{n−1}`` for ``n < horizon`` and the rest,
    ``λ^{horizon−1}``, on the full Monte Carlo return. They sum to 1."""
    if not 0.0 <= lmbda <= 1.0:
        raise ValueError(f"lmbda: expected a float in [0, 1], got {lmbda}")
    if horizon < 1:
        raise ValueError(f"horizon: expected a positive int, got {horizon}")
    n = torch.arange(1, horizon + 1, dtype=torch.float64)
    w = (1 - lmbda) * lmbda ** (n - 1)
    w[-1] = lmbda ** (horizon - 1)
    return w


def lambda_return_example(lmbda: float, seed: int = 0, noise: float = 0.3) -> dict:
    """The callback (pure): one episode of the 19-state random walk, a critic ``V`` = exact values
    plus Gaussian ``noise``; the n-step returns of the first state, their λ-weights, the weighted sum
    and ``rlnb.estimators.lambda_returns`` at the first step (the two agree)."""
    walk = random_walk(19)
    g = torch.Generator().manual_seed(seed)
    V = walk.evaluate(walk.uniform_policy()).V + noise * torch.randn(
        walk.n_states, generator=g, dtype=torch.float64
    )
    V[walk.terminal] = 0.0
    ep = walk.sample_episodes(walk.uniform_policy(), n=1, max_steps=10_000, seed=seed)
    r, term, trunc = ep.rewards[None], ep.terminated[None], ep.truncated[None]
    next_values = torch.where(term, 0.0, V[ep.next_states][None])
    L = r.shape[-1]
    n_step = torch.stack(
        [n_step_returns(r, next_values, term, trunc, 1.0, n)[0, 0] for n in range(1, L + 1)]
    )
    weights = lambda_return_weights(lmbda, L)
    return {
        "n_step": n_step,
        "weights": weights,
        "weighted_sum": (weights * n_step).sum(),
        "lambda_return": lambda_returns(r, next_values, term, trunc, 1.0, lmbda)[0, 0],
        "true_value": walk.evaluate(walk.uniform_policy()).V[ep.states[0]],
    }


def lambda_return_explorer(seed: int = 0, lmbda: float = 0.8) -> W.VBox:
    """A λ slider and an episode seed; bars of the weights and the n-step returns they average."""
    controls = {
        "lmbda": W.FloatSlider(
            value=lmbda, min=0.0, max=1.0, step=0.05, description="λ", continuous_update=False
        ),
        "seed": W.IntSlider(
            value=seed, min=0, max=20, description="episode", continuous_update=False
        ),
    }

    def draw(lmbda, seed):
        ex = lambda_return_example(lmbda, seed)
        n = range(1, len(ex["weights"]) + 1)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
        ax1.bar(n, ex["weights"].numpy(), color="tab:blue")
        ax1.set(
            xlabel="n (steps before bootstrapping)",
            ylabel="weight",
            title=f"λ-return weights, λ = {lmbda:.2f}",
        )
        ax2.plot(n, ex["n_step"].numpy(), ".-", color="tab:gray", label="n-step returns G⁽ⁿ⁾")
        ax2.axhline(
            float(ex["lambda_return"]),
            color="tab:blue",
            label=f"λ-return = {float(ex['lambda_return']):.3f}",
        )
        ax2.axhline(
            float(ex["true_value"]),
            color="k",
            ls="--",
            label=f"true V = {float(ex['true_value']):.3f}",
        )
        ax2.set(
            xlabel="n", ylabel="return from the first state", title=f"one episode of {len(n)} steps"
        )
        ax2.legend()
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="The λ-return averages n-step returns")
