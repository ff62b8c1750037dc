"""Policy losses, loss aggregation over tokens, and KL estimators for language-model RL.

Token data: ``[B, L]`` tensors with a ``mask`` of response tokens (1 = counts). Diagnostics are
returned as tensors (no host sync, except where a loss picks tokens by count: ``cov_loss``).

Every policy loss is one function registered by name, called the same way::

    out = compute_policy_loss("gspo", logp, old_logp, advantages, mask, agg="seq-mean-token-mean")

``logp`` (current policy, with gradient), ``old_logp`` (the policy that sampled, or the one before
this update), ``advantages`` (``[B, L]`` or ``[B]``) and ``mask`` are ``[B, L]``; every loss takes
``agg`` (``aggregate``'s mode) and ``is_weights`` (``[B, L]``, the rollout correction of
``rollout_is_weights``, multiplied into each token's loss unless the loss says otherwise) plus its
own knobs, and returns a ``PolicyLoss``. verl's ``policy_loss.loss_mode`` and TRL's ``loss_type``
map to these as follows (pinned in ``tests/integrations/test_verl_losses.py`` and
``tests/test_policy_losses.py``):

=================  ==========================================  ================================
rlnb               verl ``loss_mode``                          TRL ``loss_type``
=================  ==========================================  ================================
``ppo``            ``vanilla`` (``dual_clip=3``)               ``grpo`` (agg seq-mean-token-mean),
                                                               ``bnpo``/``dapo`` (token-mean),
                                                               ``dr_grpo`` (seq-mean-token-sum-norm);
                                                               ``delta`` = ``dual_clip``
``gspo``           ``gspo`` (``level="token"``)                ``importance_sampling_level="sequence"``
``luspo``          —                                           ``luspo``
``cispo``          ``cispo``                                   ``cispo`` (``clip_low=1``,
                                                               ``clip_high=epsilon_high − 1``)
``sapo``           ``sapo`` (agg seq-mean-token-mean)          ``sapo``
``gmpo``           ``geo_mean`` (agg seq-mean-token-mean)      —
``dppo``           ``dppo_tv`` / ``dppo_kl``                   —
``dro``            ``dro``                                     —
``cov``            ``clip_cov`` / ``kl_cov``                   —
``gpg``            ``gpg``; ``bypass_mode`` with ``reinforce``  —
``vespo``          —                                           ``vespo``
=================  ==========================================  ================================
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rlnb.estimators._checks import check_new_name

AGG_MODES = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
KL_KINDS = ("k1", "k2", "k3", "abs", "k1+", "k3+", "abs+")


def _check_tokens(mask: Tensor, **tensors: Tensor) -> None:
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask: expected a torch.Tensor [B, L], got {type(mask).__name__}")
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or t.shape != mask.shape:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected the shape of mask {tuple(mask.shape)}, got {shape}")


def aggregate(
    values: Tensor, mask: Tensor, mode: str = "token-mean", norm: float | None = None
) -> Tensor:
    """Reduce per-token ``values [B, L]`` over the response tokens in ``mask`` to a scalar.

    * ``token-mean``: ``Σ v·m / Σ m`` (every token of the batch weighs the same; DAPO, verl default).
    * ``token-sum``: ``Σ v·m``.
    * ``seq-mean-token-mean``: mean over sequences of each sequence's token mean (GRPO's
      original form; a token of a long response weighs less — the length bias).
    * ``seq-mean-token-sum``: mean over sequences of each sequence's token sum.
    * ``seq-mean-token-sum-norm``: ``Σ v·m / (B · norm)``, ``norm`` a constant (default ``L``,
      the padded length): Dr. GRPO's fix ("Understanding R1-Zero-Like Training"), = TRL's
      ``loss_type="dr_grpo"`` and verl 0.9's mode of the same name (verl < 0.6 divided by ``norm`` only).

    Sequences with an empty mask count as 0 in the sequence means.
    """
    _check_tokens(mask, values=values)
    if values.ndim != 2:
        raise ValueError(f"values: expected a [B, L] tensor, got shape {tuple(values.shape)}")
    if mode not in AGG_MODES:
        raise ValueError(f"mode: expected one of {AGG_MODES}, got {mode!r}")
    m = mask.to(values.dtype)
    masked = values * m
    if mode == "token-mean":
        return masked.sum() / m.sum().clamp(min=1)
    if mode == "token-sum":
        return masked.sum()
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum":
        return masked.sum(-1).mean()
    norm = values.shape[-1] if norm is None else norm
    if not norm > 0:
        raise ValueError(f"norm: expected a positive constant, got {norm!r}")
    return masked.sum() / (values.shape[0] * norm)


class PolicyLoss(NamedTuple):
    loss: Tensor
    clip_frac: Tensor  # fraction of response tokens whose gradient the loss clips, masks or drops
    approx_kl: Tensor  # token-mean of old_logp − logp, the PPO KL diagnostic


# --- one registry of policy losses --------------------------------------------------------------

# name → loss; add with register_policy_loss
POLICY_LOSSES: dict[str, Callable[..., PolicyLoss]] = {}


def register_policy_loss(name: str, *, replace: bool = False):
    """Decorator: register ``fn(logp, old_logp, advantages, mask, *, agg, is_weights, **knobs) →
    PolicyLoss`` as ``name`` (the way ``register_estimator`` registers estimators). Registering a
    taken name raises unless ``replace=True``."""
    check_new_name(POLICY_LOSSES, name, replace)

    def decorator(fn):
        POLICY_LOSSES[name] = fn
        return fn

    return decorator


def get_policy_loss(name: str) -> Callable[..., PolicyLoss]:
    """The registered policy loss ``name``; a ``ValueError`` listing the names otherwise."""
    if name not in POLICY_LOSSES:
        raise ValueError(f"loss: expected one of {tuple(POLICY_LOSSES)}, got {name!r}")
    return POLICY_LOSSES[name]


def compute_policy_loss(
    name: str, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, **options
) -> PolicyLoss:
    """The policy loss ``name`` of the token tensors, with its keyword ``options`` (``agg``,
    ``is_weights`` and the loss's own knobs)."""
    return get_policy_loss(name)(logp, old_logp, advantages, mask, **options)


def check_policy_loss_options(name: str, options: dict) -> None:
    """Fail now, not at the first update: ``options`` are keywords of loss ``name`` and the loss
    accepts their values (it is run once on a one-token batch)."""
    params = inspect.signature(get_policy_loss(name)).parameters
    unknown = sorted(set(options) - set(list(params)[4:]))
    if unknown:
        raise ValueError(
            f"loss_kwargs: {unknown} are not options of loss {name!r} (it takes {list(params)[4:]})"
        )
    missing = [
        p.name for p in list(params.values())[4:] if p.default is p.empty and p.name not in options
    ]
    if missing:
        raise ValueError(f"loss_kwargs: loss {name!r} needs {missing}")
    one = torch.zeros(1, 1)
    compute_policy_loss(name, one, one, one + 1, one + 1, **options)


def rollout_is_weights(
    logp: Tensor,
    rollout_logp: Tensor,
    mask: Tensor,
    *,
    level: str = "token",
    mode: str = "truncate",
    cap: float = 2.0,
    floor: float | None = None,
) -> Tensor:
    """Importance weights ``w = π / π_rollout`` that correct for sampling with a different engine
    than the one trained ("Your Efficient RL Framework Secretly Brings You Off-Policy RL Training":
    vLLM samples, FSDP trains), detached, ``[B, L]``, 0 off the mask; every policy loss takes them
    as ``is_weights``.

    ``level="token"``: ``w_t = exp(logp_t − rollout_logp_t)`` (biased, low variance);
    ``"sequence"``: ``w = exp(Σ_t logp_t − rollout_logp_t)`` on every token of the response (the
    unbiased sequence weight). The log-ratio is clamped to ±20 (verl; TRL does not clamp). Then
    ``mode="truncate"``: ``min(w, cap)`` (TIS; verl's ``rollout_is_threshold``, TRL's
    ``vllm_importance_sampling_mode="*_truncate"``); ``"mask"``: ``w`` where ``floor ≤ w ≤ cap``,
    else 0 (TRL's ``"*_mask"`` with ``floor=None``; verl's IcePop ``"floor_cap"`` threshold).
    """
    _check_tokens(mask, logp=logp, rollout_logp=rollout_logp)
    if level not in ("token", "sequence"):
        raise ValueError(f"level: expected 'token' or 'sequence', got {level!r}")
    if mode not in ("truncate", "mask"):
        raise ValueError(f"mode: expected 'truncate' or 'mask', got {mode!r}")
    if not cap > 0:
        raise ValueError(f"cap: expected a positive upper bound, got {cap!r}")
    if floor is not None and (mode != "mask" or not 0 <= floor <= cap):
        raise ValueError(
            f"floor: expected None, or 0 ≤ floor ≤ cap with mode='mask', got {floor!r}"
        )
    with torch.no_grad():
        m = mask.to(logp.dtype)
        log_ratio = (logp - rollout_logp) * m
        if level == "sequence":
            log_ratio = log_ratio.sum(-1, keepdim=True).expand_as(logp)
        w = log_ratio.clamp(-20, 20).exp() * m
        if mode == "truncate":
            return w.clamp(max=cap)
        keep = (w <= cap) & (w >= (0.0 if floor is None else floor))
        return torch.where(keep, w, torch.zeros_like(w))


# --- the losses ---------------------------------------------------------------------------------


def _token_inputs(logp, old_logp, advantages, mask, is_weights) -> Tensor:
    """Check the token tensors; ``[B]`` advantages are spread over each response's tokens."""
    _check_tokens(mask)
    if isinstance(advantages, Tensor) and advantages.ndim == 1:
        if advantages.shape[0] != mask.shape[0]:
            raise ValueError(
                f"advantages: expected [B] = ({mask.shape[0]},) per response or the shape of mask "
                f"{tuple(mask.shape)}, got {tuple(advantages.shape)}"
            )
        advantages = advantages[:, None].expand_as(mask)
    tensors = dict(logp=logp, old_logp=old_logp, advantages=advantages)
    if is_weights is not None:
        tensors["is_weights"] = is_weights
    _check_tokens(mask, **tensors)
    return advantages


def _clip_range(clip_low: float, clip_high: float | None) -> float:
    clip_high = clip_low if clip_high is None else clip_high
    if not 0 <= clip_low <= 1 or not clip_high >= 0:
        raise ValueError(
            f"clip_low, clip_high: expected 0 ≤ clip_low ≤ 1 and clip_high ≥ 0, got {clip_low}, {clip_high}"
        )
    return clip_high


def _clipped_surrogate(advantages, ratio, clip_low, clip_high) -> tuple[Tensor, Tensor]:
    """PPO's ``max(−A·ρ, −A·clip(ρ, 1 − clip_low, 1 + clip_high))`` per token, and where the clip
    binds (the gradient is cut)."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def _result(per_token, log_ratio, mask, agg, is_weights=None, dropped=None) -> PolicyLoss:
    """Weight, aggregate, and add the diagnostics (``dropped``: where the gradient is cut)."""
    if is_weights is not None:
        per_token = per_token * is_weights
    m = mask.to(per_token.dtype)
    n = m.sum().clamp(min=1)
    frac = torch.zeros((), dtype=m.dtype, device=m.device)
    if dropped is not None:
        frac = (dropped.to(m.dtype) * m).sum() / n
    approx_kl = (-log_ratio.detach() * m).sum() / n
    return PolicyLoss(aggregate(per_token, mask, agg), frac.detach(), approx_kl)


@register_policy_loss("ppo")
def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """The clipped surrogate of PPO ("Proximal Policy Optimization Algorithms"), per token:
    ``ℓ = max(−A·ρ, −A·clip(ρ, 1 − clip_low, 1 + clip_high))``, ``ρ = exp(logp − old_logp)`` (the
    log-ratio clamped to ±20); ``clip_high`` defaults to ``clip_low`` (a larger one is DAPO's
    clip-higher); ``dual_clip = c > 1`` caps the loss of negative-advantage tokens at ``−A·c``
    ("Mastering Complex Control in MOBA Games with Deep RL"; TRL's ``delta`` when ``delta ≥ 1 +
    clip_high``). Aggregated by ``aggregate(ℓ, mask, agg)``. Matches verl's ``vanilla`` and
    TRL's ``grpo``/``bnpo``/``dr_grpo``/``dapo`` (which differ only in ``agg``).
    """
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    clip_high = _clip_range(clip_low, clip_high)
    if clip_low == 1:
        raise ValueError("clip_low: expected 0 ≤ clip_low < 1, got 1")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip: expected a float > 1, got {dual_clip}")
    log_ratio = (logp - old_logp).clamp(-20, 20)
    ratio = log_ratio.exp()
    per_token, cut = _clipped_surrogate(advantages, ratio, clip_low, clip_high)
    if dual_clip is not None:
        per_token = torch.where(
            advantages < 0, torch.minimum(per_token, -advantages * dual_clip), per_token
        )
    return _result(per_token, log_ratio, mask, agg, is_weights, dropped=cut)


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO's sequence-level log-ratio ("Group Sequence Policy Optimization"), one per response
    ``[B]``: ``log s_i = (1/|y_i|) Σ_t (logp_t − old_logp_t)`` over the response's tokens, the log
    of the length-normalised likelihood ratio ``(π(y_i)/π_old(y_i))^(1/|y_i|)``; 0 for an empty
    response."""
    _check_tokens(mask, logp=logp, old_logp=old_logp)
    m = mask.to(logp.dtype)
    return ((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1)


@register_policy_loss("gspo")
def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float | None = 4e-4,
    level: str = "token",
    agg: str = "seq-mean-token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """GSPO ("Group Sequence Policy Optimization"): PPO's clip on the *sequence* ratio
    ``s = exp(mean_t (logp_t − old_logp_t))`` (the length-normalised sequence likelihood ratio,
    log clamped at 10), ``ℓ_t = max(−A·s, −A·clip(s, 1 − clip_low, 1 + clip_high))`` on each token.

    ``level="sequence"``: ``s`` itself, so every token's gradient is ``s·mean_t ∇logp`` (TRL's
    ``importance_sampling_level="sequence"``). ``level="token"``: GSPO-token,
    ``s_t = sg(s)·π_t / sg(π_t)``: the same value, the gradient ``s·∇logp_t`` per token (verl's
    ``gspo``). With one advantage per response the two give the same gradient in every
    aggregation; with per-token advantages the token form weighs ``∇logp_t`` by ``A_t``, the
    sequence form spreads ``mean_t A_t`` over the response. The paper aggregates
    ``seq-mean-token-mean``.
    """
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    clip_high = _clip_range(clip_low, clip_high)
    if level not in ("token", "sequence"):
        raise ValueError(f"level: expected 'token' or 'sequence', got {level!r}")
    log_ratio = logp - old_logp
    seq = sequence_log_ratio(logp, old_logp, mask)[:, None]
    if level == "token":
        log_s = logp - logp.detach() + seq.detach()
    else:
        log_s = seq.expand_as(logp)
    per_token, cut = _clipped_surrogate(
        advantages, log_s.clamp(max=10.0).exp(), clip_low, clip_high
    )
    return _result(per_token, log_ratio, mask, agg, is_weights, dropped=cut)


@register_policy_loss("luspo")
def luspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float | None = 4e-4,
    agg: str = "seq-mean-token-sum",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """LUSPO ("Length-Unbiased Sequence Policy Optimization"): GSPO's sequence-level ratio
    (``gspo_loss(level="sequence")``) with each sequence's loss scaled by its length — the
    ``seq-mean-token-sum`` aggregation, ``mean_i |y_i|·ℓ_i`` — so a long response is not weighed
    down by the sequence mean. TRL's ``loss_type="luspo"``."""
    return gspo_loss(
        logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high,
        level="sequence", agg=agg, is_weights=is_weights,
    )  # fmt: skip


@register_policy_loss("cispo")
def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 1.0,
    clip_high: float | None = 4.0,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """CISPO ("MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention"):
    clip the importance weight, not the update — ``ℓ_t = −sg(clip(ρ_t, 1 − clip_low,
    1 + clip_high))·A_t·logp_t`` — so every token keeps a gradient. verl's ``cispo``; TRL's
    (``clamp(ρ, max=epsilon_high)``) is ``clip_low=1, clip_high=epsilon_high − 1``, the defaults
    here (TRL recommends ``epsilon_high = 5``)."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    clip_high = _clip_range(clip_low, clip_high)
    log_ratio = (logp - old_logp).clamp(-20, 20)
    ratio = log_ratio.exp()
    weight = ratio.clamp(1 - clip_low, 1 + clip_high).detach()
    per_token = -weight * advantages * logp
    clipped = (ratio < 1 - clip_low) | (ratio > 1 + clip_high)
    return _result(per_token, log_ratio, mask, agg, is_weights, dropped=clipped)


@register_policy_loss("sapo")
def sapo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    agg: str = "seq-mean-token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """SAPO ("Soft Adaptive Policy Optimization"): a smooth gate instead of a hard clip,
    ``ℓ_t = −A_t·f(ρ_t)``, ``f(ρ) = σ(τ(ρ − 1))·4/τ`` (``τ = tau_pos`` where ``A > 0``, else
    ``tau_neg``): ``f'(1) = 1``, so on-policy it is the policy gradient, and the gradient
    ``4σ(1 − σ)·ρ·∇logp`` fades smoothly as ρ leaves 1. verl's ``sapo`` (which always aggregates
    ``seq-mean-token-mean``) and TRL's ``sapo``."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    if not tau_pos > 0 or not tau_neg > 0:
        raise ValueError(
            f"tau_pos, tau_neg: expected positive temperatures, got {tau_pos}, {tau_neg}"
        )
    log_ratio = (logp - old_logp).clamp(-20, 20)
    tau = torch.where(advantages > 0, tau_pos, tau_neg).to(logp.dtype)
    gate = torch.sigmoid(tau * (log_ratio.exp() - 1)) * (4 / tau)
    return _result(-gate * advantages, log_ratio, mask, agg, is_weights)


@register_policy_loss("gmpo")
def gmpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.4,
    clip_high: float | None = None,
    agg: str = "seq-mean-token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """GMPO ("Geometric-Mean Policy Optimization"): the sequence's ratio is the geometric mean of
    its token ratios, each clipped in log space first in the direction of the advantage's sign,
    ``ρ̄ = exp(mean_t sgn(A)·min(sgn(A)·lr_t, sgn(A)·clip(lr_t, −clip_low, clip_high)))``, and
    ``ℓ = −Ā·ρ̄`` with ``Ā`` the response's mean advantage, on every token of the response (so
    ``agg="seq-mean-token-mean"`` is verl's ``geo_mean``, which always averages over sequences).
    ``is_weights`` enter as their geometric mean over the response's tokens (verl)."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    clip_high = clip_low if clip_high is None else clip_high
    if not clip_low >= 0 or not clip_high >= 0:
        raise ValueError(
            f"clip_low, clip_high: expected ≥ 0 log-ratio bounds, got {clip_low}, {clip_high}"
        )
    m = mask.to(logp.dtype)
    n = m.sum(-1, keepdim=True).clamp(min=1)
    log_ratio = logp - old_logp
    sign = advantages.sign()
    bounded = log_ratio.clamp(-clip_low, clip_high)
    lr = sign * torch.minimum(sign * log_ratio, sign * bounded)
    ratio = ((lr * m).sum(-1, keepdim=True) / n).exp()
    adv = (advantages * m).sum(-1, keepdim=True) / n
    per_token = (-adv * ratio).expand_as(logp)
    if is_weights is not None:
        per_token = per_token * ((is_weights + 1e-10).log() * m).sum(-1, keepdim=True).div(n).exp()
    return _result(per_token, log_ratio, mask, agg, dropped=log_ratio != bounded)


@register_policy_loss("dppo")
def dppo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    divergence: str = "tv",
    clip_low: float = 0.2,
    clip_high: float | None = None,
    ratio_cap: float = 20.0,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """verl's DPPO (``dppo_tv``/``dppo_kl``, arXiv 2602.04879): a trust region on the *divergence*
    of the sampled token's probability, not on the ratio. ``ℓ_t = −A_t·sg(min(ρ_t, ratio_cap))·
    logp_t·v_t`` where ``v_t = 0`` (the token's gradient dropped) once the update moved it too far
    in its advantage's direction: ``divergence="tv"``: ``π − π_old > clip_high`` (A > 0) or
    ``< −clip_low`` (A ≤ 0); ``"kl"``: the binary KL ``π_old log(π_old/π) + (1 − π_old)
    log((1 − π_old)/(1 − π))`` above ``clip_high``/``clip_low`` while π moved up (A > 0) / down."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    clip_high = _clip_range(clip_low, clip_high)
    if divergence not in ("tv", "kl"):
        raise ValueError(f"divergence: expected 'tv' or 'kl', got {divergence!r}")
    if not ratio_cap > 0:
        raise ValueError(f"ratio_cap: expected a positive cap, got {ratio_cap!r}")
    log_ratio = (logp - old_logp).clamp(-20, 20)
    with torch.no_grad():
        p, p_old = logp.exp(), old_logp.exp()
        if divergence == "tv":
            up_ok, down_ok = p - p_old <= clip_high, p - p_old >= -clip_low
        else:
            kl = p_old * (old_logp - logp) + (1 - p_old) * torch.log(
                (1 - p_old + 1e-8) / (1 - p + 1e-8)
            )
            up_ok, down_ok = (kl <= clip_high) | (p <= p_old), (kl <= clip_low) | (p >= p_old)
        valid = torch.where(advantages > 0, up_ok, down_ok)
        weight = log_ratio.exp().clamp(max=ratio_cap) * valid
    per_token = -advantages * weight * logp
    return _result(per_token, log_ratio, mask, agg, is_weights, dropped=~valid)


@register_policy_loss("dro")
def dro_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    beta: float,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """verl's ``dro`` (Direct Reward Optimization with a quadratic log-ratio penalty):
    ``ℓ_t = −(A_t·logp_t − β/2·(logp_t − old_logp_t)²)``: the policy gradient, pulled back to
    the old policy by a squared log-ratio instead of a clip. ``beta > 0`` is required."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta: expected a positive float, got {beta!r}")
    log_ratio = logp - old_logp
    per_token = -(advantages * logp - 0.5 * beta * log_ratio**2)
    return _result(per_token, log_ratio, mask, agg, is_weights)


@register_policy_loss("cov")
def cov_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    kind: str = "clip",
    ratio: float = 2e-4,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    cov_low: float = 1.0,
    cov_high: float = 5.0,
    kl_coef: float = 0.1,
    generator: torch.Generator | None = None,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """Clip-Cov and KL-Cov ("The Entropy Mechanism of Reinforcement Learning for Reasoning
    Language Models"): entropy collapses through tokens whose log-prob and advantage covary
    most, ``c_t = (A_t − mean A)·(logp_t − mean logp)`` (means over the batch's tokens); act on a
    ``ratio`` fraction of them (at least one token).

    ``kind="clip"`` (verl ``clip_cov``): PPO's clipped loss, with the gradient of ``ratio·N``
    tokens drawn at random (``generator``; verl draws from the global generator) among those not
    already clipped with ``cov_low < c_t < cov_high`` cut off. ``kind="kl"`` (verl ``kl_cov``):
    the unclipped ``−A·ρ``, plus ``kl_coef·|logp − old_logp|`` on the ``ratio·N`` tokens of largest
    ``c_t``. The selection reads the token count on the host."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    if kind not in ("clip", "kl"):
        raise ValueError(f"kind: expected 'clip' or 'kl', got {kind!r}")
    if not ratio > 0:
        raise ValueError(f"ratio: expected a positive fraction of tokens, got {ratio!r}")
    clip_high = _clip_range(clip_low, clip_high)
    valid = mask > 0
    log_ratio = logp - old_logp
    rho = log_ratio.exp()
    with torch.no_grad():
        a, lp = advantages[valid], logp[valid]
        cov = torch.full_like(logp, -torch.inf)
        cov[valid] = (a - a.mean()) * (lp - lp.mean())
        n_pick = max(int(ratio * int(valid.sum())), 1)
    if kind == "kl":
        rows, cols = valid.nonzero(as_tuple=True)
        top = torch.topk(cov[valid], min(n_pick, len(rows))).indices
        picked = torch.zeros_like(valid)
        picked[rows[top], cols[top]] = True
        unclipped = -advantages * rho
        per_token = torch.where(picked, unclipped + kl_coef * log_ratio.abs(), unclipped)
        return _result(per_token, log_ratio, mask, agg, is_weights)
    surrogate, clipped = _clipped_surrogate(advantages, rho, clip_low, clip_high)
    with torch.no_grad():
        cov = torch.where(clipped, -torch.inf, cov)
        candidates = ((cov > cov_low) & (cov < cov_high) & valid).nonzero()
        if len(candidates):  # verl draws only when there are candidates
            candidates = candidates[torch.randperm(len(candidates), generator=generator)[:n_pick]]
        cut = torch.zeros_like(valid)
        cut[candidates[:, 0], candidates[:, 1]] = True
    return _result(surrogate * (~cut), log_ratio, mask, agg, is_weights, dropped=cut)


@register_policy_loss("gpg")
def gpg_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """The plain policy gradient, ``ℓ_t = −A_t·logp_t``: no ratio, no clip (GPG, "GPG: A Simple
    and Strong Reinforcement Learning Baseline for Model Reasoning"; verl's ``gpg``, and verl's
    ``bypass_mode`` with ``loss_type="reinforce"`` once ``is_weights`` correct for the sampler).
    ``old_logp`` only feeds the KL diagnostic."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, is_weights)
    return _result(-advantages * logp, logp - old_logp, mask, agg, is_weights)


@register_policy_loss("vespo")
def vespo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    k_pos: float = 2.0,
    lambda_pos: float = 3.0,
    k_neg: float = 3.0,
    lambda_neg: float = 2.0,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
) -> PolicyLoss:
    """VESPO ("Variational Sequence-Level Soft Policy Optimization"): a smooth, asymmetric weight
    of the *sequence* importance ratio ``w = Π_t ρ_t`` (times the rollout weights ``is_weights``,
    folded into ``w`` instead of multiplied into the loss), ``φ(w) = e^λ·w^k·e^{−λw}`` (``φ(1) =
    1``; ``k, λ = k_pos, lambda_pos`` where ``A ≥ 0``, else the ``_neg`` pair), detached:
    ``ℓ_t = −φ(w)·A_t·logp_t``. log w is clamped to [log 1e-8, 20]. TRL's ``vespo``."""
    advantages = _token_inputs(logp, old_logp, advantages, mask, None)
    if is_weights is not None:
        _check_tokens(mask, is_weights=is_weights)
    for name, v in dict(
        k_pos=k_pos, lambda_pos=lambda_pos, k_neg=k_neg, lambda_neg=lambda_neg
    ).items():
        if not v >= 0:
            raise ValueError(f"{name}: expected a non-negative float, got {v!r}")
    m = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    with torch.no_grad():
        lo = math.log(1e-8)
        log_w = (log_ratio.clamp(-20, 20) * m).sum(-1, keepdim=True)
        if is_weights is not None:
            log_w = log_w + (is_weights.log().clamp(lo, 20) * m).sum(-1, keepdim=True)
        log_w = log_w.clamp(lo, 20)
        nonneg = advantages >= 0
        k = torch.where(nonneg, k_pos, k_neg).to(logp.dtype)
        lam = torch.where(nonneg, lambda_pos, lambda_neg).to(logp.dtype).clamp(min=1e-4)
        phi = (
            (lam + k * log_w - lam * log_w.exp()).exp().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        )
    return _result(-phi * advantages * logp, log_ratio, mask, agg)


def kl_penalty(
    logp: Tensor,
    ref_logp: Tensor,
    kind: str = "k3",
    clamp: float | None = 10.0,
    old_logp: Tensor | None = None,
) -> Tensor:
    """Per-token estimators of ``KL(π ‖ π_ref)`` from samples of π (Schulman, "Approximating KL
    Divergence"), with ``x = log π_ref − log π`` at the sampled token:

    * ``k1 = −x`` — unbiased in value, high variance, can be negative (verl ``kl``);
    * ``k2 = x² / 2`` — biased in value (½E[x²] agrees with KL only to second order in x, and
      may lie above or below it), low variance;
      its gradient (the samples held fixed, as in a loss) is an unbiased estimate of the gradient
      of KL(π ‖ π_ref) (verl ``mse``);
    * ``k3 = eˣ − x − 1`` — unbiased in value and ≥ 0 (verl ``low_var_kl``, GRPO's estimator), but
      *not* in gradient: E[∇k3] = ∇KL(π_ref ‖ π), the other direction. Like verl, x is clamped to
      ±20 and the result to ``[−clamp, clamp]`` (``clamp=None`` turns both off; a ``clamp`` ≤ 0 is
      an error, since it would turn the KL off silently);
    * ``abs = |x|`` (verl ``abs``);
    * ``k1+``, ``k3+``, ``abs+``: straight-through — the value of ``k1``/``k3``/``abs`` with the
      gradient of ``k2`` (``k2 − sg(k2) + sg(value)``; verl's ``+`` suffix).

    ``old_logp`` (the sampling policy's log-probs) multiplies the estimate by the importance
    weight ``π / π_old = exp(logp − old_logp)``, gradient included: the estimate stays unbiased
    when the samples came from ``π_old`` rather than π (TRL ``use_bias_correction_kl``, after
    "DeepSeek-V3.2"; TRL applies it to an unclamped k3, ``clamp=None``).
    """
    if clamp is not None and not clamp > 0:
        raise ValueError(f"clamp: expected a positive bound or None, got {clamp!r}")
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"ref_logp: expected the shape of logp {tuple(logp.shape)}, got {tuple(ref_logp.shape)}"
        )
    if old_logp is not None and old_logp.shape != logp.shape:
        raise ValueError(
            f"old_logp: expected the shape of logp {tuple(logp.shape)}, got {tuple(old_logp.shape)}"
        )
    if kind not in KL_KINDS:
        raise ValueError(f"kind: expected one of {KL_KINDS}, got {kind!r}")
    x = ref_logp - logp
    base = kind.rstrip("+")
    if base == "k1":
        kl = -x
    elif base == "k2":
        kl = 0.5 * x**2
    elif base == "abs":
        kl = x.abs()
    else:
        xc = x if clamp is None else x.clamp(-20, 20)
        kl = xc.exp() - xc - 1
        kl = kl if clamp is None else kl.clamp(-clamp, clamp)
    if kind.endswith("+"):  # the value of kl, the gradient of k2
        k2 = 0.5 * x**2
        kl = k2 - k2.detach() + kl.detach()
    if old_logp is not None:
        kl = kl * (logp - old_logp).exp()
    return kl


def categorical_kl(logp: Tensor, logq: Tensor) -> Tensor:
    """Exact ``KL(p ‖ q) = Σ_a p(a) (log p(a) − log q(a))`` over the last dimension, from
    log-probabilities (``p(a) = 0`` terms count 0, also where ``q(a) = 0``). Where the whole
    distribution is known (the prompt bandit), this replaces the sampled estimators of
    ``kl_penalty``: ``categorical_kl(logp, ref)`` is the reverse KL a GRPO loss penalises,
    ``categorical_kl(ref, logp)`` the forward KL of RAPO ("Unlocking Reasoning Capabilities in LLMs
    via Reinforcement Learning Exploration"), mass-covering: it grows without bound as the policy
    drops an answer the reference keeps."""
    if logp.shape != logq.shape:
        raise ValueError(
            f"logq: expected the shape of logp {tuple(logp.shape)}, got {tuple(logq.shape)}"
        )
    p = logp.exp()
    gap = torch.where(p > 0, logp - logq, torch.zeros_like(p))  # masked first: no 0·∞ in grad
    return (p * gap).sum(-1)


def reweighted_reference(ref_logp: Tensor, phi: Tensor) -> Tensor:
    """A reward-aware reference ``π̂_ref ∝ π_ref^φ`` (log-probs, normalised over the last dim), with
    ``φ ∈ [0, 1]`` per row (``[..., 1]`` or broadcastable): φ = 1 keeps ``π_ref``, φ = 0 flattens it
    to uniform. RAPO reweights its reference by reward; this power form, with φ a prompt's success
    rate, is our reading of that rule (the paper's exact φ was not available to check)."""
    if ((phi < 0) | (phi > 1)).any() or phi.isnan().any():
        raise ValueError("phi: expected exponents in [0, 1]")
    return torch.log_softmax(torch.where(phi == 0, 0.0, phi * ref_logp), -1)  # 0·(−∞) is 0


def mis_weight(logp: Tensor, old_logp: Tensor, ext_logp: Tensor) -> Tensor:
    """RL-PLUS's multiple importance sampling weight for a token of an external demonstration
    ("RL-PLUS: Countering Capability Boundary Collapse of LLMs in Reinforcement Learning with
    Hybrid-policy Optimization"): ``r = π_θ(e) / (½ π_θold(e) + ½ π_ω(e))``, the balance heuristic
    over the two policies that could have produced ``e`` (``ext_logp``: the demonstrator π_ω's
    log-prob; the paper estimates it, a bandit knows it). The gradient flows through ``π_θ`` only;
    ``r ≤ 2 π_θ / π_θold`` and ``≤ 2 π_θ / π_ω``, so it stays bounded where ``π_θold(e) ≈ 0``."""
    if not logp.shape == old_logp.shape == ext_logp.shape:
        raise ValueError(
            f"old_logp, ext_logp: expected the shape of logp {tuple(logp.shape)}, got "
            f"{tuple(old_logp.shape)}, {tuple(ext_logp.shape)}"
        )
    denominator = 0.5 * old_logp.detach().exp() + 0.5 * ext_logp.detach().exp()
    return logp.exp() / denominator


def exploration_advantage(advantages: Tensor, logp: Tensor, gamma: float = 0.5) -> Tensor:
    """RL-PLUS's exploration-based advantage ``A · (1 − sg(π_θ(e)))^γ``: an external token the
    policy already finds likely counts less, a correct token it finds unlikely keeps nearly all of
    ``A`` (γ = 0.5 in the authors' code)."""
    if not gamma >= 0:
        raise ValueError(f"gamma: expected a non-negative exponent, got {gamma!r}")
    return advantages * (1 - logp.detach().exp()).clamp(min=0) ** gamma
