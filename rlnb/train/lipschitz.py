"""One learned model with a Lipschitz-regularized value against an ensemble of models, a small
analog of "Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz
Regularized Value Function" (fitted value iteration with a state value on a grid of actions, where
the paper runs MBPO with SAC; the differences are listed at the end).

A value learned on a model's predictions backs up ``r + γ V(f̂(s, a))`` where the truth is
``r + γ V(s')``. The gap is at most ``γ L_V ‖f̂(s, a) − s'‖`` for a value with Lipschitz
constant ``L_V``: a smoother value lets less of the model's error into each backup. The paper's
hypothesis is that an ensemble helps mainly by keeping ``L_V`` small (its members' disagreeing
predictions smooth the value), and it regularizes ``L_V`` directly on a single model instead:

- **spectral normalization** of the value network: every weight matrix divided by its largest
  singular value, so ``V(s) = scale · g(s)`` with ``g`` 1-Lipschitz (``scale`` bounds ``L_V``);
- **adversarial robustness** on the model's predicted states: ``λ E (V(ŝ' + δ) − V(ŝ'))²`` with
  ``δ`` one signed-gradient (FGSM) step of size ``ε`` from a random start in the ``ε``-box,
  the direction that most changes the value.

The value is learned by fitted value iteration in the model, on states drawn uniformly from the
task's box:

    V(s) ← max_{a ∈ grid} r(s, a) + γ V̄(f̂(s, a)),

``V̄`` a Polyak-averaged copy. With an ensemble, each state's backup uses one member drawn at
random (as MBPO's rollouts do). The task's reward is known; only the dynamics are learned.

Differences from the paper: fitted value iteration with a state value and a grid of actions
(the paper: MBPO with SAC's critics); deterministic models trained on few transitions; the
perturbation size, weight and spectral ``scale`` are this module's choices (the paper's appendix
was not available to check them).
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.envs.point_mass import Batch, DistractedPointMass
from rlnb.models.value import MLP, polyak_update
from rlnb.progress import progress_bar
from rlnb.train.action_free import max_q
from rlnb.train.vagram import DynamicsModel, mle_loss, value_gradient_weights


class StateValueNet(nn.Module):
    """``V(s) = scale · MLP(s)`` ``[N]``; with ``spectral`` every linear layer is spectrally
    normalized (so ``V`` is ``scale``-Lipschitz for 1-Lipschitz activations)."""

    def __init__(self, state_dim: int, hidden=(64, 64), spectral: bool = False,
                 scale: float = 1.0):  # fmt: skip
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale: expected > 0, got {scale}")
        self.net, self.scale = MLP(state_dim, 1, hidden, activation=nn.ELU), scale
        if spectral:
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Linear):
                    self.net[i] = nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, states: Tensor) -> Tensor:
        return self.scale * self.net(states).squeeze(-1)


def adversarial_perturbation(value: nn.Module, states: Tensor, epsilon: float,
                             gen: torch.Generator) -> Tensor:  # fmt: skip
    """FGSM in the ``ε``-box: from ``δ_0 ~ U[−ε, ε]``, ``δ = clip(δ_0 + ε sign ∇_δ (V(s + δ) −
    V(s))², ±ε)``, detached ``[N, D]``."""
    if not epsilon > 0:
        raise ValueError(f"epsilon: expected > 0, got {epsilon}")
    s = states.detach()
    delta = (epsilon * (2 * torch.rand(s.shape, generator=gen) - 1)).requires_grad_(True)
    with torch.enable_grad():
        gap = ((value(s + delta) - value(s).detach()) ** 2).sum()
        (grad,) = torch.autograd.grad(gap, delta)
    return (delta + epsilon * grad.sign()).clamp(-epsilon, epsilon).detach()


def adversarial_penalty(value: nn.Module, states: Tensor, epsilon: float,
                        gen: torch.Generator) -> Tensor:  # fmt: skip
    """``E (V(s + δ) − V(s))²`` with ``δ = adversarial_perturbation(…)``."""
    delta = adversarial_perturbation(value, states, epsilon, gen)
    return ((value(states + delta) - value(states)) ** 2).mean()


class Variant(NamedTuple):
    """One arm: how many models back the value up, whether the value is spectrally normalized
    (with its ``scale``), and the weight and size of the adversarial penalty (0: none)."""

    models: int = 1
    spectral: bool = False
    scale: float = 1.0
    adversarial_weight: float = 0.0
    epsilon: float = 0.1


VARIANTS = {
    "single model": Variant(),
    "spectral norm": Variant(spectral=True, scale=50.0),
    "adversarial": Variant(adversarial_weight=1.0, epsilon=0.05),
    "ensemble of 5": Variant(models=5),
}


def bootstrap_rows(n_rows: int, members: int, gen: torch.Generator) -> Tensor:
    """``[members, n_rows]``: for each member, ``n_rows`` row indices drawn with replacement."""
    return torch.randint(n_rows, (members, n_rows), generator=gen)


def train_models(data: Batch, n: int, hidden=(64, 64), steps: int = 1000, lr: float = 3e-3,
                 seed: int = 0) -> list[DynamicsModel]:  # fmt: skip
    """``n`` deterministic ``DynamicsModel``s fit by least squares (full batch, Adam), each on a
    bootstrap resample of ``data`` when ``n > 1`` (on ``data`` itself when ``n == 1``), each
    from its own initialisation; returned frozen."""
    if n < 1 or steps < 1:
        raise ValueError(f"n, steps: expected ≥ 1, got {n}, {steps}")
    n_rows = len(data.states)
    gen = torch.Generator().manual_seed(seed)
    rows = bootstrap_rows(n_rows, n, gen) if n > 1 else torch.arange(n_rows)[None]
    models = []
    for member, idx in enumerate(rows):
        torch.manual_seed(seed * 100 + member)
        states, actions, next_states = data.states[idx], data.actions[idx], data.next_states[idx]
        model = DynamicsModel(data.states.shape[-1], data.actions.shape[-1], hidden)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            loss = mle_loss(model(states, actions), next_states)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.requires_grad_(False)
        models.append(model)
    return models


def model_backup(models: list[nn.Module], env: DistractedPointMass, value: nn.Module,
                 states: Tensor, actions: Tensor, gen: torch.Generator) -> Tensor:  # fmt: skip
    """``max_{a ∈ actions} r(s, a) + γ V(f̂_m(s, a))`` ``[N]``, ``m`` one member drawn per state."""
    member = torch.randint(len(models), (len(states),), generator=gen)
    best = torch.empty(len(states))
    for m, model in enumerate(models):
        rows = (member == m).nonzero().squeeze(-1)

        def backup(s, a, model=model):
            return env.step(s, a)[1] + env.gamma * value(model(s, a))

        if len(rows):
            best[rows] = max_q(backup, states[rows], actions)
    return best


def value_mse(value: nn.Module, env: DistractedPointMass, states: Tensor) -> float:
    """``E (V(s) − V*(s))²`` on ``states``."""
    with torch.no_grad():
        return float(((value(states) - env.value(states)) ** 2).mean())


def slope(value_fn, states: Tensor) -> float:
    """``max_s ‖∇_s V(s)‖`` over ``states``: an estimate (from below) of ``V``'s Lipschitz
    constant on them."""
    return float(value_gradient_weights(value_fn, states).sum(-1).sqrt().max())


def model_value_iteration(env: DistractedPointMass, models: list[nn.Module], test: Tensor,
                          variant: Variant | None = None, steps: int = 2000, batch_size: int = 256,
                          max_action: float = 4.0, n_actions: int = 21, tau: float = 0.01,
                          lr: float = 1e-3, eval_every: int = 100, seed: int = 0,
                          progress: bool = False):  # fmt: skip
    """Fitted value iteration in ``models`` (module docstring) for one ``variant`` (its
    ``models`` field is ignored: pass the models; ``None``: a plain value). Returns
    ``(history, value)``; ``history`` has ``step``, ``loss``, ``value_mse`` on ``test``,
    ``constant_mse`` and ``seconds``."""
    if not models or steps < 1 or batch_size < 1 or n_actions < 1:
        raise ValueError(
            f"models, steps, batch_size, n_actions: expected non-empty, ≥ 1, ≥ 1, ≥ 1, got {len(models)}, {steps}, {batch_size}, {n_actions}"
        )
    variant = variant or Variant()
    if not max_action > 0 or eval_every < 1 or not 0 < tau <= 1:
        raise ValueError(
            f"max_action, eval_every, tau: expected > 0, ≥ 1, in (0, 1], got {max_action}, {eval_every}, {tau}"
        )
    if variant.adversarial_weight < 0 or not variant.epsilon > 0:
        raise ValueError(f"variant: expected adversarial_weight ≥ 0 and epsilon > 0, got {variant}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    value = StateValueNet(env.state_dim, spectral=variant.spectral, scale=variant.scale)
    target = copy.deepcopy(value).requires_grad_(False)
    opt = torch.optim.Adam(value.parameters(), lr=lr)
    actions = torch.linspace(-max_action, max_action, n_actions)
    constant = float(env.value(test).var(unbiased=False))  # the best constant's error
    rows, start = [], time.perf_counter()
    for step in progress_bar(range(1, steps + 1), desc="model value iteration", enabled=progress):
        states = env.sample_states(batch_size, gen)
        with torch.no_grad():
            y = model_backup(models, env, target, states, actions, gen)
        loss = ((value(states) - y) ** 2).mean()
        if variant.adversarial_weight > 0:
            a = actions[torch.randint(n_actions, (batch_size,), generator=gen)].unsqueeze(-1)
            predicted = models[0](states, a)  # the first model's predicted next states
            penalty = adversarial_penalty(value, predicted, variant.epsilon, gen)
            loss = loss + variant.adversarial_weight * penalty
        opt.zero_grad()
        loss.backward()
        opt.step()
        polyak_update(target, value, tau)
        if step % eval_every == 0 or step == steps:
            rows.append({"step": step, "loss": loss.item(), "value_mse": value_mse(value, env, test),
                         "constant_mse": constant, "seconds": time.perf_counter() - start})  # fmt: skip
    return pd.DataFrame(rows), value


class TrueDynamics(nn.Module):
    """The task's own dynamics as a model, ``f(s, a) = s'``: the reference arm."""

    def __init__(self, env: DistractedPointMass):
        super().__init__()
        self.env = env

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        return self.env.step(states, actions)[0]


def lipschitz_comparison(env: DistractedPointMass, data: Batch, test: Tensor,
                         variants: dict[str, Variant] = VARIANTS, model_steps: int = 2000,
                         value_steps: int = 1000, max_action: float = 4.0, seed: int = 0,
                         progress: bool = False):  # fmt: skip
    """Train the models each variant needs on ``data`` (one set per ensemble size), run
    ``model_value_iteration`` for every variant and for the true dynamics (``"true model"``).
    Returns ``(table, histories, values)``: ``table`` is indexed by arm with ``value_mse``,
    ``first_value_mse`` (at the first evaluation), ``constant_mse``, ``model_mse`` (``E‖f̂(s, a) − s'‖²``
    on ``test`` states and uniform actions, averaged over the arm's models) and ``slope`` (the
    value's ``slope`` on ``test``)."""
    sizes = sorted({v.models for v in variants.values()})
    models = {n: train_models(data, n, steps=model_steps, seed=seed) for n in sizes}
    gen = torch.Generator().manual_seed(seed)
    actions = max_action * (2 * torch.rand(len(test), 1, generator=gen) - 1)
    truth = env.step(test, actions)[0]
    arms = {name: (models[v.models], v) for name, v in variants.items()}
    arms["true model"] = ([TrueDynamics(env)], Variant())
    rows, histories, values = {}, {}, {}
    for name, (arm_models, variant) in progress_bar(arms.items(), desc="arms", enabled=progress):
        history, value = model_value_iteration(env, arm_models, test, variant,
                                               steps=value_steps, max_action=max_action,
                                               seed=seed)  # fmt: skip
        with torch.no_grad():
            model_mse = sum(float(mle_loss(m(test, actions), truth)) for m in arm_models) / len(
                arm_models
            )
        rows[name] = {"value_mse": history.value_mse.iloc[-1],
                      "first_value_mse": history.value_mse.iloc[0],
                      "constant_mse": history.constant_mse.iloc[0], "model_mse": model_mse,
                      "slope": slope(value, test)}  # fmt: skip
        histories[name], values[name] = history, value
    return pd.DataFrame.from_dict(rows, orient="index"), histories, values
