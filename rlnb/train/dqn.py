"""DQN on vectorized gymnasium environments, with the value losses of notebooks 04–05.

One file, top to bottom, as in CleanRL: act ε-greedily in ``num_envs`` environments, store
``(s, a, r, s', terminated)`` in a replay buffer (a time-limit truncation stores the real last
observation and is *not* terminal, so the target still bootstraps), and every ``train_every``
vector steps fit the online network to ``Y = r + γ (1 − terminated) Q_target(s', a*)`` with
``a* = argmax_a Q_target(s', a)`` (or ``argmax_a Q_online(s', a)`` when ``double=True``,
"Deep Reinforcement Learning with Double Q-learning").

Losses (``loss`` with a ``scalar`` head): ``td`` = Huber (or MSE) of ``δ = Q(s, a) − Y``;
the two losses found by search in "Evolving Reinforcement Learning Algorithms": ``dqnreg`` =
``δ² + 0.1 · Q(s, a)`` (the extra term pushes Q-values down and curbs overestimation) and
``dqnclipped`` = ``max(Q, δ² + Y) + max(Q − Y, γ_t · Q_target(s', a*)²)`` with
``γ_t = γ (1 − terminated)`` (the paper writes γ; we drop the second term's bootstrap after a
terminal step, as ``Y`` does). With a ``two_hot`` or
``hl_gauss`` head the network is fit by cross-entropy to the encoded ``Y``; with ``c51`` to C51's
projected target distribution ("A Distributional Perspective on Reinforcement Learning").

The history has, at each evaluation, the greedy policy's mean return and, over the states it
visited, the mean predicted ``max_a Q(s, a)`` next to the discounted Monte-Carlo return actually
obtained from those states — the overestimation gap.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from rlnb.device import pick_device, seed_everything
from rlnb.envs.vector import discrete_vector_env
from rlnb.estimators.returns import discounted_returns
from rlnb.models.value import ValueNetwork, bellman_target, categorical_loss, polyak_update
from rlnb.progress import progress_bar

LOSSES = ("td", "dqnreg", "dqnclipped")


@dataclass
class DQNConfig:
    env_id: str = "CartPole-v1"
    total_steps: int = 20_000  # environment steps, all environments together
    num_envs: int = 4  # parallel environments (gymnasium SyncVectorEnv)
    buffer_size: int = 50_000
    batch_size: int = 128
    lr: float = 5e-4  # Adam
    gamma: float = 0.99
    learning_starts: int = 1_000  # environment steps before the first update
    train_every: int = 1  # vector steps between gradient steps
    target_every: int = 250  # gradient steps between target updates
    tau: float = 1.0  # target update: 1 = hard copy, < 1 = Polyak averaging
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.3  # share of total_steps over which ε decays linearly
    double: bool = False
    loss: str = "td"  # "td" | "dqnreg" | "dqnclipped" (scalar head)
    huber: bool = True  # for "td": Huber, else MSE
    head: str = "scalar"  # "scalar" | "two_hot" | "hl_gauss" | "c51"
    n_bins: int = 51
    v_min: float = 0.0
    v_max: float = 100.0
    sigma_ratio: float = 0.75
    reward_noise: float = 0.0  # std of Gaussian noise added to the rewards the agent learns from
    hidden: tuple = (128, 128)
    eval_every: int = 2_000  # environment steps between evaluations
    eval_episodes: int = 5
    stop_return: float | None = None  # stop at the first evaluation whose mean return reaches it
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.loss != "td" and self.head != "scalar":
            raise ValueError(f"loss: {self.loss!r} needs the scalar head, got head={self.head!r}")
        if self.reward_noise < 0:
            raise ValueError(f"reward_noise: expected ≥ 0, got {self.reward_noise}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(
                f"tau, gamma: expected (0, 1] and [0, 1], got {self.tau}, {self.gamma}"
            )
        if (
            self.total_steps < self.num_envs
            or self.batch_size < 1
            or self.buffer_size < self.batch_size
        ):
            raise ValueError(
                "total_steps, batch_size, buffer_size: expected total_steps ≥ num_envs and buffer_size ≥ batch_size ≥ 1"
            )


def epsilon_at(cfg: DQNConfig, step: int) -> float:
    """Linear decay from ``eps_start`` to ``eps_end`` over ``eps_fraction · total_steps``."""
    frac = min(1.0, step / max(1.0, cfg.eps_fraction * cfg.total_steps))
    return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)


def dqn_loss(cfg: DQNConfig, qnet, target, batch) -> torch.Tensor:
    """The loss on one batch ``(obs, action, reward, next_obs, terminated)``."""
    obs, action, reward, next_obs, term = batch
    discount = cfg.gamma * (1.0 - term.float())
    y, next_v = bellman_target(target, next_obs, reward, discount, qnet if cfg.double else None)
    if cfg.head == "c51":
        logits = qnet.logits(obs)[torch.arange(len(action)), action]
        return categorical_loss(logits, y)
    if cfg.head != "scalar":
        return qnet.loss(obs, y, index=action)
    q = qnet.value(obs).gather(1, action[:, None]).squeeze(1)
    if cfg.loss == "dqnreg":
        return ((q - y) ** 2 + 0.1 * q).mean()
    if cfg.loss == "dqnclipped":
        return (
            torch.maximum(q, (q - y) ** 2 + y) + torch.maximum(q - y, discount * next_v**2)
        ).mean()
    fn = torch.nn.functional.smooth_l1_loss if cfg.huber else torch.nn.functional.mse_loss
    return fn(q, y)


@torch.no_grad()
def evaluate(cfg: DQNConfig, qnet, device, episodes: int, seed: int) -> dict:
    """Greedy episodes: mean return, and the mean ``max_a Q`` against the discounted return
    obtained from every visited state."""
    env = gym.make(cfg.env_id)
    returns, predicted, actual = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        rewards, qs, done = [], [], False
        while not done:
            q = qnet.value(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])[0]
            obs, r, term, trunc, _ = env.step(int(q.argmax()))
            rewards.append(float(r))
            qs.append(float(q.max()))
            done = term or trunc
        returns.append(sum(rewards))
        predicted += qs
        r = torch.tensor(rewards, dtype=torch.float64)
        no = torch.zeros_like(r, dtype=torch.bool)
        mc = discounted_returns(r, torch.zeros_like(r), no, no, cfg.gamma)  # 0 after the end
        actual += mc.tolist()  # a time-limit cut understates the true return near its end
    env.close()
    return {
        "eval_return": float(np.mean(returns)),
        "q_estimate": float(np.mean(predicted)),
        "mc_return": float(np.mean(actual)),
    }


def train(config: DQNConfig | None = None, progress: bool = True):
    """Train DQN; return ``(history, qnet)`` with one row per evaluation: ``step``, ``epsilon``,
    ``train_return`` (mean of the episodes that ended since the last row), ``loss``,
    ``eval_return``, ``q_estimate``, ``mc_return``, ``updates`` (gradient steps so far), ``sps`` (environment steps per second so far)
    and ``wall`` (seconds since the start, evaluations included). Row 0 is the untrained network;
    with ``stop_return`` the last row is the first evaluation that reached it."""
    cfg = config or DQNConfig()
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    envs, obs_dim, n_actions = discrete_vector_env(cfg.env_id, cfg.num_envs)
    qnet = ValueNetwork(
        obs_dim, n_actions, cfg.head, cfg.hidden, cfg.n_bins, cfg.v_min, cfg.v_max,
        cfg.sigma_ratio, cfg.huber,
    ).to(device)  # fmt: skip
    target = copy.deepcopy(qnet).requires_grad_(False)
    optimizer = torch.optim.Adam(qnet.parameters(), lr=cfg.lr)

    size = cfg.buffer_size
    buf_obs = torch.zeros(size, obs_dim, device=device)
    buf_next = torch.zeros(size, obs_dim, device=device)
    buf_act = torch.zeros(size, dtype=torch.long, device=device)
    buf_rew = torch.zeros(size, device=device)
    buf_term = torch.zeros(size, dtype=torch.bool, device=device)
    ptr, full = 0, False
    rng = np.random.default_rng(cfg.seed)

    obs_np, _ = envs.reset(seed=cfg.seed)
    running, finished, losses = np.zeros(cfg.num_envs), [], []
    history = [{"step": 0, "epsilon": cfg.eps_start, "train_return": np.nan, "loss": np.nan,
                **evaluate(cfg, qnet, device, cfg.eval_episodes, 10_000), "updates": 0, "sps": np.nan, "wall": 0.0}]  # fmt: skip
    step, updates, next_eval, start = 0, 0, cfg.eval_every, time.perf_counter()
    bar = progress_bar(total=cfg.total_steps, desc=f"DQN {cfg.env_id} {cfg.head}", enabled=progress)
    while step < cfg.total_steps:
        eps = epsilon_at(cfg, step)
        obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
        with torch.no_grad():
            greedy = qnet.value(obs).argmax(-1).cpu().numpy()
        explore = rng.random(cfg.num_envs) < eps
        action = np.where(explore, rng.integers(n_actions, size=cfg.num_envs), greedy)
        obs_np, reward, term, trunc, info = envs.step(action)
        done = term | trunc
        real_next = obs_np.copy()
        if done.any():  # same-step autoreset: obs_np already starts the next episode
            real_next[done] = np.stack(info["final_obs"][done])
        idx = (ptr + np.arange(cfg.num_envs)) % size
        buf_obs[idx] = obs
        buf_next[idx] = torch.as_tensor(real_next, dtype=torch.float32, device=device)
        buf_act[idx] = torch.as_tensor(action, device=device)
        noisy = (
            reward + cfg.reward_noise * rng.standard_normal(cfg.num_envs)
            if cfg.reward_noise
            else reward
        )
        buf_rew[idx] = torch.as_tensor(noisy, dtype=torch.float32, device=device)
        buf_term[idx] = torch.as_tensor(term, device=device)
        full = full or ptr + cfg.num_envs >= size
        ptr = (ptr + cfg.num_envs) % size
        running += reward
        finished += running[done].tolist()
        running[done] = 0.0
        step += cfg.num_envs
        bar.update(cfg.num_envs)

        if step >= cfg.learning_starts and (step // cfg.num_envs) % cfg.train_every == 0:
            sample = torch.as_tensor(
                rng.integers(size if full else ptr, size=cfg.batch_size), device=device
            )
            batch = (
                buf_obs[sample],
                buf_act[sample],
                buf_rew[sample],
                buf_next[sample],
                buf_term[sample],
            )
            loss = dqn_loss(cfg, qnet, target, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(qnet.parameters(), 10.0)
            optimizer.step()
            losses.append(loss.detach())
            updates += 1
            if cfg.tau < 1.0:
                polyak_update(target, qnet, cfg.tau)
            elif updates % cfg.target_every == 0:
                target.load_state_dict(qnet.state_dict())

        if step >= next_eval or step >= cfg.total_steps:
            next_eval += cfg.eval_every
            row = {
                "step": step,
                "epsilon": eps,
                "train_return": float(np.mean(finished)) if finished else np.nan,
                "loss": torch.stack(losses).mean().item() if losses else np.nan,
                **evaluate(cfg, qnet, device, cfg.eval_episodes, 10_000 + step),
                "updates": updates,
                "sps": step / (time.perf_counter() - start),
                "wall": time.perf_counter() - start,
            }
            history.append(row)
            bar.set_postfix(eval_return=f"{row['eval_return']:.0f}")
            finished, losses = [], []
            if cfg.stop_return is not None and row["eval_return"] >= cfg.stop_return:
                break
    bar.close()
    envs.close()
    return pd.DataFrame(history), qnet
