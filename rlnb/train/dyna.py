"""Dyna-Q (Sutton & Barto, ch. 8) with prior knowledge given as a declarative partial model, in the
spirit of "RLang: A Declarative Language for Describing Partial World Knowledge to Reinforcement
Learning Agents".

Dyna-Q learns from each real step (``Q(s,a) += α (r + γ max_a' Q(s',a') − Q(s,a))``), records the
step in a model, and then makes ``planning_steps`` more updates from transitions replayed out of
the model. A ``Prior`` is a set of model entries the agent is *told* before it starts — "entering
the goal from these cells pays 1", "these cells' moves are known" — so planning can use them from
the first step. Real experience of a pair replaces its prior entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rlnb.envs.tabular import TabularMDP


@dataclass
class Prior:
    """Known transitions ``(state, action) → (reward, next_state, terminal)`` of a deterministic
    MDP, as a user would write them down (a partial model; pairs not listed are unknown)."""

    transitions: dict[tuple[int, int], tuple[float, int, bool]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.transitions)


def known_model(mdp: TabularMDP, states) -> Prior:
    """The prior "the moves out of ``states`` are known": every action of each listed state, with
    its (deterministic) next state and reward, read from ``mdp``."""
    transitions = {}
    for s in states:
        if not 0 <= s < mdp.n_states:
            raise ValueError(f"states: expected state ids in [0, {mdp.n_states}), got {s}")
        for a in range(mdp.n_actions):
            nxt = int(mdp.P[s, a].argmax())
            if mdp.P[s, a, nxt] < 1.0:
                raise ValueError(f"mdp: expected deterministic moves, P[{s}, {a}] is stochastic")
            transitions[(s, a)] = (float(mdp.R[s, a, nxt]), nxt, bool(mdp.terminal[nxt]))
    return Prior(transitions)


def dyna_q(
    mdp: TabularMDP,
    episodes: int,
    max_steps: int = 200,
    alpha: float = 0.5,
    epsilon: float = 0.1,
    planning_steps: int = 10,
    prior: Prior | None = None,
    prior_sweeps: int = 20,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Run Dyna-Q; ``planning_steps = 0`` without a prior is one-step Q-learning.

    Before the first step the agent makes ``prior_sweeps × len(prior)`` planning updates from the
    prior alone. ε-greedy behaviour with random tie-breaking (so an all-zero ``Q`` explores). Returns the
    history (episode, steps, return, total env steps so far) and the final ``Q [S, A]``.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected a positive int, got {episodes!r}")
    if not 0.0 <= epsilon <= 1.0 or not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha, epsilon: expected (0, 1] and [0, 1], got {alpha}, {epsilon}")
    if not isinstance(planning_steps, int) or planning_steps < 0:
        raise ValueError(f"planning_steps: expected an int ≥ 0, got {planning_steps!r}")
    rng = np.random.default_rng(seed)
    P, R, terminal = mdp.P.numpy(), mdp.R.numpy(), mdp.terminal.numpy()
    Q = np.zeros((mdp.n_states, mdp.n_actions))
    model = dict(prior.transitions) if prior is not None else {}

    def update(s, a, r, s2, done):
        target = r + (0.0 if done else mdp.gamma * Q[s2].max())
        Q[s, a] += alpha * (target - Q[s, a])

    def plan(n):
        if not model:
            return
        keys = list(model)
        for i in rng.integers(len(keys), size=n):
            s, a = keys[i]
            update(s, a, *model[(s, a)])

    plan(prior_sweeps * len(model))  # think about the prior before the first step
    rows, total = [], 0
    for episode in range(episodes):
        s = int(rng.choice(mdp.n_states, p=mdp.initial.numpy()))
        ret, steps = 0.0, 0
        while steps < max_steps:
            steps += 1
            if rng.random() < epsilon:
                a = int(rng.integers(mdp.n_actions))
            else:
                a = int(rng.choice(np.flatnonzero(Q[s] == Q[s].max())))
            s2 = int(rng.choice(mdp.n_states, p=P[s, a]))
            r, done = float(R[s, a, s2]), bool(terminal[s2])
            update(s, a, r, s2, done)
            model[(s, a)] = (r, s2, done)
            plan(planning_steps)
            ret += r
            s = s2
            if done:
                break
        total += steps
        rows.append({"episode": episode, "steps": steps, "return": ret, "env_steps": total})
    return pd.DataFrame(rows), Q
