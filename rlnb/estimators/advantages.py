"""Advantage estimators: GAE and V-trace. Conventions as in ``rlnb.estimators.returns``.

Both return ``Advantages(advantages, returns)``: the policy-gradient signal and the value target.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rlnb.estimators._checks import check_inputs, from_time_last, to_time_last
from rlnb.estimators.returns import reverse_discounted_cumsum


class Advantages(NamedTuple):
    advantages: Tensor
    returns: Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma,
    lmbda,
    time_dim: int = -1,
    *,
    validate: bool = False,
) -> Advantages:
    """Generalized Advantage Estimation ("High-Dimensional Continuous Control Using Generalized
    Advantage Estimation", Schulman et al.).

    ``δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)``,
    ``A_t = δ_t + γ λ (1 − done_t) A_{t+1}``, ``returns = A + values``.
    λ = 0 gives the TD error, λ = 1 the Monte Carlo advantage (bootstrapped at truncation).
    Matches TorchRL's ``generalized_advantage_estimate`` (with ``done``, ``terminated``) and
    rlax's ``truncated_generalized_advantage_estimation`` within one episode.

    >>> f = torch.zeros(2, dtype=torch.bool)
    >>> gae(torch.ones(2), torch.zeros(2), torch.ones(2), f, f, 1.0, 0.5).advantages
    tensor([3., 2.])
    """
    gamma, lmbda = check_inputs(
        validate,
        gamma,
        lmbda,
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    r, v, nv, term, trunc, g, lam = to_time_last(
        time_dim, rewards, values, next_values, terminated, truncated, gamma, lmbda
    )
    # in place on fresh tensors: fewer passes over memory (benchmarks/estimators.py)
    delta = torch.where(term, 0.0, nv).mul_(g).add_(r).sub_(v)
    decay = torch.where(term | trunc, 0.0, torch.as_tensor(g * lam, dtype=r.dtype, device=r.device))
    adv = reverse_discounted_cumsum(delta, decay)
    out = (adv, adv + v)
    return Advantages(*(from_time_last(x, time_dim, rewards.dtype) for x in out))


def vtrace(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    target_logp: Tensor,
    behavior_logp: Tensor,
    gamma,
    lmbda=1.0,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
    time_dim: int = -1,
    *,
    validate: bool = False,
) -> Advantages:
    """V-trace ("IMPALA: Scalable Distributed Deep-RL with Importance Weighted Actor-Learner
    Architectures", Espeholt et al.).

    ``ρ_t = min(ρ̄, π/μ)``, ``c_t = λ min(c̄, π/μ)``, ``δ_t = ρ_t (r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t))``,
    ``v_t − V(s_t) = δ_t + γ (1 − done_t) c_t (v_{t+1} − V(s_{t+1}))``  → ``returns = v``;
    ``advantages_t = ρ_t (r_t + γ (1 − terminated_t) v'_{t+1} − V(s_t))`` with ``v'_{t+1} = v_{t+1}``
    inside an episode and ``next_values_t`` at a truncated step or the window's end.
    ``rho_clip = c_clip = inf`` and on-policy data give the λ-return. Matches TorchRL's
    ``vtrace_advantage_estimate`` (λ = 1) and rlax's ``vtrace_td_error_and_advantage``.

    >>> f = torch.zeros(2, dtype=torch.bool); z = torch.zeros(2)
    >>> vtrace(torch.ones(2), z, z, f, f, z, z, 1.0).returns
    tensor([2., 1.])
    """
    gamma, lmbda = check_inputs(
        validate,
        gamma,
        lmbda,
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
        target_logp=target_logp,
        behavior_logp=behavior_logp,
    )
    for name, clip in (("rho_clip", rho_clip), ("c_clip", c_clip)):
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
            raise ValueError(
                f"{name}: expected a positive float (inf for no clipping), got {clip!r}"
            )
    r, v, nv, term, trunc, tlp, blp, g, lam = to_time_last(
        time_dim,
        rewards,
        values,
        next_values,
        terminated,
        truncated,
        target_logp,
        behavior_logp,
        gamma,
        lmbda,
    )
    ratio = (tlp - blp).exp()
    rho = ratio.clamp(max=rho_clip)
    c = lam * ratio.clamp(max=c_clip)
    live, cont = (~term).to(r.dtype), (~(term | trunc)).to(r.dtype)
    delta = rho * (r + g * live * nv - v)
    vs = v + reverse_discounted_cumsum(delta, g * c * cont)
    vs_next = torch.where(trunc, nv, torch.cat([vs[..., 1:], nv[..., -1:]], -1))
    adv = rho * (r + g * live * vs_next - v)
    return Advantages(*(from_time_last(x, time_dim, rewards.dtype) for x in (adv, vs)))


def last_token(response_mask: Tensor) -> Tensor:
    """``[B, T]`` bool: True at each row's last response token (column 0 for an empty row)."""
    last = response_mask.long().cumsum(1).argmax(1)  # the first index where the count peaks
    hit = torch.zeros(response_mask.shape, dtype=torch.bool, device=response_mask.device)
    return hit.scatter(1, last[:, None], True)


def token_gae(scores: Tensor, values: Tensor, response_mask: Tensor, lmbda: float) -> Advantages:
    """GAE over the ``[B, T]`` tokens of language-model responses with an outcome reward: γ = 1,
    the score ``[B]`` is the reward of each row's last response token, which is terminal (nothing
    bootstraps past the end); ``values[b, t] = V(x_<t)``, read only on the mask.
    ``A_t = δ_t + λ A_{t+1}``, ``δ_t = r_t + V_{t+1} − V_t``; ``returns = A + V``, both 0 off the mask.

    >>> token_gae(torch.tensor([1.]), torch.tensor([[0., .5, .5]]), torch.ones(1, 3), 1.0).advantages
    tensor([[1.0000, 0.5000, 0.5000]])
    """
    mask = response_mask.to(values.dtype)
    terminated = last_token(response_mask)
    rewards = terminated.to(values.dtype) * scores.to(values.dtype)[:, None]
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1) * mask
    out = gae(
        rewards, values * mask, next_values, terminated, torch.zeros_like(terminated), 1.0, lmbda
    )
    return Advantages(out.advantages * mask, out.returns * mask)
