"""Value and Q networks whose head is a scalar regression or a classification over bins.

``ValueNetwork(in_dim, n_outputs, head=...)`` maps observations ``[B, in_dim]`` to ``n_outputs``
values (one per action for a Q-network, 1 for a state-value network). Whatever the head,
``value(x)`` returns the scalar estimates ``[B, n_outputs]`` and ``loss(x, targets)`` the loss
against scalar targets ``[B, n_outputs]`` (or ``[B]`` with ``index`` choosing one output per row):

- ``scalar``: one number per output; squared error or Huber.
- ``two_hot``: logits over ``n_bins`` atoms; cross-entropy against ``two_hot(target)``.
- ``hl_gauss``: logits over ``n_bins`` bins; cross-entropy against ``hl_gauss(target, σ)`` with
  ``σ = sigma_ratio × bin width`` ("Stop Regressing" uses 0.75).
- ``c51``: logits over ``n_bins`` atoms; trained with ``categorical_loss`` against a projected
  target distribution (C51); ``loss`` on scalar targets uses their two-hot encoding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlnb.estimators.distributional import categorical_projection, decode, hl_gauss, two_hot

HEADS = ("scalar", "two_hot", "hl_gauss", "c51")


class MLP(nn.Sequential):
    """``in_dim → hidden… → out_dim`` with ``activation`` between layers."""

    def __init__(self, in_dim: int, out_dim: int, hidden=(64, 64), activation=nn.ReLU):
        dims = [in_dim, *hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation()]
        super().__init__(*layers, nn.Linear(dims[-1], out_dim))


class ValueNetwork(nn.Module):
    """An MLP trunk and a ``head`` (see the module docstring). ``v_min``/``v_max`` bound the
    support of the categorical heads; targets outside it are clipped to it."""

    def __init__(
        self,
        in_dim: int,
        n_outputs: int = 1,
        head: str = "scalar",
        hidden=(64, 64),
        n_bins: int = 51,
        v_min: float = -10.0,
        v_max: float = 10.0,
        sigma_ratio: float = 0.75,
        huber: bool = False,
    ):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
        if head != "scalar" and (n_bins < 2 or not v_min < v_max):
            raise ValueError(
                f"n_bins, v_min, v_max: expected ≥ 2 bins and v_min < v_max, got {n_bins}, {v_min}, {v_max}"
            )
        if not sigma_ratio > 0:
            raise ValueError(f"sigma_ratio: expected > 0, got {sigma_ratio}")
        self.head, self.n_outputs, self.huber = head, n_outputs, huber
        self.n_bins = 1 if head == "scalar" else n_bins
        self.trunk = MLP(in_dim, n_outputs * self.n_bins, hidden)
        if head == "hl_gauss":  # bins of equal width; their centres are the atoms
            edges = torch.linspace(v_min, v_max, n_bins + 1)
            self.register_buffer("bin_edges", edges)
            self.register_buffer("support", (edges[1:] + edges[:-1]) / 2)
            self.sigma = sigma_ratio * (v_max - v_min) / n_bins
        elif head != "scalar":
            self.register_buffer("support", torch.linspace(v_min, v_max, n_bins))

    def logits(self, x: Tensor) -> Tensor:
        """``[B, n_outputs, n_bins]`` (``n_bins = 1`` for the scalar head)."""
        return self.trunk(x).view(x.shape[0], self.n_outputs, self.n_bins)

    def value(self, x: Tensor) -> Tensor:
        """Scalar estimates ``[B, n_outputs]``: the output itself, or the mean of the
        distribution over the support."""
        return self.values_from_logits(self.logits(x))

    def values_from_logits(self, out: Tensor) -> Tensor:
        """``value`` from already computed ``logits`` (saves a forward pass)."""
        return out.squeeze(-1) if self.head == "scalar" else decode(out, self.support, logits=True)

    def target_distribution(self, targets: Tensor) -> Tensor:
        """The categorical target for scalar ``targets`` (two-hot, or HL-Gauss for that head)."""
        if self.head == "hl_gauss":
            return hl_gauss(targets, self.bin_edges, self.sigma)
        return two_hot(targets, self.support)

    def loss(self, x: Tensor, targets: Tensor, index: Tensor | None = None) -> Tensor:
        """Mean loss against scalar ``targets``: ``[B, n_outputs]``, or ``[B]`` with ``index [B]``
        picking the trained output (the action taken) of each row."""
        out = self.logits(x)
        if index is not None:
            out = out[torch.arange(out.shape[0], device=out.device), index].unsqueeze(1)
            targets = targets.unsqueeze(1)
        if targets.shape != out.shape[:2]:
            raise ValueError(
                f"targets: expected shape {tuple(out.shape[:2])}, got {tuple(targets.shape)}"
            )
        if self.head == "scalar":
            fn = nn.functional.smooth_l1_loss if self.huber else nn.functional.mse_loss
            return fn(out.squeeze(-1), targets)
        return categorical_loss(out, self.target_distribution(targets.detach()))


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``θ̄ ← (1 − τ) θ̄ + τ θ`` in place, parameter by parameter (``tau = 1`` copies)."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau: expected in (0, 1], got {tau}")
    for p_target, p in zip(target.parameters(), online.parameters(), strict=True):
        p_target.lerp_(p, tau)


def categorical_loss(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean cross-entropy ``−Σ_k p_k log softmax(logits)_k`` over all leading axes."""
    return -(target_probs * torch.log_softmax(logits.float(), -1)).sum(-1).mean()


@torch.no_grad()
def bellman_target(
    target: ValueNetwork,
    next_obs: Tensor,
    reward: Tensor,
    discount: Tensor,
    online: ValueNetwork | None = None,
) -> tuple[Tensor, Tensor]:
    """The Q-learning target for transitions ``(s, a, reward, next_obs)``, without gradient.

    The next action is ``a* = argmax_a Q(s', a)`` of ``online`` (Double DQN, "Deep Reinforcement
    Learning with Double Q-learning") or of ``target`` (DQN); its value is
    ``q' = Q_target(s', a*)``. The target is ``y = reward + discount · q'`` (``[B]``) for the
    scalar, two-hot and HL-Gauss heads, and for C51 the distribution of
    ``reward + discount · Z_target(s', a*)`` projected on the support (``[B, n_bins]``, "A
    Distributional Perspective on Reinforcement Learning"). ``discount [B]`` is ``γ`` times 0 at
    terminal transitions. Returns ``(target, q')``.
    """
    next_logits = target.logits(next_obs)  # one forward pass of the target network
    next_q = target.values_from_logits(next_logits)
    best = (online.value(next_obs) if online is not None else next_q).argmax(-1)
    rows = torch.arange(len(best), device=best.device)
    next_v = next_q[rows, best]
    if target.head == "c51":
        probs = torch.softmax(next_logits[rows, best], -1)
        return categorical_projection(probs, reward, discount, target.support), next_v
    return reward + discount * next_v, next_v
