"""A tiny search over value losses, in the spirit of "Evolving Reinforcement Learning Algorithms".

The paper searches a space of computation graphs for the loss a DQN-style agent minimises and,
learning from scratch, rediscovers the TD loss. Here the space is small enough to enumerate: a
loss is ``term_i + w · term_j`` over the terms of ``Q = Q(s, a)`` and the bootstrapped target
``Y = r + γ max_a' Q(s', a')`` (``Y`` is a constant for the gradient, as in the paper) listed in
``TERMS``, with ``w ∈ {0, 0.1, 1}``. Every candidate trains its own Q-table on the same stream of
sampled transitions (all candidates at once, one tensor ``[C, S, A]``), and is scored by
``fitness = V^{π}(start)/V*(start) − RMSE(Q, Q*)/max|Q*|`` for its greedy policy ``π`` at the
end: on a small chain every sensible loss finds the optimal policy, so the score also asks the
values to be right — which only losses whose fixed point is ``Q = Y`` achieve.
"""

from __future__ import annotations

import itertools

import pandas as pd
import torch
from torch import Tensor

from rlnb.envs.tabular import TabularMDP

TERMS = {
    "δ²": lambda q, y: (q - y) ** 2,
    "|δ|": lambda q, y: (q - y).abs(),
    "δ": lambda q, y: q - y,
    "Q": lambda q, y: q,
    "Q²": lambda q, y: q**2,
    "Q·Y": lambda q, y: q * y,
    "max(Q, Y)": lambda q, y: torch.maximum(q, y),
}
WEIGHTS = (0.1, 1.0)


def candidate_losses() -> tuple[list[str], Tensor]:
    """The search space: names and a weight matrix ``[C, len(TERMS)]`` (single terms, then
    ``term_i + w · term_j`` for every pair ``i ≠ j`` and ``w`` in ``WEIGHTS``, each sum once)."""
    names = list(TERMS)
    rows, labels = [], []
    for i, name in enumerate(names):
        w = torch.zeros(len(names))
        w[i] = 1.0
        rows.append(w)
        labels.append(name)
    for (i, a), (j, b) in itertools.permutations(enumerate(names), 2):
        for weight in WEIGHTS:
            if weight == 1.0 and j < i:
                continue  # term_i + term_j was listed as term_j + 1·term_i
            w = torch.zeros(len(names))
            w[i], w[j] = 1.0, weight
            rows.append(w)
            labels.append(f"{a} + {weight:g}·{b}")
    return labels, torch.stack(rows).double()


def loss_gradient(weights: Tensor, q: Tensor, y: Tensor) -> Tensor:
    """``∂L/∂Q`` of each candidate (rows of ``weights``) at the points ``q, y`` (``[C, B]``)."""
    q = q.detach().requires_grad_(True)
    values = torch.stack([fn(q, y) for fn in TERMS.values()], -1)  # [C, B, T]
    (grad,) = torch.autograd.grad((values * weights[:, None, :]).sum(), q)
    return grad


def is_td_equivalent(weights: Tensor, seed: int = 0) -> Tensor:
    """Whether each candidate's gradient is ``c · δ`` with one constant ``c > 0`` (a rescaled TD
    loss: same fixed point ``Q = Y``, same direction), checked on random points."""
    g = torch.Generator().manual_seed(seed)
    q = 3 * torch.randn(1, 256, generator=g, dtype=torch.float64).expand(len(weights), -1)
    y = 3 * torch.randn(1, 256, generator=g, dtype=torch.float64).expand(len(weights), -1)
    grad = loss_gradient(weights, q, y)
    c = (grad * (q - y)).sum(1) / ((q - y) ** 2).sum(1)
    return (c > 0) & torch.isclose(grad, c[:, None] * (q - y), atol=1e-9).all(1)


def search_losses(
    mdp: TabularMDP,
    steps: int = 3000,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Train every candidate loss with SGD on a Q-table from ``steps`` batches of transitions
    drawn uniformly over non-terminal ``(s, a)`` (a generative model, the same for all
    candidates) and rank them by fitness (see the module docstring); diverging candidates
    score ``−inf``. Columns: ``loss``, ``fitness``, ``return_ratio``, ``value_error``,
    ``td_equivalent``; best first."""
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("steps, batch_size, lr: expected positive values")
    names, weights = candidate_losses()
    C, S, A = len(names), mdp.n_states, mdp.n_actions
    g = torch.Generator().manual_seed(seed)
    live = (~mdp.terminal).nonzero().squeeze(1)
    Q = torch.zeros(C, S, A, dtype=torch.float64)
    rows = torch.arange(C)[:, None]
    for t in range(steps):
        s = live[torch.randint(len(live), (batch_size,), generator=g)]
        a = torch.randint(A, (batch_size,), generator=g)
        s2 = torch.multinomial(mdp.P[s, a], 1, generator=g).squeeze(1)
        r = mdp.R[s, a, s2]
        y = r + mdp.gamma * (~mdp.terminal[s2]) * Q[:, s2].max(-1).values  # [C, B]
        grad = loss_gradient(weights, Q[:, s, a], y)
        step_size = lr * (1 - t / steps)  # decays to 0: what is left is each loss's fixed point
        Q.index_put_((rows, s[None], a[None]), -step_size * grad, accumulate=True)
        Q.clamp_(-1e6, 1e6)
    q_star = mdp.evaluate(mdp.value_iteration()[1]).Q
    start = mdp.initial.argmax()
    v_star = q_star.max(-1).values[start]
    policies = torch.nn.functional.one_hot(Q.argmax(-1), A).double()
    ratio = torch.stack([mdp.evaluate(p).V[start] for p in policies]) / v_star
    error = (Q[:, live] - q_star[live]).pow(2).mean((1, 2)).sqrt() / q_star.abs().max()
    fitness = torch.where(error < 1e3, ratio - error, torch.tensor(float("-inf")))
    return (
        pd.DataFrame(
            {
                "loss": names,
                "fitness": fitness.numpy(),
                "return_ratio": ratio.numpy(),
                "value_error": error.numpy(),
                "td_equivalent": is_td_equivalent(weights).numpy(),
            }
        )
        .sort_values("fitness", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
