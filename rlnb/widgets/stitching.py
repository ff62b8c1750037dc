"""Notebook 07c's explorer: which pieces of the optimal path the data holds, and what FQI, RCSL
and MBRCSL return from it."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.train.offline import epsilon_greedy, tabular_fqi
from rlnb.train.rcsl import (
    KINDS,
    mbrcsl_dataset,
    rcsl_inputs,
    rcsl_return,
    stitching_dataset,
    train_rcsl,
)
from rlnb.widgets.base import explorer


def stitching_returns(kinds: int, seed: int = 0, steps: int = 600) -> dict:
    """The callback (pure): on the 5×5 stitching task with the first ``kinds`` kinds of
    trajectory (30 episodes), the discounted return from the start of FQI (tabular sweeps),
    RCSL (MLP, conditioned on the data's best episode return) and MBRCSL (1000 model rollouts, top 10%),
    the optimum, and the data's visits per cell ``[5, 5]``."""
    mdp, data = stitching_dataset(5, episodes=30, seed=seed, kinds=kinds)
    start = int(mdp.initial.argmax())
    greedy = epsilon_greedy(tabular_fqi(mdp, data), 0.0)
    rows = rcsl_inputs(data, mdp.gamma)
    rcsl, _ = train_rcsl(rows, 25, 4, "mlp", steps=steps, seed=seed)
    synthetic, _ = mbrcsl_dataset(data, (25, 4), start, mdp.gamma, rollouts=1000, seed=seed)
    mb_rows = rcsl_inputs(synthetic, mdp.gamma)
    mbrcsl, _ = train_rcsl(mb_rows, 25, 4, "mlp", steps=steps, seed=seed)
    return {
        "returns": {
            "FQI": mdp.evaluate(greedy).V[start].item(),
            "RCSL": rcsl_return(mdp, rcsl, rows.returns[rows.episode_start].max().item()),
            "MBRCSL": rcsl_return(mdp, mbrcsl, mb_rows.returns[mb_rows.episode_start].max().item()),
        },
        "optimum": mdp.value_iteration()[0][start].item(),
        "visits": torch.bincount(data.states, minlength=25).view(5, 5),
    }


def stitching_explorer(kinds: int = 3, seed: int = 0) -> W.VBox:
    """A slider for how many kinds of trajectory the data holds; the data's visits and each
    method's return against the optimum."""
    controls = {
        "kinds": W.IntSlider(
            value=kinds, min=1, max=3, description="kinds", continuous_update=False
        )
    }

    def draw(kinds):
        out = stitching_returns(kinds, seed)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), width_ratios=[1, 2])
        axes[0].imshow(out["visits"], cmap="Greys")
        axes[0].set(title="visits: " + ", ".join(KINDS[:kinds]), xticks=[], yticks=[])
        axes[0].title.set_fontsize(8)
        names = list(out["returns"])
        axes[1].barh(names, [out["returns"][n] for n in names])
        axes[1].axvline(out["optimum"], color="k", ls=":", label="optimum")
        axes[1].set(xlabel="discounted return from the start", xlim=(0, 1))
        axes[1].legend()
        return fig

    return explorer(controls, draw, "Which pieces of the optimal path does the data hold?")
