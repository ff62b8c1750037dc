"""One rollout per prompt: a baseline tracked across steps instead of computed from a group.

MSSR ("Stable and Efficient Single-Rollout RL for Multimodal Reasoning") samples a single response
per prompt. Its baseline is a per-prompt Beta posterior over the prompt's success rate, carried
from step to step with a forgetting factor ρ; the advantage ``r − E[Beta]`` is normalised over the
batch; and an entropy-based shaping term keeps the update from collapsing the policy's entropy.
The functions below are the pieces, each a formula; ``rlnb.estimators.registry`` registers the
advantage as ``single_rollout`` (no shaping: the paper's MVSR baseline) and ``mssr``.
Conventions follow the authors' code (github.com/ruiiu/MSSR, ``core_algos.py``): α₀ = N₀·v₀,
β₀ = N₀·(1 − v₀) with N₀ = 8; the baseline is read *before* the prompt's own outcome updates it;
batch normalisation with the biased variance floored at ``eps``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def beta_prior(success_rates: Tensor, strength: float = 8.0) -> tuple[Tensor, Tensor]:
    """The tracker's start: ``α₀ = N₀ v₀``, ``β₀ = N₀ (1 − v₀)`` from initial success-rate estimates
    ``v₀ ∈ [0, 1]`` (``[P]``), ``N₀ = strength`` pseudo-counts (MSSR: ``1 / (1 − ρ_min) = 8``)."""
    if not strength > 0:
        raise ValueError(f"strength: expected a positive pseudo-count, got {strength!r}")
    if ((success_rates < 0) | (success_rates > 1)).any() or success_rates.isnan().any():
        raise ValueError("success_rates: expected values in [0, 1]")
    v = success_rates.double() if not success_rates.is_floating_point() else success_rates
    return strength * v, strength * (1 - v)


def beta_tracker_update(
    alpha: Tensor, beta: Tensor, prompts: Tensor, rewards: Tensor, rho: float
) -> tuple[Tensor, Tensor]:
    """One step of MSSR's per-prompt Beta tracker, for the prompts sampled this step:
    ``α_x ← ρ α_x + r``, ``β_x ← ρ β_x + (1 − r)``; the other prompts keep theirs. ``alpha``,
    ``beta`` ``[P]``; ``prompts`` ``[B]`` distinct indices; ``rewards`` ``[B]`` in [0, 1];
    ``rho ∈ (0, 1]`` forgets old outcomes (ρ = 1: a plain posterior). Returns new tensors."""
    if alpha.shape != beta.shape or alpha.ndim != 1:
        raise ValueError(
            f"alpha, beta: expected two [P] tensors, got {tuple(alpha.shape)}, {tuple(beta.shape)}"
        )
    if prompts.shape != rewards.shape or prompts.ndim != 1:
        raise ValueError(
            f"prompts, rewards: expected two [B] tensors, got {tuple(prompts.shape)}, "
            f"{tuple(rewards.shape)}"
        )
    if len(torch.unique(prompts)) != len(prompts):
        raise ValueError("prompts: expected each prompt at most once per update")
    if not 0 < rho <= 1:
        raise ValueError(f"rho: expected a forgetting factor in (0, 1], got {rho!r}")
    if ((rewards < 0) | (rewards > 1)).any():
        raise ValueError("rewards: expected success indicators in [0, 1]")
    r = rewards.to(alpha.dtype)
    alpha, beta = alpha.clone(), beta.clone()
    alpha[prompts] = rho * alpha[prompts] + r
    beta[prompts] = rho * beta[prompts] + (1 - r)
    return alpha, beta


def beta_mean(alpha: Tensor, beta: Tensor) -> Tensor:
    """The tracked baseline ``b(x) = E[Beta(α, β)] = α / (α + β)`` (0.5 where α = β = 0)."""
    total = alpha + beta
    return torch.where(total > 0, alpha / total.clamp(min=torch.finfo(total.dtype).tiny), 0.5)


def single_rollout_advantages(scores: Tensor, baseline: Tensor, eps: float = 1e-6) -> Tensor:
    """``A = (a − mean(a)) / sqrt(max(var(a), eps))`` with ``a = r − b(x)``: one response per
    prompt, its tracked baseline ``b`` subtracted, normalised over the batch (biased variance, as
    in MSSR's code). ``[B]`` in, ``[B]`` out. Degenerate: a batch whose ``a`` are all equal (one
    response included) gets exactly 0."""
    if scores.shape != baseline.shape or scores.ndim != 1:
        raise ValueError(
            f"baseline: expected the shape of scores {tuple(scores.shape)}, got "
            f"{tuple(baseline.shape)}"
        )
    if not eps > 0:
        raise ValueError(f"eps: expected a positive variance floor, got {eps!r}")
    a = scores - baseline.to(scores.dtype)
    centred = a - a.mean()
    if a.detach().max() == a.detach().min():
        return torch.zeros_like(a)
    return centred / (centred**2).mean().clamp(min=eps).sqrt()


def entropy_advantage_shaping(
    advantages: Tensor, entropy: Tensor, alpha: float = 0.4, kappa: float = 2.0
) -> Tensor:
    """``A + min(α·sg(H), |A| / κ)`` ("Reasoning with Exploration: An Entropy Perspective", used by
    MSSR): a non-negative bonus that grows with the entropy ``H`` of the sampled token (MSSR's code:
    ``−p log p`` of that token under the sampling policy) and is capped at ``|A|/κ``, so for κ > 1
    it never flips the advantage's sign. Shapes broadcast; ``α ≥ 0``, ``κ > 0``."""
    if not alpha >= 0:
        raise ValueError(f"alpha: expected a non-negative coefficient, got {alpha!r}")
    if not kappa > 0:
        raise ValueError(f"kappa: expected a positive cap divisor, got {kappa!r}")
    return advantages + torch.minimum(alpha * entropy.detach(), advantages.abs() / kappa)
