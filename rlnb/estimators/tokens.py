"""Token-level advantages for language-model RL: estimators whose advantage differs from token to
token of a response (a reward-to-go, a per-token baseline, a whitening over tokens).

Token data is ``[B, L]`` with a ``mask`` of response tokens (1 = counts; in multi-turn rollouts
the tool's observation tokens inside a response are 0). Groups as in ``rlnb.estimators.group``
(``group_size`` or ``group_ids``). Every function returns ``[B, L]``, 0 off the mask. Degenerate
legal input gives a documented value, never NaN: see each function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlnb.estimators._checks import check_token_tensors
from rlnb.estimators.group import (
    _check_singleton,
    _group_index,
    _sort_within_groups,
    group_advantages,
    whiten,
)
from rlnb.estimators.returns import reverse_discounted_cumsum


def reward_to_go(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """``G_t = Σ_{t' ≥ t} γ^(n(t, t')) r_t'`` over the response tokens (``mask``), ``n`` the
    number of response tokens between them: tokens off the mask (a tool's observation inside a
    multi-turn response) neither add reward nor discount, and their ``G`` is 0. verl's
    REINFORCE++ return; with γ = 1, the ``(r · mask).flip.cumsum.flip`` of its ReMax and optimal
    token baseline estimators."""
    m = check_token_tensors(mask, rewards=rewards)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
        raise ValueError(f"gamma: expected a float in [0, 1], got {gamma!r}")
    decay = gamma * m + (1 - m)  # discount on response tokens, carry through the others
    return reverse_discounted_cumsum(rewards.to(m.dtype) * m, decay) * m


def reinforce_plus_plus(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """REINFORCE++ ("REINFORCE++"): the token-level reward-to-go ``reward_to_go(rewards, mask,
    γ)``, whitened over every response token of the batch (``whiten``). ``rewards [B, L]`` are per-token rewards with
    the KL penalty already folded in, ``r_t = score·[t = last] − β·KL_t`` (the registered estimator
    ``reinforce_plus_plus`` does the folding, options ``kl_coef``, ``kl``). No group baseline.
    verl's ``reinforce_plus_plus`` (with ``algorithm.use_kl_in_reward``)."""
    return whiten(reward_to_go(rewards, mask, gamma), mask)


def reinforce_plus_plus_baseline(
    scores: Tensor,
    mask: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    singleton: str = "zero",
) -> Tensor:
    """REINFORCE++-baseline ("REINFORCE++"), as verl computes it: ``r − mean_g`` on every token of
    the response, then whitened over every response *token* of the batch (``whiten``): a long
    response weighs more in the mean and the var. ``rlnb.estimators.group.reinforce_pp_baseline``
    (registered as ``reinforce_pp``) whitens over responses instead, one number per response."""
    m = check_token_tensors(mask)
    centered = group_advantages(
        scores, group_size=group_size, group_ids=group_ids, scale="none", singleton=singleton
    )
    return whiten(centered[:, None] * m, mask)


def _token_baseline_inputs(
    rewards, mask, old_logp, sum_pi_squared, is_weights, group_size, group_ids, singleton
):
    """The optimal token baselines' checks: the mask as float, the group index and count."""
    weights = {} if is_weights is None else {"is_weights": is_weights}
    m = check_token_tensors(
        mask, rewards=rewards, old_logp=old_logp, sum_pi_squared=sum_pi_squared, **weights
    )
    index, G = _group_index(rewards.sum(-1).to(m.dtype), group_size, group_ids)
    _check_singleton(singleton, G, len(index))
    return m, index, G


def _path_variance(old_logp, sum_pi_squared, m, is_weights):
    """``W_t = Σ_{j ≤ t} (1 − 2π_j + Σπ²_j)·ρ_j²`` over the response tokens: the cumulative
    squared norm of the score function ``‖∇ log π(y_j)‖²`` w.r.t. the logits."""
    w = 1 - 2 * old_logp.to(m.dtype).exp() + sum_pi_squared.to(m.dtype)
    if is_weights is not None:
        w = w * is_weights.to(m.dtype) ** 2
    return (w * m).cumsum(-1)


def _second_longest(lengths: Tensor, index: Tensor, G: int):
    """Per group: the longest row, whether it is strictly the longest, and the second length."""
    order, start, count = _sort_within_groups(lengths, index, G, descending=True)
    first, second = order[start], order[(start + 1).clamp(max=len(lengths) - 1)]
    unique = (count > 1) & (lengths[first] > lengths[second])
    return first, unique, lengths[second]


def _token_baseline_advantages(returns, W, index, G, count, m, handle_zero_tail, eps, singleton):
    """``A_t = G_t − B_t`` with ``B_t = Σ_group G_t W_t / (Σ_group W_t + eps)`` per position, the
    shared core of the two optimal token baseline estimators (``count``: the group's rows)."""
    L = returns.shape[1]
    num = returns.new_zeros(G, L).index_add_(0, index, returns * W * m)
    den = returns.new_zeros(G, L).index_add_(0, index, W * m) + eps
    baseline = (num / den)[index]
    if handle_zero_tail:  # the longest response's tail past the second longest has no baseline
        longest, unique, second = _second_longest(m.sum(-1), index, G)
        tail = unique[:, None] & (torch.arange(L, device=m.device)[None, :] >= second[:, None])
        zero = torch.zeros_like(baseline, dtype=torch.bool).index_put_((longest,), tail)
        baseline = torch.where(zero, torch.zeros_like(baseline), baseline)
    single = (count == 1)[index][:, None]
    own = returns if singleton == "zero" else torch.zeros_like(returns)
    return (returns - torch.where(single, own, baseline)) * m


def optimal_token_baseline(
    rewards: Tensor,
    mask: Tensor,
    old_logp: Tensor,
    sum_pi_squared: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    is_weights: Tensor | None = None,
    handle_zero_tail: bool = True,
    eps: float = 1e-8,
    singleton: str = "zero",
) -> Tensor:
    """The optimal token baseline, as verl's ``optimal_token_baseline`` computes it (verl cites no
    paper; it is the variance-minimising baseline ``b* = E[G‖∇log π‖²] / E[‖∇log π‖²]`` of
    "Variance Reduction Techniques for Gradient Estimates in Reinforcement Learning", per token
    and per group): per group and per position ``t``,

    ``B_t = Σ_i G_{i,t} W_{i,t} / (Σ_i W_{i,t} + eps)``, ``A_{i,t} = G_{i,t} − B_t``,

    ``G`` the reward-to-go (γ = 1), ``W_t = Σ_{j ≤ t} (1 − 2π(y_j) + Σ_a π(a)²)`` the cumulative
    squared norm of the score function (``old_logp`` = log π(y_j) of the sampling policy,
    ``sum_pi_squared`` = Σ_a π(a | x_<j)² from the sampling logits), times ``is_weights²`` (a
    truncated importance weight per token) when given: the baseline that minimises the
    gradient's variance weighs each response by how much gradient it carries. Positions are
    absolute columns (the multi-turn variant aligns response tokens instead). With
    ``handle_zero_tail``, where one response is strictly the longest of its group, its tokens past
    the second-longest length get baseline 0. A group of one: advantage 0 (``singleton="zero"``)
    or its reward-to-go (``"score"``, verl)."""
    m, index, G = _token_baseline_inputs(
        rewards, mask, old_logp, sum_pi_squared, is_weights, group_size, group_ids, singleton
    )
    count = torch.bincount(index, minlength=G)
    returns = reward_to_go(rewards, mask)
    W = _path_variance(old_logp, sum_pi_squared, m, is_weights)
    adv = _token_baseline_advantages(
        returns, W, index, G, count, m, handle_zero_tail, eps, singleton
    )
    return adv.to(rewards.dtype)


def multi_turn_optimal_token_baseline(
    rewards: Tensor,
    mask: Tensor,
    old_logp: Tensor,
    sum_pi_squared: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    is_weights: Tensor | None = None,
    handle_zero_tail: bool = True,
    eps: float = 1e-8,
    singleton: str = "zero",
) -> Tensor:
    """``optimal_token_baseline`` for multi-turn responses (verl's ``tir_optimal_token_baseline``):
    the same ``B_t = Σ_i G_{i,t} W_{i,t} / (Σ_i W_{i,t} + eps)``, with ``t`` counting *response
    tokens* (the k-th response token of each row is compared with the k-th of the others, the
    observation tokens between turns skipped) instead of absolute columns. Empty responses get 0
    and do not count in their group (a group left with one response is a group of one)."""
    m, index, G = _token_baseline_inputs(
        rewards, mask, old_logp, sum_pi_squared, is_weights, group_size, group_ids, singleton
    )
    on = m.bool()
    nonempty = on.any(-1)
    count = torch.bincount(index, weights=nonempty.to(m.dtype), minlength=G).long()
    # compress: the k-th response token of row b goes to column k
    rows = torch.arange(len(m), device=m.device)[:, None].expand_as(m)[on]
    cols = (on.long().cumsum(-1) - 1)[on]

    def compress(x):
        return torch.zeros_like(x).index_put_((rows, cols), x[on])

    returns = compress(reward_to_go(rewards, mask))
    W = compress(_path_variance(old_logp, sum_pi_squared, m, is_weights))
    mc = compress(m)
    adv_c = _token_baseline_advantages(
        returns, W, index, G, count, mc, handle_zero_tail, eps, singleton
    )
    return torch.zeros_like(m).masked_scatter(on, adv_c[rows, cols]).to(rewards.dtype)
