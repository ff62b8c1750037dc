"""Fitted Q-iteration with a value network of any head, on a tabular MDP with state features.

A dataset of ``n_samples`` transitions ``(s, a, r, s')`` with ``s`` uniform over non-terminal
states, ``a`` uniform, ``s' ~ P(·|s, a)`` and a noisy reward ``r = R(s, a, s') + σ ε`` (ε standard
Gaussian or Student-t) is drawn once. Each iteration freezes the current network as the target
and takes ``steps`` Adam steps on minibatches towards ``Y = r + γ (1 − terminal(s')) Q̄(s', a*)``,
``a* = argmax_a Q̄(s', a)`` — "Tree-Based Batch Mode Reinforcement Learning" (fitted Q-iteration)
with the network warm-started from one iteration to the next, as in DQN. The targets move every
iteration and carry the reward noise: the setting where "Stop Regressing: Training Value
Functions via Classification for Scalable Deep RL" says cross-entropy over bins helps. With the
``c51`` head the target is C51's projected distribution of ``r + γ Z(s', a*)`` instead.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rlnb.envs.tabular import TabularMDP
from rlnb.models.value import ValueNetwork, bellman_target, categorical_loss

NOISES = ("gaussian", "student-t")


def grid_features(rows: int, cols: int) -> Tensor:
    """``[rows · cols, 2]``: each cell's (row, column) scaled to [−1, 1] (state ``r · cols + c``)."""
    r, c = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij")
    return torch.stack([r.flatten(), c.flatten()], 1)


def fitted_q_iteration(
    mdp: TabularMDP,
    features: Tensor,
    head: str = "scalar",
    *,
    huber: bool = False,
    n_samples: int = 2000,
    reward_noise: float = 1.0,
    noise: str = "gaussian",
    df: float = 1.5,
    iterations: int = 30,
    steps: int = 50,
    batch_size: int = 256,
    lr: float = 3e-3,
    hidden=(64, 64),
    n_bins: int = 51,
    v_min: float = -10.0,
    v_max: float = 10.0,
    sigma_ratio: float = 0.75,
    seed: int = 0,
) -> tuple[pd.DataFrame, ValueNetwork]:
    """Run FQI; return ``(history, net)``: one row per iteration, ``iteration``, ``q_rmse`` (RMSE
    of ``Q_k`` against ``Q*`` over non-terminal pairs) and ``regret`` (``max_s V*(s) − V^{π_k}(s)``
    of the greedy policy), and the last Q-network."""
    if features.ndim != 2 or features.shape[0] != mdp.n_states:
        raise ValueError(
            f"features: expected shape [{mdp.n_states}, d], got {tuple(features.shape)}"
        )
    if noise not in NOISES:
        raise ValueError(f"noise: expected one of {NOISES}, got {noise!r}")
    if iterations < 1 or steps < 1 or n_samples < 1:
        raise ValueError("iterations, steps, n_samples: expected positive ints")
    g = torch.Generator().manual_seed(seed)
    live = (~mdp.terminal).nonzero().squeeze(1)
    s = live[torch.randint(len(live), (n_samples,), generator=g)]
    a = torch.randint(mdp.n_actions, (n_samples,), generator=g)
    s2 = torch.multinomial(mdp.P[s, a], 1, generator=g).squeeze(1)
    eps = (
        torch.randn(n_samples, generator=g, dtype=torch.float64)
        if noise == "gaussian"
        else torch.as_tensor(np.random.default_rng(seed).standard_t(df, n_samples))
    )
    r = (mdp.R[s, a, s2] + reward_noise * eps).float()
    discount = mdp.gamma * (~mdp.terminal[s2]).float()
    x, x2 = features[s].float(), features[s2].float()

    q_star = mdp.evaluate(mdp.value_iteration()[1]).Q
    v_star = q_star.max(-1).values
    torch.manual_seed(seed)
    net = ValueNetwork(
        features.shape[1], mdp.n_actions, head, hidden, n_bins, v_min, v_max, sigma_ratio, huber
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rows = []
    for k in range(1, iterations + 1):
        target = copy.deepcopy(net).requires_grad_(False)
        y, _ = bellman_target(target, x2, r, discount)
        for _ in range(steps):
            i = torch.randint(n_samples, (batch_size,), generator=g)
            if head == "c51":
                loss = categorical_loss(net.logits(x[i])[torch.arange(len(i)), a[i]], y[i])
            else:
                loss = net.loss(x[i], y[i], index=a[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            q = net.value(features.float()).double()
        policy = torch.nn.functional.one_hot(q.argmax(-1), mdp.n_actions).double()
        v_pi = mdp.evaluate(policy).V
        rows.append(
            {
                "iteration": k,
                "q_rmse": (q[live] - q_star[live]).pow(2).mean().sqrt().item(),
                "regret": (v_star - v_pi)[live].max().item(),
            }
        )
    return pd.DataFrame(rows), net
