"""Notebook 02's task and explorer: GAE on a gridworld whose advantages are known exactly."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.envs.tabular import gridworld
from rlnb.estimators import gae
from rlnb.widgets.base import explorer


def gridworld_task(gamma: float = 0.95, critic_error: float = 0.1, seed: int = 0) -> dict:
    """The 5×5 gridworld of notebook 02 (slip 0.2, +1 at the goal, uniform start), a policy that
    mixes the optimal one (60%) with uniform actions (40%), its exact ``V``, ``Q``, ``A``, and an
    imperfect critic: exact ``V`` plus N(0, ``critic_error``²) per state (0 at the goal)."""
    if critic_error < 0:
        raise ValueError(f"critic_error: expected a non-negative float, got {critic_error}")
    mdp = gridworld(5, 5, slip=0.2, gamma=gamma, start=None)
    policy = 0.6 * mdp.value_iteration()[1] + 0.4 * mdp.uniform_policy()
    exact = mdp.evaluate(policy)
    g = torch.Generator().manual_seed(seed)
    critic = exact.V + critic_error * torch.randn(mdp.n_states, generator=g, dtype=torch.float64)
    critic[mdp.terminal] = 0.0
    return {"mdp": mdp, "policy": policy, "exact": exact, "critic": critic}


def gae_example(
    gamma: float, lmbda: float, critic_error: float, seed: int = 0, episodes: int = 1
) -> dict:
    """The callback (pure): sample ``episodes`` episodes and return, per step, the GAE advantages
    computed with the imperfect critic (``advantages``) and the exact ``A^π(s_t, a_t)`` (``exact``)."""
    task = gridworld_task(gamma, critic_error, seed)
    mdp, V = task["mdp"], task["critic"]
    d = mdp.sample_episodes(task["policy"], n=episodes, max_steps=200, seed=seed + 1)
    next_values = torch.where(d.terminated, 0.0, V[d.next_states])
    adv = gae(
        d.rewards, V[d.states], next_values, d.terminated, d.truncated, gamma, lmbda
    ).advantages
    return {"advantages": adv, "exact": task["exact"].A[d.states, d.actions], "states": d.states}


def gae_explorer(
    seed: int = 0, gamma: float = 0.95, lmbda: float = 0.95, critic_error: float = 0.1
) -> W.VBox:
    """Sliders for γ, λ and the critic's error; per-step GAE advantages against the exact ones."""
    controls = {
        "gamma": W.FloatSlider(
            value=gamma, min=0.5, max=0.99, step=0.01, description="γ", continuous_update=False
        ),
        "lmbda": W.FloatSlider(
            value=lmbda, min=0.0, max=1.0, step=0.05, description="λ", continuous_update=False
        ),
        "critic_error": W.FloatSlider(
            value=critic_error,
            min=0.0,
            max=0.5,
            step=0.02,
            description="critic error",
            continuous_update=False,
        ),
    }

    def draw(gamma, lmbda, critic_error):
        ex = gae_example(gamma, lmbda, critic_error, seed)
        t = range(len(ex["exact"]))
        fig, ax = plt.subplots(figsize=(10, 3.6))
        ax.plot(t, ex["exact"].numpy(), "k.-", label="exact A^π(s_t, a_t)")
        ax.plot(t, ex["advantages"].numpy(), "o-", alpha=0.7, label="GAE with the imperfect critic")
        err = (ex["advantages"] - ex["exact"]).pow(2).mean().sqrt().item()
        ax.set(xlabel="step t", ylabel="advantage", title=f"one episode: RMS error {err:.3f}")
        ax.legend()
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="GAE explorer")
