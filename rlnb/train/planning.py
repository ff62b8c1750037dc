"""Tabular planners: value iteration with and without regularization, from a generative model,
from an offline dataset, and against a set of dynamics.

All work on a ``TabularMDP`` (``rlnb.envs.tabular``) in float64, batched over seeds where the
randomness is (the generative model's samples). Notation: ``r(s, a) = Σ_s' P R``, ``(P V)(s, a) =
Σ_s' P(s'|s, a) V(s')``, terminal states have value 0.

- ``soft_value_iteration``: ``Q ← r + γ P (τ log Σ_a exp(Q/τ))``, the entropy-regularized optimum.
- ``soft_policy_iteration``: exact soft evaluation of ``π`` and the improvement ``π ← softmax(Q^π/τ)``,
  the tabular form of soft policy iteration in "Soft Actor-Critic"; it reaches soft VI's fixed point.
- ``mdvi``: MDVI from "KL-Entropy-Regularized RL with a Generative Model is Minimax Optimal",
  with a fresh sample of next states per iteration; plain (sampled) VI and soft VI are its
  special cases.
- ``offline_value_iteration``: VI in the empirical MDP of a dataset, optionally pessimistic
  (a count-based penalty and no trust in unseen pairs).
- ``robust_value_iteration``: a KL-regularized robust backup (the adversary may tilt each
  transition row, paying ``β·KL`` for it), as in "Policy Regularized Distributionally Robust
  MDPs" and the f-divergence-regularized backups of "Robust Offline Reinforcement Learning with
  Linearly Structured f-Divergence Regularization".
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor

from rlnb.envs.tabular import TabularMDP


def expected_rewards(mdp: TabularMDP) -> Tensor:
    """``r(s, a) = Σ_s' P(s'|s, a) R(s, a, s')``, zero at terminal states, ``[S, A]``."""
    return (mdp.P * mdp.R).sum(-1) * (~mdp.terminal)[:, None]


def greedy(Q: Tensor) -> Tensor:
    """The deterministic policy ``argmax_a Q`` as one-hot rows (ties: the first action)."""
    return torch.nn.functional.one_hot(Q.argmax(-1), Q.shape[-1]).to(Q.dtype)


def soft_max(Q: Tensor, tau: float) -> Tensor:
    """``τ log Σ_a exp(Q/τ)`` over the last axis; ``max_a Q`` when ``tau == 0``."""
    return Q.max(-1).values if tau == 0 else tau * torch.logsumexp(Q / tau, dim=-1)


def soft_value_iteration(
    mdp: TabularMDP, tau: float, tol: float = 1e-10, max_iters: int = 100_000
) -> tuple[Tensor, Tensor, Tensor]:
    """Entropy-regularized optimal ``(Q, V, π)``: ``Q = r + γ P V``, ``V = τ log Σ_a exp(Q/τ)``,
    ``π = softmax(Q/τ)``. ``tau = 0`` is value iteration (a greedy ``π``)."""
    if tau < 0:
        raise ValueError(f"tau: expected ≥ 0, got {tau}")
    r, live = expected_rewards(mdp), (~mdp.terminal).to(torch.float64)
    V = torch.zeros(mdp.n_states, dtype=torch.float64)
    for _ in range(max_iters):
        Q = r + mdp.gamma * (mdp.P @ V) * live[:, None]
        V_new = soft_max(Q, tau) * live
        done = (V_new - V).abs().max() < tol
        V = V_new
        if done:
            break
    policy = greedy(Q) if tau == 0 else torch.softmax(Q / tau, dim=-1)
    return Q, V, policy


def soft_policy_evaluation(mdp: TabularMDP, policy: Tensor, tau: float) -> Tensor:
    """The soft ``Q^π`` of a policy, exactly: ``Q(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V(s')`` with
    ``V(s) = Σ_a π(a|s) (Q(s, a) − τ log π(a|s))``; ``V`` is the ordinary value of ``π`` for the
    reward ``r(s, a) − τ log π(a|s)``, found by one linear solve (``TabularMDP.evaluate``)."""
    if tau < 0:
        raise ValueError(f"tau: expected ≥ 0, got {tau}")
    policy = torch.as_tensor(policy, dtype=torch.float64)
    log_pi = torch.where(policy > 0, policy.clamp_min(1e-300).log(), 0.0)  # 0·log 0 = 0
    bonus = TabularMDP(
        mdp.P, mdp.R - tau * log_pi[:, :, None], mdp.gamma, mdp.initial, mdp.terminal
    )
    V = bonus.evaluate(policy).V
    return expected_rewards(mdp) + mdp.gamma * (mdp.P @ V) * (~mdp.terminal)[:, None]


def soft_policy_iteration(
    mdp: TabularMDP, tau: float, iterations: int = 50
) -> tuple[Tensor, Tensor]:
    """Soft policy iteration from the uniform policy: ``Q_k = Q^{π_k}`` (``soft_policy_evaluation``),
    ``π_{k+1} = softmax(Q_k/τ)``. Returns ``(Qs [K, S, A], π)``, every ``Q_k`` up to the first that
    no longer changes (``‖Q_k − Q_{k−1}‖∞ < 1e-12``) or ``iterations``."""
    if not tau > 0 or iterations < 1:
        raise ValueError(f"tau, iterations: expected > 0 and ≥ 1, got {tau}, {iterations}")
    policy, Qs = mdp.uniform_policy(), []
    for _ in range(iterations):
        Qs.append(soft_policy_evaluation(mdp, policy, tau))
        policy = torch.softmax(Qs[-1] / tau, dim=-1)
        if len(Qs) > 1 and (Qs[-1] - Qs[-2]).abs().max() < 1e-12:
            break
    return torch.stack(Qs), policy


class PlanningRun(NamedTuple):
    """``errors [B, K]``: ``‖V* − V^{π_k}‖∞`` at ``iterations [K]`` (after ``samples [K]``
    generative-model calls per seed); ``policy [B, S, A]`` the last one."""

    iterations: Tensor
    samples: Tensor
    errors: Tensor
    policy: Tensor


def mdvi_values(Q: Tensor, s_prev: Tensor, kl: float, entropy: float) -> tuple[Tensor, Tensor]:
    """MDVI's regularized next-state values, before the backup: with ``α = λ/(λ+κ)``,
    ``β = 1/(λ+κ)``, ``s = Q + α s_prev`` and ``w = M_β s − α M_β s_prev`` (``M_β f = (1/β) log
    Σ_a exp(β f)``; the max, and ``α = 0``, when ``λ = κ = 0``). Returns ``(w [..., S], s)``; the
    backup is ``Q_next = r + γ P w`` (see ``mdvi``)."""
    if kl < 0 or entropy < 0:
        raise ValueError(f"kl, entropy: expected ≥ 0, got {kl}, {entropy}")
    tau = kl + entropy  # M_β f = soft_max(f, 1/β)
    alpha = 0.0 if tau == 0 else kl / tau
    s = Q + alpha * s_prev
    return soft_max(s, tau) - alpha * soft_max(s_prev, tau), s


def mdvi(
    mdp: TabularMDP,
    kl: float,
    entropy: float,
    iterations: int,
    samples_per_iteration: int = 1,
    seeds=(0,),
    eval_at=None,
) -> PlanningRun:
    """MDVI with a generative model ("KL-Entropy-Regularized RL with a Generative Model is Minimax
    Optimal"). With ``λ = kl``, ``κ = entropy``, ``α = λ/(λ+κ)``, ``β = 1/(λ+κ)``::

        s_k = Q_k + α s_{k−1}                         (the implicit average: s_k = Σ_j α^{k−j} Q_j)
        w_k = M_β s_k − α M_β s_{k−1},  M_β f = (1/β) log Σ_a exp(β f)
        Q_{k+1} = r + γ P̂_k w_k,   π_k = softmax(β s_k)

    ``P̂_k`` averages ``samples_per_iteration`` fresh next states per ``(s, a)``. ``kl = entropy =
    0`` is sampled value iteration (``M`` = max, greedy ``π``); ``kl = 0`` is sampled soft VI with
    temperature ``entropy``. ``κ = 0 < λ`` gives ``α = 1``: ``π_k`` is a softmax of the *sum* of
    all past ``Q``s, so the sampling noise averages out. Batched over ``seeds``; the error of
    ``π_k`` is measured exactly at the iterations ``eval_at`` (default: ~30 log-spaced).
    """
    if kl < 0 or entropy < 0:
        raise ValueError(f"kl, entropy: expected ≥ 0, got {kl}, {entropy}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations: expected a positive int, got {iterations!r}")
    if not isinstance(samples_per_iteration, int) or samples_per_iteration < 1:
        raise ValueError(
            f"samples_per_iteration: expected a positive int, got {samples_per_iteration!r}"
        )
    seeds = list(seeds)
    if eval_at is None:
        eval_at = torch.unique(torch.logspace(0, torch.log10(torch.tensor(iterations)), 30).long())
    eval_at = set(int(k) for k in eval_at)
    hard = kl + entropy == 0
    policy_of = greedy if hard else (lambda s: torch.softmax(s / (kl + entropy), -1))

    S, A, n = mdp.n_states, mdp.n_actions, samples_per_iteration
    B = len(seeds)
    V_star = mdp.value_iteration()[0]
    r, live = expected_rewards(mdp), (~mdp.terminal).to(torch.float64)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    Q = torch.zeros(B, S, A, dtype=torch.float64)
    s_prev = torch.zeros_like(Q)
    rows = []
    for k in range(1, iterations + 1):
        w, s_k = mdvi_values(Q, s_prev, kl, entropy)
        w = w * live  # [B, S]
        nxt = torch.stack(
            [mdp.sample_next_states(n, generator=g) for g in generators]
        )  # [B, S, A, n]
        Pw = torch.gather(w, 1, nxt.reshape(B, -1)).reshape(B, S, A, n).mean(-1)
        Q, s_prev = r + mdp.gamma * Pw * live[:, None], s_k
        if k in eval_at:
            policy = policy_of(s_k)  # π_k, the policy MDVI acts with after k updates
            rows.append((k, (V_star - mdp.evaluate(policy).V).abs().amax(-1)))
    iters = torch.tensor([k for k, _ in rows])
    return PlanningRun(iters, iters * S * A * n, torch.stack([e for _, e in rows], 1), policy)


class OfflineData(NamedTuple):
    """Counts from a dataset of transitions: ``counts [S, A, S]``, ``reward_sum [S, A]``."""

    counts: Tensor
    reward_sum: Tensor

    @property
    def n(self) -> Tensor:
        return self.counts.sum(-1)


def offline_dataset(
    mdp: TabularMDP,
    n_per_state: int,
    coverage: float,
    behavior: Tensor | None = None,
    reward_noise: float = 1.0,
    seed: int = 0,
) -> OfflineData:
    """A logged dataset: ``n_per_state`` transitions from every non-terminal state, a fraction
    ``1 − coverage`` of them with the behavior action ``behavior[s]`` (default: the optimal one)
    and ``coverage`` spread uniformly over the other actions; rewards ``R + N(0, reward_noise²)``.
    Small ``coverage`` leaves the other actions with a handful of noisy samples or none."""
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage: expected a fraction in [0, 1], got {coverage}")
    if not isinstance(n_per_state, int) or n_per_state < 1:
        raise ValueError(f"n_per_state: expected a positive int, got {n_per_state!r}")
    g = torch.Generator().manual_seed(seed)
    S, A = mdp.n_states, mdp.n_actions
    if behavior is None:
        behavior = mdp.value_iteration()[1].argmax(-1)
    probs = torch.full((S, A), coverage / max(A - 1, 1), dtype=torch.float64)
    probs[torch.arange(S), behavior] = 1.0 - coverage if A > 1 else 1.0
    states = (~mdp.terminal).nonzero().squeeze(1).repeat_interleave(n_per_state)
    actions = torch.multinomial(probs[states], 1, generator=g).squeeze(1)
    nxt = torch.multinomial(mdp.P[states, actions], 1, generator=g).squeeze(1)
    noise = reward_noise * torch.randn(len(states), generator=g, dtype=torch.float64)
    ones = torch.ones(len(states), dtype=torch.float64)
    counts = torch.zeros(S, A, S, dtype=torch.float64).index_put_(
        (states, actions, nxt), ones, accumulate=True
    )
    reward_sum = torch.zeros(S, A, dtype=torch.float64).index_put_(
        (states, actions), mdp.R[states, actions, nxt] + noise, accumulate=True
    )
    return OfflineData(counts, reward_sum)


def empirical_model(data: OfflineData, terminal: Tensor | None = None):
    """``(P̂, r̂, live)`` of ``data``: unseen pairs have ``P̂ = 0`` (no future) and ``r̂ = 0``;
    ``live[s] = 0`` on ``terminal`` states (all ones when ``terminal`` is None)."""
    n = data.n.clamp(min=1)
    live = torch.ones(n.shape[0], dtype=torch.float64)
    if terminal is not None:
        live = (~terminal).to(torch.float64)
    return data.counts / n[..., None], data.reward_sum / n, live


def offline_value_iteration(
    data: OfflineData,
    gamma: float,
    penalty: float = 0.0,
    v_max: float = 1.0,
    terminal: Tensor | None = None,
    iters: int = 2000,
) -> tuple[Tensor, Tensor]:
    """VI in the empirical MDP ``(P̂, r̂)`` of ``data``; returns ``(Q, greedy policy)``.

    ``penalty = 0`` (naive): an unseen pair has ``r̂ = 0`` and no future (``Q = 0``).
    ``penalty = c > 0`` (pessimistic): ``Q = r̂ + γ P̂ V − c/√n(s, a)``, clipped below at
    ``−v_max``, and an unseen pair gets ``−v_max`` (the lower confidence bound of
    "Robust Offline Reinforcement Learning with Linearly Structured f-Divergence Regularization"
    and the pessimism literature it builds on, in its tabular form).
    """
    if penalty < 0:
        raise ValueError(f"penalty: expected ≥ 0, got {penalty}")
    n = data.n
    seen = n > 0
    P_hat, r_hat, live = empirical_model(data, terminal)
    bonus = penalty / n.clamp(min=1).sqrt()
    V = torch.zeros(n.shape[0], dtype=torch.float64)
    for _ in range(iters):
        Q = r_hat + gamma * P_hat @ V - bonus
        if penalty > 0:
            Q = torch.where(seen, Q.clamp(min=-v_max), torch.full_like(Q, -v_max))
        V = Q.max(-1).values * live
    return Q, greedy(Q)


def conservative_value_iteration(
    data: OfflineData,
    gamma: float,
    prior_actions: Tensor,
    terminal: Tensor | None = None,
    iters: int = 2000,
) -> tuple[Tensor, Tensor]:
    """B-Coder's conservative Bellman operator in the empirical MDP; returns ``(Q, greedy policy)``.

    ``Q(s, a) = r̂(s, a) + γ Σ_s' P̂(s'|s, a) Q(s', μ(s'))`` with ``μ(s') = prior_actions[s']``,
    the action a fixed pre-trained policy prefers ("B-Coder: Value-Based Deep Reinforcement
    Learning for Program Synthesis" takes the pre-trained LM's greedy token), instead of
    ``max_a' Q(s', a')``. Its fixed point is ``Q^μ`` — no maximisation over noisy estimates, so
    no maximisation bias — and acting greedily on it is one step of policy improvement over μ.
    """
    n_states = data.n.shape[0]
    if prior_actions.shape != (n_states,):
        raise ValueError(
            f"prior_actions: expected shape [{n_states}], got {tuple(prior_actions.shape)}"
        )
    P_hat, r_hat, live = empirical_model(data, terminal)
    V = torch.zeros(n_states, dtype=torch.float64)
    for _ in range(iters):
        Q = r_hat + gamma * P_hat @ V
        V = Q[torch.arange(n_states), prior_actions] * live
    return Q, greedy(Q)


def robust_value_iteration(
    mdp: TabularMDP, beta: float, tol: float = 1e-10, max_iters: int = 100_000
) -> tuple[Tensor, Tensor]:
    """KL-regularized robust VI: ``Q = r + γ · min_q {E_q V + β KL(q‖P)} = r − γβ log E_P e^{−V/β}``;
    returns ``(Q, greedy policy)``. Small ``β`` fears bad transitions more; ``β → ∞`` is plain VI.
    """
    if not beta > 0:
        raise ValueError(f"beta: expected > 0, got {beta}")
    r, live = expected_rewards(mdp), (~mdp.terminal).to(torch.float64)
    V = torch.zeros(mdp.n_states, dtype=torch.float64)
    log_P = mdp.P.log()
    for _ in range(max_iters):
        worst = -beta * torch.logsumexp(log_P - V / beta, dim=-1)  # [S, A]
        Q = r + mdp.gamma * worst * live[:, None]
        V_new = Q.max(-1).values * live
        done = (V_new - V).abs().max() < tol
        V = V_new
        if done:
            break
    return Q, greedy(Q)


def optimistic_actor_critic(
    mdp: TabularMDP,
    episodes: int,
    horizon: int,
    bonus: float,
    step_size: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A tabular actor-critic with an optimistic critic, in the spirit of "Actor-Critics Can
    Achieve Optimal Sample Efficiency" (optimism in the critic drives exploration).

    After each episode of ``horizon`` steps: the critic evaluates the current policy ``π`` exactly
    in the empirical model with an exploration bonus, ``Q = r̂ + b + γ P̂ V^π_Q`` with
    ``b = bonus/√n(s, a)`` (an unvisited pair loops on itself with reward ``bonus``, so it looks
    worth ``bonus/(1−γ)``); the actor takes a mirror-descent (natural policy gradient) step,
    ``logits += step_size · Q``. ``bonus = 0`` is the same method without optimism. Returns one row
    per episode: the episode's return and the true ``V^π`` of the initial distribution.
    """
    if bonus < 0 or step_size <= 0:
        raise ValueError(f"bonus, step_size: expected ≥ 0 and > 0, got {bonus}, {step_size}")
    if not isinstance(episodes, int) or episodes < 1 or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"episodes, horizon: expected positive ints, got {episodes}, {horizon}")
    g = torch.Generator().manual_seed(seed)
    S, A = mdp.n_states, mdp.n_actions
    counts = torch.zeros(S, A, S, dtype=torch.float64)
    reward_sum = torch.zeros(S, A, dtype=torch.float64)
    logits = torch.zeros(S, A, dtype=torch.float64)
    eye = torch.eye(S, dtype=torch.float64)
    rows = []
    for episode in range(episodes):
        policy = torch.softmax(logits, -1)
        state = int(torch.multinomial(mdp.initial, 1, generator=g))
        ret = 0.0
        for _ in range(horizon):
            action = int(torch.multinomial(policy[state], 1, generator=g))
            nxt = int(torch.multinomial(mdp.P[state, action], 1, generator=g))
            reward = float(mdp.R[state, action, nxt])
            counts[state, action, nxt] += 1
            reward_sum[state, action] += reward
            ret += reward
            if mdp.terminal[nxt]:
                break
            state = nxt
        n = counts.sum(-1)
        seen = (n > 0)[..., None]
        P_hat = torch.where(
            seen, counts / n.clamp(min=1)[..., None], eye[:, None, :].expand(S, A, S)
        )
        r_opt = reward_sum / n.clamp(min=1) + bonus / n.clamp(min=1).sqrt()
        P_pi = torch.einsum("sa,sat->st", policy, P_hat)
        V = torch.linalg.solve(eye - mdp.gamma * P_pi, (policy * r_opt).sum(-1))
        Q = r_opt + mdp.gamma * P_hat @ V
        logits = logits + step_size * Q
        value = float(mdp.initial @ mdp.evaluate(policy).V)
        rows.append({"episode": episode, "return": ret, "value": value})
    return pd.DataFrame(rows)
