"""Sampling a pretrained diffusion model toward a high reward without training it.

Every function takes a model with the interface of ``rlnb.models.diffusion`` (``T``, ``prior``,
``propose``, ``denoise``, ``calls``) and a reward ``r(x_0) → [n]`` that is never differentiated
(everything runs under ``torch.no_grad``; ``r`` may be an indicator or a program). Each returns
``DiffusionSamples(x, calls)``: the samples and the network evaluations spent per sample
(denoiser and value network alike; one evaluation of one row is one call), so that methods are
compared at equal calls.

The target of the guided samplers is the reward-tilted distribution

    p*(x_0) ∝ p(x_0) · exp(r(x_0) / α),

reached exactly by the transitions ``p*(x_{t−1} | x_t) ∝ p(x_{t−1} | x_t) exp(v_{t−1}(x_{t−1})/α)``
with the soft value ``v_t(x_t) = α log E[exp(r(x_0)/α) | x_t]`` (``v_0 = r``).

- ``ancestral_sample``: the pretrained model (T calls).
- ``best_of_n_samples``: N independent samples, the highest reward kept (N·T calls).
- ``svdd``: "Derivative-Free Guidance in Continuous and Discrete Diffusion Models with Soft
  Value-Based Decoding" (SVDD): at each step M candidates from the pretrained transition, one
  resampled with weights ``softmax(v̂(x_{t−1})/α)``; ``value="pm"`` (SVDD-PM) takes
  ``v̂ = r(x̂_0(x_{t−1}))`` with the model's own denoised guess (M calls per step); SVDD-MC passes
  a network regressed on ``r(x_0)`` (``rlnb.train.diffusion.train_value``). At the last step
  ``v̂ = r`` itself. Calls: ``T + M (T − 1)``.
- ``doob_guided``: a Doob h-transform correction in the spirit of "Training-Free Adaptation of
  Diffusion Models via Doob's h-Transform" (DOIT; only its abstract was available: this is our
  version, see the function).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rlnb.envs.densities import _positive


class DiffusionSamples(NamedTuple):
    """``x`` the samples; ``calls`` the network evaluations spent per sample."""

    x: Tensor
    calls: float


def _count(name: str, value, low: int = 1) -> None:
    if not (isinstance(value, int) and value >= low):
        raise ValueError(f"{name}: expected an integer ≥ {low}, got {value!r}")


def _pick(candidates: Tensor, scores: Tensor, temperature: float,
          gen: torch.Generator | None) -> Tensor:  # fmt: skip
    """``[n, …]``: one of the ``m`` candidates ``[n, m, …]`` per row, drawn with probabilities
    ``softmax(scores [n, m] / temperature)``; the best (the first on ties) at temperature 0.
    ``gen`` is a CPU generator, as everywhere in this module."""
    if temperature == 0:
        idx = scores.argmax(-1).to(candidates.device)
    else:
        probs = (scores.float() / temperature).softmax(-1)
        idx = torch.multinomial(probs.cpu(), 1, generator=gen)[:, 0].to(candidates.device)
    return candidates[torch.arange(len(candidates), device=candidates.device), idx]


@torch.no_grad()
def ancestral_sample(
    model, n: int, gen: torch.Generator | None = None, cond: Tensor | None = None
) -> DiffusionSamples:
    """``n`` samples of the pretrained model: ``x_T`` from the prior, then ``T`` transitions;
    with ``cond [n, c]`` row ``i`` is drawn given ``cond[i]`` (a state, for a diffusion policy)."""
    _count("n", n)
    if cond is not None and len(cond) != n:
        raise ValueError(f"cond: expected {n} rows, one per sample, got {len(cond)}")
    start, x = model.calls, model.prior(n, gen)
    for t in range(model.T, 0, -1):
        x = model.propose(x, t, 1, gen, cond=cond)[:, 0]
    return DiffusionSamples(x, (model.calls - start) / n)


@torch.no_grad()
def best_of_n_samples(
    model, reward: Callable[[Tensor], Tensor], n: int, N: int, gen: torch.Generator | None = None
) -> DiffusionSamples:
    """For each of ``n`` outputs, ``N`` pretrained samples and the one with the highest reward
    (the first on ties); ``N·T`` calls per output."""
    _count("N", N)
    pool = ancestral_sample(model, n * N, gen)
    r = reward(pool.x).view(n, N)
    best = pool.x.view(n, N, *pool.x.shape[1:])[torch.arange(n), r.argmax(-1)]
    return DiffusionSamples(best, pool.calls * N)


@torch.no_grad()
def svdd(
    model,
    reward: Callable[[Tensor], Tensor],
    n: int,
    M: int,
    alpha: float,
    value: str | Callable[[Tensor, int], Tensor] = "pm",
    gen: torch.Generator | None = None,
) -> DiffusionSamples:
    """SVDD: ``n`` samples, each step drawing ``M`` candidates ``x_{t−1}^m ~ p(· | x_t)`` and
    keeping one with probability ``∝ exp(v̂_{t−1}(x_{t−1}^m) / α)``.

    ``value="pm"`` (SVDD-PM): ``v̂_s(x) = r(x̂_0(x))``, the model's denoised guess (the posterior
    mean for points, the most likely tokens for strings), one call per candidate; a callable
    ``value(x, s) → [n]``: ``v̂_s(x) = value(x, s)``, one call per candidate — SVDD-MC passes the
    network of ``rlnb.train.diffusion.train_value``, and an exact soft value can be passed where
    one is known. ``v̂_0 = r``: the last step is judged by the reward itself.

    ``alpha = 0`` keeps the best candidate, which is what the public SVDD code does (an argmax over
    the M candidates). With M = 1 the samples are distributed as ``ancestral_sample``'s (SVDD-PM
    still spends its value calls). As M → ∞ with the exact soft value of the model's own chain it
    samples that chain's tilted distribution exactly.
    """
    _count("n", n)
    _count("M", M)
    if not alpha >= 0:
        raise ValueError(f"alpha: expected ≥ 0 (0: keep the best candidate), got {alpha}")
    if not (value == "pm" or callable(value)):
        raise ValueError(f"value: expected 'pm' or a callable value(x, t), got {value!r}")
    start, value_calls = model.calls, 0
    x = model.prior(n, gen)
    for t in range(model.T, 0, -1):
        cand = model.propose(x, t, M, gen)  # [n, M, …]
        flat = cand.reshape(n * M, *cand.shape[2:])
        if t == 1:
            v = reward(flat)
        elif value == "pm":
            v = reward(model.denoise(flat, t - 1))
        else:
            v = value(flat, t - 1)
            value_calls += n * M
        x = _pick(cand, v.view(n, M), alpha, gen)
    return DiffusionSamples(x, (model.calls - start + value_calls) / n)


@torch.no_grad()
def doob_guided(
    model,
    reward: Callable[[Tensor], Tensor],
    n: int,
    lam: float,
    n_mc: int = 8,
    gen: torch.Generator | None = None,
) -> DiffusionSamples:
    """A Doob h-transform correction of a ``GaussianDiffusion``'s sampler, ``h`` estimated by
    simulation. With ``h_t(x) = E[exp(r(x_0)/λ) | x_t = x]`` the transformed transition is
    ``p^h(x_{t−1} | x_t) ∝ N(x_{t−1}; μ_t, σ_t² I) h_{t−1}(x_{t−1})``; taking ``log h_{t−1}``
    linear over the step gives ``N(μ_t + σ_t² ∇ log h, σ_t² I)``, a drift correction. We estimate
    it without differentiating the reward or the model: draw ``z_j ~ N(0, I)``, ``j ≤ n_mc``,
    roll ``μ_t + σ_t z_j`` out with the pretrained model to ``x_0^j``, and use

        σ_t² ∇ log h ≈ σ_t Σ_j (w_j − 1/n_mc) z_j,   w = softmax(r(x_0^j) / λ),

    the self-normalised score-function estimate of the gradient of the Gaussian-smoothed h
    (``∇_μ E_z h(μ + σz) = E_z[h(μ + σz) z] / σ``), with the mean of the ``z_j`` subtracted as a
    baseline (unbiased, since ``E z = 0``; with a constant reward the correction is exactly zero
    and the sampler is the pretrained one). Then ``x_{t−1} = μ_t + correction + σ_t ε``. Calls
    per sample: ``T + n_mc T (T − 1) / 2``, the rollouts being the cost. How the paper estimates
    its correction is not known here (only its abstract was available); this is the standard
    h-transform drift with a simulation estimate. Each ``h`` is a one-rollout estimate, so the
    self-normalised weights are biased at finite ``n_mc``.
    """
    _count("n", n)
    _count("n_mc", n_mc)
    _positive("lam", lam)
    if not hasattr(model, "mean_std"):
        raise ValueError(
            "model: doob_guided needs a Gaussian model with mean_std (a GaussianDiffusion)"
        )
    start, x = model.calls, model.prior(n, gen)
    for t in range(model.T, 0, -1):
        mean, std = model.mean_std(x, t)
        if t == 1:
            x = mean
            break
        z = torch.randn((n, n_mc, model.dim), generator=gen).to(x.device)
        y = (mean[:, None] + std * z).reshape(n * n_mc, model.dim)
        for s in range(t - 1, 0, -1):
            y = model.propose(y, s, 1, gen)[:, 0]
        w = (reward(y).float().view(n, n_mc) / lam).softmax(-1)
        drift = std * ((w - 1.0 / n_mc)[..., None] * z).sum(1)
        x = mean + drift + std * torch.randn(mean.shape, generator=gen).to(x.device)
    return DiffusionSamples(x, (model.calls - start) / n)
