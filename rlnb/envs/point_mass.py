"""A point mass on a line with distractor dimensions, and its exact optimal value.

The state is ``s = (x, z)``: ``x = (position, velocity)`` moves as a double integrator,

    x' = A x + B a,   A = [[1, dt], [0, 1]],   B = [[0], [dt]],

and pays ``r(s, a) = −(xᵀ x + c a²)``. The ``distractors`` coordinates ``z ∈ [−1, 1]^n`` move by a
fixed, wiggly map of themselves, ``z' = sin(ω M z)`` (``M`` a random orthogonal matrix drawn from
``seed``), and touch neither the reward nor ``x``: a model that spends its capacity on them gains
nothing for the value.

With actions unbounded, the optimal value is quadratic and exact (discounted LQR):

    V*(s) = −xᵀ P x,   P = Q + γ AᵀPA − γ² AᵀPB (c + γ BᵀPB)⁻¹ BᵀPA,
    a*(s) = −K x,       K = γ (c + γ BᵀPB)⁻¹ BᵀPA,

so ``Q*(s, a) = r(s, a) + γ V*(s')`` is known at every state and action, and the error of any
learned model or value can be measured against it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Batch(NamedTuple):
    """Transitions ``[N, ·]``: ``states``, ``actions`` ``[N, 1]``, ``rewards`` ``[N]``,
    ``next_states``."""

    states: Tensor
    actions: Tensor
    rewards: Tensor
    next_states: Tensor


def on_grid(fn, states: Tensor, actions: Tensor) -> Tensor:
    """``fn(s, a)`` for every state ``[N, D]`` and every action of the grid ``actions [K]``:
    ``[N, K]`` (``fn`` maps ``[M, D]``, ``[M, 1]`` to ``[M]``)."""
    n, k = states.shape[0], actions.numel()
    return fn(states.repeat_interleave(k, 0), actions.repeat(n).unsqueeze(-1)).view(n, k)


class DistractedPointMass:
    """The task of the module docstring with ``distractors`` extra coordinates. ``omega`` sets
    how wiggly the distractors' map is; ``action_cost`` is ``c``."""

    def __init__(self, distractors: int = 8, gamma: float = 0.9, dt: float = 0.2,
                 action_cost: float = 0.1, omega: float = 3.0, seed: int = 0):  # fmt: skip
        if distractors < 0:
            raise ValueError(f"distractors: expected ≥ 0, got {distractors}")
        if not 0.0 < gamma < 1.0 or not dt > 0 or not action_cost > 0:
            raise ValueError(
                f"gamma, dt, action_cost: expected in (0, 1), > 0, > 0, got {gamma}, {dt}, {action_cost}"
            )
        self.distractors, self.gamma, self.dt = distractors, gamma, dt
        self.action_cost, self.omega = action_cost, omega
        self.A = torch.tensor([[1.0, dt], [0.0, 1.0]])
        self.B = torch.tensor([[0.0], [dt]])
        gen = torch.Generator().manual_seed(seed)
        self.M = torch.linalg.qr(torch.randn(distractors, distractors, generator=gen))[0]
        self.P, self.K = self._riccati()

    @property
    def state_dim(self) -> int:
        return 2 + self.distractors

    def _riccati(self, iters: int = 5000, tol: float = 1e-12) -> tuple[Tensor, Tensor]:
        """Iterate the discounted Riccati equation of the module docstring to its fixed point."""
        A, B, g, c = self.A.double(), self.B.double(), self.gamma, self.action_cost
        P = torch.eye(2, dtype=torch.float64)
        for _ in range(iters):
            gain = g * torch.linalg.solve(c + g * B.T @ P @ B, B.T @ P @ A)
            P, P_old = (
                torch.eye(2, dtype=torch.float64) + g * A.T @ P @ A - g * A.T @ P @ B @ gain,
                P,
            )
            if (P - P_old).abs().max() < tol:
                break
        K = g * torch.linalg.solve(c + g * B.T @ P @ B, B.T @ P @ A)
        return P.float(), K.float()

    def step(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(next_states, rewards)`` for ``states [N, 2 + n]`` and ``actions [N, 1]``."""
        x, z = states[:, :2], states[:, 2:]
        next_x = x @ self.A.T + actions @ self.B.T
        next_z = torch.sin(self.omega * z @ self.M.T)
        rewards = -((x**2).sum(-1) + self.action_cost * (actions**2).sum(-1))
        return torch.cat([next_x, next_z], -1), rewards

    def value(self, states: Tensor) -> Tensor:
        """``V*(s) = −xᵀ P x`` ``[N]`` (differentiable in ``states``)."""
        x = states[..., :2]
        return -((x @ self.P) * x).sum(-1)

    def q_value(self, states: Tensor, actions: Tensor) -> Tensor:
        """``Q*(s, a) = r(s, a) + γ V*(s')`` ``[N]``."""
        next_states, rewards = self.step(states, actions)
        return rewards + self.gamma * self.value(next_states)

    def optimal_action(self, states: Tensor) -> Tensor:
        """``a*(s) = −K x`` ``[N, 1]``."""
        return -states[:, :2] @ self.K.T

    def sample_states(self, n: int, gen: torch.Generator) -> Tensor:
        """``n`` states uniform on ``[−1, 1]^(2 + distractors)``."""
        return 2 * torch.rand(n, self.state_dim, generator=gen) - 1

    def transitions(self, n: int, gen: torch.Generator, max_action: float = 1.0) -> Batch:
        """``n`` transitions from uniform states with uniform actions in ``±max_action``."""
        states = self.sample_states(n, gen)
        actions = max_action * (2 * torch.rand(n, 1, generator=gen) - 1)
        next_states, rewards = self.step(states, actions)
        return Batch(states, actions, rewards, next_states)

    def trajectories(self, n: int, length: int, gen: torch.Generator,
                     max_action: float = 1.0) -> Batch:  # fmt: skip
        """``n`` trajectories of ``length`` steps with uniform actions: each field ``[n, length,
        ·]`` (``rewards [n, length]``), ``next_states[:, t] == states[:, t + 1]``."""
        if length < 1:
            raise ValueError(f"length: expected ≥ 1, got {length}")
        s = self.sample_states(n, gen)
        states, actions, rewards, nexts = [], [], [], []
        for _ in range(length):
            a = max_action * (2 * torch.rand(n, 1, generator=gen) - 1)
            s_next, r = self.step(s, a)
            states.append(s), actions.append(a), rewards.append(r), nexts.append(s_next)
            s = s_next
        return Batch(*(torch.stack(v, 1) for v in (states, actions, rewards, nexts)))
