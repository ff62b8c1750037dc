"""Returns and TD errors: the targets every value method regresses on.

Conventions (DESIGN §3), for every function here and in ``advantages``:

* Tensors are batch-major with time last, ``[..., T]``; ``time_dim`` picks another axis.
* ``values[t] = V(s_t)``; ``next_values[t] = V(s_{t+1})``, and at a truncated step the value of
  the last observation before the reset.
* ``terminated[t]``: the step ended in a terminal state, nothing is bootstrapped after it.
  ``truncated[t]``: a time limit cut the episode; bootstrap from ``next_values[t]``, but no
  trace flows into the next episode. ``done = terminated | truncated``. The last step of the
  window bootstraps from ``next_values[T-1]`` unless it terminated.
* ``gamma`` and ``lmbda`` are floats in [0, 1] or tensors broadcastable to the data.
* float64 in → float64 math; float32/bf16/fp16 in → float32 math, the input dtype out.

All backward recursions here have the form ``y_t = x_t + d_t · y_{t+1}`` with ``y_T = 0`` and go
through ``reverse_discounted_cumsum``, a parallel prefix scan: ⌈log2 T⌉ vectorised steps instead
of T sequential ones, exact (no truncated filter), with ``d_t = 0`` at episode boundaries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlnb.estimators._checks import check_inputs, compute_dtype, to_time_last


def reverse_discounted_cumsum(x: Tensor, decay: Tensor) -> Tensor:
    """Solve ``y_t = x_t + decay_t · y_{t+1}`` backwards along the last axis, with ``y_T = 0``.

    A Hillis–Steele scan: after the step with stride ``s`` each ``y_t`` holds the sum over
    ``[t, t + 2s)`` and ``decay_t`` the product of the decays over the same span. ⌈log2 T⌉ steps
    of a few elementwise kernels each, on any device.

    >>> reverse_discounted_cumsum(torch.tensor([1., 1., 1.]), torch.tensor([.5, .5, .5]))
    tensor([1.7500, 1.5000, 1.0000])
    """
    if x.shape != decay.shape:
        raise ValueError(
            f"decay: expected the shape of x {tuple(x.shape)}, got {tuple(decay.shape)}"
        )
    T = x.shape[-1]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or decay.requires_grad)
    if needs_grad:  # out of place, so autograd can differentiate through the scan
        y, d, s = x, decay, 1
        while s < T:
            y = torch.cat([y[..., :-s] + d[..., :-s] * y[..., s:], y[..., -s:]], dim=-1)
            d = torch.cat([d[..., :-s] * d[..., s:], d[..., -s:]], dim=-1)
            s *= 2
        return y
    y, d, s = x.clone(), decay.clone(), 1
    while s < T:
        # in place on our own copies; the shifted operand is copied first because it overlaps
        y[..., :-s].addcmul_(d[..., :-s], y[..., s:].clone())
        if 2 * s < T:  # the products are needed for the next stride only
            d[..., :-s].mul_(d[..., s:].clone())
        s *= 2
    return y


def _bootstrap_mask(terminated: Tensor, truncated: Tensor) -> Tensor:
    """Steps whose target bootstraps from ``next_values`` directly: truncated, or the window's last step."""
    boot = truncated.clone()
    if boot.shape[-1]:
        boot[..., -1] = True
    return boot & ~terminated


def td_errors(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    gamma,
    *,
    validate: bool = False,
) -> Tensor:
    """One-step TD errors ``δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)`` (elementwise).

    Sutton & Barto, ch. 6. Truncation does not matter here: ``next_values`` already holds the
    right bootstrap value.

    >>> td_errors(torch.tensor([1.]), torch.tensor([.5]), torch.tensor([2.]), torch.tensor([False]), 0.9)
    tensor([2.3000])
    """
    gamma, _ = check_inputs(
        validate,
        gamma,
        None,
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
    )
    dtype = compute_dtype(rewards)
    g = gamma.to(dtype) if isinstance(gamma, Tensor) else gamma
    delta = (
        rewards.to(dtype) + g * (~terminated).to(dtype) * next_values.to(dtype) - values.to(dtype)
    )
    return delta.to(rewards.dtype)


def discounted_returns(
    rewards: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma,
    time_dim: int = -1,
    *,
    validate: bool = False,
) -> Tensor:
    """Monte Carlo returns inside the window, bootstrapped where the episode was cut.

    ``G_t = r_t + γ (1 − terminated_t) · (next_values_t if truncated_t or t = T−1 else G_{t+1})``.

    >>> discounted_returns(torch.tensor([1., 1.]), torch.tensor([5., 5.]), torch.tensor([False, False]),
    ...                    torch.tensor([False, False]), 0.5)
    tensor([2.7500, 3.5000])
    """
    gamma, _ = check_inputs(
        validate,
        gamma,
        None,
        rewards=rewards,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    r, nv, term, trunc, g = to_time_last(
        time_dim, rewards, next_values, terminated, truncated, gamma
    )
    x = r + g * _bootstrap_mask(term, trunc).to(r.dtype) * nv
    decay = g * (~(term | trunc)).to(r.dtype)
    return reverse_discounted_cumsum(x, decay).movedim(-1, time_dim).to(rewards.dtype)


def n_step_returns(
    rewards: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma,
    n: int,
    time_dim: int = -1,
    *,
    validate: bool = False,
) -> Tensor:
    """n-step returns ``G_t^(n) = Σ_{k<m} γ^k r_{t+k} + γ^m (1 − terminated_{t+m−1}) V(s_{t+m})``.

    ``m = min(n, steps to the end of the episode, steps to the end of the window)``; the bootstrap
    ``V(s_{t+m})`` is read from ``next_values[t+m−1]``. Like every estimator here it takes only
    what its formula uses (no ``values``). Sutton & Barto §7.1.

    >>> r = torch.ones(3); f = torch.zeros(3, dtype=torch.bool)
    >>> n_step_returns(r, torch.full((3,), 10.), f, f, 1.0, n=2)
    tensor([12., 12., 11.])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    gamma, _ = check_inputs(
        validate,
        gamma,
        None,
        rewards=rewards,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    r, nv, term, trunc, g = to_time_last(
        time_dim, rewards, next_values, terminated, truncated, gamma
    )
    g = g * torch.ones_like(r)
    T = r.shape[-1]
    stop = term | trunc  # the sum for t stops after step t+k if stop[t+k] ...
    if T:
        stop[..., -1] = True  # ... or t+k is the window's last step

    def ahead(x: Tensor, k: int) -> Tensor:  # x[t+k] at position t (zero/False past the window)
        return torch.nn.functional.pad(x[..., k:], (0, k))

    # Walk k = 0..n-1 steps ahead; `alive[t]` = the sum for t still runs at step t+k.
    G, discount, alive = torch.zeros_like(r), torch.ones_like(r), torch.ones_like(stop)
    for k in range(min(n, T)):
        G = G + alive.to(r.dtype) * discount * ahead(r, k)
        last = alive & (ahead(stop, k) | (k == n - 1))  # step t+k is the last one summed for t
        discount = discount * ahead(g, k)
        G = G + (last & ~ahead(term, k)).to(r.dtype) * discount * ahead(nv, k)
        alive = alive & ~last
    return G.movedim(-1, time_dim).to(rewards.dtype)


def lambda_returns(
    rewards: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma,
    lmbda,
    time_dim: int = -1,
    *,
    validate: bool = False,
) -> Tensor:
    """λ-returns ``G^λ_t = r_t + γ (1 − terminated_t) [(1 − λ) V(s_{t+1}) + λ · next_t]``,
    ``next_t = G^λ_{t+1}``, or ``V(s_{t+1})`` at a truncated step and at the window's end.

    The weighted average ``(1 − λ) Σ_n λ^{n−1} G^(n)`` of n-step returns (Sutton & Barto §12.1);
    λ = 0 gives the TD(0) target, λ = 1 the bootstrapped Monte Carlo return. Like TorchRL's
    ``td_lambda_return_estimate`` and rlax's ``lambda_returns`` it bootstraps from
    ``next_values`` only (it takes no ``values``), so it equals ``gae(...).returns`` whenever
    ``next_values[t] = values[t+1]`` inside episodes.

    >>> f = torch.zeros(2, dtype=torch.bool)
    >>> lambda_returns(torch.ones(2), torch.full((2,), 4.), f, f, 0.5, 0.5)
    tensor([2.7500, 3.0000])
    """
    gamma, lmbda = check_inputs(
        validate,
        gamma,
        lmbda,
        rewards=rewards,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
    )
    r, nv, term, trunc, g, lam = to_time_last(
        time_dim, rewards, next_values, terminated, truncated, gamma, lmbda
    )
    boot = _bootstrap_mask(term, trunc).to(r.dtype)
    x = r + g * (~term).to(r.dtype) * nv * ((1 - lam) + lam * boot)
    decay = g * lam * (~(term | trunc)).to(r.dtype)
    return reverse_discounted_cumsum(x, decay).movedim(-1, time_dim).to(rewards.dtype)
