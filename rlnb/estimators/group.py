"""Group baselines for outcome rewards: one scalar score per sampled response, responses grouped
by prompt. Value-free RL for language models replaces the critic by a baseline computed from the
group ("DeepSeekMath" GRPO and its descendants).

Groups are given either as ``group_size`` (contiguous blocks of that size) or as ``group_ids``
(an integer tensor ``[B]``; groups may differ in size). Every function returns one advantage per
response, ``[B]``; ``broadcast_to_tokens`` spreads them over a response mask.

Documented degenerate cases (never NaN):

* a group whose scores are all equal gets advantage 0 under the ``mean``, ``loo`` and
  ``quantile`` baselines (its std is 0 and ``eps`` keeps the division finite);
* a group of one has baseline = its own score under ``mean`` and ``loo`` (advantage 0: a lone
  sample carries no relative signal; verl instead returns the raw score) and std 1 under
  ``scale="group"`` (no rescaling).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlnb.estimators._checks import compute_dtype

BASELINES = ("mean", "loo", "quantile", "reference", "none")
SCALES = ("group", "batch", "none")


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
    """Per-group count, mean and unbiased std ``[G]``; a group of one has std 1 (no rescaling)."""
    count = torch.bincount(index, minlength=n_groups).to(r.dtype)
    mean = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, index, r) / count
    sq = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(
        0, index, (r - mean[index]) ** 2
    )
    std = torch.where(count > 1, (sq / (count - 1).clamp(min=1)).sqrt(), torch.ones_like(count))
    return count, mean, std


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
    eps: float = 1e-6,
    validate: bool = False,
) -> Tensor:
    """``A_i = (r_i − b_i) / s_i``: one advantage per response from its group.

    Baselines ``b_i``: ``mean`` (group mean), ``loo`` (mean of the *other* responses of the group,
    RLOO), ``quantile`` (the group's empirical ``quantile``, see ``group_quantile``), ``reference``
    (given values: per response ``[B]``, or per group ``[G]`` with groups numbered in the
    order of ``torch.unique(group_ids)``; read per response when ``B == G``), ``none`` (0).
    Scales ``s_i``: ``group`` (the group's unbiased std + ``eps``), ``batch`` (unbiased std of all
    scores in the batch + ``eps``, TRL's ``scale_rewards="batch"``), ``none`` (1).
    ``eps``: verl uses 1e-6, TRL 1e-4. ``validate=True`` rejects NaN/inf scores (a host sync).

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
    r = scores.to(compute_dtype(scores))
    count, mean, std = _group_mean_std(r, index, G)

    if baseline == "mean":
        b = mean[index]
    elif baseline == "loo":
        n = count[index]
        b = torch.where(n > 1, (mean[index] * n - r) / (n - 1).clamp(min=1), r)
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

    if scale == "group":
        adv = adv / (std[index] + eps)
    elif scale == "batch":
        std = r.std() if len(r) > 1 else torch.ones((), dtype=r.dtype, device=r.device)
        adv = adv / (std + eps)
    return adv.to(scores.dtype)


def grpo(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """GRPO ("DeepSeekMath"): ``(r − mean_g) / (std_g + eps)``, unbiased std.

    ``eps=1e-6`` reproduces verl's ``grpo`` estimator; ``eps=1e-4`` TRL's
    ``scale_rewards="group"`` (DESIGN §7b: ``[1,0,0,0] → 1.499997, −0.499999 ×3``).
    """
    return group_advantages(scores, group_size=group_size, group_ids=group_ids, eps=eps)


def dr_grpo(
    scores: Tensor, *, group_size: int | None = None, group_ids: Tensor | None = None
) -> Tensor:
    """Dr. GRPO ("Understanding R1-Zero-Like Training"): ``r − mean_g``, no std (removes the
    difficulty bias). verl: ``grpo`` with ``norm_adv_by_std_in_grpo=False``; TRL: ``scale_rewards="none"``."""
    return group_advantages(scores, group_size=group_size, group_ids=group_ids, scale="none")


def rloo(
    scores: Tensor, *, group_size: int | None = None, group_ids: Tensor | None = None
) -> Tensor:
    """RLOO ("Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
    Feedback in LLMs"): ``r_i − mean of the others = n/(n−1) · (r_i − mean_g)``. verl's ``rloo``."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, baseline="loo", scale="none"
    )


def reinforce_pp_baseline(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++-baseline ("REINFORCE++"): ``r − mean_g``, then whitened over the batch,
    ``(a − mean(a)) / sqrt(var(a) + eps)`` (unbiased var over the B responses). verl's
    ``reinforce_plus_plus_baseline`` whitens over tokens instead: longer responses weigh more, and
    even with equal lengths L its unbiased var counts B·L tokens, a factor L(B−1)/(BL−1) on var."""
    a = group_advantages(scores, group_size=group_size, group_ids=group_ids, scale="none")
    if len(a) < 2:
        return torch.zeros_like(a)
    af = a.to(compute_dtype(a))
    return ((af - af.mean()) / (af.var() + eps).sqrt()).to(a.dtype)


def lite_ppo(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    eps: float = 1e-4,
) -> Tensor:
    """Lite PPO ("Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning"): group-mean
    baseline, batch-level std: ``(r − mean_g) / (std_batch + eps)``. TRL's ``scale_rewards="batch"``
    (eps 1e-4; DESIGN §7b: ``1.402859, −0.46762``)."""
    return group_advantages(
        scores, group_size=group_size, group_ids=group_ids, scale="batch", eps=eps
    )


def qae(
    scores: Tensor,
    *,
    group_size: int | None = None,
    group_ids: Tensor | None = None,
    k: float = 0.4,
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
        scores,
        group_size=group_size,
        group_ids=group_ids,
        baseline="quantile",
        scale="none",
        quantile=k,
    )


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
        scores,
        group_size=group_size,
        group_ids=group_ids,
        baseline="reference",
        scale="none",
        reference=reference,
    )


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
    if norm_by_std:
        gap = gap / (_group_mean_std(r, index, G)[2] + eps)
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


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Spread per-response advantages ``[B]`` over response tokens: ``A[:, None] * mask`` → ``[B, L]``."""
    if advantages.ndim != 1 or mask.ndim != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"advantages, mask: expected shapes [B] and [B, L], got {tuple(advantages.shape)} and {tuple(mask.shape)}"
        )
    return advantages[:, None] * mask.to(advantages.dtype)
