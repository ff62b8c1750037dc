"""Notebook 07's explorer: how much of a gridworld the data covers, against what FQI, CQL and
RAVL believe each state is worth."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.envs.tabular import gridworld
from rlnb.train.offline import behaviour_dataset, cql_training, rollout_fqi, state_action_counts
from rlnb.widgets.base import explorer

SIDE = 8


def offline_values(coverage: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """The callback (pure): per-state values ``max_a Q(s, a)`` on a ``SIDE × SIDE`` gridworld
    (goal bottom right) from 10 episodes of ``(1 − coverage) · π* + coverage · uniform``:
    ``true`` (V*), ``FQI`` (one Q-table, dataset only), ``FQI + rollouts`` (one table, 2-step
    rollouts in the true dynamics), ``RAVL`` (10 tables, the same rollouts, min over tables) and
    ``CQL`` (α = 1, a one-hot table); and ``data`` (how often each state occurs in the data)."""
    mdp = gridworld(SIDE, SIDE, slip=0.1, gamma=0.95)
    v_star, pi = mdp.value_iteration()
    data = behaviour_dataset(mdp, pi, coverage, 10, 4 * SIDE, seed=seed)
    best = {
        "FQI": rollout_fqi(
            mdp, data, n_heads=1, rollout_length=0, iterations=1, sweeps=100, seed=seed
        ),
        "FQI + rollouts": rollout_fqi(
            mdp, data, n_heads=1, rollout_length=2, iterations=20, seed=seed
        ),
        "RAVL": rollout_fqi(mdp, data, n_heads=10, rollout_length=2, iterations=20, seed=seed),
    }
    out = {"true": v_star, **{k: r.pessimistic.max(-1).values for k, r in best.items()}}
    _, q_cql = cql_training(
        mdp, data, torch.eye(mdp.n_states), alpha=1.0, steps=1500, checkpoint_every=1500,
        hidden=(), lr=0.05, seed=seed,
    )  # fmt: skip
    out["CQL"] = q_cql.max(-1).values * ~mdp.terminal
    out["data"] = state_action_counts(mdp, data).sum(-1).double()
    return out


def offline_explorer(coverage: float = 0.1, seed: int = 0) -> W.VBox:
    """A coverage slider; heat maps of the data and of each learner's values next to V*."""
    controls = {
        "coverage": W.FloatSlider(
            value=coverage, min=0.0, max=1.0, step=0.05, description="coverage",
            continuous_update=False,
        )
    }  # fmt: skip

    def draw(coverage):
        values = offline_values(coverage, seed)
        names = ["data", "true", "FQI", "FQI + rollouts", "RAVL", "CQL"]
        fig, axes = plt.subplots(1, len(names), figsize=(15, 2.9))
        for ax, name in zip(axes, names):
            grid = values[name].view(SIDE, SIDE).numpy()
            if name == "data":
                im = ax.imshow(grid, cmap="Greys")
            else:
                im = ax.imshow(grid, cmap="RdBu_r", vmin=-1.5, vmax=1.5)
            ax.set_title(name if name == "data" else f"{name}: max_a Q")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes, shrink=0.8, label="value (V* ≤ 1)")
        fig.suptitle(f"behaviour = {1 - coverage:.2f}·π* + {coverage:.2f}·uniform, 10 episodes")
        return fig

    return explorer(controls, draw, "Dataset coverage against offline values")
