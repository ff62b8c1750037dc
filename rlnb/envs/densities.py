"""Distributions with exact answers, for the diffusion notebook (14): a Gaussian mixture in the
plane (its density, samples, and the exact posterior of the clean point given a noisy one) and a
Markov chain over bit strings (every string's probability), with the reward-tilted target

    p*(x) ∝ p(x) · exp(r(x) / α)

of each: exact samples by rejection in the plane, enumerated probabilities for the strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlnb.estimators.soft import soft_value


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected > 0, got {value}")


@dataclass
class GaussianMixture:
    """``Σ_k w_k N(m_k, s² I)``: ``means [K, d]``, one ``std`` s for every component, ``weights
    [K]`` summing to one."""

    means: Tensor
    std: float
    weights: Tensor

    def __post_init__(self):
        _positive("std", self.std)
        if self.means.ndim != 2 or self.weights.shape != self.means.shape[:1]:
            raise ValueError(
                f"means, weights: expected [K, d] and [K], got {tuple(self.means.shape)} and "
                f"{tuple(self.weights.shape)}"
            )

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, gen: torch.Generator | None = None) -> Tensor:
        """``[n, d]`` exact samples."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        noise = torch.randn(n, self.dim, generator=gen, dtype=self.means.dtype)
        return self.means[k] + self.std * noise

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` for ``x [..., d]``."""
        return self._terms(x, 1.0, self.std**2).logsumexp(-1)

    def _terms(self, x: Tensor, scale: float, variance: float) -> Tensor:
        """``[..., K]`` the terms ``log w_k + log N(x; scale·m_k, variance·I)``."""
        sq = ((x[..., None, :] - scale * self.means) ** 2).sum(-1)  # [..., K]
        norm = 0.5 * self.dim * math.log(2 * math.pi * variance)
        return self.weights.log() - 0.5 * sq / variance - norm

    def posterior(self, x_t: Tensor, alpha_bar: float) -> tuple[Tensor, Tensor, float]:
        """The exact law of ``x_0`` given ``x_t = √ᾱ x_0 + √(1−ᾱ) ε``: a mixture with weights
        ``[n, K]`` ∝ ``w_k N(x_t; √ᾱ m_k, (ᾱs² + 1 − ᾱ) I)``, means ``[n, K, d]`` =
        ``m_k + (√ᾱ s² / (ᾱs² + 1 − ᾱ)) (x_t − √ᾱ m_k)`` and one std
        ``s √((1 − ᾱ) / (ᾱs² + 1 − ᾱ))``."""
        if not 0 < alpha_bar <= 1:
            raise ValueError(f"alpha_bar: expected in (0, 1], got {alpha_bar}")
        a, s2 = alpha_bar, self.std**2
        var_t = a * s2 + 1 - a
        weights = self._terms(x_t, math.sqrt(a), var_t).softmax(-1)
        means = self.means + (math.sqrt(a) * s2 / var_t) * (
            x_t[..., None, :] - math.sqrt(a) * self.means
        )
        return weights, means, math.sqrt(s2 * (1 - a) / var_t)

    def posterior_sample(
        self, x_t: Tensor, alpha_bar: float, k: int, gen: torch.Generator | None = None
    ) -> Tensor:
        """``[n, k, d]``: ``k`` exact draws of ``x_0`` given each row of ``x_t [n, d]``."""
        weights, means, std = self.posterior(x_t, alpha_bar)
        comp = torch.multinomial(weights, k, replacement=True, generator=gen)  # [n, k]
        mean = means.gather(1, comp[..., None].expand(-1, -1, self.dim))
        return mean + std * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)

    def soft_value(
        self,
        x_t: Tensor,
        alpha_bar: float,
        reward: Callable[[Tensor], Tensor],
        alpha: float,
        k: int = 64,
        gen: torch.Generator | None = None,
    ) -> Tensor:
        """``[n]`` the soft value ``α log E[exp(r(x_0)/α) | x_t]`` under this mixture, estimated
        from ``k`` exact posterior draws per row (``rlnb.estimators.soft.soft_value``)."""
        x0 = self.posterior_sample(x_t, alpha_bar, k, gen)
        return soft_value(reward(x0.reshape(-1, self.dim)).view(len(x_t), k), alpha)

    def noise_prediction(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        """The exact ``E[ε | x_t] = (x_t − √ᾱ E[x_0 | x_t]) / √(1 − ᾱ)``: the ideal denoiser of a
        diffusion model trained on this mixture (``alpha_bar < 1``)."""
        if not 0 < alpha_bar < 1:
            raise ValueError(f"alpha_bar: expected in (0, 1), got {alpha_bar}")
        weights, means, _ = self.posterior(x_t, alpha_bar)
        x0 = (weights[..., None] * means).sum(-2)
        return (x_t - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """``k`` equal components on a circle of ``radius``, the first on the positive x-axis."""
    angle = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k)
    means = radius * torch.stack([angle.cos(), angle.sin()], -1)
    return GaussianMixture(means, std, torch.full((k,), 1.0 / k))


def tilted_samples(
    dist: GaussianMixture,
    reward: Callable[[Tensor], Tensor],
    alpha: float,
    n: int,
    r_max: float,
    gen: torch.Generator | None = None,
) -> Tensor:
    """``[n, d]`` exact samples of ``p*(x) ∝ p(x) exp(r(x)/α)`` by rejection: propose from
    ``dist``, accept with probability ``exp((r(x) − r_max)/α)``; ``r_max`` must bound the
    reward (a proposal above it is a ``ValueError``, and so is an acceptance rate so low that
    1 000 rounds of proposals do not yield ``n`` samples)."""
    _positive("alpha", alpha)
    kept, total = [], 0
    for _ in range(1000):
        if total >= n:
            break
        x = dist.sample(max(4 * n, 1024), gen)
        r = reward(x)
        if (r > r_max).any():
            raise ValueError(f"r_max: a reward {r.max().item():.4g} exceeds r_max = {r_max}")
        accept = torch.rand(len(x), generator=gen) < torch.exp((r - r_max) / alpha)
        kept.append(x[accept])
        total += int(accept.sum())
    if total < n:
        raise ValueError(
            f"r_max: {total} of {n} samples accepted in 1000 rounds; is r_max far above the reward?"
        )
    return torch.cat(kept)[:n]


def tilted_density(
    dist: GaussianMixture, reward: Callable[[Tensor], Tensor], alpha: float, lim: float = 3.0,
    size: int = 120,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(grid [size², 2], density [size, size])``: ``p(x) exp(r(x)/α)`` on a square grid over
    ``[−lim, lim]²``, normalised to integrate to one on the grid (row i is the i-th y value)."""
    _positive("alpha", alpha)
    axis = torch.linspace(-lim, lim, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    log_d = dist.log_prob(grid) + reward(grid) / alpha
    d = (log_d - log_d.max()).exp()
    cell = (axis[1] - axis[0]) ** 2
    return grid, (d / (d.sum() * cell)).view(size, size)


@dataclass
class MarkovBits:
    """Bit strings of ``length`` L from a Markov chain: the first bit is 1 with probability
    ``p_one``, and each next bit repeats the previous one with probability ``p_stay``."""

    length: int = 6
    p_one: float = 0.3
    p_stay: float = 0.8

    def strings(self) -> Tensor:
        """``[2^L, L]`` every string, in binary order (row i is i written in L bits)."""
        i = torch.arange(2**self.length)
        return (i[:, None] >> torch.arange(self.length - 1, -1, -1)) & 1

    def probs(self) -> Tensor:
        """``[2^L]`` the probability of each row of ``strings()`` (float64)."""
        x = self.strings().double()
        first = torch.where(x[:, 0] == 1, self.p_one, 1 - self.p_one)
        same = (x[:, 1:] == x[:, :-1]).double()
        steps = same * self.p_stay + (1 - same) * (1 - self.p_stay)
        return first * steps.prod(-1)

    def soft_value(self, x_t: Tensor, mask: int, rewards: Tensor, alpha: float) -> Tensor:
        """``[n]`` the exact soft value ``α log E[exp(r(x_0)/α) | x_t]`` of partly masked strings
        ``x_t [n, L]`` (token ``mask`` hidden): ``x_0`` is drawn from this chain given the
        revealed tokens. ``rewards [2^L]`` is the reward of each row of ``strings()``. Computed as
        ``r_max + α log(Σ_fit p e^{(r − r_max)/α} / Σ_fit p)`` in float64, exact while
        ``(r_max − r_min)/α`` stays below about 700 (else a ``ValueError``)."""
        _positive("alpha", alpha)
        r = rewards.double()
        top = r.max()
        if (top - r.min()) / alpha > 700:
            raise ValueError(f"alpha: expected ≥ (r_max − r_min)/700, got {alpha}")
        place = 1 << torch.arange(self.length - 1, -1, -1, device=x_t.device)
        revealed = ((x_t != mask).long() * place).sum(-1, keepdim=True)  # bit i: position i shown
        ones = ((x_t == 1).long() * place).sum(-1, keepdim=True)
        fits = ((torch.arange(2**self.length, device=x_t.device) & revealed) == ones).double()
        p = self.probs()
        tilted = fits @ (p * torch.exp((r - top) / alpha))  # [n]; fits [n, 2^L]: strings that agree
        return (top + alpha * torch.log(tilted / (fits @ p))).float()

    def sample(self, n: int, gen: torch.Generator | None = None) -> Tensor:
        """``[n, L]`` exact samples (long)."""
        idx = torch.multinomial(self.probs(), n, replacement=True, generator=gen)
        return self.strings()[idx]


def string_index(x: Tensor) -> Tensor:
    """``[n]`` the row of ``MarkovBits.strings()`` that each bit string ``x [n, L]`` is."""
    L = x.shape[-1]
    return (x.long() << torch.arange(L - 1, -1, -1, device=x.device)).sum(-1)


def tilted_probs(probs: Tensor, rewards: Tensor, alpha: float) -> Tensor:
    """The enumerated ``p*(x) = p(x) exp(r(x)/α) / Σ_y p(y) exp(r(y)/α)`` (a softmax of
    ``log p + r/α``, so a small α does not overflow)."""
    _positive("alpha", alpha)
    if probs.shape != rewards.shape:
        raise ValueError(
            f"probs, rewards: expected the same shape, got {tuple(probs.shape)} and "
            f"{tuple(rewards.shape)}"
        )
    return (probs.log() + rewards.to(probs.dtype) / alpha).softmax(-1)
