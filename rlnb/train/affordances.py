"""A few actions chosen from a continuous space by the gradient of the planning value, for a small
tree search over a value-equivalent model: a small analog of "GrASP: Gradient-Based Affordance
Selection for Planning" (the model is trained first and frozen, on known values; the differences
are listed at the end).

**The model** is value-equivalent (the MuZero lineage): an encoder ``z = e(s)``, latent dynamics
and reward ``(z', r̂) = d(z, a)`` and a value ``v̂(z)``, trained only to predict rewards and values
along the data's action sequences, never to reconstruct states:

    L(θ) = [Σ_{h<H} ((r̂_h − r_h)² + (v̂(ẑ_h) − V(s_h))²) + (v̂(ẑ_H) − V(s_H))²] / H,

with ``ẑ_0 = e(s_0)``, ``ẑ_{h+1} = d(ẑ_h, a_h)``.

**The tree** is complete: every node expands the same ``K`` actions ``φ(z) = (a_1 … a_K)``, the
affordances of its latent state, down to depth ``D``, and backs up with a max:

    V_0(z) = v̂(z),   Q_d(z, a) = r̂(z, a) + γ V_{d−1}(d(z, a)),   V_d(z) = max_k Q_d(z, a_k(z)).

It costs ``K + K² + … + K^D`` model steps per root, whatever ``φ`` is; the action taken is the
root's ``argmax_k Q_D(e(s), a_k)``.

**GrASP** makes ``φ_w(z) = m · tanh(MLP_w(z))`` (``K`` outputs in ``[−m, m]``) and trains ``w`` by
gradient ascent on the root's planning value, ``∇_w E_s V_D(e(s))``, the gradient passing through
the model's reward, dynamics and value into every affordance of the tree. The baselines spend the
same budget on ``K`` actions drawn uniformly in ``[−m, m]`` at every node (``random``) or on the
centres of ``K`` equal cells of ``[−m, m]`` (``grid``).

Differences from the paper: the model is trained first, on the task's known values ``V*`` rather
than bootstrapped returns, then frozen while the affordances learn (GrASP learns both at once,
beside an actor-critic); the tree is complete and shallow (depth 2 in notebook 07d); states, not
pixels; one action dimension; state-conditional affordances only, on one small task.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.envs.point_mass import Batch, DistractedPointMass
from rlnb.models.value import MLP
from rlnb.progress import progress_bar
from rlnb.train.representation import LatentModel


class ValueEquivalentModel(nn.Module):
    """``e(s) → z``, ``d(z, a) → (z', r̂)``, ``v̂(z)`` of the module docstring."""

    def __init__(self, state_dim: int, latent_dim: int = 16, action_dim: int = 1, hidden=(64,)):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = MLP(state_dim, latent_dim, hidden, activation=nn.ELU)
        self.latent = LatentModel(latent_dim, action_dim, hidden)
        self.value_head = MLP(latent_dim, 1, hidden, activation=nn.ELU)

    def encode(self, states: Tensor) -> Tensor:
        return self.encoder(states)

    def step(self, z: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        return self.latent(z, actions)

    def value(self, z: Tensor) -> Tensor:
        return self.value_head(z).squeeze(-1)


def value_equivalent_loss(model: ValueEquivalentModel, chunk: Batch,
                          value_fn: Callable[[Tensor], Tensor]) -> Tensor:  # fmt: skip
    """The loss of the module docstring on ``chunk`` (fields ``[N, H, ·]``) with value targets
    ``V = value_fn``, averaged over rows."""
    horizon = chunk.states.shape[1]
    with torch.no_grad():
        values = value_fn(chunk.states)
        last_values = value_fn(chunk.next_states[:, -1])
    z = model.encode(chunk.states[:, 0])
    total = z.new_zeros(())
    for h in range(horizon):
        value_term = (model.value(z) - values[:, h]) ** 2
        z, r_hat = model.step(z, chunk.actions[:, h])
        total = total + (value_term + (r_hat - chunk.rewards[:, h]) ** 2).mean()
    total = total + ((model.value(z) - last_values) ** 2).mean()
    return total / horizon


def train_value_equivalent_model(env: DistractedPointMass, chunks: Batch, test: Tensor,
                                 steps: int = 1500, batch_size: int = 256, lr: float = 3e-3,
                                 latent_dim: int = 16, eval_every: int = 100, seed: int = 0,
                                 progress: bool = False):  # fmt: skip
    """Fit a ``ValueEquivalentModel`` to ``chunks`` (``[N, H, ·]``) with ``value_equivalent_loss``
    and targets ``env.value`` (Adam). Returns ``(history, model)``; ``history`` has ``step``,
    ``loss``, ``value_mse`` (``E (v̂(e(s)) − V*(s))²`` on the ``test`` states), ``constant_mse``
    (the same for the best constant) and ``seconds``. The model is returned frozen
    (``requires_grad`` off), ready for ``train_affordances``."""
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(
            f"steps, batch_size, eval_every: expected ≥ 1, got {steps}, {batch_size}, {eval_every}"
        )
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ValueEquivalentModel(env.state_dim, latent_dim, chunks.actions.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    true_test = env.value(test)
    constant = float(true_test.var(unbiased=False))  # the best constant's error
    rows, start = [], time.perf_counter()
    for step in progress_bar(range(1, steps + 1), desc="value-equivalent model", enabled=progress):
        idx = torch.randint(len(chunks.states), (batch_size,), generator=gen)
        loss = value_equivalent_loss(model, Batch(*(f[idx] for f in chunks)), env.value)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                mse = float(((model.value(model.encode(test)) - true_test) ** 2).mean())
            rows.append({"step": step, "loss": loss.item(), "value_mse": mse,
                         "constant_mse": constant, "seconds": time.perf_counter() - start})  # fmt: skip
    model.requires_grad_(False)
    return pd.DataFrame(rows), model


def _check_affordances(k: int, max_action: float) -> None:
    if k < 1 or not max_action > 0:
        raise ValueError(f"k, max_action: expected ≥ 1 and > 0, got {k}, {max_action}")


class AffordanceNet(nn.Module):
    """GrASP's state-conditional affordances ``φ_w(z) = max_action · tanh(MLP_w(z))``: ``[N, K]``."""

    def __init__(self, latent_dim: int, k: int, max_action: float, hidden=(64,)):
        super().__init__()
        _check_affordances(k, max_action)
        self.net, self.max_action = MLP(latent_dim, k, hidden, activation=nn.ELU), max_action

    def forward(self, z: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.net(z))


class RandomAffordances(nn.Module):
    """``K`` actions uniform in ``[−max_action, max_action]``, drawn afresh at every node."""

    def __init__(self, k: int, max_action: float, gen: torch.Generator):
        super().__init__()
        _check_affordances(k, max_action)
        self.k, self.max_action, self.gen = k, max_action, gen

    def forward(self, z: Tensor) -> Tensor:
        u = torch.rand(z.shape[0], self.k, generator=self.gen).to(z.device)
        return self.max_action * (2 * u - 1)


class GridAffordances(nn.Module):
    """The same ``K`` actions at every node: the centres of ``K`` equal cells of ``[−max_action,
    max_action]``, ``max_action (2k + 1 − K) / K`` for ``k = 0 … K−1`` (``K = 1``: the action 0)."""

    def __init__(self, k: int, max_action: float):
        super().__init__()
        _check_affordances(k, max_action)
        centres = max_action * (2 * torch.arange(k) + 1 - k) / k
        self.register_buffer("actions", centres.float())

    def forward(self, z: Tensor) -> Tensor:
        return self.actions.expand(z.shape[0], -1)


def tree_q(model: ValueEquivalentModel, affordances: nn.Module, z: Tensor, depth: int,
           gamma: float) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(Q_depth(z, a_k), a_k)`` ``[N, K]`` each, at the latent states ``z [N, L]``: the complete
    tree of the module docstring, one batched model step per level (one action dimension)."""
    if depth < 1:
        raise ValueError(f"depth: expected ≥ 1, got {depth}")
    actions = affordances(z)
    n, k = actions.shape
    next_z, rewards = model.step(z.repeat_interleave(k, 0), actions.reshape(-1, 1))
    return (rewards + gamma * planning_value(model, affordances, next_z, depth - 1, gamma)).view(
        n, k
    ), actions


def planning_value(model: ValueEquivalentModel, affordances: nn.Module, z: Tensor, depth: int,
                   gamma: float) -> Tensor:  # fmt: skip
    """``V_depth(z)`` ``[N]``: ``v̂(z)`` at depth 0, else the max of ``tree_q`` over the
    affordances."""
    if depth == 0:
        return model.value(z)
    return tree_q(model, affordances, z, depth, gamma)[0].max(-1).values


def plan(model: ValueEquivalentModel, affordances: nn.Module, states: Tensor, depth: int,
         gamma: float) -> Tensor:  # fmt: skip
    """The action the search takes at each of ``states``: ``argmax_k Q_depth(e(s), a_k)``
    ``[N, 1]``."""
    with torch.no_grad():
        q, actions = tree_q(model, affordances, model.encode(states), depth, gamma)
        return actions.gather(1, q.argmax(-1, keepdim=True))


def search_regret(model: ValueEquivalentModel, affordances: nn.Module, env: DistractedPointMass,
                  states: Tensor, depth: int) -> float:  # fmt: skip
    """``E [V*(s) − Q*(s, â)]`` with ``â = plan(…)``: what acting on the search loses in the true
    task (≥ 0; 0 when the search picks ``a*``)."""
    chosen = plan(model, affordances, states, depth, env.gamma)
    with torch.no_grad():
        return float((env.value(states) - env.q_value(states, chosen)).mean())


def train_affordances(model: ValueEquivalentModel, env: DistractedPointMass, states: Tensor,
                      test: Tensor, k: int = 3, depth: int = 2, max_action: float = 4.0,
                      steps: int = 500, batch_size: int = 256, lr: float = 3e-3,
                      eval_every: int = 50, seed: int = 0, progress: bool = False):  # fmt: skip
    """GrASP: ascend ``E_s V_depth(e(s))`` over the ``states`` in the affordance weights (the
    model stays frozen). Returns ``(history, affordances)``; ``history`` has ``step``,
    ``planning_value`` (the batch's mean root value in the model; NaN at step 0), ``regret``
    (``search_regret`` on ``test``; step 0 is the untrained affordances) and ``seconds``."""
    if k < 1 or depth < 1 or steps < 1 or batch_size < 1 or eval_every < 1 or not max_action > 0:
        raise ValueError(
            "k, depth, steps, batch_size, eval_every, max_action: expected ≥ 1 (the first five) "
            f"and > 0, got {k}, {depth}, {steps}, {batch_size}, {eval_every}, {max_action}"
        )
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    affordances = AffordanceNet(model.latent_dim, k, max_action)
    opt = torch.optim.Adam(affordances.parameters(), lr=lr)
    with torch.no_grad():
        z_all = model.encode(states)
    rows = [{"step": 0, "planning_value": float("nan"),
             "regret": search_regret(model, affordances, env, test, depth), "seconds": 0.0}]  # fmt: skip
    start = time.perf_counter()
    for step in progress_bar(range(1, steps + 1), desc=f"affordances (K={k})", enabled=progress):
        z = z_all[torch.randint(len(z_all), (batch_size,), generator=gen)]
        value = planning_value(model, affordances, z, depth, env.gamma).mean()
        opt.zero_grad()
        (-value).backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            rows.append({"step": step, "planning_value": value.item(),
                         "regret": search_regret(model, affordances, env, test, depth),
                         "seconds": time.perf_counter() - start})  # fmt: skip
    return pd.DataFrame(rows), affordances


def affordance_sweep(model: ValueEquivalentModel, env: DistractedPointMass, states: Tensor,
                     test: Tensor, ks, depth: int = 2, max_action: float = 4.0,
                     steps: int = 300, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """For each affordance count ``K`` in ``ks``: the ``search_regret`` on ``test`` of GrASP's
    learned affordances, of random ones and of a grid, each expanding ``K`` actions per node of
    the same depth-``depth`` tree (equal search budget). Rows: ``k, method, regret``."""
    if not len(ks) or min(ks) < 1:
        raise ValueError(f"ks: expected affordance counts ≥ 1, got {list(ks)}")
    rows = []
    for k in ks:
        learned = train_affordances(model, env, states, test, k=k, depth=depth,
                                    max_action=max_action, steps=steps, seed=seed)[1]  # fmt: skip
        methods = {"grasp": learned,
                   "random": RandomAffordances(k, max_action, torch.Generator().manual_seed(seed)),
                   "grid": GridAffordances(k, max_action)}  # fmt: skip
        for method, affordances in methods.items():
            regret = search_regret(model, affordances, env, test, depth)
            rows.append({"k": k, "method": method, "regret": regret})
    return pd.DataFrame(rows)
