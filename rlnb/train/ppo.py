"""PPO with GAE on vectorised gymnasium environments, top to bottom in one file.

"Proximal Policy Optimization Algorithms" (Schulman et al.) with advantages from
``rlnb.estimators.gae`` ("High-Dimensional Continuous Control Using Generalized Advantage
Estimation"). The loop follows CleanRL's ``ppo.py`` in shape, with one correction: a time-limit
truncation bootstraps from the value of the final observation instead of being treated as the end
of the task (gymnasium's same-step autoreset hands us that observation in ``info["final_obs"]``).
Discrete action spaces only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from rlnb.device import pick_device, seed_everything
from rlnb.envs.vector import discrete_vector_env
from rlnb.estimators import gae
from rlnb.progress import progress_bar


@dataclass
class PPOConfig:
    env_id: str = "CartPole-v1"  # any gymnasium id with a Box observation and Discrete actions
    num_envs: int = 4  # parallel environments (gymnasium SyncVectorEnv)
    num_steps: int = 128  # steps per environment per rollout
    total_steps: int = 50_000  # environment steps over the whole run
    gamma: float = 0.99  # discount
    lmbda: float = 0.95  # GAE λ: 0 = one-step TD advantage, 1 = Monte Carlo advantage
    lr: float = 2.5e-4  # Adam learning rate, annealed linearly to 0 if anneal_lr
    anneal_lr: bool = True
    update_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # minibatches per pass
    clip_coef: float = 0.2  # PPO ratio clip ε
    ent_coef: float = 0.01  # entropy bonus
    vf_coef: float = 0.5  # value-loss weight
    max_grad_norm: float = 0.5  # gradient clipping
    norm_adv: bool = True  # standardise advantages per minibatch
    hidden: int = 64  # width of the two hidden layers of actor and critic
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for name in (
            "num_envs",
            "num_steps",
            "total_steps",
            "update_epochs",
            "num_minibatches",
            "hidden",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)!r}")
        for name in ("gamma", "lmbda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a float in [0, 1], got {getattr(self, name)}")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"num_minibatches: expected a divisor of num_envs * num_steps = {self.num_envs * self.num_steps}, "
                f"got {self.num_minibatches}"
            )


class ActorCritic(nn.Module):
    """Two separate tanh MLPs: policy logits and a scalar state value."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()

        def mlp(out: int, gain: float) -> nn.Sequential:
            layers = [
                nn.Linear(obs_dim, hidden),
                nn.Tanh(),
                nn.Linear(hidden, hidden),
                nn.Tanh(),
                nn.Linear(hidden, out),
            ]
            for layer in layers:
                if isinstance(layer, nn.Linear):
                    nn.init.orthogonal_(layer.weight, np.sqrt(2))
                    nn.init.zeros_(layer.bias)
            nn.init.orthogonal_(layers[-1].weight, gain)
            return nn.Sequential(*layers)

        self.actor = mlp(n_actions, 0.01)
        self.critic = mlp(1, 1.0)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.actor(obs))


def train(
    config: PPOConfig | None = None, progress: bool = True
) -> tuple[pd.DataFrame, ActorCritic]:
    """Train PPO; return ``(history, agent)``, one history row per update.

    History columns: ``step`` (environment steps so far), ``episode_return`` (mean undiscounted
    return of the episodes that ended during the rollout, NaN if none), ``episodes``,
    ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``clip_frac``, ``sps``.
    """
    cfg = config or PPOConfig()
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    envs, obs_dim, n_actions = discrete_vector_env(cfg.env_id, cfg.num_envs)
    agent = ActorCritic(obs_dim, n_actions, cfg.hidden).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=1e-5)

    N, T = cfg.num_envs, cfg.num_steps
    num_updates = max(cfg.total_steps // (N * T), 1)
    obs_buf = torch.zeros(T, N, obs_dim, device=device)
    next_obs_buf = torch.zeros(
        T, N, obs_dim, device=device
    )  # s_{t+1}; the final obs at an episode end
    actions = torch.zeros(T, N, dtype=torch.long, device=device)
    logps = torch.zeros(T, N, device=device)
    rewards = torch.zeros(T, N, device=device)
    terminated = torch.zeros(T, N, dtype=torch.bool, device=device)
    truncated = torch.zeros(T, N, dtype=torch.bool, device=device)

    obs_np, _ = envs.reset(seed=cfg.seed)
    obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
    running_return = np.zeros(N)
    history, step, start = [], 0, time.perf_counter()
    for update in progress_bar(
        range(num_updates), desc=f"PPO {cfg.env_id} λ={cfg.lmbda}", enabled=progress
    ):
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * (1 - update / num_updates)
        finished = []
        # ---- rollout: the policy acts, the critic is evaluated afterwards in one batch
        for t in range(T):
            with torch.no_grad():
                dist = agent.dist(obs)
                action = dist.sample()
            obs_buf[t], actions[t], logps[t] = obs, action, dist.log_prob(action)
            obs_np, reward, term, trunc, info = envs.step(action.cpu().numpy())
            done = term | trunc
            final = obs_np.copy()
            if done.any():  # same-step autoreset: obs_np already holds the new episode's first obs
                final[done] = np.stack(info["final_obs"][done])
            next_obs_buf[t] = torch.as_tensor(final, dtype=torch.float32, device=device)
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32, device=device)
            terminated[t] = torch.as_tensor(term, device=device)
            truncated[t] = torch.as_tensor(trunc, device=device)
            running_return += reward
            finished.extend(running_return[done].tolist())
            running_return[done] = 0.0
            obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
        step += N * T

        # ---- advantages: GAE over [N, T] (time last), truncation bootstraps from V(final obs)
        with torch.no_grad():
            values = agent.value(obs_buf).T  # [N, T]
            next_values = agent.value(next_obs_buf).T
        adv, returns = gae(
            rewards.T, values, next_values, terminated.T, truncated.T, cfg.gamma, cfg.lmbda
        )

        # ---- PPO update on the flattened rollout
        b_obs, b_act, b_logp = (
            obs_buf.transpose(0, 1).reshape(N * T, -1),
            actions.T.reshape(-1),
            logps.T.reshape(-1),
        )
        b_adv, b_ret = adv.reshape(-1), returns.reshape(-1)
        mb_size = N * T // cfg.num_minibatches
        stats = []
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(N * T, device=device)
            for mb in perm.split(mb_size):
                dist = agent.dist(b_obs[mb])
                logratio = dist.log_prob(b_act[mb]) - b_logp[mb]
                ratio = logratio.exp()
                a = b_adv[mb]
                if cfg.norm_adv and len(mb) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(
                    -a * ratio, -a * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                v_loss = 0.5 * (agent.value(b_obs[mb]) - b_ret[mb]).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clip_frac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
                stats.append(
                    torch.stack(
                        [pg_loss.detach(), v_loss.detach(), entropy.detach(), approx_kl, clip_frac]
                    )
                )
        pg, vl, ent, kl, cf = torch.stack(stats).mean(0).tolist()  # one host sync per update
        history.append(
            {
                "step": step,
                "episode_return": float(np.mean(finished)) if finished else float("nan"),
                "episodes": len(finished),
                "policy_loss": pg,
                "value_loss": vl,
                "entropy": ent,
                "approx_kl": kl,
                "clip_frac": cf,
                "sps": step / (time.perf_counter() - start),
            }
        )
    envs.close()
    df = pd.DataFrame(history)
    df.attrs["config"] = asdict(cfg)
    return df, agent
