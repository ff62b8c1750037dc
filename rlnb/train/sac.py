"""Soft actor-critic on vectorized gymnasium environments, with DSAC-T's refinements as options.

One file, top to bottom, as in CleanRL's ``sac_continuous_action.py``: act with the squashed
Gaussian policy in ``num_envs`` environments (uniform random actions before
``learning_starts``), store ``(s, a, r, s', terminated)`` in a replay buffer (a time-limit
truncation stores the real last observation and is *not* terminal, so its target bootstraps),
and after every vector step take one gradient step of the critics on the soft target
``y = r + γ (1 − terminated) (min_i Q̄_i(s', a') − α log π(a'|s'))``, ``a' ~ π(·|s')``
("Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement Learning with a Stochastic
Actor"); every ``policy_frequency`` steps, that many steps of the actor on ``E[α log π − min_i
Q_i]`` and of the temperature towards the entropy target ``−dim(A)`` ("Soft Actor-Critic
Algorithms and Applications"); then Polyak averaging of the target critics with ``tau``.

``distributional=True`` turns the critics into Gaussian return distributions ``Z ~ N(Q, σ²)``
trained as in "Distributional Soft Actor-Critic with Three Refinements" (DSAC-T); each
refinement is one switch:

- ``expected_value``: the mean ``Q`` is fit to the expected target ``y_q`` (the target
  distribution's mean) instead of the sampled ``y_z`` (the variance still uses ``y_z``).
- ``twin``: two distributions; the target comes from the one whose mean at ``(s', a')`` is
  smaller, and the actor maximises the smaller mean. (``twin=False`` also gives SAC one critic.)
- ``adjust``: variance-based gradient adjustment: ``y_z`` clipped to ``Q ± ξσ̄`` and the loss
  scaled by ``σ̄² + ε``, with ``σ̄`` the running mean of ``σ`` (rate ``tau``).

``σ = softplus(·)`` of the critic's second output, as in the paper's code (``dsac_v2.py`` of
Jingliang-Duan/DSAC-v2 before July 2025). Differences from that code: the next action is drawn
from the current policy (it keeps a Polyak-averaged target policy), the targets are averaged
every step (it does so every ``delay_update`` steps, with one actor step each time), the actor
steps after the critic (it takes both gradients against the old critic), and the temperature
loss is CleanRL's ``−α (log π + H̄)`` from the actor's own sample (it uses ``−log α (…)``).

The history has, at each evaluation, the mean return of the deterministic policy (the tanh of
the mean action), and from rollouts of the stochastic policy the mean predicted ``Q(s_t, a_t)``
against the discounted *soft* return obtained from those pairs, ``Σ_k γ^k r_{t+k} − α Σ_{k≥1}
γ^k log π(a_{t+k}|s_{t+k})`` (what a soft Q estimates), over the first half of each episode. The
return stops at the time limit where Q bootstraps through it: for ``t < T/2`` the missing tail
weighs ``γ^{T−t}`` (0.13–0.37 on Pendulum), so part of the gap is the cut, not the critic.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from rlnb.device import pick_device, seed_everything
from rlnb.envs.vector import box_vector_env
from rlnb.estimators.returns import discounted_returns
from rlnb.estimators.soft import (
    gaussian_critic_loss,
    soft_actor_loss,
    soft_q_target,
    temperature_loss,
)
from rlnb.models.continuous import QEnsemble, SquashedGaussianPolicy
from rlnb.models.value import polyak_update
from rlnb.progress import progress_bar

ADAM = {"fused": True}  # one kernel per step for all parameters: the loop is overhead-bound


@dataclass
class SACConfig:
    env_id: str = "Pendulum-v1"
    total_steps: int = 20_000  # environment steps, all environments together
    num_envs: int = 1
    buffer_size: int = 100_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics (and of DSAC-T's running σ̄)
    policy_lr: float = 3e-4
    q_lr: float = 1e-3
    learning_starts: int = 5_000  # environment steps of uniform random actions before learning
    policy_frequency: int = 2  # every k critic steps, k actor (and temperature) steps
    alpha: float = 1.0  # the temperature: its start with autotune, else fixed
    autotune: bool = True
    hidden: tuple = (256, 256)
    reward_scale: float = 1.0  # the agent learns from reward × reward_scale; returns are unscaled
    distributional: bool = False  # DSAC-T's Gaussian critics
    twin: bool = True
    expected_value: bool = True  # DSAC-T refinements (used when distributional=True)
    adjust: bool = True
    bound: float = 3.0  # ξ: y_z clipped to Q ± ξσ̄
    eval_every: int = 1_000  # environment steps between evaluations
    eval_episodes: int = 4
    stop_return: float | None = None  # stop at the first evaluation whose mean return reaches it
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(
                f"tau, gamma: expected (0, 1] and [0, 1], got {self.tau}, {self.gamma}"
            )
        if not self.alpha > 0 or not self.reward_scale > 0:
            raise ValueError(
                f"alpha, reward_scale: expected > 0, got {self.alpha}, {self.reward_scale}"
            )
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ValueError(
                f"batch_size, buffer_size: expected buffer_size ≥ batch_size ≥ 1, got {self.batch_size}, {self.buffer_size}"
            )
        if self.total_steps < self.num_envs or self.policy_frequency < 1 or self.eval_episodes < 1:
            raise ValueError(
                "total_steps, policy_frequency, eval_episodes: expected total_steps ≥ num_envs, "
                f"policy_frequency ≥ 1, eval_episodes ≥ 1, got {self.total_steps}, {self.policy_frequency}, {self.eval_episodes}"
            )


@dataclass
class SACAgent:
    """What ``train`` returns beside the history: the networks, the temperature, the buffer
    (``obs``, ``action``, ``reward``, ``next_obs``, ``terminated``; its first ``size`` rows) and
    every finished training episode as ``(environment step, return, seconds since the start)``."""

    actor: SquashedGaussianPolicy
    critic: QEnsemble
    critic_target: QEnsemble
    log_alpha: torch.Tensor
    buffer: dict = field(repr=False)
    size: int = 0
    episodes: list = field(default_factory=list, repr=False)


def critic_value(critic: QEnsemble, obs, act) -> torch.Tensor:
    """The value the actor maximises: ``min_i Q_i(s, a)`` (``Q_i`` the means of Gaussian critics)."""
    out = critic(obs, act)
    return (out[0] if critic.outputs == 2 else out).min(0).values


def gaussian_targets(
    cfg: SACConfig, next_mean, next_std, noise, reward, next_log_prob, term, alpha
):
    """DSAC-T's targets from the target critics' ``(mean, std) [n, B]`` at ``(s', a')`` and
    standard-normal ``noise [B]``: the distribution whose mean is smallest gives ``Z̄ = mean +
    std · clip(noise, ±3)``; returns ``(target for the mean, y_z)``, the first ``y_q`` (the
    expected value of ``y_z``) with ``expected_value`` and ``y_z`` itself without."""
    pick = next_mean.argmin(0)[None]  # twin: the distribution with the smaller mean
    m, s = next_mean.gather(0, pick)[0], next_std.gather(0, pick)[0]
    y_z = soft_q_target(
        reward, m + s * noise.clamp(-3.0, 3.0), next_log_prob, term, cfg.gamma, alpha
    )
    if not cfg.expected_value:
        return y_z, y_z
    return soft_q_target(reward, m, next_log_prob, term, cfg.gamma, alpha), y_z


def critic_loss(cfg: SACConfig, agent: SACAgent, batch, alpha, mean_std):
    """The critics' loss on one batch; returns ``(loss, mean_std)`` with DSAC-T's running
    ``σ̄`` per critic updated (``None`` for scalar critics)."""
    obs, act, reward, next_obs, term = batch
    with torch.no_grad():
        next_act, next_log_prob, _ = agent.actor.sample(next_obs)
        next_out = agent.critic_target(next_obs, next_act)
    if not cfg.distributional:
        y = soft_q_target(reward, next_out.min(0).values, next_log_prob, term, cfg.gamma, alpha)
        q = agent.critic(obs, act)
        return (q - y).square().mean(-1).sum(), None
    noise = torch.randn_like(reward)
    target_mean, y_z = gaussian_targets(cfg, *next_out, noise, reward, next_log_prob, term, alpha)
    mean, std = agent.critic(obs, act)
    batch_std = std.detach().mean(-1)
    mean_std = batch_std if mean_std is None else mean_std.lerp(batch_std, cfg.tau)
    loss = sum(
        gaussian_critic_loss(
            mean[i], std[i], target_mean, y_z, mean_std[i] if cfg.adjust else None, bound=cfg.bound
        )
        for i in range(agent.critic.n)
    )
    return loss, mean_std


def soft_returns(
    rewards: np.ndarray, log_probs: np.ndarray, gamma: float, alpha: float
) -> np.ndarray:
    """``G_t = Σ_k γ^k r_{t+k} − α Σ_{k≥1} γ^k log π_{t+k}`` over ``[T, ...]`` (0 after the end):
    the discounted return (``rlnb.estimators.discounted_returns``) of ``r_t − γ α log π_{t+1}``."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    shaped = r.clone()
    shaped[:-1] -= gamma * alpha * torch.as_tensor(log_probs[1:], dtype=torch.float64)
    no = torch.zeros_like(r, dtype=torch.bool)
    return discounted_returns(shaped, torch.zeros_like(r), no, no, gamma, time_dim=0).numpy()


@torch.no_grad()
def evaluate(cfg: SACConfig, agent: SACAgent, device, seed: int) -> dict:
    """``eval_return``: mean return of the deterministic policy over ``eval_episodes``;
    ``q_estimate``/``mc_return``: mean ``min_i Q_i(s_t, a_t)`` and soft discounted return over
    the first half of stochastic episodes; ``q_rmse``: the root-mean-square difference of the two,
    pair by pair, and ``constant_rmse`` that of the best constant (their std). All divided by
    ``reward_scale``."""
    alpha = agent.log_alpha.exp().item()
    out = {}
    for stochastic in (False, True):
        envs, *_ = box_vector_env(cfg.env_id, cfg.eval_episodes)
        obs, _ = envs.reset(seed=seed)
        alive = np.ones(cfg.eval_episodes, dtype=bool)
        rewards, log_probs, qs, lives = [], [], [], []
        while alive.any():
            o = torch.as_tensor(obs, dtype=torch.float32, device=device)
            action, log_prob, mean_action = agent.actor.sample(o)
            a = action if stochastic else mean_action
            obs, r, term, trunc, _ = envs.step(a.cpu().numpy())
            rewards.append(r * alive * cfg.reward_scale)
            lives.append(alive.copy())
            if stochastic:  # only these rollouts are compared with the critic
                log_probs.append(log_prob.cpu().numpy() * alive)
                qs.append(critic_value(agent.critic, o, a).cpu().numpy())
            alive &= ~(term | trunc)
        envs.close()
        rewards, live = np.array(rewards), np.array(lives)
        if not stochastic:
            out["eval_return"] = float(rewards.sum(0).mean() / cfg.reward_scale)
            continue
        g = soft_returns(rewards, np.array(log_probs), cfg.gamma, alpha)
        first_half = live & (np.arange(len(live))[:, None] < live.sum(0) / 2)
        q, g = np.array(qs)[first_half] / cfg.reward_scale, g[first_half] / cfg.reward_scale
        out |= {
            "q_estimate": float(q.mean()),
            "mc_return": float(g.mean()),
            "q_rmse": float(np.sqrt(np.mean((q - g) ** 2))),
            "constant_rmse": float(g.std()),
        }
    return out


def train(config: SACConfig | None = None, progress: bool = True):
    """Train SAC (or DSAC-T); return ``(history, agent)`` with one row per evaluation: ``step``,
    ``train_return`` (mean return of the episodes that ended since the last row), ``eval_return``,
    ``q_estimate``, ``mc_return``, ``q_rmse``, ``constant_rmse`` (see ``evaluate``), ``alpha``,
    ``critic_loss`` (for DSAC-T the value of the gradient surrogate, which can be negative),
    ``std`` (DSAC-T's running σ̄, averaged over the critics; NaN for SAC), ``entropy`` (``−E log π`` on the actor's batches; the target is
    ``−dim(A)``), ``updates``, ``sps`` (environment steps per second so far) and
    ``wall``. Row 0 is the untrained agent; with ``stop_return`` the last row is the first
    evaluation that reached it."""
    cfg = config or SACConfig()
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    envs, obs_dim, act_dim, low, high = box_vector_env(cfg.env_id, cfg.num_envs)
    actor = SquashedGaussianPolicy(obs_dim, act_dim, low, high, cfg.hidden).to(device)
    outputs = 2 if cfg.distributional else 1
    critic = QEnsemble(obs_dim, act_dim, 2 if cfg.twin else 1, cfg.hidden, outputs).to(device)
    log_alpha = torch.tensor(math.log(cfg.alpha), device=device, requires_grad=cfg.autotune)
    size = cfg.buffer_size
    buffer = {
        "obs": torch.zeros(size, obs_dim, device=device),
        "action": torch.zeros(size, act_dim, device=device),
        "reward": torch.zeros(size, device=device),
        "next_obs": torch.zeros(size, obs_dim, device=device),
        "terminated": torch.zeros(size, device=device),
    }
    agent = SACAgent(actor, critic, copy.deepcopy(critic).requires_grad_(False), log_alpha, buffer)
    q_opt = torch.optim.Adam(critic.parameters(), lr=cfg.q_lr, **ADAM)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.policy_lr, **ADAM)
    alpha_opt = torch.optim.Adam([log_alpha], lr=cfg.q_lr) if cfg.autotune else None
    target_entropy = -float(act_dim)
    rng = np.random.default_rng(cfg.seed)

    def row(step: int, since: dict, updates: int, start: float) -> dict:
        """One history row from what was collected ``since`` the last one."""
        wall = time.perf_counter() - start
        mean = {k: torch.stack(v).mean().item() if v else np.nan for k, v in since.items() if k != "finished"}  # fmt: skip
        return {
            "step": step,
            "train_return": float(np.mean(since["finished"])) if since["finished"] else np.nan,
            **evaluate(cfg, agent, device, 10_000 + step),
            "alpha": log_alpha.exp().item(),
            "critic_loss": mean["loss"],
            "std": mean["std"],
            "entropy": mean["entropy"],
            "updates": updates,
            "sps": step / wall if step else np.nan,
            "wall": wall,
        }

    def fresh() -> dict:
        return {"finished": [], "loss": [], "std": [], "entropy": []}

    obs_np, _ = envs.reset(seed=cfg.seed)
    running, since = np.zeros(cfg.num_envs), fresh()
    step, updates, ptr, mean_std, start = 0, 0, 0, None, time.perf_counter()
    history = [row(0, since, updates, start)]
    next_eval = cfg.eval_every
    bar = progress_bar(total=cfg.total_steps, desc=f"{'DSAC-T' if cfg.distributional else 'SAC'} {cfg.env_id}", enabled=progress)  # fmt: skip
    while step < cfg.total_steps:
        obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
        if step < cfg.learning_starts:
            action = rng.uniform(low, high, size=(cfg.num_envs, act_dim)).astype(np.float32)
        else:
            with torch.no_grad():
                action = actor.sample(obs)[0].cpu().numpy()
        obs_np, reward, term, trunc, info = envs.step(action)
        done = term | trunc
        real_next = obs_np.copy()
        if done.any():  # same-step autoreset: obs_np already starts the next episode
            real_next[done] = np.stack(info["final_obs"][done])
        idx = torch.as_tensor((ptr + np.arange(cfg.num_envs)) % size, device=device)
        buffer["obs"][idx] = obs
        buffer["action"][idx] = torch.as_tensor(action, device=device)
        buffer["reward"][idx] = torch.as_tensor(reward * cfg.reward_scale, dtype=torch.float32, device=device)  # fmt: skip
        buffer["next_obs"][idx] = torch.as_tensor(real_next, dtype=torch.float32, device=device)
        buffer["terminated"][idx] = torch.as_tensor(term, dtype=torch.float32, device=device)
        ptr = (ptr + cfg.num_envs) % size
        agent.size = min(size, agent.size + cfg.num_envs)
        running += reward
        step += cfg.num_envs
        since["finished"] += running[done].tolist()
        agent.episodes += [(step, g, time.perf_counter() - start) for g in running[done].tolist()]
        running[done] = 0.0
        bar.update(cfg.num_envs)

        if step > cfg.learning_starts:
            sample = torch.as_tensor(rng.integers(agent.size, size=cfg.batch_size), device=device)
            batch = [
                buffer[k][sample] for k in ("obs", "action", "reward", "next_obs", "terminated")
            ]
            alpha = log_alpha.exp().detach()
            loss, mean_std = critic_loss(cfg, agent, batch, alpha, mean_std)
            q_opt.zero_grad(set_to_none=True)
            loss.backward()
            q_opt.step()
            since["loss"].append(loss.detach())
            if mean_std is not None:
                since["std"].append(mean_std.mean())
            updates += 1
            if updates % cfg.policy_frequency == 0:  # delayed, then as many actor steps
                critic.requires_grad_(False)  # the actor's loss needs no critic gradients
                for _ in range(cfg.policy_frequency):
                    action_pi, log_pi, _ = actor.sample(batch[0])
                    actor_loss = soft_actor_loss(log_pi, critic_value(critic, batch[0], action_pi), alpha)  # fmt: skip
                    actor_opt.zero_grad(set_to_none=True)
                    actor_loss.backward()
                    actor_opt.step()
                    since["entropy"].append(-log_pi.detach().mean())
                    if cfg.autotune:
                        alpha_opt.zero_grad(set_to_none=True)
                        temperature_loss(log_alpha, log_pi, target_entropy).backward()
                        alpha_opt.step()
                        alpha = log_alpha.exp().detach()
                critic.requires_grad_(True)
            polyak_update(agent.critic_target, critic, cfg.tau)

        if step >= next_eval or step >= cfg.total_steps:
            next_eval += cfg.eval_every
            history.append(row(step, since, updates, start))
            bar.set_postfix(eval_return=f"{history[-1]['eval_return']:.0f}")
            since = fresh()
            if cfg.stop_return is not None and history[-1]["eval_return"] >= cfg.stop_return:
                break
    bar.close()
    envs.close()
    return pd.DataFrame(history), agent


def gaussian_critic_fit(
    scale: float,
    expected_value: bool = True,
    adjust: bool = True,
    steps: int = 2_000,
    lr: float = 0.02,
    batch_size: int = 16,
    gamma: float = 0.9,
    seed: int = 0,
) -> pd.DataFrame:
    """DSAC-T's critic update on one state-action, by plain SGD, where the exact answer is known.

    The reward is ``scale · N(1, 0.5²)`` and the next state's return distribution (the target
    critic, held fixed) is ``scale · N(2, 2²)``; so ``Q* = scale (1 + 2γ)``. Each step draws
    ``batch_size`` rewards and forms the targets as the training loop does (``gaussian_targets``:
    ``y_z = r + γ Z̄`` with ``Z̄`` drawn, and ``y_q = r + γ · 2 scale`` for the mean when
    ``expected_value``; no entropy term), then steps ``(Q, ρ)``, ``σ = softplus(ρ)``, on
    ``gaussian_critic_loss`` (``Q = 0``, ``ρ = 0`` at the start). Returns one row per step:
    ``step``, ``q``, ``std``, ``error = |Q − Q*| / Q*``.
    """
    if not scale > 0 or steps < 1 or not lr > 0 or batch_size < 1:
        raise ValueError(
            f"scale, steps, lr, batch_size: expected > 0, got {scale}, {steps}, {lr}, {batch_size}"
        )
    gen = torch.Generator().manual_seed(seed)
    cfg = SACConfig(gamma=gamma, distributional=True, expected_value=expected_value, adjust=adjust)
    q = torch.zeros(1, requires_grad=True)
    rho = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([q, rho], lr=lr)
    next_mean = next_std = torch.full((1, batch_size), 2.0 * scale)  # the target critic
    zero = torch.zeros(batch_size)
    q_star, mean_std, rows = scale * (1 + 2 * gamma), None, []
    for step in range(steps):
        reward = scale * (1 + 0.5 * torch.randn(batch_size, generator=gen))
        noise = torch.randn(batch_size, generator=gen)
        target_mean, y_z = gaussian_targets(
            cfg, next_mean, next_std, noise, reward, zero, zero, 0.0
        )
        std = torch.nn.functional.softplus(rho)
        mean_std = std.detach() if mean_std is None else mean_std.lerp(std.detach(), cfg.tau)
        loss = gaussian_critic_loss(
            q.expand(batch_size), std.expand(batch_size), target_mean, y_z,
            mean_std if adjust else None, bound=cfg.bound,
        )  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append((step, q.item(), std.item(), abs(q.item() - q_star) / q_star))
    return pd.DataFrame(rows, columns=["step", "q", "std", "error"])
