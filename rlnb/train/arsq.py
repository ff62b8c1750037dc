"""A soft Q over discretized action dimensions, auto-regressive (ARSQ) or factorized, learned
offline from suboptimal data.

Each action dimension is cut into ``bins`` values in ``[−1, 1]``. The critic is

    Q(s, a) = V(s) + Σ_d A_d(s, a_<d, a_d),   A_d = f_d − α log Σ_k exp(f_{d,k}/α)

(``rlnb.estimators.soft.soft_advantages``), so its soft value ``α log Σ_a exp(Q(s, a)/α)`` is
exactly ``V(s)`` and the policy ``π(a_d | s, a_<d) ∝ exp(A_d/α)`` is drawn one dimension at a
time. It is fit to ``y = r + γ (1 − terminated) V̄(s')`` with ``V̄`` a Polyak-averaged copy.

- ``autoregressive=True`` (ARSQ, "Learning from Suboptimal Data in Continuous Control via
  Auto-Regressive Soft Q-Network"): ``f_d`` sees the state, the values already chosen for the
  earlier dimensions (zeros for the later ones) and which dimension it is.
- ``autoregressive=False``: the same network without the earlier dimensions, so ``Q`` is a sum
  of per-dimension terms: a factorized soft Q, which cannot prefer ``(−1, +1)`` and ``(+1, −1)``
  over ``(+1, +1)`` and ``(−1, −1)``.

``conservative > 0`` adds the paper's conservative term on demonstrations: CQL's ``log Σ exp Q −
Q(s, a)`` per dimension, which for normalised advantages is ``−A_d(s, a_<d, a_d)`` at the data's
action (here on all of the data, of mixed quality). Differences from the paper: one level of bins
(it refines coarse to fine), one critic (it takes the min of two), states only (no images),
offline only (it mixes demonstrations into online replay).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlnb.envs.reach import rollout
from rlnb.estimators.soft import soft_advantages, soft_q_target
from rlnb.models.value import MLP, polyak_update
from rlnb.progress import progress_bar


class DimensionalSoftQ(nn.Module):
    """``Q(s, a) = V(s) + Σ_d A_d`` over ``act_dim`` dimensions of ``bins`` values each (module
    docstring); ``values`` are the bins' actions, ``linspace(−1, 1, bins)``."""

    def __init__(self, obs_dim: int, act_dim: int, bins: int = 5, alpha: float = 0.05,
                 hidden=(128, 128), autoregressive: bool = True):  # fmt: skip
        super().__init__()
        if bins < 2 or act_dim < 1 or not alpha > 0:
            raise ValueError(
                f"bins, act_dim, alpha: expected ≥ 2, ≥ 1, > 0, got {bins}, {act_dim}, {alpha}"
            )
        self.act_dim, self.bins, self.alpha, self.autoregressive = act_dim, bins, alpha, autoregressive  # fmt: skip
        self.register_buffer("values", torch.linspace(-1.0, 1.0, bins))
        self.v = MLP(obs_dim, 1, hidden)
        self.f = MLP(obs_dim + 2 * act_dim, bins, hidden)

    def to_bins(self, action: Tensor) -> Tensor:
        """``[B, D]`` long: the nearest bin of each coordinate."""
        return (action[..., None] - self.values).abs().argmin(-1)

    def advantages(self, obs: Tensor, prev: Tensor, d: int) -> Tensor:
        """``[B, bins]`` ``A_d(s, a_<d, ·)``; ``prev [B, D]`` holds the chosen values of the
        earlier dimensions (the rest are ignored)."""
        earlier = (torch.arange(self.act_dim, device=obs.device) < d).float()
        prev = prev * earlier if self.autoregressive else torch.zeros_like(prev)
        which = F.one_hot(torch.full((len(obs),), d, device=obs.device), self.act_dim).float()
        return soft_advantages(self.f(torch.cat([obs, prev, which], -1)), self.alpha)

    def value(self, obs: Tensor) -> Tensor:
        """``V(s)`` ``[B]``, the soft value of ``Q(s, ·)``."""
        return self.v(obs)[:, 0]

    def q(self, obs: Tensor, bins: Tensor) -> Tensor:
        """``Q(s, a)`` ``[B]`` for actions given as bins ``[B, D]``."""
        prev = self.values[bins]
        total = self.value(obs)
        for d in range(self.act_dim):
            total = total + self.advantages(obs, prev, d).gather(1, bins[:, d : d + 1])[:, 0]
        return total

    @torch.no_grad()
    def act(self, obs: Tensor, greedy: bool = True, gen: torch.Generator | None = None) -> Tensor:
        """``[B, D]`` actions, one dimension after the other: the most likely bin of
        ``softmax(A_d/α)`` (``greedy``) or a draw from it."""
        prev = torch.zeros(len(obs), self.act_dim, device=obs.device)
        for d in range(self.act_dim):
            a = self.advantages(obs, prev, d)
            k = a.argmax(-1) if greedy else torch.multinomial((a / self.alpha).softmax(-1).cpu(), 1, generator=gen)[:, 0].to(obs.device)  # fmt: skip
            prev[:, d] = self.values[k]
        return prev


def train_soft_q(
    model: DimensionalSoftQ, data: dict, steps: int = 3000, batch_size: int = 256,
    gamma: float = 0.97, tau: float = 0.01, lr: float = 1e-3, conservative: float = 0.0,
    eval_every: int = 500,
    eval_episodes: int = 100, holdout: float = 0.1, seed: int = 0, progress: bool = True,
) -> tuple[pd.DataFrame, DimensionalSoftQ]:  # fmt: skip
    """Fit ``model`` to the soft TD target on the transitions of ``data`` (``obs``, ``action``,
    ``reward``, ``next_obs``, ``terminated``; actions snapped to the nearest bins), holding out
    the last ``holdout`` fraction of whole episodes (by ``data["episode"]`` when present); with
    ``conservative > 0`` the loss adds ``conservative · mean(V(s) − Q(s, a)) = −Σ_d A_d`` at the
    data's actions (module docstring).
    History rows every ``eval_every`` steps: ``step``, ``loss`` (the mean training loss since
    the last row), ``heldout_td`` (the squared TD error on the held-out transitions), ``constant_td``
    (that of the best constant prediction of their targets), ``success`` and ``steps_to_goal``
    of the greedy policy on the reach task (``eval_episodes`` episodes), ``seconds``."""
    if min(steps, batch_size, eval_every, eval_episodes) < 1 or not 0.0 < holdout < 1.0:
        raise ValueError(
            "steps, batch_size, eval_every, eval_episodes, holdout: expected ≥ 1 (the first four) and "
            f"(0, 1), got {steps}, {batch_size}, {eval_every}, {eval_episodes}, {holdout}"
        )
    if conservative < 0:
        raise ValueError(f"conservative: expected ≥ 0, got {conservative}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = model.values.device
    t = {k: torch.as_tensor(np.asarray(data[k]), dtype=torch.float32, device=device) for k in ("obs", "action", "reward", "next_obs", "terminated")}  # fmt: skip
    episode = np.asarray(data.get("episode", np.arange(len(t["obs"]))))
    cut = np.quantile(np.unique(episode), 1.0 - holdout)
    train_rows = torch.as_tensor(np.flatnonzero(episode < cut), device=device)
    held = torch.as_tensor(np.flatnonzero(episode >= cut), device=device)
    bins = model.to_bins(t["action"])
    target = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def td(rows):
        with torch.no_grad():
            y = soft_q_target(t["reward"][rows], target.value(t["next_obs"][rows]), torch.zeros(len(rows), device=device), t["terminated"][rows], gamma, 0.0)  # fmt: skip
        return model.q(t["obs"][rows], bins[rows]), y

    def evaluate(step, losses, start):
        with torch.no_grad():
            q, y = td(held)
        out = rollout(lambda o: model.act(torch.as_tensor(o, device=device)).cpu().numpy(), eval_episodes, seed=10_000 + step)  # fmt: skip
        return {
            "step": step,
            "loss": torch.stack(losses).mean().item() if losses else np.nan,
            "heldout_td": float((q - y).square().mean()),
            "constant_td": float(y.var(unbiased=False)),
            "success": float(out["success"].mean()),
            "steps_to_goal": float(out["steps"].mean()),
            "seconds": time.perf_counter() - start,
        }

    start, losses = time.perf_counter(), []
    history = [evaluate(0, losses, start)]
    for step in progress_bar(range(1, steps + 1), desc="soft Q", enabled=progress):
        rows = train_rows[torch.randint(len(train_rows), (batch_size,), generator=gen).to(device)]
        q, y = td(rows)
        loss = (q - y).square().mean()
        if conservative:  # −Σ_d A_d(s, a_<d, a_d) = −α log π(a|s) at the data's actions
            loss = loss + conservative * (model.value(t["obs"][rows]) - q).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        polyak_update(target, model, tau)
        losses.append(loss.detach())
        if step % eval_every == 0 or step == steps:
            history.append(evaluate(step, losses, start))
            losses = []
    return pd.DataFrame(history), model.eval()
