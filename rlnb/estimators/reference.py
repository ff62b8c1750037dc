"""Plain loops: the readable definitions the fast estimators are tested against.

One Python loop over time per function, walking backwards, time on the last axis, no other
cleverness. Same arguments and conventions as ``rlnb.estimators`` (without ``time_dim``).
Slow on purpose; ``benchmarks/estimators.py`` times them as "rlnb loop".
"""

from __future__ import annotations

import torch
from torch import Tensor


def _at(x, t):
    """x[..., t] for a tensor, x itself for a float."""
    return x[..., t] if isinstance(x, Tensor) else x


def _bcast(x, like: Tensor):
    return x.expand(like.shape) if isinstance(x, Tensor) else x


def discounted_returns_loop(rewards, next_values, terminated, truncated, gamma):
    gamma = _bcast(gamma, rewards)
    T = rewards.shape[-1]
    out = torch.empty_like(rewards)
    G = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        bootstrap = truncated[..., t] | (t == T - 1)
        nxt = torch.where(bootstrap, next_values[..., t], G)
        G = rewards[..., t] + _at(gamma, t) * nxt * ~terminated[..., t]
        out[..., t] = G
    return out


def n_step_returns_loop(rewards, next_values, terminated, truncated, gamma, n):
    """For every t separately: sum rewards until n steps, the episode's end or the window's end."""
    gamma = _bcast(gamma, rewards)
    T = rewards.shape[-1]
    out = torch.empty_like(rewards)
    for t in range(T):
        G = torch.zeros_like(rewards[..., 0])
        discount = torch.ones_like(rewards[..., 0])
        running = torch.ones_like(terminated[..., 0])
        for k in range(min(n, T - t)):
            i = t + k
            G = G + discount * rewards[..., i] * running
            discount = discount * _at(gamma, i)
            last = running & (terminated[..., i] | truncated[..., i] | (k == n - 1) | (i == T - 1))
            G = G + discount * next_values[..., i] * (last & ~terminated[..., i])
            running = running & ~last
        out[..., t] = G
    return out


def lambda_returns_loop(rewards, next_values, terminated, truncated, gamma, lmbda):
    gamma, lmbda = _bcast(gamma, rewards), _bcast(lmbda, rewards)
    T = rewards.shape[-1]
    out = torch.empty_like(rewards)
    G = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        g, lam = _at(gamma, t), _at(lmbda, t)
        bootstrap = truncated[..., t] | (t == T - 1)
        nxt = torch.where(bootstrap, next_values[..., t], G)
        G = (
            rewards[..., t]
            + g * ((1 - lam) * next_values[..., t] + lam * nxt) * ~terminated[..., t]
        )
        out[..., t] = G
    return out


def gae_loop(rewards, values, next_values, terminated, truncated, gamma, lmbda):
    gamma, lmbda = _bcast(gamma, rewards), _bcast(lmbda, rewards)
    T = rewards.shape[-1]
    adv = torch.empty_like(rewards)
    A = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        g, lam = _at(gamma, t), _at(lmbda, t)
        delta = rewards[..., t] + g * next_values[..., t] * ~terminated[..., t] - values[..., t]
        done = terminated[..., t] | truncated[..., t]
        A = delta + g * lam * A * ~done
        adv[..., t] = A
    return adv, adv + values


def vtrace_loop(
    rewards, values, next_values, terminated, truncated, target_logp, behavior_logp, gamma,
    lmbda=1.0, rho_clip=1.0, c_clip=1.0,
):  # fmt: skip
    gamma, lmbda = _bcast(gamma, rewards), _bcast(lmbda, rewards)
    T = rewards.shape[-1]
    ratio = (target_logp - behavior_logp).exp()
    vs = torch.empty_like(rewards)
    acc = torch.zeros_like(rewards[..., 0])  # v_{t+1} − V(s_{t+1})
    for t in reversed(range(T)):
        g, lam = _at(gamma, t), _at(lmbda, t)
        rho = ratio[..., t].clamp(max=rho_clip)
        c = lam * ratio[..., t].clamp(max=c_clip)
        delta = rho * (
            rewards[..., t] + g * next_values[..., t] * ~terminated[..., t] - values[..., t]
        )
        done = terminated[..., t] | truncated[..., t]
        acc = delta + g * c * acc * ~done
        vs[..., t] = values[..., t] + acc
    adv = torch.empty_like(rewards)
    for t in range(T):
        g = _at(gamma, t)
        v_next = (
            next_values[..., t]
            if t == T - 1
            else torch.where(truncated[..., t], next_values[..., t], vs[..., t + 1])
        )
        rho = ratio[..., t].clamp(max=rho_clip)
        adv[..., t] = rho * (rewards[..., t] + g * v_next * ~terminated[..., t] - values[..., t])
    return adv, vs


def evol_rl_rewards_loop(in_majority, similarity):
    """EVOL-RL's reward, one response at a time (``label_free.evol_rl_rewards``)."""
    N, n = in_majority.shape
    out = torch.empty(N, n, dtype=torch.float64)
    for g in range(N):
        novelty = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            side = [j for j in others if bool(in_majority[g, j]) == bool(in_majority[g, i])]
            peers = side if side else others
            s = [float(similarity[g, i, j].clamp(0, 1)) for j in peers]
            mean_sim = sum(s) / len(s) if s else 0.0
            max_sim = max((float(similarity[g, i, j].clamp(0, 1)) for j in others), default=0.0)
            novelty.append(1 - (0.5 * mean_sim + 0.5 * max_sim))
        for i in range(n):
            side = [j for j in range(n) if bool(in_majority[g, j]) == bool(in_majority[g, i])]
            lo, hi = min(novelty[j] for j in side), max(novelty[j] for j in side)
            if len(side) == 1:
                u = 1.0
            elif hi == lo:
                u = 0.5
            else:
                u = (novelty[i] - lo) / (hi - lo)
            out[g, i] = 0.5 + 0.5 * u if in_majority[g, i] else -1 + 0.5 * u
    return out
