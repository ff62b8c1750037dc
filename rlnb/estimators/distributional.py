"""Values as distributions over a fixed support: the targets of classification-style value losses.

"Stop Regressing: Training Value Functions via Classification for Scalable Deep RL" trains value
networks with cross-entropy against a categorical target instead of a squared error. The targets:

- ``two_hot(x, support)``: all mass on the two support points around ``x``, split so the mean is
  exactly ``x`` (MuZero, DreamerV3, MR.Q).
- ``hl_gauss(x, bin_edges, sigma)``: the mass a Gaussian ``N(x, σ²)`` puts in each bin,
  ``p_k = Φ((e_{k+1} − x)/σ) − Φ((e_k − x)/σ)``, truncated to the support and renormalised
  (HL-Gauss, the paper's best).
- ``categorical_projection(next_probs, rewards, discounts, support)``: C51's target ("A
  Distributional Perspective on Reinforcement Learning"), the distribution of ``r + γ Z(s')``
  projected back onto the support.

``decode`` turns a distribution back into its mean; ``symlog``/``symexp`` squash wide-ranged
targets (DreamerV3). A ``support`` is a 1-D, strictly increasing tensor of ``K ≥ 2`` atoms; values
outside ``[support[0], support[-1]]`` are **clipped** to it before encoding (their mass goes to the
nearest end), so ``decode(two_hot(x)) = clip(x)``. Distributions are the last axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_support(name: str, support: Tensor) -> None:
    if support.ndim != 1 or support.numel() < 2:
        raise ValueError(
            f"{name}: expected a 1-D tensor of at least 2 atoms, got shape {tuple(support.shape)}"
        )
    if not bool(torch.isfinite(support).all()) or not bool((support[1:] > support[:-1]).all()):
        raise ValueError(f"{name}: expected finite, strictly increasing values")


def symlog(x: Tensor) -> Tensor:
    """``sign(x) · log(1 + |x|)``: identity near 0, logarithmic far away (DreamerV3)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """``sign(x) · (exp(|x|) − 1)``, the inverse of ``symlog``."""
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(x: Tensor, support: Tensor) -> Tensor:
    """Two-hot encoding ``[..., K]`` of ``x [...]``: for ``z_i ≤ x ≤ z_{i+1}``,
    ``p_i = (z_{i+1} − x)/(z_{i+1} − z_i)`` and ``p_{i+1} = 1 − p_i``, so ``Σ p z = x``.
    float32 and float64 in give the same dtype out; any other dtype (bf16, fp16, integers) gives
    float32, since a bf16 probability would lose the split.

    >>> two_hot(torch.tensor(0.25), torch.tensor([0.0, 1.0, 2.0]))
    tensor([0.7500, 0.2500, 0.0000])
    """
    _check_support("support", support)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    z = support.to(dtype)
    x = x.to(dtype).clamp(z[0], z[-1])
    upper = torch.searchsorted(z, x.contiguous(), right=True).clamp(1, z.numel() - 1)
    lo, hi = z[upper - 1], z[upper]
    w_hi = (x - lo) / (hi - lo)
    out = torch.zeros(*x.shape, z.numel(), dtype=dtype, device=x.device)
    out.scatter_(-1, (upper - 1).unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
    out.scatter_add_(-1, upper.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


def hl_gauss(x: Tensor, bin_edges: Tensor, sigma: float) -> Tensor:
    """HL-Gauss target ``[..., K]`` over the ``K`` bins between ``bin_edges [K + 1]``:
    ``p_k ∝ Φ((e_{k+1} − x)/σ) − Φ((e_k − x)/σ)``, normalised over the support ("Stop
    Regressing"; the paper sets σ to 0.75 bin widths). Decode with the bin centres. float32 and
    float64 in give the same dtype out; any other dtype gives float32 (as ``two_hot``)."""
    _check_support("bin_edges", bin_edges)
    if not sigma > 0:
        raise ValueError(f"sigma: expected > 0, got {sigma}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    e = bin_edges.to(dtype)
    x = x.to(dtype).clamp(e[0], e[-1])
    cdf = torch.special.erf((e - x.unsqueeze(-1)) / (sigma * math.sqrt(2.0)))  # 2Φ − 1
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / (cdf[..., -1:] - cdf[..., :1])


def decode(probs_or_logits: Tensor, support: Tensor, logits: bool = False) -> Tensor:
    """The mean ``Σ_k p_k z_k`` of a distribution ``[..., K]`` over ``support [K]``; with
    ``logits=True`` the input is first passed through a softmax."""
    _check_support("support", support)
    if probs_or_logits.shape[-1] != support.numel():
        raise ValueError(
            f"probs_or_logits: expected a last axis of {support.numel()} (the support), "
            f"got shape {tuple(probs_or_logits.shape)}"
        )
    p = torch.softmax(probs_or_logits.float(), -1) if logits else probs_or_logits
    return (p * support.to(p.dtype)).sum(-1).to(probs_or_logits.dtype)


def categorical_projection(
    next_probs: Tensor, rewards: Tensor, discounts: Tensor, support: Tensor
) -> Tensor:
    """C51's target: project the distribution of ``r + γ z_j`` (probabilities ``next_probs[..., j]``)
    onto ``support``: ``m = Σ_j p_j · two_hot(clip(r + γ z_j), support)``. ``discounts`` is
    ``γ · (1 − terminated)``. Shapes ``[..., K]``, ``[...]``, ``[...]`` → ``[..., K]``. On an
    evenly spaced support this is exactly the paper's ``l = ⌊b⌋, u = ⌈b⌉`` split."""
    _check_support("support", support)
    if next_probs.shape[-1] != support.numel():
        raise ValueError(
            f"next_probs: expected one probability per support atom (last axis {support.numel()}), "
            f"got shape {tuple(next_probs.shape)}"
        )
    if rewards.shape != discounts.shape or next_probs.shape[:-1] != rewards.shape:
        raise ValueError(
            f"next_probs, rewards, discounts: expected [..., K], [...], [...] with the same [...], "
            f"got {tuple(next_probs.shape)}, {tuple(rewards.shape)}, {tuple(discounts.shape)}"
        )
    targets = rewards.unsqueeze(-1) + discounts.unsqueeze(-1) * support.to(rewards.dtype)
    projected = two_hot(targets, support)  # [..., K (source atom j), K (target atom)]
    return (next_probs.unsqueeze(-1).to(projected.dtype) * projected).sum(-2).to(next_probs.dtype)
