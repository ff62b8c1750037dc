"""The tour's explorer: exact, Monte Carlo and TD(0) values on the chain as α and γ move."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.envs.tabular import chain
from rlnb.train.tabular import mc_prediction, rms_error, td0_prediction
from rlnb.widgets.base import explorer

P_RIGHT = 0.7  # the tour's policy: step right with probability 0.7


def tour_estimates(
    alpha: float, gamma: float, episodes: int = 300, seed: int = 0, n_states: int = 7
) -> dict:
    """The tour's callback (pure): estimate ``V^π`` on ``chain(n_states, gamma=gamma)`` three ways.

    Returns a dict of float64 tensors: ``exact`` (linear solve), ``mc`` and ``td`` (final tables
    after ``episodes`` episodes with step size ``alpha``), and ``mc_rmse`` / ``td_rmse`` (RMS error
    over non-terminal states after each episode).
    """
    mdp = chain(n_states, gamma=gamma)
    policy = torch.tensor([[1 - P_RIGHT, P_RIGHT]], dtype=torch.float64).expand(n_states, 2)
    exact = mdp.evaluate(policy).V
    data = mdp.sample_episodes(policy, episodes, max_steps=20 * n_states, seed=seed)
    mc = mc_prediction(data, n_states, gamma, alpha)
    td = td0_prediction(data, n_states, gamma, alpha)
    live = ~mdp.terminal
    return {
        "exact": exact,
        "mc": mc[-1],
        "td": td[-1],
        "mc_rmse": rms_error(mc, exact, live),
        "td_rmse": rms_error(td, exact, live),
    }


def plot_tour(est: dict, title: str = ""):
    """Values per state (left) and RMS error over episodes (right)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    states = range(len(est["exact"]))
    ax1.plot(states, est["exact"], "k-o", label="exact (linear solve)")
    ax1.plot(states, est["mc"], "s--", label="Monte Carlo")
    ax1.plot(states, est["td"], "^--", label="TD(0)")
    ax1.set(xlabel="state (goal on the right)", ylabel="V(s)", title="value per state")
    ax1.legend()
    episodes = range(1, len(est["mc_rmse"]) + 1)
    ax2.plot(episodes, est["mc_rmse"], label="Monte Carlo")
    ax2.plot(episodes, est["td_rmse"], label="TD(0)")
    ax2.set(xlabel="episodes", ylabel="RMS error", title="error against the exact values")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def tour_explorer(
    episodes: int = 300, seed: int = 0, alpha: float = 0.05, gamma: float = 0.9
) -> W.VBox:
    """Sliders for α and γ; redraws the three estimates and their error curves."""
    controls = {
        "alpha": W.FloatSlider(
            value=alpha, min=0.01, max=0.5, step=0.01, description="α", continuous_update=False
        ),
        "gamma": W.FloatSlider(
            value=gamma, min=0.5, max=1.0, step=0.01, description="γ", continuous_update=False
        ),
    }

    def draw(alpha, gamma):
        est = tour_estimates(alpha, gamma, episodes, seed)
        return plot_tour(est, f"α = {alpha:.2f}, γ = {gamma:.2f}, {episodes} episodes")

    return explorer(controls, draw, title="Value estimates on the chain")
