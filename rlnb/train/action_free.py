"""Offline RL with few action-labelled transitions and many action-free ones: label the
action-free data with an inverse dynamics model ("Semi-Supervised Offline Reinforcement Learning
with Action-Free Trajectories"), or pretrain a value on it by TD and reuse its encoder ("Robotic
Offline RL from Internet Videos via Value-Function Pre-Training", V-PTR).

The offline learner is fitted Q-learning on a continuous action, maximised over a grid of
``actions``: ``Q(s, a) ← r + γ max_{a'} Q̄(s', a')`` with ``Q̄`` a Polyak-averaged copy. The
arms differ only in what they bring to it:

- ``none``: the labelled transitions alone, from a fresh network.
- ``inverse dynamics``: ``â = g_ψ(s, s')``, fit on the labelled transitions by least squares,
  labels the action-free ones; fitted Q-learning then runs on both.
- ``value pretraining`` (V-PTR-style: plain TD(0) on the data's own behaviour, where V-PTR learns
  intent-conditioned values from video): an encoder ``φ`` and a head are fit by TD(0) to the
  value of the action-free data's own behaviour, ``V(s) ← r + γ V̄(s')``, which needs no actions;
  ``Q(s, a) = h([φ(s), a])`` then starts from that ``φ`` and learns on the labelled transitions.
- ``reconstruction pretraining``: the same, with ``φ`` from an autoencoder of the states.
- ``all actions``: every transition with its true action, a fresh network (a reference).

Differences from the papers: states, not video frames or images (V-PTR pretrains on internet
video with intent-conditioned values, then runs CQL on robot data); fitted Q-learning with no
conservative term, since the grid of actions stays inside the data's range; one small task.
"""

from __future__ import annotations

import copy
import time

import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.envs.point_mass import Batch, DistractedPointMass, on_grid
from rlnb.models.value import MLP, polyak_update
from rlnb.progress import progress_bar
from rlnb.train.offline import concat
from rlnb.train.representation import make_encoder, train_representation


class EncodedQ(nn.Module):
    """``Q(s, a) = h([φ(s), a])``; ``encoder`` is ``φ`` (trained along with ``h``)."""

    def __init__(self, encoder: nn.Module, latent_dim: int, action_dim: int = 1, hidden=(64, 64)):
        super().__init__()
        self.encoder = encoder
        self.head = MLP(latent_dim + action_dim, 1, hidden, activation=nn.ELU)

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        return self.head(torch.cat([self.encoder(states), actions], -1)).squeeze(-1)


def greedy_actions(q: nn.Module, states: Tensor, actions: Tensor) -> Tensor:
    """``argmax_a Q(s, a)`` over the grid ``actions [K]``: ``[N, 1]``."""
    return actions[on_grid(q, states, actions).argmax(-1)].unsqueeze(-1)


def max_q(q: nn.Module, states: Tensor, actions: Tensor) -> Tensor:
    """``max_a Q(s, a)`` over the grid ``actions [K]``: ``[N]``."""
    return on_grid(q, states, actions).max(-1).values


def greedy_regret(q: nn.Module, env: DistractedPointMass, states: Tensor, actions: Tensor) -> float:
    """``E [max_{a ∈ grid} Q*(s, a) − Q*(s, â)]`` with ``â`` greedy in ``q``: what acting on
    ``q`` loses in the true task against the best action of the same grid (≥ 0)."""
    with torch.no_grad():
        best = on_grid(env.q_value, states, actions).max(-1).values
        return float((best - env.q_value(states, greedy_actions(q, states, actions))).mean())


def q_error(q: nn.Module, env: DistractedPointMass, states: Tensor, actions: Tensor) -> float:
    """``E (Q(s, a) − Q*(s, a))²`` at the given pairs (``actions [N, 1]``). ``Q*`` is the
    unbounded-action optimum, so a learner that maximises over a bounded grid keeps a small floor
    of error at the states whose best action lies outside the grid."""
    with torch.no_grad():
        return float(((q(states, actions) - env.q_value(states, actions)) ** 2).mean())


@torch.no_grad()
def fitted_q_target(target: nn.Module, rewards: Tensor, next_states: Tensor, gamma: float,
                    actions: Tensor) -> Tensor:  # fmt: skip
    """``y = r + γ max_{a' ∈ grid} Q̄(s', a')`` ``[N]`` (the task never ends)."""
    return rewards + gamma * max_q(target, next_states, actions)


def fitted_q(data: Batch, q: nn.Module, gamma: float, actions: Tensor, steps: int = 2000,
             batch_size: int = 256, lr: float = 1e-3, tau: float = 0.01, seed: int = 0,
             evaluate=None, eval_every: int = 250, progress: bool = False):  # fmt: skip
    """Train ``q`` on ``data`` by ``Q(s, a) ← r + γ max_{a'} Q̄(s', a')`` (MSE, Adam, Polyak
    target ``tau``). ``evaluate(q) → dict`` is logged every ``eval_every`` steps. Returns
    ``(history, q)``; ``history`` has ``step``, ``td_loss`` (mean since the last row),
    ``seconds`` and ``evaluate``'s keys."""
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(
            f"steps, batch_size, eval_every: expected ≥ 1, got {steps}, {batch_size}, {eval_every}"
        )
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma: expected in [0, 1), got {gamma}")
    gen = torch.Generator().manual_seed(seed)
    target = copy.deepcopy(q).requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    rows, losses, start = [], [], time.perf_counter()
    for step in progress_bar(range(1, steps + 1), desc="fitted Q", enabled=progress):
        idx = torch.randint(len(data.states), (min(batch_size, len(data.states)),), generator=gen)
        y = fitted_q_target(target, data.rewards[idx], data.next_states[idx], gamma, actions)
        loss = ((q(data.states[idx], data.actions[idx]) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        polyak_update(target, q, tau)
        losses.append(loss.detach())
        if step % eval_every == 0 or step == steps:
            row = {
                "step": step,
                "td_loss": float(torch.stack(losses).mean()),
                "seconds": time.perf_counter() - start,
            }
            rows.append(row | (evaluate(q) if evaluate else {}))
            losses = []
    return pd.DataFrame(rows), q


def fit_inverse_dynamics(labelled: Batch, hidden=(64,), steps: int = 1000, lr: float = 3e-3,
                         seed: int = 0) -> nn.Module:  # fmt: skip
    """``g_ψ(s, s') ≈ a``, an MLP fit by full-batch least squares on ``labelled``."""
    if steps < 1 or len(labelled.states) < 1:
        raise ValueError(
            f"steps, labelled: expected ≥ 1 step and transitions, got {steps}, {len(labelled.states)}"
        )
    torch.manual_seed(seed)
    d = labelled.states.shape[-1]
    idm = MLP(2 * d, labelled.actions.shape[-1], hidden, activation=nn.ELU)
    opt = torch.optim.Adam(idm.parameters(), lr=lr)
    inputs = torch.cat([labelled.states, labelled.next_states], -1)
    for _ in range(steps):
        loss = ((idm(inputs) - labelled.actions) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return idm.requires_grad_(False)


def label_actions(idm: nn.Module, free: Batch) -> Batch:
    """``free`` with its actions replaced by ``g_ψ(s, s')``."""
    with torch.no_grad():
        return free._replace(actions=idm(torch.cat([free.states, free.next_states], -1)))


class StateValue(nn.Module):
    """``V(s)`` as a ``Q(s, a)`` that ignores ``a``, so ``fitted_q`` with a one-action grid is
    TD(0) on ``V``."""

    def __init__(self, encoder: nn.Module, latent_dim: int, hidden=(64,)):
        super().__init__()
        self.value = nn.Sequential(encoder, MLP(latent_dim, 1, hidden, activation=nn.ELU))

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        return self.value(states).squeeze(-1)


def pretrain_value(free: Batch, gamma: float, latent_dim: int = 8, hidden=(64,), steps: int = 2000,
                   batch_size: int = 256, lr: float = 1e-3, tau: float = 0.01,
                   seed: int = 0):  # fmt: skip
    """V-PTR-style pretraining, actions unused: ``v(φ(s)) ← r + γ v̄(φ̄(s'))`` by TD(0) on
    ``free`` (``fitted_q`` on a ``StateValue``). Returns ``(history, encoder)``; ``history`` is
    ``fitted_q``'s, with ``td_loss`` every 250 steps."""
    torch.manual_seed(seed)
    encoder = make_encoder(free.states.shape[-1], latent_dim, hidden)
    history, _ = fitted_q(free, StateValue(encoder, latent_dim, hidden), gamma, torch.zeros(1),
                          steps=steps, batch_size=batch_size, lr=lr, tau=tau, seed=seed)  # fmt: skip
    return history, encoder


def no_pretraining(env, labelled, free, latent_dim, pretrain_steps, seed):
    """The labelled transitions alone, a fresh encoder."""
    return labelled, make_encoder(env.state_dim, latent_dim)


def inverse_dynamics_labels(env, labelled, free, latent_dim, pretrain_steps, seed):
    """The labelled transitions and the action-free ones labelled by ``g_ψ``, a fresh encoder."""
    idm = fit_inverse_dynamics(labelled, seed=seed)
    return concat(labelled, label_actions(idm, free)), make_encoder(env.state_dim, latent_dim)


def value_pretraining(env, labelled, free, latent_dim, pretrain_steps, seed):
    """The labelled transitions, the encoder of a value pretrained by TD on the action-free ones."""
    _, encoder = pretrain_value(free, env.gamma, latent_dim, steps=pretrain_steps, seed=seed)
    return labelled, encoder


def reconstruction_pretraining(env, labelled, free, latent_dim, pretrain_steps, seed):
    """The labelled transitions, the encoder of an autoencoder of the action-free states."""
    chunks = Batch(*(field.unsqueeze(1) for field in free))
    _, encoder = train_representation(
        chunks, "autoencoder", latent_dim, steps=pretrain_steps, seed=seed
    )
    return labelled, encoder.requires_grad_(True)


def all_actions(env, labelled, free, latent_dim, pretrain_steps, seed):
    """An upper bound: every transition with its true action, a fresh encoder."""
    return concat(labelled, free), make_encoder(env.state_dim, latent_dim)


ARMS = {
    "none": no_pretraining,
    "inverse dynamics": inverse_dynamics_labels,
    "value pretraining": value_pretraining,
    "reconstruction pretraining": reconstruction_pretraining,
    "all actions": all_actions,
}


def action_free_comparison(env: DistractedPointMass, labelled: Batch, free: Batch, test_states: Tensor,
                           actions: Tensor, arms=tuple(ARMS), latent_dim: int = 8, steps: int = 2000,
                           pretrain_steps: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Run each of ``arms`` (``ARMS``: what data and which encoder fitted Q-learning starts
    from), all with the same fitted Q-learning. Returns ``(table, histories)``: one row per arm
    with ``regret`` (``greedy_regret`` on ``test_states``, averaged over the second half of the
    evaluations), ``q_mse`` (``q_error`` at the end; ``q_mse_first`` at the first evaluation;
    ``constant_q_mse`` the best constant's, the variance of ``Q*`` there), ``transitions`` (what
    fitted Q-learning saw) and ``seconds``; ``histories[arm]`` is ``fitted_q``'s history, with ``regret``."""
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"arms: expected a subset of {sorted(ARMS)}, got {sorted(unknown)}")
    gen = torch.Generator().manual_seed(seed)
    test_actions = actions[torch.randint(actions.numel(), (len(test_states), 1), generator=gen)]
    constant = float(env.q_value(test_states, test_actions).var(unbiased=False))
    rows, histories = [], {}
    for arm in arms:
        start = time.perf_counter()
        torch.manual_seed(seed)
        data, encoder = ARMS[arm](env, labelled, free, latent_dim, pretrain_steps, seed)
        q = EncodedQ(encoder, latent_dim)
        history, q = fitted_q(data, q, env.gamma, actions, steps=steps, seed=seed,
                              evaluate=lambda q: {"regret": greedy_regret(q, env, test_states, actions),
                                                  "q_mse": q_error(q, env, test_states, test_actions)})  # fmt: skip
        histories[arm] = history
        rows.append({"arm": arm, "regret": history.regret.iloc[len(history) // 2 :].mean(),
                     "q_mse": history.q_mse.iloc[-1], "q_mse_first": history.q_mse.iloc[0],
                     "constant_q_mse": constant, "transitions": len(data.states),
                     "seconds": time.perf_counter() - start})  # fmt: skip
    return pd.DataFrame(rows).set_index("arm"), histories
