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
through ``reverse_discounted_cumsum``, exact (no truncated filter), with ``d_t = 0`` at episode
boundaries: a doubling scan (⌈log2 T⌉ vectorised steps instead of T sequential ones), or for long
horizons on the CPU a blocked scan, chosen by ``scan_method`` from the shape and device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlnb.estimators._checks import check_inputs, compute_dtype, from_time_last, to_time_last

# Which scan (``scan_method``), measured on 2 cores over B ∈ {1, 16, 256, 4096} × T ∈ {64, 256,
# 1024, 16384} (benchmarks/results/estimators.md): below BLOCKED_MIN_ELEMENTS the kernel count
# decides and the buffered doubling scan wins; above it, passes over memory decide: the blocked
# scan from BLOCKED_MIN_T steps on (1.2× to 4.8× the doubling scan), the in-place doubling scan
# for shorter horizons (at [4096, 64]: 0.71 ms against 0.94 ms blocked). A single block (the
# batch-vectorised reverse loop) and blocks of 4 to 256 steps were slower than these.
BLOCKED_MIN_ELEMENTS = 2**17
BLOCKED_MIN_T = 256
BLOCK = 8


def reverse_discounted_cumsum(x: Tensor, decay: Tensor) -> Tensor:
    """Solve ``y_t = x_t + decay_t · y_{t+1}`` backwards along the last axis, with ``y_T = 0``.

    One of three exact algorithms, picked by ``scan_method`` from the shape and device: the
    doubling scan, ⌈log2 T⌉ vectorised steps (``_scan_doubling_buffered`` for small CPU inputs,
    ``_scan_doubling`` for the rest and GPUs, ``_scan_doubling_autograd`` when a gradient flows),
    or the blocked scan (``_scan_blocked``: a loop over the 8 positions of each block, then the
    same recursion over the blocks; long horizons on the CPU).

    >>> reverse_discounted_cumsum(torch.tensor([1., 1., 1.]), torch.tensor([.5, .5, .5]))
    tensor([1.7500, 1.5000, 1.0000])
    """
    if x.shape != decay.shape:
        raise ValueError(
            f"decay: expected the shape of x {tuple(x.shape)}, got {tuple(decay.shape)}"
        )
    return SCANS[scan_method(x, decay)](x, decay)


def scan_method(x: Tensor, decay: Tensor) -> str:
    """The key in ``SCANS`` of the scan ``reverse_discounted_cumsum`` uses for these inputs
    (thresholds above)."""
    if torch.is_grad_enabled() and (x.requires_grad or decay.requires_grad):
        return "autograd"
    if x.device.type != "cpu":
        return "doubling"
    if x.numel() < BLOCKED_MIN_ELEMENTS:
        return "buffered"
    return "blocked" if x.shape[-1] >= BLOCKED_MIN_T else "doubling"


def _scan_doubling(x: Tensor, decay: Tensor) -> Tensor:
    """A Hillis–Steele scan: after the step with stride ``s`` each ``y_t`` holds the sum over
    ``[t, t + 2s)`` and ``decay_t`` the product of the decays over the same span. ⌈log2 T⌉ steps
    of a few elementwise kernels each, on any device."""
    T = x.shape[-1]
    y, d, s = x.clone(), decay.clone(), 1
    while s < T:
        # in place on our own copies; the shifted operand is copied first because it overlaps
        y[..., :-s].addcmul_(d[..., :-s], y[..., s:].clone())
        if 2 * s < T:  # the products are needed for the next stride only
            d[..., :-s].mul_(d[..., s:].clone())
        s *= 2
    return y


def _scan_doubling_autograd(x: Tensor, decay: Tensor) -> Tensor:
    """``_scan_doubling`` out of place, so autograd can differentiate through the scan."""
    T, y, d, s = x.shape[-1], x, decay, 1
    while s < T:
        y = torch.cat([y[..., :-s] + d[..., :-s] * y[..., s:], y[..., -s:]], dim=-1)
        d = torch.cat([d[..., :-s] * d[..., s:], d[..., -s:]], dim=-1)
        s *= 2
    return y


def _scan_doubling_buffered(x: Tensor, decay: Tensor) -> Tensor:
    """The doubling scan with two buffers each for ``y`` and ``decay``, zero beyond T, so a shifted
    read never overlaps the write: one kernel per update and no copies (fewer kernels than
    ``_scan_doubling``, which is what counts on small inputs; twice the memory). Returns a view."""
    T = x.shape[-1]
    ys = [x.new_zeros(*x.shape[:-1], 2 * T) for _ in range(2)]
    ds = [x.new_zeros(*x.shape[:-1], 2 * T) for _ in range(2)]
    y_lo, d_lo = [b[..., :T] for b in ys], [b[..., :T] for b in ds]
    y_lo[0].copy_(x)
    d_lo[0].copy_(decay)
    s, i, j = 1, 0, 0  # ys[i] and ds[j] hold the current values
    while s < T:
        torch.addcmul(y_lo[i], d_lo[j], ys[i][..., s : s + T], out=y_lo[1 - i])
        if 2 * s < T:  # the products are needed for the next stride only
            torch.mul(d_lo[j], ds[j][..., s : s + T], out=d_lo[1 - j])
            j = 1 - j
        i = 1 - i
        s *= 2
    return y_lo[i]


def _scan_blocked(x: Tensor, decay: Tensor, block: int) -> Tensor:
    """The horizon cut into ``n`` blocks of length ``K = block`` (the last one zero-padded):

    1. within each block, a reverse loop over its K positions, every block and batch row at once,
       gives ``y`` as if nothing followed the block, and ``P_t`` = the product of the decays from
       ``t`` to the block's end;
    2. the true values at the blocks' first positions solve the same recursion over the blocks,
       ``s_j = y_j + P_j · s_{j+1}`` (a scan of length n);
    3. every position adds ``P_t · s_{j+1}``, what flows in from the blocks after its own.

    The data are laid out ``[K, batch, n]`` first, so each loop step is one contiguous row. Step 2
    calls ``reverse_discounted_cumsum`` again, so a long horizon is cut K-fold at each level: about
    five passes over memory in all, against 2⌈log2 T⌉ for the doubling scan.
    """
    shape, T = x.shape, x.shape[-1]
    x2, d2 = x.reshape(-1, T), decay.reshape(-1, T)
    n = -(-T // block)
    if n * block != T:  # zeros after the end: y = 0 there, and nothing flows back from them
        x2 = torch.nn.functional.pad(x2, (0, n * block - T))
        d2 = torch.nn.functional.pad(d2, (0, n * block - T))
    rows = x2.shape[0]
    y = x2.reshape(rows, n, block).permute(2, 0, 1).contiguous()  # [K, rows, n], our own copy
    p = d2.reshape(rows, n, block).permute(2, 0, 1).contiguous()
    for k in range(block - 2, -1, -1):
        y[k].addcmul_(p[k], y[k + 1])
        if n > 1:
            p[k].mul_(p[k + 1])
    if n > 1:
        starts = reverse_discounted_cumsum(y[0], p[0])  # [rows, n]: the true y at block starts
        y[:, :, :-1].addcmul_(p[:, :, :-1], starts[:, 1:])
    return y.permute(1, 2, 0).reshape(rows, n * block)[:, :T].reshape(shape)


SCANS = {
    "autograd": _scan_doubling_autograd,
    "doubling": _scan_doubling,
    "buffered": _scan_doubling_buffered,
    "blocked": lambda x, decay: _scan_blocked(x, decay, BLOCK),
}


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
    return from_time_last(reverse_discounted_cumsum(x, decay), time_dim, rewards.dtype)


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
    return from_time_last(G, time_dim, rewards.dtype)


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
    # in place on fresh tensors: fewer passes over memory (benchmarks/estimators.py)
    weight = _bootstrap_mask(term, trunc).to(r.dtype).mul_(lam).add_(1 - lam)  # 1 where it boots
    x = torch.where(term, 0.0, nv).mul_(weight).mul_(g).add_(r)
    decay = torch.where(term | trunc, 0.0, torch.as_tensor(g * lam, dtype=r.dtype, device=r.device))
    return from_time_last(reverse_discounted_cumsum(x, decay), time_dim, rewards.dtype)
