"""Notebook 06b's explorer: EXPO's edit policy as a field of corrections over the reach task's
state space, and which action the on-the-fly selection takes."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch

from rlnb.envs.reach import GOAL, GOAL_RADIUS, OBSTACLE_RADIUS
from rlnb.train.improve import Improver
from rlnb.train.sac import critic_value
from rlnb.widgets.base import explorer


def edit_field(run: Improver, n_samples: int = 4, grid: int = 13, seed: int = 0) -> dict:
    """The callback (pure: a fixed ``seed``). On a ``grid × grid`` lattice of states over
    ``[−0.95, 0.95]²`` (those outside the obstacle): ``states [S, 2]``, ``base [S, 2]`` one base
    action per state, ``edit [S, 2]`` the edit policy's mean correction ``Δ`` of it, ``chosen
    [S, 2]`` the on-the-fly policy's action with ``n_samples`` base actions (and their edits),
    and ``gain`` the mean over states of ``min_i Q̄_i(s, edited) − min_i Q̄_i(s, base)`` (what the
    edit adds, by the critic's own measure)."""
    if n_samples < 1 or grid < 2:
        raise ValueError(f"n_samples, grid: expected ≥ 1 and ≥ 2, got {n_samples}, {grid}")
    agent, critic = run.agent, run.critic_target
    device = run.log_alpha.device
    xs = np.linspace(-0.95, 0.95, grid, dtype=np.float32)
    states = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    states = states[np.linalg.norm(states, axis=-1) > OBSTACLE_RADIUS]
    obs = torch.as_tensor(states, device=device)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        base = agent.base_actions(obs, 1)[:, 0]
        _, _, mean = agent.edit.sample(torch.cat([obs, base], -1))
        edited = (base + mean).clamp(-1, 1)
        gain = (critic_value(critic, obs, edited) - critic_value(critic, obs, base)).mean()
        chosen = agent.choose(obs, critic, greedy=True, n=n_samples)
    return {
        "states": states,
        "base": base.cpu().numpy(),
        "edit": (edited - base).cpu().numpy(),
        "chosen": chosen.cpu().numpy(),
        "gain": float(gain),
    }


def edit_field_explorer(run: Improver, n_samples: int = 4, show: str = "edit") -> W.VBox:
    """A slider for the number of base actions ``N`` and a choice of field: the edit policy's
    corrections, the base actions, or the on-the-fly choices."""
    controls = {
        "n_samples": W.IntSlider(value=n_samples, min=1, max=16, description="N",
                                 continuous_update=False),
        "show": W.Dropdown(options=["edit", "base", "chosen"], value=show, description="field"),
    }  # fmt: skip

    def draw(n_samples, show):
        out = edit_field(run, n_samples)
        s, v = out["states"], out[show]
        fig, ax = plt.subplots(figsize=(5.2, 5))
        ax.add_patch(plt.Circle((0, 0), OBSTACLE_RADIUS, color="0.6"))
        ax.add_patch(plt.Circle(tuple(GOAL), GOAL_RADIUS, color="tab:green", alpha=0.5))
        ax.quiver(s[:, 0], s[:, 1], v[:, 0], v[:, 1], color="tab:red" if show == "edit" else "tab:blue",
                  angles="xy", scale_units="xy", scale=1.5 if show == "edit" else 8, width=0.004)  # fmt: skip
        ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xlabel="$x$", ylabel="$y$")
        ax.set_title(
            f"{'the correction Δ(s, a_base)' if show == 'edit' else show + ' action'}"
            f"   N = {n_samples}\nmean change of Q̄ by the edit {out['gain']:+.3f}",
            fontsize=10,
        )
        return fig

    return explorer(controls, draw, "EXPO: what the edit policy changes, state by state")
