"""Tabular prediction: learning ``V^π`` from sampled episodes, one state at a time.

Both learners walk a ``Transitions`` stream (``rlnb.envs.tabular``) step by step, as the textbook
algorithms do (Sutton & Barto, ch. 5–6), and return the value table after every episode so that
learning curves come for free. Terminal next states have value 0; at a truncated step both
learners bootstrap from the current estimate of the next state (the time limit is not the end of
the task).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlnb.envs.tabular import Transitions


def _check(n_states: int, gamma: float, alpha: float, v0: Tensor | float) -> list[float]:
    if not isinstance(n_states, int) or n_states < 1:
        raise ValueError(f"n_states: expected a positive int, got {n_states!r}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma: expected a float in [0, 1], got {gamma}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha: expected a step size in (0, 1], got {alpha}")
    v = torch.as_tensor(v0, dtype=torch.float64).expand(n_states).tolist()
    return v


def td0_prediction(
    transitions: Transitions, n_states: int, gamma: float, alpha: float, v0: Tensor | float = 0.0
) -> Tensor:
    """TD(0): ``V(s_t) ← V(s_t) + α [r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)]`` after every step.

    Returns ``[n_episodes, n_states]``: the table after each episode (float64).
    """
    V = _check(n_states, gamma, alpha, v0)
    s, r, s1 = (
        transitions.states.tolist(),
        transitions.rewards.tolist(),
        transitions.next_states.tolist(),
    )
    term, done = transitions.terminated.tolist(), transitions.done.tolist()
    history = []
    for t in range(len(s)):
        target = r[t] + (0.0 if term[t] else gamma * V[s1[t]])
        V[s[t]] += alpha * (target - V[s[t]])
        if done[t]:
            history.append(list(V))
    return torch.tensor(history, dtype=torch.float64).reshape(-1, n_states)


def mc_prediction(
    transitions: Transitions, n_states: int, gamma: float, alpha: float, v0: Tensor | float = 0.0
) -> Tensor:
    """Every-visit constant-α Monte Carlo: at the end of each episode, ``V(s_t) ← V(s_t) + α [G_t − V(s_t)]``
    for every step, with ``G_t = r_t + γ G_{t+1}`` (``G`` after a truncated last step = ``V(s_T)``).

    Returns ``[n_episodes, n_states]``: the table after each episode (float64).
    """
    V = _check(n_states, gamma, alpha, v0)
    s, r, s1 = (
        transitions.states.tolist(),
        transitions.rewards.tolist(),
        transitions.next_states.tolist(),
    )
    term, done = transitions.terminated.tolist(), transitions.done.tolist()
    history, start = [], 0
    for end in range(len(s)):
        if not done[end]:
            continue
        G = 0.0 if term[end] else V[s1[end]]
        returns = []
        for t in range(end, start - 1, -1):
            G = r[t] + gamma * G
            returns.append(G)
        for t, G in zip(range(start, end + 1), reversed(returns)):
            V[s[t]] += alpha * (G - V[s[t]])
        history.append(list(V))
        start = end + 1
    return torch.tensor(history, dtype=torch.float64).reshape(-1, n_states)


def rms_error(history: Tensor, exact: Tensor, states: Tensor | None = None) -> Tensor:
    """Root-mean-square error of each row of ``history`` against ``exact`` over ``states`` (default:
    the states where ``exact`` is defined and non-terminal are chosen by the caller; all by default)."""
    if history.shape[-1] != exact.shape[-1]:
        raise ValueError(
            f"history, exact: state dimensions differ, {tuple(history.shape)} vs {tuple(exact.shape)}"
        )
    diff = history - exact
    if states is not None:
        diff = diff[..., states]
    return diff.pow(2).mean(-1).sqrt()
