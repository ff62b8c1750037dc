"""Networks for continuous actions: a tanh-squashed Gaussian policy and an ensemble of Q-networks.

- ``SquashedGaussianPolicy``: ``a = tanh(u)·scale + bias`` with ``u ~ N(μ(s), σ(s)²)``; the
  log-probability carries the change of variables ``− Σ log(scale (1 − tanh(u)²) + 1e-6)``, and
  ``log σ`` is squashed into ``[−5, 2]`` by a rescaled tanh (CleanRL's SAC, after D. Yarats').
- ``QEnsemble``: ``n`` independent MLPs of ``(s, a)`` evaluated in one batched matrix product per
  layer (twin critics cost one forward pass). ``outputs=1`` gives ``Q``; ``outputs=2`` gives the
  mean and ``σ = softplus(·)`` of a Gaussian return distribution (DSAC-T).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class EnsembleLinear(nn.Module):
    """``n`` linear layers applied to ``x [n, B, in]`` at once: ``x W_i + b_i``, ``[n, B, out]``.
    Each member is initialised as ``nn.Linear`` would be."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class QEnsemble(nn.Module):
    """``n`` critics ``Q_i(s, a)``; ``forward(obs [B, o], act [B, a])`` returns ``[n, B]``
    (``outputs=1``) or the pair ``(mean [n, B], std [n, B])`` (``outputs=2``)."""

    def __init__(self, obs_dim: int, act_dim: int, n: int = 2, hidden=(256, 256), outputs: int = 1):
        super().__init__()
        if n < 1 or outputs not in (1, 2):
            raise ValueError(
                f"n, outputs: expected n ≥ 1 and outputs in (1, 2), got {n}, {outputs}"
            )
        dims = [obs_dim + act_dim, *hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [EnsembleLinear(n, a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, EnsembleLinear(n, dims[-1], outputs))
        self.n, self.outputs = n, outputs

    def forward(self, obs: Tensor, act: Tensor):
        x = torch.cat([obs, act], -1).expand(self.n, -1, -1)
        out = self.net(x)
        if self.outputs == 1:
            return out.squeeze(-1)
        return out[..., 0], nn.functional.softplus(out[..., 1])


class SquashedGaussianPolicy(nn.Module):
    """``π(a|s)``: a tanh-squashed Gaussian whose actions lie in ``[low, high]``."""

    def __init__(self, obs_dim: int, act_dim: int, low, high, hidden=(256, 256)):
        super().__init__()
        dims = [obs_dim, *hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.mean = nn.Linear(dims[-1], act_dim)
        self.log_std = nn.Linear(dims[-1], act_dim)
        low, high = (
            torch.as_tensor(low, dtype=torch.float32),
            torch.as_tensor(high, dtype=torch.float32),
        )
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("bias", (high + low) / 2)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ, log σ)`` of the pre-squash Gaussian, ``log σ`` in ``[−5, 2]``."""
        h = self.trunk(obs)
        log_std = torch.tanh(self.log_std(h))
        return self.mean(h), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(action, log π(action|s), deterministic action tanh(μ)·scale + bias)``, the action
        reparameterised (gradients flow through it)."""
        mu, log_std = self(obs)
        u = mu + log_std.exp() * torch.randn_like(mu)
        y = torch.tanh(u)
        normal_log_prob = (
            -0.5 * ((u - mu) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)
        )
        log_prob = (normal_log_prob - torch.log(self.scale * (1 - y.square()) + 1e-6)).sum(-1)
        return y * self.scale + self.bias, log_prob, torch.tanh(mu) * self.scale + self.bias

    def log_prob(self, obs: Tensor, action: Tensor, eps: float = 1e-3) -> Tensor:
        """``log π(action|s)`` ``[B]`` of given actions (for maximum-likelihood BC), the same
        change of variables as ``sample``; actions are first pulled ``eps`` inside the bounds so
        that those on a bound (clipped demonstrations) have a finite log-probability."""
        mu, log_std = self(obs)
        y = ((action - self.bias) / self.scale).clamp(-1 + eps, 1 - eps)
        u = torch.atanh(y)
        normal_log_prob = (
            -0.5 * ((u - mu) / log_std.exp()).square() - log_std - 0.5 * math.log(2 * math.pi)
        )
        return (normal_log_prob - torch.log(self.scale * (1 - y.square()) + 1e-6)).sum(-1)
