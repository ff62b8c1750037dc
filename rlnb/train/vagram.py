"""Dynamics models trained for the value they let you compute: maximum likelihood against the
value-gradient-weighted loss of "Value-Gradient weighted Model-Based RL" (VaGraM).

A model ``f̂(s, a) = s + g_θ(s, a)`` predicts the next state. Planning with it backs up
``r + γ V(f̂(s, a))`` in place of ``r + γ V(s')``, so what matters is the value error
``|V(f̂(s, a)) − V(s')|``. To first order it is ``|∇V(s')ᵀ (f̂(s, a) − s')|``, and VaGraM
minimises its diagonal bound

    L_VaGraM(θ) = E Σ_i (∂V/∂s_i (s'))² (f̂(s, a)_i − s'_i)²,

where maximum likelihood with a fixed unit Gaussian (``mle``) minimises ``E Σ_i (f̂_i − s'_i)²``
and spends the model's capacity on every coordinate alike, those the value ignores included.
Here ``V`` is a fixed, known value (the task's exact ``V*``); the paper uses the agent's current
value estimate and alternates the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.envs.point_mass import Batch, DistractedPointMass, on_grid
from rlnb.models.value import MLP
from rlnb.progress import progress_bar


class DynamicsModel(nn.Module):
    """``f̂(s, a) = s + g_θ(s, a)``, ``g_θ`` an MLP with ``hidden`` tanh units (small on purpose:
    a model that cannot fit everything must choose what to fit)."""

    def __init__(self, state_dim: int, action_dim: int = 1, hidden=(16,)):
        super().__init__()
        self.net = MLP(state_dim + action_dim, state_dim, hidden, activation=nn.Tanh)

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        return states + self.net(torch.cat([states, actions], -1))


def value_gradient_weights(value_fn: Callable[[Tensor], Tensor], next_states: Tensor) -> Tensor:
    """``(∂V/∂s_i (s'))²`` ``[N, D]``, detached: the weights of ``vagram_loss``."""
    s = next_states.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(value_fn(s).sum(), s)
    return grad.detach() ** 2


def mle_loss(predicted: Tensor, next_states: Tensor, value_fn=None) -> Tensor:
    """``E Σ_i (f̂_i − s'_i)²``: the negative log-likelihood of a unit Gaussian, up to a constant
    (``value_fn`` is ignored)."""
    return ((predicted - next_states) ** 2).sum(-1).mean()


def vagram_loss(
    predicted: Tensor, next_states: Tensor, value_fn: Callable[[Tensor], Tensor]
) -> Tensor:
    """``E Σ_i (∂V/∂s_i (s'))² (f̂_i − s'_i)²`` (the module docstring)."""
    weights = value_gradient_weights(value_fn, next_states)
    return (weights * (predicted - next_states) ** 2).sum(-1).mean()


MODEL_LOSSES = {"mle": mle_loss, "vagram": vagram_loss}


def value_error(model: nn.Module, value_fn: Callable[[Tensor], Tensor], batch: Batch) -> float:
    """``E |V(f̂(s, a)) − V(s')|`` on ``batch``: the error the model puts into one backup."""
    with torch.no_grad():
        return float(
            (value_fn(model(batch.states, batch.actions)) - value_fn(batch.next_states))
            .abs()
            .mean()
        )


def planning_regret(model: nn.Module, env: DistractedPointMass, states: Tensor,
                    max_action: float = 5.0, n_actions: int = 101) -> float:  # fmt: skip
    """Plan one step in the model: ``â = argmax_a r(s, a) + γ V*(f̂(s, a))`` over ``n_actions``
    evenly spaced in ``±max_action``, then score it in the true task: ``E [V*(s) − Q*(s, â)]``
    (0 for a perfect model, up to the grid's resolution)."""
    if n_actions < 1 or not max_action > 0:
        raise ValueError(
            f"n_actions, max_action: expected ≥ 1 and > 0, got {n_actions}, {max_action}"
        )
    actions = torch.linspace(-max_action, max_action, n_actions)

    def planned(s, a):
        return env.step(s, a)[1] + env.gamma * env.value(model(s, a))

    with torch.no_grad():
        chosen = actions[on_grid(planned, states, actions).argmax(-1)].unsqueeze(-1)
        return float((env.value(states) - env.q_value(states, chosen)).mean())


def train_model(env: DistractedPointMass, data: Batch, test: Batch, loss: str = "mle",
                hidden=(16,), steps: int = 2000, batch_size: int = 256, lr: float = 3e-3,
                eval_every: int = 200, seed: int = 0, progress: bool = False):  # fmt: skip
    """Fit a ``DynamicsModel`` to ``data`` with ``MODEL_LOSSES[loss]`` (Adam). Returns
    ``(history, model)``; ``history`` has ``step``, ``loss`` (the training loss at that step),
    ``mse`` and ``value_error`` on ``test``, ``seconds``."""
    if loss not in MODEL_LOSSES:
        raise ValueError(f"loss: expected one of {sorted(MODEL_LOSSES)}, got {loss!r}")
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(
            f"steps, batch_size, eval_every: expected ≥ 1, got {steps}, {batch_size}, {eval_every}"
        )
    loss_fn = MODEL_LOSSES[loss]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DynamicsModel(env.state_dim, data.actions.shape[-1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rows, start = [], time.perf_counter()
    for step in progress_bar(range(1, steps + 1), desc=f"model ({loss})", enabled=progress):
        idx = torch.randint(len(data.states), (batch_size,), generator=gen)
        predicted = model(data.states[idx], data.actions[idx])
        value = loss_fn(predicted, data.next_states[idx], env.value)
        opt.zero_grad()
        value.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                mse = float(mle_loss(model(test.states, test.actions), test.next_states))
            rows.append({"step": step, "loss": value.item(), "mse": mse,
                         "value_error": value_error(model, env.value, test),
                         "seconds": time.perf_counter() - start})  # fmt: skip
    return pd.DataFrame(rows), model


def distractor_sweep(counts, losses=("mle", "vagram"), seeds=(0,), n_train: int = 4096,
                     n_test: int = 2048, **train_kwargs) -> pd.DataFrame:  # fmt: skip
    """For each distractor count, loss and seed: train a model and measure it. Rows:
    ``distractors, loss, seed, value_error, mse, regret`` (``planning_regret`` on the test
    states). The task and its data depend on ``seed`` only; both losses see the same data."""
    if not len(counts) or min(counts) < 0:
        raise ValueError(f"counts: expected distractor counts ≥ 0, got {list(counts)}")
    rows = []
    for n in counts:
        for seed in seeds:
            env = DistractedPointMass(distractors=n, seed=seed)
            gen = torch.Generator().manual_seed(10_000 + seed)
            data, test = env.transitions(n_train, gen), env.transitions(n_test, gen)
            for name in losses:
                history, model = train_model(env, data, test, loss=name, seed=seed, **train_kwargs)
                rows.append({"distractors": n, "loss": name, "seed": seed,
                             "value_error": history["value_error"].iloc[-1],
                             "mse": history["mse"].iloc[-1],
                             "regret": planning_regret(model, env, test.states)})  # fmt: skip
    return pd.DataFrame(rows)
