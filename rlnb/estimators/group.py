"""Group baselines for outcome rewards: one scalar score per sampled response, responses grouped
by prompt. Value-free RL for language models replaces the critic by a baseline computed from the
group ("DeepSeekMath" GRPO and its descendants).

Groups are given either as ``group_size`` (contiguous blocks of that size) or as ``group_ids``
(an integer tensor ``[B]``; groups may differ in size). Every function returns one advantage per
response, ``[B]``; ``broadcast_to_tokens`` spreads them over a response mask.

Documented degenerate cases (never NaN, in value or gradient, for any ``eps ≥ 0``):

* a group whose scores are all exactly equal gets advantage exactly 0 under every baseline
  computed from the group (``mean``, ``loo``, ``weighted_mean``, ``quantile``), whatever the
  scale. Equality is tested exactly (max = min), not through the std: in floating point the std of
  eight copies of 0.35 is a rounding residue (~1e-8), not 0, and dividing the residue of
  ``r − mean`` by it gave NeMo RL advantages of ±1 where 0 was meant (and, with a leave-one-out
  std, ±1e6 and 4000× spikes: NVIDIA-NeMo/RL #1518, #4161). rlnb's scales are the std of the
  whole group, never of the leave-one-out set, so ``[1, 0, 0, 0]`` under ``baseline="loo"``,
  ``scale="group"`` is ``[2, −⅔, −⅔, −⅔]`` (÷ (0.5 + eps)).
* a group of one: ``singleton="zero"`` (default) gives advantage 0 (a lone sample carries no
  relative signal); ``singleton="score"`` gives its raw score (baseline 0, scale 1), as verl's
  group estimators do. A batch made only of singleton groups warns: with ``"zero"`` every
  advantage is 0 and nothing is learned.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from rlnb.estimators._checks import check_token_tensors, compute_dtype

BASELINES = ("mean", "loo", "weighted_mean", "quantile", "reference", "none")
SCALES = ("group", "batch", "mean", "none")
SINGLETONS = ("zero", "score")


def _group_index(
    scores: Tensor, group_size: int | None, group_ids: Tensor | None
) -> tuple[Tensor, int]:
    """Contiguous group index ``[B]`` in ``0..G-1`` and the number of groups ``G``."""
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores: expected a 1-d tensor [B] of per-response scores, got {shape}")
    if not scores.is_floating_point():
        raise ValueError(f"scores: expected a floating-point tensor, got dtype {scores.dtype}")
    B = scores.shape[0]
    if (group_size is None) == (group_ids is None):
        raise ValueError("group_size, group_ids: expected exactly one of them")
    if group_size is not None:
        if (
            isinstance(group_size, bool)
            or not isinstance(group_size, int)
            or group_size < 1
            or B % group_size
        ):
            raise ValueError(
                f"group_size: expected a positive int dividing the batch size {B}, got {group_size!r}"
            )
        return torch.arange(B, device=scores.device) // group_size, B // group_size
    if not isinstance(group_ids, Tensor) or group_ids.shape != (B,):
        shape = (
            tuple(group_ids.shape) if isinstance(group_ids, Tensor) else type(group_ids).__name__
        )
        raise ValueError(f"group_ids: expected an integer tensor of shape ({B},), got {shape}")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids: expected integer ids, got dtype {group_ids.dtype}")
    uniq, index = torch.unique(group_ids, return_inverse=True)
    return index, len(uniq)


def _group_mean_std(r: Tensor, index: Tensor, n_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group count, mean and unbiased std ``[G]``; a group of one has std 1 (no rescaling)
    and a group of equal scores std exactly 0 (see ``_flat``)."""
    count = torch.bincount(index, minlength=n_groups).to(r.dtype)
    mean = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, index, r) / count
    sq = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(
        0, index, (r - mean[index]) ** 2
    )
    flat = _flat(r, index, n_groups)
    var = torch.where(flat, torch.ones_like(sq), sq / (count - 1).clamp(min=1))  # sqrt'(0) = inf
    std = torch.where(flat, torch.zeros_like(var), var.sqrt())
    return count, mean, torch.where(count > 1, std, torch.ones_like(std))


def _flat(r: Tensor, index: Tensor, n_groups: int) -> Tensor:
    """``[G]`` bool: the group's scores are all exactly equal (max = min; a group of one too)."""
    hi = r.new_full((n_groups,), -torch.inf).scatter_reduce(0, index, r.detach(), "amax")
    lo = r.new_full((n_groups,), torch.inf).scatter_reduce(0, index, r.detach(), "amin")
    return hi == lo


def _check_singleton(singleton: str, n_groups: int, batch: int) -> None:
    if singleton not in SINGLETONS:
        raise ValueError(f"singleton: expected one of {SINGLETONS}, got {singleton!r}")
    if n_groups == batch:
        what = "every advantage is 0" if singleton == "zero" else "each advantage is its raw score"
        warnings.warn(
            f"every group is a singleton (one response per prompt): {what} "
            f"(singleton={singleton!r}); sample several responses per prompt for a group baseline",
            stacklevel=3,
        )


def _sort_within_groups(r: Tensor, index: Tensor, n_groups: int, descending: bool = False):
    """Positions ordered by group, then by score (stable: ties keep their order); and each
    group's ``start`` in that order and its ``count``."""
    order = torch.argsort(-r if descending else r, stable=True)
    order = order[torch.argsort(index[order], stable=True)]
    count = torch.bincount(index, minlength=n_groups)
    return order, torch.cumsum(count, 0) - count, count


def group_quantile(scores: Tensor, index: Tensor, n_groups: int, q: float) -> Tensor:
    """Per-group empirical q-quantile ``inf{x : F̂(x) ≥ q}`` — the order statistic
    ``r_(⌈q·n⌉)`` of the group's ``n`` sorted scores (no interpolation). Returns ``[G]``."""
    order, start, count = _sort_within_groups(scores, index, n_groups)
    k = torch.clamp(torch.ceil(q * count.to(torch.float64)).long() - 1, min=0)
    return scores[order[start + k]]


def group_advantages(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    baseline: str = "mean",
    scale: str = "group",
    quantile: float | None = None,
    reference: Tensor | None = None,
    weights: Tensor | None = None,
    eps: float = 1e-6,
    singleton: str = "zero",
    validate: bool = False,
) -> Tensor:
    """``A_i = (r_i − b_i) / s_i``: one advantage per response from its group.

    Baselines ``b_i``: ``mean`` (group mean), ``loo`` (mean of the *other* responses of the group,
    RLOO), ``weighted_mean`` (``Σ w_j r_j / Σ w_j`` over the group with ``weights [B]``, OPO's
    length weights; the plain mean where the weights sum to 0), ``quantile`` (the group's empirical
    ``quantile``, see ``group_quantile``), ``reference`` (given values: per response ``[B]``, or
    per group ``[G]`` with groups numbered in the order of ``torch.unique(group_ids)``; read per
    response when ``B == G``), ``none`` (0).
    Scales ``s_i``: ``group`` (the group's unbiased std + ``eps``), ``batch`` (unbiased std of all
    scores in the batch + ``eps``, TRL's ``scale_rewards="batch"``), ``mean`` (the group mean, and
    advantage 0 where it is 0: MaxRL), ``none`` (1). ``eps``: verl uses 1e-6, TRL 1e-4; 0 is
    allowed. ``singleton``: what a group of one gets (module docstring). ``validate=True`` rejects
    NaN/inf scores (a host sync).

    >>> group_advantages(torch.tensor([1., 0., 0., 0.]), group_size=4, scale="none")
    tensor([ 0.7500, -0.2500, -0.2500, -0.2500])
    """
    index, G = _group_index(scores, group_size, group_ids)
    if validate and not torch.isfinite(scores).all():
        raise ValueError("scores: contains NaN or inf")
    if baseline not in BASELINES:
        raise ValueError(f"baseline: expected one of {BASELINES}, got {baseline!r}")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps: expected a non-negative float, got {eps!r}")
    relative = baseline in ("mean", "loo", "weighted_mean", "quantile")  # b from the group itself
    if relative:
        _check_singleton(singleton, G, len(scores))
    r = scores.to(compute_dtype(scores))
    count, mean, std = _group_mean_std(r, index, G)
    equal, single = (std == 0)[index], (count == 1)[index]  # equal: ≥ 2 scores, all the same

    if baseline in ("mean", "loo"):
        b = mean[index]  # a group of one: its own score
        if baseline == "loo":
            n = count[index]
            b = torch.where(n > 1, (mean[index] * n - r) / (n - 1).clamp(min=1), r)
    elif baseline == "weighted_mean":
        if not isinstance(weights, Tensor) or weights.shape != r.shape:
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else weights
            raise ValueError(f"weights: expected a tensor of shape ({len(r)},), got {shape}")
        w = weights.to(r.dtype)
        num = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, index, w * r)
        den = torch.zeros(G, dtype=r.dtype, device=r.device).index_add_(0, index, w)
        b = torch.where(den != 0, num / torch.where(den != 0, den, 1), mean)[index]
    elif baseline == "quantile":
        if quantile is None or not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile: expected a float in (0, 1), got {quantile!r}")
        b = group_quantile(r, index, G, quantile)[index]
    elif baseline == "reference":
        if not isinstance(reference, Tensor) or reference.shape not in ((len(r),), (G,)):
            shape = tuple(reference.shape) if isinstance(reference, Tensor) else reference
            raise ValueError(
                f"reference: expected a tensor of shape ({len(r)},) or ({G},), got {shape}"
            )
        ref = reference.to(r.dtype)
        b = ref if ref.shape[0] == len(r) else ref[index]
    else:
        b = torch.zeros_like(r)
    adv = r - b
    if relative:  # equal scores: exactly 0, not the rounding residue of r − mean
        adv = torch.where(equal, torch.zeros_like(adv), adv)
        if singleton == "score":
            adv = torch.where(single, r, adv)

    one = torch.ones_like(r)
    if scale == "group":  # std 0 only on equal scores, whose advantage is 0 already
        adv = adv / torch.where(equal, one, std[index] + eps)
    elif scale == "batch" and len(r) > 1:  # (one score: its advantage is 0 or itself)
        batch_equal = r.detach().max() == r.detach().min()
        adv = adv / torch.where(batch_equal, one[0], r.std() + eps)
    elif scale == "mean":
        m = torch.where(single, one, mean[index])
        adv = torch.where(m != 0, adv / torch.where(m != 0, m, one), torch.zeros_like(adv))
    return adv.to(scores.dtype)


def grpo(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-6,
    singleton: str = "zero",
) -> Tensor:
    """GRPO ("DeepSeekMath"): ``(r − mean_g) / (std_g + eps)``, unbiased std.

    ``eps=1e-6`` reproduces verl's ``grpo`` estimator; ``eps=1e-4`` TRL's
    ``scale_rewards="group"`` (DESIGN §7b: ``[1,0,0,0] → 1.499997, −0.499999 ×3``).
    """
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, eps=eps, singleton=singleton
    )


def dr_grpo(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    singleton: str = "zero",
) -> Tensor:
    """Dr. GRPO ("Understanding R1-Zero-Like Training"): ``r − mean_g``, no std (removes the
    difficulty bias). verl: ``grpo`` with ``norm_adv_by_std_in_grpo=False``; TRL: ``scale_rewards="none"``."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, scale="none", singleton=singleton
    )


def rloo(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    singleton: str = "zero",
) -> Tensor:
    """RLOO ("Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
    Feedback in LLMs"): ``r_i − mean of the others = n/(n−1) · (r_i − mean_g)``. verl's ``rloo``."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, baseline="loo", scale="none",
        singleton=singleton,
    )  # fmt: skip


def reinforce_pp_baseline(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-8,
    singleton: str = "zero",
) -> Tensor:
    """REINFORCE++-baseline ("REINFORCE++"): ``r − mean_g``, then whitened over the batch's
    responses, ``(a − mean(a)) / sqrt(var(a) + eps)`` (``whiten`` with one token per response:
    unbiased var over the B responses; 0 when every ``a`` is equal). verl's ``reinforce_plus_plus_baseline`` (rlnb's ``rlnb.estimators.tokens.
    reinforce_plus_plus_baseline``) whitens over tokens instead: longer responses weigh more, and
    even with equal lengths L its unbiased var counts B·L tokens, a factor L(B−1)/(BL−1) on var."""
    a = group_advantages(
        scores, group_size=group_size, group_ids=group_ids, scale="none", singleton=singleton
    )
    return whiten(a[:, None], torch.ones_like(a[:, None]), eps)[:, 0]


def lite_ppo(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-4,
    singleton: str = "zero",
) -> Tensor:
    """Lite PPO ("Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning"): group-mean
    baseline, batch-level std: ``(r − mean_g) / (std_batch + eps)``. TRL's ``scale_rewards="batch"``
    (eps 1e-4; DESIGN §7b: ``1.402859, −0.46762``)."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, scale="batch", eps=eps,
        singleton=singleton,
    )  # fmt: skip


def qae(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    k: float = 0.4,
    singleton: str = "zero",
) -> Tensor:
    """Quantile Advantage Estimation ("Quantile Advantage Estimation for Entropy-Safe Reasoning"):
    ``r − Q_k(group)``, no std, with ``Q_k`` the empirical k-quantile ``inf{x : F̂(x) ≥ k}``
    (order statistic ``r_(⌈k·n⌉)``, no interpolation). With binary rewards and success rate ``p``:
    ``p ≤ 1 − k`` → baseline 0, only successes are reinforced (hard prompts); ``p > 1 − k`` →
    baseline 1, only failures are penalised (easy prompts). Linear interpolation would give
    baselines strictly between 0 and 1, which is neither regime of the paper.

    >>> qae(torch.tensor([1., 0., 0., 0., 1., 1., 0., 1.]), group_size=4, k=0.4)
    tensor([ 1.,  0.,  0.,  0.,  0.,  0., -1.,  0.])
    """
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, baseline="quantile", scale="none",
        quantile=k, singleton=singleton,
    )  # fmt: skip


def opo(
    scores: Tensor,
    lengths: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    singleton: str = "zero",
) -> Tensor:
    """OPO ("On-Policy RL with Optimal Reward Baseline"): ``r_i − Σ_j |o_j| r_j / Σ_j |o_j|``, the
    group's length-weighted mean reward, with ``lengths [B]`` the response lengths ``|o_j|`` (the
    baseline that minimises the gradient variance when the gradient norm grows with length). No
    std. verl's ``opo``."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, baseline="weighted_mean",
        weights=lengths, scale="none", singleton=singleton,
    )  # fmt: skip


def gpg(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    singleton: str = "zero",
) -> Tensor:
    """GPG ("GPG: A Simple and Strong Reinforcement Learning Baseline for Model Reasoning"):
    ``α · (r − mean_g)`` with ``α = B / M``, ``M`` the number of responses with a non-zero score
    (at least 1), as verl's ``gpg`` computes it (``f_norm = 1``): the batch's gradient is not
    diluted by the responses that carry no reward. No std."""
    adv = dr_grpo(scores, group_size=group_size, group_ids=group_ids, singleton=singleton)
    alpha = len(scores) / torch.count_nonzero(scores).clamp(min=1).to(adv.dtype)
    return adv * alpha


def maxrl(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    singleton: str = "zero",
) -> Tensor:
    """MaxRL ("Maximum Likelihood Reinforcement Learning"): ``(r − r̄_g) / r̄_g``, the group's
    advantage relative to its mean reward, 0 where ``r̄_g = 0``. With 0/1 rewards this weighs
    a success on a prompt solved with probability p by 1/p (the gradient of log p rather than of
    p), as rlhf-book's and prime-rl's code compute it; neither verl nor TRL has it, so rlnb's
    tests pin it to this formula."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, scale="mean", singleton=singleton
    )


def remax(
    scores: Tensor,
    greedy_scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
) -> Tensor:
    """ReMax ("ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for Aligning
    Large Language Models"): ``r − r_greedy``, the baseline the reward of the greedy completion of
    the same prompt, per response ``[B]`` or per group ``[G]``. No std; a group of one is fine (the
    baseline does not come from the group). verl's ``remax`` (its ``reward_baselines``)."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, baseline="reference", scale="none",
        reference=greedy_scores,
    )  # fmt: skip


def gdpo(
    components: Tensor,
    *,
    weights: Tensor | None = None,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-6,
    whiten: bool = True,
    whiten_eps: float = 1e-4,
    singleton: str = "zero",
) -> Tensor:
    """GDPO ("GDPO: Group reward-Decoupled Normalization Policy Optimization for Multi-reward RL
    Optimization"): each reward component ``k`` of ``components [B, K]`` is normalised in its
    group on its own, ``A_k = (r_k − mean_g) / (std_g + eps)`` (so a component with a large spread
    cannot drown the others), summed with ``weights [K]`` (default ones), ``A = Σ_k w_k A_k``, and
    with ``whiten`` whitened over the batch's responses, ``(A − mean) / (std + whiten_eps)``: TRL's
    ``multi_objective_aggregation="normalize_then_sum"`` (``eps = whiten_eps = 1e-4``). verl's
    ``gdpo`` whitens over tokens instead (the registered estimator ``gdpo``, option
    ``whiten="tokens"``: ``whiten=False`` here, then ``rlnb.estimators.tokens.whiten``)."""
    if not isinstance(components, Tensor) or components.ndim != 2:
        shape = tuple(components.shape) if isinstance(components, Tensor) else components
        raise ValueError(f"components: expected a [B, K] tensor of reward components, got {shape}")
    K = components.shape[1]
    w = torch.ones(K) if weights is None else torch.as_tensor(weights)
    if w.shape != (K,):
        raise ValueError(f"weights: expected {K} weights (one per component), got {tuple(w.shape)}")
    w = w.to(dtype=compute_dtype(components), device=components.device)
    total = sum(
        w[k] * grpo(components[:, k], group_size=group_size, group_ids=group_ids,
                           eps=eps, singleton=singleton)
        for k in range(K)
    )  # fmt: skip
    if not whiten or len(total) < 2:
        return total
    flat = total.max() == total.min()
    white = (total - total.mean()) / (total.std() + whiten_eps)
    return torch.where(flat, torch.zeros_like(total), white)


def pvpo(
    scores: Tensor,
    reference: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
) -> Tensor:
    """PVPO ("PVPO: Pre-Estimated Value-Based Policy Optimization for Agentic Reasoning"):
    ``r − V_ref``, where ``V_ref`` (per response ``[B]`` or per group ``[G]``) is the mean reward of
    rollouts of a fixed reference policy, estimated in advance: an anchor that does not move with
    the current group. No std scaling."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, baseline="reference", scale="none",
        reference=reference,
    )  # fmt: skip


def passk_advantages(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """verl's ``grpo_passk`` (after "Pass@k Training"): only the best response of each group gets
    a non-zero advantage, ``r_max − r_second``, divided by ``std_g + eps`` if ``norm_by_std``;
    ties go to the first best response. A group of one gets 0 (verl raises)."""
    index, G = _group_index(scores, group_size, group_ids)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps: expected a non-negative float, got {eps!r}")
    r = scores.to(compute_dtype(scores))
    order, start, count = _sort_within_groups(r, index, G, descending=True)  # first best wins ties
    best = order[start]
    second = order[torch.clamp(start + 1, max=len(r) - 1)]
    gap = torch.where(count > 1, r[best] - r[second], torch.zeros_like(r[best]))
    if norm_by_std:  # a gap of 0 (equal scores: std 0) stays 0 for any eps
        std = _group_mean_std(r, index, G)[2]
        gap = gap / torch.where(gap == 0, torch.ones_like(std), std + eps)
    return torch.zeros_like(r).index_put_((best,), gap).to(scores.dtype)


def knapsack_value(p: Tensor | float, n: Tensor | int) -> Tensor:
    """Knapsack RL ("Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget
    Allocation"): the value of spending ``n`` rollouts on a prompt with success rate ``p``,
    ``P(non-zero gradient) × InfoGain = (1 − p^n − (1 − p)^n) · p (1 − p)²``.

    The first factor: a GRPO group of ``n`` binary rewards only carries a gradient if it holds both
    a success and a failure. The second is the paper's approximation of the expected increase in
    success rate from one update, ``InfoGain(p) ≈ p (1 − p)²``: zero for prompts that are always or
    never solved, largest at ``p = 1/3``. Broadcasts over ``p`` and ``n``.

    >>> knapsack_value(torch.tensor([0.0, 0.5, 0.9]), 8)
    tensor([0.0000, 0.1240, 0.0051])
    """
    p = torch.as_tensor(p, dtype=torch.float64 if not isinstance(p, Tensor) else None)
    p = p if p.is_floating_point() else p.double()
    n = torch.as_tensor(n, device=p.device)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p: expected success rates in [0, 1]")
    if n.is_floating_point() or (n < 1).any():
        raise ValueError("n: expected positive integer rollout counts")
    n = n.to(p.dtype)
    return (1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2


def whiten(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Whiten over every response token of the batch: ``(v − mean) / sqrt(var + eps)``, mean and
    unbiased var over the ``mask`` (verl's ``masked_whiten``), 0 off the mask. Degenerate: equal
    values on the mask (one token included) give 0, not the rounding residue of ``v − mean`` times
    ``1/sqrt(eps)``; an empty mask gives 0 (verl raises on both)."""
    m = check_token_tensors(mask, values=values)
    v = values.to(m.dtype)
    n = m.sum()
    mean = (v * m).sum() / n.clamp(min=1)
    centered = v - mean
    var = (centered**2 * m).sum() / (n - 1).clamp(min=1)
    on, vd = m.bool(), v.detach()  # equal values on the mask (or none at all): flat
    flat = vd.masked_fill(~on, -torch.inf).amax() <= vd.masked_fill(~on, torch.inf).amin()
    out = centered * torch.rsqrt(var + eps)
    return (torch.where(flat, torch.zeros_like(out), out) * m).to(values.dtype)


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Spread per-response advantages ``[B]`` over response tokens: ``A[:, None] * mask`` → ``[B, L]``."""
    if advantages.ndim != 1 or mask.ndim != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"advantages, mask: expected shapes [B] and [B, L], got {tuple(advantages.shape)} and {tuple(mask.shape)}"
        )
    return advantages[:, None] * mask.to(advantages.dtype)
