"""Tabular MDPs whose values are known exactly.

A ``TabularMDP`` holds transition probabilities ``P[s, a, s']``, transition rewards ``R[s, a, s']``,
a discount ``gamma``, an initial distribution and a set of terminal (absorbing, zero-value) states.
``evaluate(policy)`` solves the Bellman equation ``V = r_π + γ P_π V`` exactly by a linear solve;
``sample_episodes`` returns transitions in the estimator format of DESIGN §3: one flat stream of
steps where ``terminated`` marks entering a terminal state and ``truncated`` marks the time limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class Transitions(NamedTuple):
    """Episodes laid end to end, one entry per step (all shaped ``[N]``)."""

    states: Tensor
    actions: Tensor
    rewards: Tensor
    next_states: Tensor
    terminated: Tensor
    truncated: Tensor

    @property
    def done(self) -> Tensor:
        return self.terminated | self.truncated

    @property
    def n_episodes(self) -> int:
        return int(self.done.sum())


class Evaluation(NamedTuple):
    """Exact values of a policy: ``V[s]``, ``Q[s, a]`` and advantages ``A = Q − V``."""

    V: Tensor
    Q: Tensor
    A: Tensor


@dataclass
class TabularMDP:
    """A finite MDP with exact policy evaluation (float64 throughout)."""

    P: Tensor  # [S, A, S] transition probabilities
    R: Tensor  # [S, A, S] reward for the transition s --a--> s'
    gamma: float
    initial: Tensor  # [S] initial state distribution
    terminal: Tensor  # [S] bool, absorbing states with value 0

    def __post_init__(self):
        self.P = torch.as_tensor(self.P, dtype=torch.float64)
        if self.P.ndim != 3 or self.P.shape[0] != self.P.shape[2]:
            raise ValueError(f"P: expected shape [S, A, S], got {tuple(self.P.shape)}")
        S, A, _ = self.P.shape
        self.R = torch.as_tensor(self.R, dtype=torch.float64)
        if self.R.shape == (S, A):
            self.R = self.R[:, :, None].expand(S, A, S).clone()
        if self.R.shape != (S, A, S):
            raise ValueError(
                f"R: expected shape [S, A, S] or [S, A] = {(S, A)}, got {tuple(self.R.shape)}"
            )
        if not torch.isfinite(self.R).all():
            raise ValueError("R: contains NaN or inf")
        if (
            not torch.isfinite(self.P).all()
            or (self.P < 0).any()
            or not torch.allclose(self.P.sum(-1), torch.ones(S, A, dtype=torch.float64))
        ):
            raise ValueError("P: expected non-negative rows P[s, a, :] summing to 1")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"gamma: expected a float in [0, 1], got {self.gamma}")
        self.gamma = float(self.gamma)
        self.initial = torch.as_tensor(self.initial, dtype=torch.float64)
        if self.initial.shape != (S,) or abs(float(self.initial.sum()) - 1) > 1e-9:
            raise ValueError(
                f"initial: expected a distribution of shape [{S}], got {tuple(self.initial.shape)}"
            )
        self.terminal = torch.as_tensor(self.terminal, dtype=torch.bool)
        if self.terminal.shape != (S,):
            raise ValueError(
                f"terminal: expected a bool mask of shape [{S}], got {tuple(self.terminal.shape)}"
            )

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def _check_policy(self, policy: Tensor) -> Tensor:
        policy = torch.as_tensor(policy, dtype=torch.float64)
        if policy.ndim < 2 or policy.shape[-2:] != (self.n_states, self.n_actions):
            raise ValueError(
                f"policy: expected probabilities of shape [..., S, A] with [S, A] = "
                f"{(self.n_states, self.n_actions)}, got {tuple(policy.shape)}"
            )
        if (policy < 0).any() or not torch.allclose(
            policy.sum(-1), torch.ones((), dtype=torch.float64)
        ):
            raise ValueError("policy: expected non-negative rows summing to 1")
        return policy

    def uniform_policy(self) -> Tensor:
        return torch.full(
            (self.n_states, self.n_actions), 1.0 / self.n_actions, dtype=torch.float64
        )

    def evaluate(self, policy: Tensor) -> Evaluation:
        """Exact ``V``, ``Q`` and ``A`` of ``policy`` by solving ``(I − γ P_π) V = r_π``.

        ``policy`` is ``[S, A]``, or a batch ``[..., S, A]`` (one linear solve each; ``V`` is then
        ``[..., S]``). Terminal states have value 0. With ``gamma = 1`` the policy must reach a
        terminal state with probability 1 from every state, or the system is singular (a
        ``ValueError``).
        """
        policy = self._check_policy(policy)
        live = (~self.terminal).to(torch.float64)
        r_sa = (self.P * self.R).sum(-1)  # [S, A]
        P_sa = self.P * live  # no value flows out of terminal states
        r_pi = (policy * r_sa).sum(-1) * live
        P_pi = torch.einsum("...sa,sat->...st", policy, P_sa) * live[:, None]
        system = torch.eye(self.n_states, dtype=torch.float64) - self.gamma * P_pi
        V = torch.linalg.solve_ex(system, r_pi).result
        if not torch.isfinite(V).all() or (torch.linalg.cond(system) > 1e12).any():
            raise ValueError(
                "policy: the Bellman system is singular (with gamma=1 every state must reach a terminal state)"
            )
        Q = (r_sa + self.gamma * torch.einsum("sat,...t->...sa", P_sa, V)) * live[:, None]
        return Evaluation(V, Q, (Q - V[..., None]) * live[:, None])

    def value_iteration(
        self, tol: float = 1e-10, max_iters: int = 100_000, allowed: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Optimal values and a greedy deterministic policy: ``V ← max_a Σ P (R + γ V)``.

        ``allowed`` (``[S, A]`` bool) restricts the max to those actions; a state with none
        allowed has value 0 (an offline dataset's in-sample optimum: the actions it takes).
        Stops when the largest change is below ``tol`` (needs ``gamma < 1`` or proper policies).
        """
        if allowed is not None:
            allowed = torch.as_tensor(allowed, dtype=torch.bool)
            if allowed.shape != (self.n_states, self.n_actions):
                raise ValueError(
                    f"allowed: expected a bool mask of shape {(self.n_states, self.n_actions)}, got {tuple(allowed.shape)}"
                )
        live = (~self.terminal).to(torch.float64)
        V = torch.zeros(self.n_states, dtype=torch.float64)
        for _ in range(max_iters):
            Q = (self.P * (self.R + self.gamma * V)).sum(-1) * live[:, None]
            if allowed is not None:
                Q = torch.where(allowed, Q, -torch.inf)
            V_new = Q.max(-1).values
            if allowed is not None:
                V_new = torch.where(allowed.any(-1), V_new, 0.0)
            if (V_new - V).abs().max() < tol:
                V = V_new
                break
            V = V_new
        policy = torch.nn.functional.one_hot(Q.argmax(-1), self.n_actions).to(torch.float64)
        return V, policy

    def sample_next_states(
        self, n: int, seed: int = 0, generator: torch.Generator | None = None
    ) -> Tensor:
        """A generative model: ``n`` independent next states for every (s, a), shaped ``[S, A, n]``,
        drawn with ``generator`` (default: a new one seeded with ``seed``)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        flat = self.P.reshape(-1, self.n_states)
        return torch.multinomial(flat, n, replacement=True, generator=g).reshape(
            self.n_states, self.n_actions, n
        )

    def sample_episodes(self, policy: Tensor, n: int, max_steps: int, seed: int = 0) -> Transitions:
        """Sample ``n`` episodes, all in parallel, truncating any still running after ``max_steps``.

        Returns the steps of episode 0, then episode 1, ... as one flat ``Transitions`` stream.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps: expected a positive int, got {max_steps!r}")
        policy = self._check_policy(policy)
        g = torch.Generator().manual_seed(seed)
        state = torch.multinomial(self.initial.expand(n, -1), 1, generator=g).squeeze(1)
        alive = ~self.terminal[state]
        cols = {k: [] for k in Transitions._fields}
        steps = []
        for t in range(max_steps):
            if not alive.any():
                break
            action = torch.multinomial(policy[state], 1, generator=g).squeeze(1)
            nxt = torch.multinomial(self.P[state, action], 1, generator=g).squeeze(1)
            term = self.terminal[nxt]
            for k, v in zip(
                Transitions._fields,
                (
                    state,
                    action,
                    self.R[state, action, nxt],
                    nxt,
                    term,
                    ~term & (t == max_steps - 1),
                ),
            ):
                cols[k].append(v)
            steps.append(alive.clone())
            alive = alive & ~term
            state = nxt
        live = torch.stack(steps, 1)  # [n, T]: which (episode, step) pairs happened
        out = [
            torch.stack(cols[k], 1)[live] for k in Transitions._fields
        ]  # row-major: episode by episode
        return Transitions(*out)


def chain(
    n_states: int = 7, slip: float = 0.1, gamma: float = 0.9, start: int | None = None
) -> TabularMDP:
    """A corridor: actions 0 = left, 1 = right; the move goes the other way with prob ``slip``.

    The left end reflects; the rightmost state is terminal and entering it pays +1 (every other
    step pays 0), so ``V(s)`` is the discounted chance-weighted time to the goal.
    Episodes start in ``start`` (default: state 0).
    """
    if not isinstance(n_states, int) or n_states < 2:
        raise ValueError(f"n_states: expected an int >= 2, got {n_states!r}")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip: expected a probability in [0, 1], got {slip}")
    S = n_states
    P = torch.zeros(S, 2, S, dtype=torch.float64)
    for s in range(S):
        left, right = max(s - 1, 0), min(s + 1, S - 1)
        P[s, 0, left] += 1 - slip
        P[s, 0, right] += slip
        P[s, 1, right] += 1 - slip
        P[s, 1, left] += slip
    R = torch.zeros(S, 2, S, dtype=torch.float64)
    R[:, :, S - 1] = 1.0
    R[S - 1] = 0.0
    initial = torch.zeros(S, dtype=torch.float64)
    initial[0 if start is None else start] = 1.0
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[S - 1] = True
    return TabularMDP(P, R, gamma, initial, terminal)


def reward_chain(n_states: int = 16, gamma: float = 0.9, seed: int = 0) -> TabularMDP:
    """A corridor where action 1 moves right and pays that step's own reward ``r(s) ~ U(0, 1)``
    (drawn with ``seed``), and action 0 stays put and pays 0; the rightmost state is terminal.
    Waiting only discounts, so always moving right is optimal, while
    ``Q*(s, right) = r(s) + γ V*(s + 1)`` is as irregular in ``s`` as the rewards: the kind of
    example of "Free from Bellman Completeness" (MBRCSL), where a simple policy has a value no
    small network represents. Episodes start uniformly over the non-terminal states."""
    if not isinstance(n_states, int) or n_states < 2:
        raise ValueError(f"n_states: expected an int >= 2, got {n_states!r}")
    S = n_states
    r = torch.rand(S, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    P = torch.zeros(S, 2, S, dtype=torch.float64)
    R = torch.zeros(S, 2, S, dtype=torch.float64)
    for s in range(S - 1):
        P[s, 0, s] = 1.0
        P[s, 1, s + 1] = 1.0
        R[s, 1, s + 1] = r[s]
    P[S - 1, :, S - 1] = 1.0
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[S - 1] = True
    initial = (~terminal).to(torch.float64) / (S - 1)
    return TabularMDP(P, R, gamma, initial, terminal)


def random_walk(n_states: int = 5) -> TabularMDP:
    """Sutton & Barto's random walk (Example 6.2 with 5 states, §7.1 with 19).

    States ``1..n`` are the walk, ``0`` and ``n+1`` are terminal; one action moves left or right
    with probability 1/2 each; episodes start in the middle; exiting right pays +1, left pays 0
    (the 19-state walk of §7.1 pays −1 on the left instead). γ = 1, so ``V(i) = i / (n+1)`` for 5
    states and ``(2i − n − 1) / (n + 1)`` for 19.
    """
    if not isinstance(n_states, int) or n_states < 1 or n_states % 2 == 0:
        raise ValueError(f"n_states: expected an odd positive int, got {n_states!r}")
    S = n_states + 2
    P = torch.zeros(S, 1, S, dtype=torch.float64)
    for s in range(1, S - 1):
        P[s, 0, s - 1] = P[s, 0, s + 1] = 0.5
    P[0, 0, 0] = P[S - 1, 0, S - 1] = 1.0
    R = torch.zeros(S, 1, S, dtype=torch.float64)
    R[S - 2, 0, S - 1] = 1.0
    if n_states == 19:
        R[1, 0, 0] = -1.0
    initial = torch.zeros(S, dtype=torch.float64)
    initial[S // 2] = 1.0
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[[0, S - 1]] = True
    return TabularMDP(P, R, 1.0, initial, terminal)


def gridworld(
    rows: int = 4,
    cols: int = 4,
    goal: tuple[int, int] | None = None,
    slip: float = 0.1,
    gamma: float = 0.95,
    step_reward: float = 0.0,
    goal_reward: float = 1.0,
    start: tuple[int, int] | None = (0, 0),
) -> TabularMDP:
    """A ``rows × cols`` grid; actions up, right, down, left; a move slips to a random other
    direction with probability ``slip``; walls keep the agent in place. Entering ``goal``
    (default: the far corner, terminal) pays ``goal_reward``, every other step ``step_reward``.
    State ``r * cols + c``. ``start=None`` starts uniformly over non-terminal cells.
    """
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise ValueError(f"rows, cols: expected a grid of at least 2 cells, got {rows}×{cols}")
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip: expected a probability in [0, 1], got {slip}")
    goal = goal if goal is not None else (rows - 1, cols - 1)
    S = rows * cols
    g = goal[0] * cols + goal[1]
    moves = [(-1, 0), (0, 1), (1, 0), (0, -1)]
    P = torch.zeros(S, 4, S, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            s = r * cols + c
            for a in range(4):
                for b, (dr, dc) in enumerate(moves):
                    p = 1 - slip if a == b else slip / 3
                    nr, nc = min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)
                    P[s, a, nr * cols + nc] += p
    P[g] = 0.0
    P[g, :, g] = 1.0
    R = torch.full((S, 4, S), step_reward, dtype=torch.float64)
    R[:, :, g] = goal_reward
    R[g] = 0.0
    terminal = torch.zeros(S, dtype=torch.bool)
    terminal[g] = True
    if start is None:
        initial = (~terminal).to(torch.float64) / (S - 1)
    else:
        initial = torch.zeros(S, dtype=torch.float64)
        initial[start[0] * cols + start[1]] = 1.0
    return TabularMDP(P, R, gamma, initial, terminal)


def cliff_world(
    rows: int = 4,
    cols: int = 8,
    slip: float = 0.05,
    gamma: float = 0.95,
    cliff_reward: float = -1.0,
    goal_reward: float = 1.0,
) -> TabularMDP:
    """Sutton & Barto's cliff walk with slippery moves: start bottom-left, goal bottom-right, the
    cells between them on the bottom row are a cliff (terminal, ``cliff_reward``). The short path
    runs along the edge; with more slip, the safe path one or two rows up is better. Moves as in
    ``gridworld`` (``slip`` to a random other direction)."""
    if rows < 2 or cols < 3:
        raise ValueError(f"rows, cols: expected at least 2×3, got {rows}×{cols}")
    base = gridworld(rows, cols, goal=(rows - 1, cols - 1), slip=slip, gamma=gamma,
                     goal_reward=goal_reward, start=(rows - 1, 0))  # fmt: skip
    P, R, terminal = base.P.clone(), base.R.clone(), base.terminal.clone()
    cliff = [(rows - 1) * cols + c for c in range(1, cols - 1)]
    R[:, :, cliff] = cliff_reward
    for s in cliff:
        P[s] = 0.0
        P[s, :, s] = 1.0
        R[s] = 0.0
        terminal[s] = True
    return TabularMDP(P, R, gamma, base.initial, terminal)


def river_swim(n_states: int = 6, gamma: float = 0.95, p_up: float = 0.35) -> TabularMDP:
    """RiverSwim (Strehl & Littman): swimming left (action 0) always works and pays 0.005 at the
    left bank; swimming right (action 1) against the current moves right with ``p_up``, stays
    with ``1 − p_up − 0.05`` and slips left with 0.05, and pays 1 at the right bank. The greedy
    learner settles for the small reward; the large one needs deep exploration. No terminal
    states; episodes start at state 0."""
    if not isinstance(n_states, int) or n_states < 3:
        raise ValueError(f"n_states: expected an int >= 3, got {n_states!r}")
    if not 0.0 < p_up < 0.95:
        raise ValueError(f"p_up: expected a probability in (0, 0.95), got {p_up}")
    S = n_states
    P = torch.zeros(S, 2, S, dtype=torch.float64)
    R = torch.zeros(S, 2, S, dtype=torch.float64)
    for s in range(S):
        P[s, 0, max(s - 1, 0)] = 1.0
        P[s, 1, min(s + 1, S - 1)] += p_up
        P[s, 1, s] += 1.0 - p_up - 0.05
        P[s, 1, max(s - 1, 0)] += 0.05
    R[0, 0, 0] = 0.005
    R[S - 1, 1, S - 1] = 1.0
    initial = torch.zeros(S, dtype=torch.float64)
    initial[0] = 1.0
    return TabularMDP(P, R, gamma, initial, torch.zeros(S, dtype=torch.bool))


def garnet(
    n_states: int, n_actions: int, branching: int, seed: int = 0, gamma: float = 0.9
) -> TabularMDP:
    """A random "Garnet" MDP (Archibald et al.): each (s, a) reaches ``branching`` random next
    states with probabilities from a uniform stick-breaking; rewards ~ N(0, 1) per (s, a).
    No terminal states; the initial distribution is uniform.
    """
    if not 1 <= branching <= n_states:
        raise ValueError(f"branching: expected an int in [1, n_states={n_states}], got {branching}")
    if n_actions < 1:
        raise ValueError(f"n_actions: expected a positive int, got {n_actions}")
    g = torch.Generator().manual_seed(seed)
    P = torch.zeros(n_states, n_actions, n_states, dtype=torch.float64)
    for s in range(n_states):
        for a in range(n_actions):
            nxt = torch.randperm(n_states, generator=g)[:branching]
            cuts = torch.sort(torch.rand(branching - 1, generator=g, dtype=torch.float64)).values
            probs = torch.diff(
                torch.cat(
                    [torch.zeros(1, dtype=torch.float64), cuts, torch.ones(1, dtype=torch.float64)]
                )
            )
            P[s, a, nxt] = probs
    R = torch.randn(n_states, n_actions, generator=g, dtype=torch.float64)
    initial = torch.full((n_states,), 1.0 / n_states, dtype=torch.float64)
    return TabularMDP(P, R, gamma, initial, torch.zeros(n_states, dtype=torch.bool))
