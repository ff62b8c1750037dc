"""Representations for a value, learned from reward-labelled trajectories without the value:
latent temporal consistency ("Simplified Temporal Consistency Reinforcement Learning", TCRL), the
model-based representation of "Towards General-Purpose Model-Free Reinforcement Learning" (MR.Q),
an autoencoder and an untrained encoder.

An encoder ``e_θ: s ↦ z`` is learned one of these ways (``REPRESENTATIONS``), then frozen; a small
value head is fit on ``z`` from a few labelled states, and the representation is scored by that
head's error.

- ``tcrl``: a latent model ``(ẑ', r̂) = d_θ(ẑ, a)`` rolled out from ``ẑ_0 = e_θ(s_0)`` along the
  data's actions, trained with

      L = Σ_{h<H} ρ^h [ (2 − 2 cos(ẑ_{h+1}, ē(s_{h+1}))) + (r̂_h − r_h)² ] / H,

  ``ē`` an exponential moving average of ``e_θ`` (no gradient through it). Nothing asks ``z`` to
  reconstruct ``s``: only to predict its own future and the reward.
- ``mrq``: the same rollout with MR.Q's terms: the squared error to a target encoder copied every
  ``copy_every`` steps, and a cross-entropy against the reward's two-hot encoding (weight 0.1);
  the encoder ends in a parameter-free LayerNorm and ELU.
- ``autoencoder``: ``‖dec(e_θ(s)) − s‖²``, which must spend ``z`` on every coordinate of ``s``.
- ``random``: the encoder at initialisation.

Differences from the papers: the value head here regresses known values (the task's ``V*``) at
labelled states, where TCRL trains a critic by TD beside an actor and MR.Q a Q on ``(z_s, a)`` by
TD, so only the features differ between the arms; sizes are tiny (latent 8, hidden 64, horizon
3); TCRL's rewards are standardised (the paper's lie in [0, 1] already); MR.Q has no terminal
term (the task never ends) and encodes the action with the state before its heads.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlnb.envs.point_mass import Batch
from rlnb.estimators.distributional import symexp, two_hot
from rlnb.models.value import MLP, categorical_loss, polyak_update
from rlnb.progress import progress_bar


def consistency_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """``2 − 2 cos(ẑ, z̄)`` per row ``[N]`` (0 when aligned, 4 when opposite)."""
    return 2 - 2 * F.cosine_similarity(predicted, target, dim=-1)


class LatentModel(nn.Module):
    """``d_θ(z, a) → (z', reward output)``: latent dynamics and a reward head (``reward_dim`` 1
    for a regression, the number of bins for MR.Q's two-hot), one MLP trunk each."""

    def __init__(self, latent_dim: int, action_dim: int = 1, hidden=(64,), reward_dim: int = 1):
        super().__init__()
        self.dynamics = MLP(latent_dim + action_dim, latent_dim, hidden, activation=nn.ELU)
        self.reward = MLP(latent_dim + action_dim, reward_dim, hidden, activation=nn.ELU)

    def forward(self, z: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        za = torch.cat([z, actions], -1)
        return self.dynamics(za), self.reward(za).squeeze(-1)


def tcrl_loss(encoder: nn.Module, target_encoder: nn.Module, model: LatentModel, chunk: Batch,
              rho: float = 0.9) -> Tensor:  # fmt: skip
    """The TCRL loss of the module docstring on ``chunk`` (fields ``[N, H, ·]``), averaged over
    rows and divided by ``H``."""
    horizon = chunk.states.shape[1]
    z = encoder(chunk.states[:, 0])
    with torch.no_grad():
        targets = target_encoder(chunk.next_states)
    total = z.new_zeros(())
    for h in range(horizon):
        z, r_hat = model(z, chunk.actions[:, h])
        step = consistency_loss(z, targets[:, h]) + (r_hat - chunk.rewards[:, h]) ** 2
        total = total + rho**h * step.mean()
    return total / horizon


MRQ_SUPPORT = symexp(torch.linspace(-10.0, 10.0, 65))


def mrq_loss(encoder: nn.Module, target_encoder: nn.Module, model: LatentModel, chunk: Batch,
             reward_weight: float = 0.1) -> Tensor:  # fmt: skip
    """MR.Q's encoder loss on ``chunk`` (fields ``[N, H, ·]``), summed over the ``H`` steps:

        Σ_h ‖ẑ_{h+1} − z̄(s_{h+1})‖²/dim + reward_weight · CE(logits_h, two_hot(r_h)),

    the two-hot over ``MRQ_SUPPORT`` (65 bins, ``symexp`` of ``linspace(−10, 10)``)."""
    z = encoder(chunk.states[:, 0])
    with torch.no_grad():
        targets = target_encoder(chunk.next_states)
        reward_targets = two_hot(chunk.rewards, MRQ_SUPPORT)
    total = z.new_zeros(())
    for h in range(chunk.states.shape[1]):
        z, logits = model(z, chunk.actions[:, h])
        dynamics = ((z - targets[:, h]) ** 2).mean()
        reward = categorical_loss(logits, reward_targets[:, h])
        total = total + dynamics + reward_weight * reward
    return total


def autoencoder_loss(encoder: nn.Module, decoder: nn.Module, states: Tensor) -> Tensor:
    """``E ‖dec(e(s)) − s‖²``."""
    return ((decoder(encoder(states)) - states) ** 2).sum(-1).mean()


class Representation(NamedTuple):
    """How one method learns an encoder: its ``loss(encoder, target, head, chunk)``, its
    ``head(state_dim, latent_dim, action_dim, hidden)``, how the target encoder follows the
    online one (``"ema"``, ``"copy"`` every ``copy_every`` steps, or ``None``), and whether the
    encoder ends in a parameter-free LayerNorm and ELU (MR.Q's ``zs``), and whether the rewards
    are standardised over the data first. ``loss=None``: the encoder is left at its
    initialisation."""

    loss: Callable | None
    head: Callable | None
    target: str | None = None
    normalized: bool = False
    standardized_rewards: bool = False


REPRESENTATIONS = {
    "tcrl": Representation(
        loss=tcrl_loss,
        head=lambda state, latent, action, hidden: LatentModel(latent, action, hidden),
        target="ema",
        standardized_rewards=True,
    ),
    "mrq": Representation(
        loss=mrq_loss,
        head=lambda state, latent, action, hidden: LatentModel(
            latent, action, hidden, len(MRQ_SUPPORT)
        ),
        target="copy",
        normalized=True,
    ),
    "autoencoder": Representation(
        loss=lambda encoder, target, head, chunk: autoencoder_loss(
            encoder, head, chunk.states.flatten(0, 1)
        ),
        head=lambda state, latent, action, hidden: MLP(latent, state, hidden, activation=nn.ELU),
    ),
    "random": Representation(loss=None, head=None),
}


def make_encoder(
    state_dim: int, latent_dim: int, hidden=(64,), normalized: bool = False
) -> nn.Module:
    """An ELU MLP ``state_dim → latent_dim``, with a parameter-free LayerNorm and ELU after it
    when ``normalized``."""
    encoder = MLP(state_dim, latent_dim, hidden, activation=nn.ELU)
    if normalized:
        encoder = nn.Sequential(
            encoder, nn.LayerNorm(latent_dim, elementwise_affine=False), nn.ELU()
        )
    return encoder


def train_representation(chunks: Batch, method: str = "tcrl", latent_dim: int = 8, hidden=(64,),
                         steps: int = 1500, batch_size: int = 256, lr: float = 1e-3,
                         tau: float = 0.01, copy_every: int = 250, seed: int = 0,
                         progress: bool = False):  # fmt: skip
    """Learn an encoder ``state_dim → latent_dim`` from ``chunks`` (fields ``[N, H, ·]``) by
    ``REPRESENTATIONS[method]``. Returns ``(history, encoder)``; ``history`` has ``step``,
    ``loss`` (the mean over the last 100 steps), ``seconds`` (empty for ``random``). ``tau`` is
    the EMA rate of an ``"ema"`` target, ``copy_every`` the period of a ``"copy"`` one."""
    if method not in REPRESENTATIONS:
        raise ValueError(f"method: expected one of {sorted(REPRESENTATIONS)}, got {method!r}")
    if steps < 1 or batch_size < 1 or latent_dim < 1 or copy_every < 1:
        raise ValueError(
            f"steps, batch_size, latent_dim, copy_every: expected ≥ 1, got {steps}, {batch_size}, {latent_dim}, {copy_every}"
        )
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    spec, state_dim = REPRESENTATIONS[method], chunks.states.shape[-1]
    encoder = make_encoder(state_dim, latent_dim, hidden, spec.normalized)
    if spec.loss is None:
        return pd.DataFrame(columns=["step", "loss", "seconds"]), encoder.requires_grad_(False)
    if spec.standardized_rewards:
        rewards = chunks.rewards
        chunks = chunks._replace(
            rewards=(rewards - rewards.mean()) / rewards.std(unbiased=False).clamp_min(1e-8)
        )
    target = copy.deepcopy(encoder).requires_grad_(False)
    head = spec.head(state_dim, latent_dim, chunks.actions.shape[-1], hidden)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr)
    rows, losses, start = [], [], time.perf_counter()
    for step in progress_bar(range(1, steps + 1), desc=method, enabled=progress):
        idx = torch.randint(len(chunks.states), (batch_size,), generator=gen)
        loss = spec.loss(encoder, target, head, Batch(*(field[idx] for field in chunks)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if spec.target == "ema":
            polyak_update(target, encoder, tau)
        elif spec.target == "copy" and step % copy_every == 0:
            polyak_update(target, encoder, 1.0)
        losses.append(loss.detach())
        if step % 100 == 0 or step == steps:
            rows.append({"step": step, "loss": float(torch.stack(losses).mean()),
                         "seconds": time.perf_counter() - start})  # fmt: skip
            losses = []
    return pd.DataFrame(rows), encoder.requires_grad_(False)


def fit_value_head(features: Tensor, values: Tensor, test_features: Tensor, test_values: Tensor,
                   hidden=(64,), steps: int = 1000, lr: float = 3e-3, seed: int = 0):  # fmt: skip
    """Fit ``v_φ(z) ≈ V`` (MSE, full batch Adam) on frozen ``features``. Returns ``(history,
    head)``; ``history`` has ``step``, ``train_mse``, ``test_mse`` and ``constant_mse`` (the test
    error of the best constant, the training mean)."""
    if steps < 1 or len(features) != len(values) or len(test_features) != len(test_values):
        raise ValueError(
            f"steps, features/values, test_features/test_values: expected ≥ 1 and matching lengths, got "
            f"{steps}, {len(features)}/{len(values)}, {len(test_features)}/{len(test_values)}"
        )
    torch.manual_seed(seed)
    head = MLP(features.shape[-1], 1, hidden, activation=nn.ELU)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    constant = float(((test_values - values.mean()) ** 2).mean())
    rows = []
    for step in range(1, steps + 1):
        loss = ((head(features).squeeze(-1) - values) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            with torch.no_grad():
                test = float(((head(test_features).squeeze(-1) - test_values) ** 2).mean())
            rows.append(
                {"step": step, "train_mse": loss.item(), "test_mse": test, "constant_mse": constant}
            )
    return pd.DataFrame(rows), head
