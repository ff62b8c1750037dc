"""Value losses of offline RL: pure functions of a residual, elementwise (no reduction).

``diff`` is always ``target − V`` (XQL and f-DVL use ``Q(s, a) − V(s)``); a loss is minimised over
``V``. Each returns a tensor of ``diff``'s shape, so callers weight and average as they need.

- ``expectile_loss``: IQL's asymmetric square ("Offline Reinforcement Learning with Implicit
  Q-Learning").
- ``gumbel_loss``: XQL's Gumbel regression ("Extreme Q-Learning: MaxEnt RL without Entropy"), the
  KL conjugate of "Dual RL: Unification and New Methods for Reinforcement and Imitation Learning".
- ``chi2_dual_loss``, ``tv_dual_loss``: f-DVL's conjugates of the Pearson χ² and the total
  variation (the same paper).
- ``cql_penalty``: the discrete CQL regulariser ("Conservative Q-Learning for Offline
  Reinforcement Learning").
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_weight(name: str, x: float, low: float, high: float) -> None:
    if not low <= float(x) <= high:
        raise ValueError(f"{name}: expected a float in [{low}, {high}], got {x}")


def _check_beta(beta) -> None:
    if not (torch.as_tensor(beta) > 0).all():
        raise ValueError(f"beta: expected a positive temperature, got {beta}")


def expectile_loss(diff: Tensor, tau: float = 0.7) -> Tensor:
    """``|τ − 1(diff < 0)| · diff²``; its minimiser over V is the τ-expectile of the target."""
    _check_weight("tau", tau, 0.0, 1.0)
    weight = torch.where(diff < 0, 1 - tau, tau)
    return weight * diff.pow(2)


def gumbel_loss(diff: Tensor, beta, max_exponent: float | None = None) -> Tensor:
    """``exp(z) − z − 1`` with ``z = diff / β`` (XQL). Its minimiser over V is the soft maximum
    ``β log E[exp(target / β)]``. In float32 ``exp(z)`` overflows for ``z > 88.7``, so a small β
    turns the loss into inf: XQL's code clips ``z`` at ``max_exponent`` (5 or 7) for that reason;
    ``None`` (the default) is the plain loss.

    >>> gumbel_loss(torch.tensor([0.0, 1.0]), 1.0)
    tensor([0.0000, 0.7183])
    """
    _check_beta(beta)
    z = diff / beta
    if max_exponent is not None:
        z = z.clamp(max=max_exponent)
    return torch.exp(z) - z - 1


def chi2_dual_loss(diff: Tensor, beta, weight: float = 0.5) -> Tensor:
    """f-DVL, Pearson χ²: ``(1 − λ)(−diff) + λ β f*_p(diff / β)`` with λ = ``weight`` and
    ``f*_p(y) = y + y²/4`` for ``y ≥ −2``, ``−1`` below (the conjugate of ``f(t) = (t − 1)²``
    over ``t ≥ 0``). The first term is ``(1 − λ) V`` up to a constant (the objective's
    ``(1 − λ) E[V(s)]``). Quadratic, never exponential: finite at any β. The minimiser is an upper
    statistic of the target that tends to its in-sample maximum as β → 0 for λ > ½.

    >>> chi2_dual_loss(torch.tensor([0.0, 2.0, -3.0]), 1.0)
    tensor([0.0000, 0.5000, 1.0000])
    """
    _check_weight("weight", weight, 0.0, 1.0)
    _check_beta(beta)
    y = diff / beta
    conjugate = torch.where(y >= -2, y + y.pow(2) / 4, torch.full_like(y, -1.0))
    return -(1 - weight) * diff + weight * beta * conjugate


def tv_dual_loss(diff: Tensor, beta, weight: float = 0.7) -> Tensor:
    """f-DVL, total variation: ``(1 − λ)(−diff) + λ β f*_p(diff / β)`` with
    ``f*_p(y) = max(y, −½)`` (the conjugate of ``f(t) = ½|t − 1|`` over ``t ≥ 0``, for
    ``y ≤ ½``; larger ``y`` has no finite conjugate, and the code's linear branch is kept).
    Its slope in V is ``(1 − λ) − λ P(diff > −β/2)``, so the minimiser is ``β/2`` above the
    upper ``(1 − λ)/λ`` quantile of the target; λ ≤ ½ has none (flat or unbounded below), so
    ``weight`` must be in (½, 1]."""
    if not 0.5 < float(weight) <= 1.0:
        raise ValueError(f"weight: expected a float in (0.5, 1], got {weight}")
    _check_beta(beta)
    y = diff / beta
    return -(1 - weight) * diff + weight * beta * y.clamp(min=-0.5)


DUAL_LOSSES = {"gumbel": gumbel_loss, "chi2": chi2_dual_loss, "tv": tv_dual_loss}


def dual_value_loss(name: str, diff: Tensor, beta, **options) -> Tensor:
    """The value loss ``name`` (one of ``DUAL_LOSSES``) of ``diff = target − V``."""
    if name not in DUAL_LOSSES:
        raise ValueError(f"loss: expected one of {sorted(DUAL_LOSSES)}, got {name!r}")
    return DUAL_LOSSES[name](diff, beta, **options)


def cql_penalty(q_values: Tensor, actions: Tensor) -> Tensor:
    """``logsumexp_a Q(s, a) − Q(s, a_data)`` per row: the discrete CQL regulariser, ≥ 0, which
    pushes down every action's value and up the dataset's. ``q_values`` ``[B, A]``, ``actions``
    ``[B]``."""
    if q_values.ndim != 2 or actions.shape != q_values.shape[:1]:
        raise ValueError(
            f"q_values, actions: expected [B, A] and [B], got {tuple(q_values.shape)} and {tuple(actions.shape)}"
        )
    return q_values.logsumexp(-1) - q_values.gather(-1, actions[:, None]).squeeze(-1)
