"""Policy losses, loss aggregation over tokens, and KL estimators for language-model RL.

Token data: ``[B, L]`` tensors with a ``mask`` of response tokens (1 = counts). Diagnostics are
returned as tensors (no host sync).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

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
    clip_frac: Tensor  # fraction of response tokens where the clipped term is active
    approx_kl: Tensor  # token-mean of old_logp − logp, the PPO KL diagnostic


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    agg: str = "token-mean",
) -> PolicyLoss:
    """The clipped surrogate of PPO ("Proximal Policy Optimization Algorithms"), per token:
    ``ℓ = max(−A·ρ, −A·clip(ρ, 1 − clip_low, 1 + clip_high))``, ``ρ = exp(logp − old_logp)``;
    ``clip_high`` defaults to ``clip_low`` (a larger one is DAPO's clip-higher); ``dual_clip = c > 1``
    caps the loss of negative-advantage tokens at ``−A·c`` ("Mastering Complex Control in MOBA
    Games with Deep RL"). Aggregated by ``aggregate(ℓ, mask, agg)``. ``advantages`` is ``[B, L]``
    or ``[B]`` (broadcast over tokens). Matches verl's ``compute_policy_loss``.
    """
    _check_tokens(mask)
    if isinstance(advantages, Tensor) and advantages.ndim == 1:
        if advantages.shape[0] != mask.shape[0]:
            raise ValueError(
                f"advantages: expected [B] = ({mask.shape[0]},) per response or the shape of mask "
                f"{tuple(mask.shape)}, got {tuple(advantages.shape)}"
            )
        advantages = advantages[:, None].expand_as(mask)
    _check_tokens(mask, logp=logp, old_logp=old_logp, advantages=advantages)
    clip_high = clip_low if clip_high is None else clip_high
    if not 0 <= clip_low < 1 or not clip_high >= 0:
        raise ValueError(
            f"clip_low, clip_high: expected 0 ≤ clip_low < 1 and clip_high ≥ 0, got {clip_low}, {clip_high}"
        )
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip: expected a float > 1, got {dual_clip}")
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        per_token = torch.where(
            advantages < 0, torch.minimum(per_token, -advantages * dual_clip), per_token
        )
    m = mask.to(logp.dtype)
    n = m.sum().clamp(min=1)
    clip_frac = ((clipped > unclipped).to(logp.dtype) * m).sum() / n
    approx_kl = (-log_ratio * m).sum() / n
    return PolicyLoss(aggregate(per_token, mask, agg), clip_frac.detach(), approx_kl.detach())


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
