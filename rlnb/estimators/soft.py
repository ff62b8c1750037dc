"""Targets and losses of soft actor-critic, with a scalar and a Gaussian (distributional) critic.

Notation: ``α`` the temperature, ``log π(a'|s')`` the log-probability of the next action drawn
from the current policy, ``d = 1`` at a terminal transition (a time-limit truncation is *not*
terminal: its target bootstraps).

- ``soft_q_target``: ``y = r + γ (1 − d) (Q̄(s', a') − α log π(a'|s'))`` ("Soft Actor-Critic:
  Off-Policy Maximum Entropy Deep Reinforcement Learning with a Stochastic Actor").
- ``soft_actor_loss``: ``E[α log π(a|s) − Q(s, a)]`` with ``a ~ π`` reparameterised.
- ``temperature_loss``: ``E[−α (log π(a|s) + H̄)]``, which raises ``α`` while the policy's entropy
  is below the target ``H̄`` (SAC's automatic temperature, "Soft Actor-Critic Algorithms and
  Applications").
- ``gaussian_critic_loss``: the critic loss of "Distributional Soft Actor-Critic with Three
  Refinements" (DSAC-T) for a return distribution ``Z(s, a) ~ N(Q, σ²)``.
- ``soft_advantages``: ``f − α logsumexp(f/α)`` over the last axis, the dimensional soft
  advantages of "Learning from Suboptimal Data in Continuous Control via Auto-Regressive Soft
  Q-Network" (ARSQ).
- ``soft_value``: the Monte Carlo soft value ``α log mean_k exp(r_k/α)`` of sampled outcomes, the
  value that steers a diffusion model in "Derivative-Free Guidance in Continuous and Discrete
  Diffusion Models with Soft Value-Based Decoding" (SVDD).
"""

from __future__ import annotations

import torch
from torch import Tensor


def soft_value(rewards: Tensor, alpha: float, dim: int = -1) -> Tensor:
    """``v = α log (1/K) Σ_k exp(r_k / α)`` over ``dim`` (K outcomes ``r_k`` sampled from one
    state): the Monte Carlo estimate of the soft value ``α log E[exp(r/α)]``, computed with
    ``logsumexp`` so that a small ``α`` does not overflow. It lies between the mean (α → ∞) and
    the max (α → 0) of the rewards; one outcome (K = 1) gives that reward.

    >>> soft_value(torch.tensor([0.0, 1.0]), alpha=1.0)
    tensor(0.6201)
    """
    if not alpha > 0:
        raise ValueError(f"alpha: expected > 0, got {alpha}")
    if rewards.shape[dim] == 0:
        raise ValueError(
            f"rewards: expected at least one outcome along dim {dim}, got shape {tuple(rewards.shape)}"
        )
    K = rewards.shape[dim]
    return alpha * (torch.logsumexp(rewards / alpha, dim) - torch.log(torch.tensor(float(K))))


def soft_advantages(logits: Tensor, alpha: float) -> Tensor:
    """``A = f − α log Σ_k exp(f_k/α)`` over the last axis (the bins of one action dimension):
    advantages whose soft maximum ``α log Σ exp(A/α)`` is 0, so that ``π(k) ∝ exp(A_k/α)`` is
    ``softmax(A/α)`` and ``Q = V + Σ_d A_d`` has soft value ``V``. Equal logits give
    ``−α log K`` each.

    >>> soft_advantages(torch.tensor([0.0, 0.0]), alpha=1.0)
    tensor([-0.6931, -0.6931])
    """
    if not alpha > 0:
        raise ValueError(f"alpha: expected > 0, got {alpha}")
    return logits - alpha * torch.logsumexp(logits / alpha, -1, keepdim=True)


def soft_q_target(
    reward: Tensor,
    next_q: Tensor,
    next_log_prob: Tensor,
    terminated: Tensor,
    gamma: float,
    alpha: float | Tensor,
) -> Tensor:
    """``r + γ (1 − terminated) (next_q − α next_log_prob)``, elementwise, without gradient.

    ``terminated`` is 1 (or True) only where the episode really ended; a truncated step passes 0
    and bootstraps from ``next_q``.

    >>> soft_q_target(torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0]),
    ...               torch.tensor([-1.0, -1.0]), torch.tensor([0.0, 1.0]), 0.9, 0.5)
    tensor([10.4500,  1.0000])
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma: expected in [0, 1], got {gamma}")
    live = 1.0 - terminated.to(reward.dtype)
    return (reward + gamma * live * (next_q - alpha * next_log_prob)).detach()


def soft_actor_loss(log_prob: Tensor, q: Tensor, alpha: float | Tensor) -> Tensor:
    """``mean(α log π(a|s) − Q(s, a))`` for reparameterised actions ``a ~ π(·|s)``."""
    return (alpha * log_prob - q).mean()


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """``mean(−exp(log_alpha) (log π(a|s) + H̄))``; its gradient raises ``α`` when the entropy
    ``−E[log π]`` is below ``target_entropy`` and lowers it above."""
    return (-log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()


def gaussian_critic_loss(
    mean: Tensor,
    std: Tensor,
    target_mean: Tensor,
    target_sample: Tensor,
    mean_std: float | Tensor | None = None,
    *,
    bound: float = 3.0,
    eps: float = 0.1,
) -> Tensor:
    """A surrogate whose gradient is DSAC-T's critic gradient for ``Z ~ N(Q, σ²)``.

    With ``δ_q = y_q − Q``, ``δ_z = y_z − Q`` and ``σ̄`` the running mean of ``σ``::

        ∂L/∂Q = −ω · δ_q / (σ² + ε)
        ∂L/∂σ = −ω · (clip(δ_z, ±ξσ̄)² − σ²) / (σ³ + ε)

    averaged over the batch, with ``ω = σ̄² + ε`` and ``ξ = bound`` ("variance-based critic
    gradient adjustment"; ``ε = 0.1`` as in the paper's code, ``dsac_v2.py`` of
    Jingliang-Duan/DSAC-v2 up to its July 2025 change to Huber terms). ``target_mean`` is ``y_q``: the
    *expected* soft target ``r + γ (Q̄(s', a') − α log π)`` for the paper's "expected value
    substituting", or the sampled ``y_z`` itself to switch that refinement off. ``target_sample``
    is ``y_z = r + γ (Z̄(s', a') − α log π)`` with ``Z̄`` drawn from the target distribution.

    ``mean_std=None`` switches the gradient adjustment off: no clipping and ``ω = 1``; with
    ``target_mean = target_sample`` as well this is the gradient of the Gaussian negative
    log-likelihood ``(y_z − Q)²/(2σ²) + log σ`` (up to the ``ε`` in the denominators).
    """
    if (
        mean.shape != std.shape
        or target_mean.shape != mean.shape
        or target_sample.shape != mean.shape
    ):
        raise ValueError(
            "mean, std, target_mean, target_sample: expected one shape, got "
            f"{tuple(mean.shape)}, {tuple(std.shape)}, {tuple(target_mean.shape)}, {tuple(target_sample.shape)}"
        )
    if not bound > 0 or not eps > 0:
        raise ValueError(f"bound, eps: expected > 0, got {bound}, {eps}")
    q, s = mean.detach(), std.detach().clamp_min(0.0)
    delta_z = target_sample.detach() - q
    weight = 1.0
    if mean_std is not None:
        sigma_bar = torch.as_tensor(mean_std, dtype=q.dtype, device=q.device).detach()
        delta_z = delta_z.clamp(-bound * sigma_bar, bound * sigma_bar)
        weight = sigma_bar.square() + eps
    grad_mean = -(target_mean.detach() - q) / (s.square() + eps)
    grad_std = -(delta_z.square() - s.square()) / (s.pow(3) + eps)
    return weight * (grad_mean * mean + grad_std * std).mean()
