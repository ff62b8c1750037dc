"""Notebook 06's explorer: the temperature α against the soft values and policy of a cliff world."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.envs.tabular import cliff_world
from rlnb.train.planning import soft_value_iteration
from rlnb.widgets.base import explorer


def soft_values(alpha: float) -> dict:
    """The callback (pure): on ``cliff_world()`` (4×8), the soft-optimal values at temperature
    ``alpha`` (``V_soft [4, 8]``, entropy bonus included), the entropy of the soft-optimal policy
    per state (nats, ``[4, 8]``), and from the start the soft value, the ordinary return of that
    policy (``policy_return``) and the optimal return ``V*``."""
    if not alpha > 0:
        raise ValueError(f"alpha: expected > 0, got {alpha}")
    mdp = cliff_world()
    _, V, pi = soft_value_iteration(mdp, alpha)
    entropy = -(pi * pi.clamp_min(1e-300).log()).sum(-1) * (~mdp.terminal)
    start = int(mdp.initial.argmax())
    V_star, _ = mdp.value_iteration()
    return {
        "V_soft": V.view(4, 8),
        "entropy": entropy.view(4, 8),
        "soft_value": V[start].item(),
        "policy_return": mdp.evaluate(pi).V[start].item(),
        "optimal_return": V_star[start].item(),
    }


def soft_explorer(log10_alpha: float = -1.0) -> W.VBox:
    """A slider for ``log10 α``; the soft values and the policy's entropy over the cliff world."""
    controls = {
        "log10_alpha": W.FloatSlider(
            value=log10_alpha,
            min=-3.0,
            max=1.0,
            step=0.25,
            description="log10 α",
            continuous_update=False,
        )  # fmt: skip
    }

    def draw(log10_alpha):
        out = soft_values(10.0**log10_alpha)
        fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
        for ax, key, title in (
            (axes[0], "V_soft", "soft value V(s)"),
            (axes[1], "entropy", f"policy entropy (max {torch.log(torch.tensor(4.0)):.2f} nats)"),
        ):
            im = ax.imshow(out[key].numpy(), cmap="viridis")
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set(title=title, xticks=[], yticks=[])
        fig.suptitle(
            f"α = {10.0**log10_alpha:.3g}: soft value at the start {out['soft_value']:.2f}, "
            f"its policy's return {out['policy_return']:.2f}, optimal return {out['optimal_return']:.2f}",
            fontsize=9,
        )
        return fig

    return explorer(controls, draw, "Temperature against the soft values")
