"""Tabular prediction: learning ``V^π`` from sampled episodes, one state at a time.

The learners walk a ``Transitions`` stream (``rlnb.envs.tabular``) step by step, as the textbook
algorithms do (Sutton & Barto, ch. 5–7, 12), and return the value table after every episode, so
learning curves come for free. ``alpha`` may be one step size or a 1-D sequence of them: the same
episodes are then learned with every step size at once (output ``[episodes, len(alpha), S]``).
Terminal next states have value 0; at a truncated step the learners bootstrap from the current
estimate of the next state (a time limit is not the end of the task).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from rlnb.envs.tabular import Transitions


def _init(n_states: int, gamma: float, alpha, v0) -> tuple[np.ndarray, np.ndarray, bool]:
    if not isinstance(n_states, int) or n_states < 1:
        raise ValueError(f"n_states: expected a positive int, got {n_states!r}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma: expected a float in [0, 1], got {gamma}")
    a = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    if a.ndim != 1 or not ((a > 0) & (a <= 1)).all():
        raise ValueError(f"alpha: expected step sizes in (0, 1], got {alpha}")
    V = np.broadcast_to(np.asarray(v0, dtype=np.float64), (n_states,)).copy()
    return np.tile(V, (len(a), 1)).T.copy(), a, np.ndim(alpha) == 0  # V: [S, n_alpha]


def _history(rows: list, scalar: bool) -> Tensor:
    h = torch.tensor(np.stack(rows), dtype=torch.float64).transpose(1, 2)  # [E, n_alpha, S]
    return h[:, 0] if scalar else h


def _steps(tr: Transitions):
    return (
        tr.states.tolist(),
        tr.rewards.tolist(),
        tr.next_states.tolist(),
        tr.terminated.tolist(),
        tr.done.tolist(),
    )


def td0_prediction(transitions: Transitions, n_states: int, gamma: float, alpha, v0=0.0) -> Tensor:
    """TD(0): ``V(s_t) ← V(s_t) + α [r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)]`` after every step.

    Returns the table after each episode: ``[episodes, S]`` (or ``[episodes, len(alpha), S]``).
    """
    V, a, scalar = _init(n_states, gamma, alpha, v0)
    history = []
    for s, r, s1, term, done in zip(*_steps(transitions)):
        target = r + (0.0 if term else gamma * V[s1])
        V[s] += a * (target - V[s])
        if done:
            history.append(V.copy())
    return _history(history, scalar)


def mc_prediction(transitions: Transitions, n_states: int, gamma: float, alpha, v0=0.0) -> Tensor:
    """Every-visit constant-α Monte Carlo: at the end of each episode, for every step in order,
    ``V(s_t) ← V(s_t) + α [G_t − V(s_t)]``, ``G_t = r_t + γ G_{t+1}`` (after a truncated last step
    ``G = V(s_T)`` from before the episode's updates).
    """
    V, a, scalar = _init(n_states, gamma, alpha, v0)
    s, r, s1, term, done = _steps(transitions)
    history, start = [], 0
    for end in range(len(s)):
        if not done[end]:
            continue
        G = np.zeros_like(a) if term[end] else V[s1[end]].copy()
        returns = []
        for t in range(end, start - 1, -1):
            G = r[t] + gamma * G
            returns.append(G)
        for t, G in zip(range(start, end + 1), reversed(returns)):
            V[s[t]] += a * (G - V[s[t]])
        history.append(V.copy())
        start = end + 1
    return _history(history, scalar)


def offline_prediction(
    transitions: Transitions,
    n_states: int,
    alpha,
    target: Callable[..., Tensor],
    v0=0.0,
) -> Tensor:
    """Offline updates toward any return estimator (Sutton & Barto §7.1 and §12.1).

    At the end of each episode, ``target(rewards, next_values, terminated, truncated)`` computes
    one return per step from the values at the start of the episode (a batch row per
    step size), then ``V(s_t) ← V(s_t) + α [G_t − V(s_t)]`` for every step in order. For example
    the offline λ-return algorithm is
    ``target=lambda *x: rlnb.estimators.lambda_returns(*x, gamma, lmbda)``.
    """
    V, a, scalar = _init(n_states, 1.0, alpha, v0)
    tr = transitions
    ends = torch.nonzero(tr.done).squeeze(1).tolist()
    history, start = [], 0
    for end in ends:
        sl = slice(start, end + 1)
        s, s1, term = tr.states[sl], tr.next_states[sl], tr.terminated[sl]
        Vt = torch.from_numpy(V).T  # [n_alpha, S]
        next_values = torch.where(term, 0.0, Vt[:, s1])
        rewards = tr.rewards[sl].to(torch.float64).expand(len(a), -1)
        flags = (term.expand(len(a), -1), tr.truncated[sl].expand(len(a), -1))
        G = target(rewards, next_values, *flags).numpy()
        for k, state in enumerate(s.tolist()):
            V[state] += a * (G[:, k] - V[state])
        history.append(V.copy())
        start = end + 1
    return _history(history, scalar)


def rms_error(history: Tensor, exact: Tensor, states: Tensor | None = None) -> Tensor:
    """Root-mean-square error over the last axis (states) of ``history`` against ``exact``,
    restricted to ``states`` (a bool mask or indices) when given."""
    if history.shape[-1] != exact.shape[-1]:
        raise ValueError(
            f"history, exact: state dimensions differ, {tuple(history.shape)} vs {tuple(exact.shape)}"
        )
    diff = history - exact
    if states is not None:
        diff = diff[..., states]
    return diff.pow(2).mean(-1).sqrt()
