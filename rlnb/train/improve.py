"""Improving a given policy with a critic: one off-policy loop, three ways to act on its Q.

The loop (``train_improver``) is SAC's (``rlnb.train.sac``): act in the reach task
(``rlnb.envs.reach``), store ``(s, a, r, s', terminated)`` in a replay buffer (optionally
filled first with offline data),
and after each environment step fit the twin critics to ``y = r + γ (1 − terminated) V̄(s')``
and take one step of the policy; Polyak-average the target critics. What differs between the
methods is how an action is chosen, what ``V̄(s')`` is and which network the policy step trains.
Each is a class registered by name in ``METHODS``:

- ``sac``: a squashed Gaussian policy ``π(a|s)``; ``V̄(s') = min_i Q̄_i(s', a') − α log π(a'|s')``
  ("Soft Actor-Critic …"). Its policy may start from a given one (a Gaussian trained by BC).
- ``residual``: a frozen base policy ``a_B(s)`` (trained by BC) and a Gaussian residual
  ``Δ ~ π(·|s, a_B(s))`` bounded by ``residual_scale``; the environment gets ``clip(a_B(s) + Δ)``
  and the critic sees that action; SAC on the residual ("Residual Off-Policy RL for Finetuning
  Behavior Cloning Policies"; its agent is TD3-style, with a smaller residual, an ensemble of
  critics, n-step targets, several updates per step and the demonstrations in its buffer).
- ``expo``: a diffusion base policy ``π_B(a|s)`` trained by imitation on the whole buffer, a
  Gaussian edit policy ``Δ ~ π_E(·|s, a)`` bounded by ``edit_scale`` and trained to maximise
  ``Q(s, clip(a + Δ)) − α log π_E``, and the on-the-fly policy: ``N`` base actions and their
  ``N`` edits, of which the one with the highest ``min_i Q̄_i`` (the target critics, as in the
  paper's code) is taken, for acting and in the target ``V̄(s') = min_i Q̄_i(s', a*(s'))`` (no
  entropy term) ("EXPO: Stable Reinforcement Learning with Expressive Policies").
  ``select="base"`` breaks it on purpose: always the first base action, no selection.
  Differences from the paper's code: two critics (it uses ten, the min of two random ones), one
  critic update per environment step (it uses 20), edits clipped to the action box.

``history`` rows: ``step``, ``success`` and ``steps_to_goal`` of the evaluation policy over
``eval_episodes`` batched episodes of the reach task (``rlnb.envs.reach.rollout``), ``td_error``,
``target_var`` and ``q_bias`` on those episodes (``critic_error``), ``train_success`` of the
training episodes since the last row, ``alpha``, ``critic_loss``, ``seconds`` (wall time so far)
and ``ms_per_step`` (wall time per environment step, update included, since the last row).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.decoding.diffusion import ancestral_sample
from rlnb.device import pick_device, seed_everything
from rlnb.envs.reach import ENV_ID, rollout
from rlnb.envs.vector import box_vector_env
from rlnb.estimators.soft import soft_actor_loss, soft_q_target, temperature_loss
from rlnb.models.continuous import QEnsemble, SquashedGaussianPolicy
from rlnb.models.diffusion import GaussianDiffusion
from rlnb.models.value import polyak_update
from rlnb.progress import progress_bar
from rlnb.train.sac import critic_value


@dataclass
class ImproveConfig:
    method: str = "expo"  # a key of METHODS
    total_steps: int = 3_000  # environment steps
    learning_starts: int = 256  # environment steps before the first update
    random_starts: bool = False  # uniform random actions before learning_starts (RL from scratch)
    pretrain_steps: int = 0  # critic updates on the offline data before the first environment step
    actor_starts: int = 0  # environment steps before the first policy update (the critic warms up)
    batch_size: int = 128
    gamma: float = 0.97
    tau: float = 0.01
    lr: float = 1e-4  # the policies (and EXPO's base)
    q_lr: float = 1e-3
    alpha: float = 0.01  # the temperature: its start with autotune, else fixed
    autotune: bool = True
    target_entropy: float | None = (
        None  # default −dim(A); EXPO's: −dim(A)/2 + dim(A) log(edit_scale)
    )
    hidden: tuple = (128, 128)
    n_samples: int = 4  # EXPO: base actions per selection (2N candidates)
    edit_scale: float = 0.1  # EXPO: |Δ| ≤ edit_scale per coordinate
    select: str = "q"  # EXPO: "q" (on-the-fly selection) or "base" (the first base action)
    residual_scale: float = 0.5  # residual: |Δ| ≤ residual_scale per coordinate
    eval_every: int = 250
    eval_episodes: int = 50
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {sorted(METHODS)}, got {self.method!r}")
        if self.select not in ("q", "base"):
            raise ValueError(f"select: expected 'q' or 'base', got {self.select!r}")
        if min(self.total_steps, self.batch_size, self.eval_every, self.n_samples, self.eval_episodes) < 1:  # fmt: skip
            raise ValueError(
                "total_steps, batch_size, eval_every, n_samples, eval_episodes: expected ≥ 1, got "
                f"{self.total_steps}, {self.batch_size}, {self.eval_every}, {self.n_samples}, {self.eval_episodes}"
            )
        if min(self.learning_starts, self.actor_starts, self.pretrain_steps) < 0:
            raise ValueError(
                "learning_starts, actor_starts, pretrain_steps: expected ≥ 0, got "
                f"{self.learning_starts}, {self.actor_starts}, {self.pretrain_steps}"
            )
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma <= 1.0 or not self.alpha > 0:
            raise ValueError(
                f"tau, gamma, alpha: expected (0, 1], [0, 1], > 0, got {self.tau}, {self.gamma}, {self.alpha}"
            )
        if not self.edit_scale > 0 or not self.residual_scale > 0:
            raise ValueError(
                f"edit_scale, residual_scale: expected > 0, got {self.edit_scale}, {self.residual_scale}"
            )


def _clip(a: Tensor) -> Tensor:
    """Actions into ``[−1, 1]`` (gradients pass where they are inside)."""
    return a.clamp(-1.0, 1.0)


class GaussianSAC(nn.Module):
    """``sac``: SAC's squashed Gaussian policy, fresh or copied from ``base`` (a
    ``SquashedGaussianPolicy``, e.g. trained by BC)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: ImproveConfig, base=None):
        super().__init__()
        self.target_entropy = -float(act_dim)  # SAC's default
        one = np.ones(act_dim, dtype=np.float32)
        self.policy = copy.deepcopy(base) if base is not None else SquashedGaussianPolicy(obs_dim, act_dim, -one, one, cfg.hidden)  # fmt: skip

    def _sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(action, log π(action|s), deterministic action)``, reparameterised."""
        return self.policy.sample(obs)

    def act(self, obs: Tensor, critic: QEnsemble, greedy: bool = False) -> Tensor:
        action, _, mean = self._sample(obs)
        return mean if greedy else action

    def next_value(self, obs: Tensor, critic_target: QEnsemble, alpha: Tensor) -> Tensor:
        action, log_prob, _ = self._sample(obs)
        return critic_value(critic_target, obs, action) - alpha * log_prob

    def policy_loss(self, obs, action, critic: QEnsemble, alpha) -> tuple[Tensor, Tensor]:
        """``(loss, log π)`` of SAC's policy step on the batch's states."""
        a, log_prob, _ = self._sample(obs)
        return soft_actor_loss(log_prob, critic_value(critic, obs, a), alpha), log_prob


class ResidualSAC(GaussianSAC):
    """``residual``: ``a = clip(a_B(s) + Δ)``, ``Δ ~ π(·|s, a_B(s))`` in ``±residual_scale``;
    ``base`` is the frozen BC policy ``obs → action``. The residual's mean starts at 0 (its last
    layer is zero), so the first actions are the base's plus exploration noise. SAC on ``Δ``:
    ``log π`` is the residual's (the clip is left out of it)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: ImproveConfig, base=None):
        nn.Module.__init__(self)
        if not isinstance(base, nn.Module) or isinstance(base, SquashedGaussianPolicy):
            raise ValueError(f"base: expected the frozen deterministic BC policy obs → action, got {type(base)}")  # fmt: skip
        self.target_entropy = -float(act_dim)
        self.base = copy.deepcopy(base).requires_grad_(False)
        s = np.full(act_dim, cfg.residual_scale, dtype=np.float32)
        self.policy = SquashedGaussianPolicy(obs_dim + act_dim, act_dim, -s, s, cfg.hidden)
        nn.init.zeros_(self.policy.mean.weight)
        nn.init.zeros_(self.policy.mean.bias)

    def _sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        base = self.base(obs)
        delta, log_prob, mean = self.policy.sample(torch.cat([obs, base], -1))
        return _clip(base + delta), log_prob, _clip(base + mean)


class EXPO(nn.Module):
    """``expo``: a state-conditioned diffusion base ``base`` (a ``GaussianDiffusion`` whose
    ``eps_model`` takes the state as ``cond``; copied, and trained further by imitation on the
    buffer), an edit policy ``π_E(Δ|s, a)`` in ``±edit_scale``, and on-the-fly selection."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: ImproveConfig, base=None):
        super().__init__()
        if not isinstance(base, GaussianDiffusion):
            raise ValueError(f"base: EXPO needs a state-conditioned GaussianDiffusion, got {type(base)}")  # fmt: skip
        self.base = copy.deepcopy(base)
        s = np.full(act_dim, cfg.edit_scale, dtype=np.float32)
        self.edit = SquashedGaussianPolicy(obs_dim + act_dim, act_dim, -s, s, cfg.hidden)
        self.n, self.select = cfg.n_samples, cfg.select
        # the paper's code targets −dim/2 for the unscaled edit in [−1, 1]; scaled by edit_scale
        # its entropy shifts by dim · log(edit_scale) (−dim would be above the box's maximum)
        self.target_entropy = -act_dim / 2 + act_dim * math.log(cfg.edit_scale)

    def base_actions(self, obs: Tensor, n: int) -> Tensor:
        """``[B, n, d]`` base actions, ``n`` per state, clipped to ``[−1, 1]``."""
        rows = obs.repeat_interleave(n, 0)
        return _clip(ancestral_sample(self.base, len(rows), cond=rows).x).view(len(obs), n, -1)

    @torch.no_grad()
    def candidates(self, obs: Tensor, greedy: bool = False, n: int | None = None) -> Tensor:
        """``[B, 2N, d]``: ``N`` base actions then their ``N`` edits (the edit's mean when
        ``greedy``); ``N`` is ``n_samples`` unless ``n`` is given."""
        n = n or self.n
        base = self.base_actions(obs, n)
        rows = obs.repeat_interleave(n, 0)
        delta, _, mean = self.edit.sample(torch.cat([rows, base.flatten(0, 1)], -1))
        edited = _clip(base + (mean if greedy else delta).view_as(base))
        return torch.cat([base, edited], 1)

    @torch.no_grad()
    def choose(self, obs: Tensor, critic: QEnsemble, greedy: bool = False, n: int | None = None) -> Tensor:  # fmt: skip
        """The on-the-fly policy: the candidate with the highest ``min_i Q_i(s, ·)``; with
        ``select="base"`` the first base action instead."""
        cands = self.candidates(obs, greedy, n)
        if self.select == "base":
            return cands[:, 0]
        B, M, d = cands.shape
        q = critic_value(critic, obs.repeat_interleave(M, 0), cands.flatten(0, 1)).view(B, M)
        return cands[torch.arange(B), q.argmax(-1)]

    def act(self, obs: Tensor, critic: QEnsemble, greedy: bool = False) -> Tensor:
        return self.choose(obs, critic, greedy)

    def next_value(self, obs: Tensor, critic_target: QEnsemble, alpha: Tensor) -> Tensor:
        return critic_value(critic_target, obs, self.choose(obs, critic_target))

    def policy_loss(self, obs, action, critic: QEnsemble, alpha) -> tuple[Tensor, Tensor]:
        """The edit policy's ``α log π_E − min_i Q_i(s, clip(a + Δ))`` at the batch's ``(s, a)``
        (as the paper's code edits buffer actions), plus the base's diffusion loss on the same
        pairs (imitation of the buffer)."""
        delta, log_prob, _ = self.edit.sample(torch.cat([obs, action], -1))
        edit_loss = soft_actor_loss(log_prob, critic_value(critic, obs, _clip(action + delta)), alpha)  # fmt: skip
        return edit_loss + self.base.loss(action, cond=obs), log_prob


METHODS = {"sac": GaussianSAC, "residual": ResidualSAC, "expo": EXPO}


@dataclass
class Improver:
    """What ``train_improver`` returns beside the history: the method's ``agent`` (its policies),
    the critics and the buffer (its first ``size`` rows)."""

    agent: nn.Module
    critic: QEnsemble
    critic_target: QEnsemble
    log_alpha: Tensor
    buffer: dict = field(repr=False)
    size: int = 0

    def policy(self, greedy: bool = True):
        """``f(obs [n, 2] numpy) → actions [n, 2] numpy`` of the trained agent."""
        device = self.log_alpha.device

        @torch.no_grad()
        def f(obs):
            o = torch.as_tensor(obs, dtype=torch.float32, device=device)
            return self.agent.act(o, self.critic_target, greedy).cpu().numpy()

        return f


KEYS = ("obs", "action", "reward", "next_obs", "terminated")


@torch.no_grad()
def critic_error(out: dict, agent, critic_target: QEnsemble, alpha, gamma: float, device) -> dict:
    """How well the critics do on the evaluation episodes ``out`` (``rlnb.envs.reach.rollout``),
    which training never saw. ``td_error``: the mean squared gap between ``min_i Q̄_i(s, a)`` and
    the method's own target ``r + γ (1 − terminated) V̄(s')`` over every step of the episodes;
    ``target_var``: that of the best constant (the targets' variance). ``q_bias``: the mean of
    ``min_i Q̄_i(s_t, a_t)`` minus the discounted return that followed, over the first half of
    each episode (``γ^(k − t − 1)`` if the goal was reached at step ``k``, else 0: an episode cut
    at the time limit, where the critic bootstraps, counts as 0, so part of a positive bias there
    is that cut)."""
    steps, success = out["steps"], out["success"]
    t = np.arange(len(out["action"]))[:, None]
    live = t < steps
    obs = torch.as_tensor(out["path"][:-1][live], device=device)
    act = torch.as_tensor(out["action"][live], device=device)
    next_obs = torch.as_tensor(out["path"][1:][live], device=device)
    done = torch.as_tensor((success & (t == steps - 1))[live], dtype=torch.float32, device=device)
    q = critic_value(critic_target, obs, act)
    y = soft_q_target(done, agent.next_value(next_obs, critic_target, alpha), torch.zeros_like(done), done, gamma, 0.0)  # fmt: skip
    g = np.where(success, gamma ** (steps - t - 1.0), 0.0)[live]
    first_half = (t < steps / 2)[live]
    return {
        "td_error": float((q - y).square().mean()),
        "target_var": float(y.var(unbiased=False)),
        "q_bias": float(q.cpu().numpy()[first_half].mean() - g[first_half].mean()),
    }


def train_improver(
    config: ImproveConfig | None = None, base=None, offline: dict | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, Improver]:  # fmt: skip
    """Run ``config.method`` (module docstring) for ``total_steps`` environment steps; ``base``
    is what the method starts from (see each class), ``offline`` a dict of transitions (``KEYS``)
    put in the buffer first. Returns ``(history, Improver)``; row 0 is before any step."""
    cfg = config or ImproveConfig()
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    envs, obs_dim, act_dim, low, high = box_vector_env(ENV_ID, 1)
    agent = METHODS[cfg.method](obs_dim, act_dim, cfg, base).to(device)
    critic = QEnsemble(obs_dim, act_dim, 2, cfg.hidden).to(device)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    log_alpha = torch.tensor(math.log(cfg.alpha), device=device, requires_grad=cfg.autotune)
    n_off = 0 if offline is None else len(offline["obs"])
    if cfg.pretrain_steps and not n_off:
        raise ValueError("pretrain_steps: expected offline data to pretrain the critic on")
    size = n_off + cfg.total_steps
    width = {"obs": (obs_dim,), "action": (act_dim,), "next_obs": (obs_dim,)}
    buffer = {k: torch.zeros((size, *width.get(k, ())), device=device) for k in KEYS}
    for k in KEYS if n_off else ():
        buffer[k][:n_off] = torch.as_tensor(np.asarray(offline[k]), dtype=torch.float32, device=device)  # fmt: skip
    run = Improver(agent, critic, critic_target, log_alpha, buffer, n_off)
    q_opt = torch.optim.Adam(critic.parameters(), lr=cfg.q_lr)
    pi_opt = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=cfg.lr)
    alpha_opt = torch.optim.Adam([log_alpha], lr=cfg.q_lr) if cfg.autotune else None
    target_entropy = agent.target_entropy if cfg.target_entropy is None else cfg.target_entropy
    rng = np.random.default_rng(cfg.seed)

    def evaluate(step: int, since: dict, start: float, last_step: int) -> dict:
        out = rollout(run.policy(greedy=True), cfg.eval_episodes, seed=10_000 + step)
        now = time.perf_counter()
        return {
            "step": step,
            "success": float(out["success"].mean()),
            "steps_to_goal": float(out["steps"].mean()),
            **critic_error(out, agent, critic_target, log_alpha.exp().detach(), cfg.gamma, device),
            "train_success": float(np.mean(since["finished"])) if since["finished"] else np.nan,
            "alpha": log_alpha.exp().item(),
            "critic_loss": torch.stack(since["loss"]).mean().item() if since["loss"] else np.nan,
            "seconds": now - start,
            "ms_per_step": 1e3 * since["time"] / max(step - last_step, 1),
        }

    def update(policy_step: bool) -> float:
        """One critic step on a batch of the buffer, then (``policy_step``) one policy step and
        one temperature step; Polyak averaging. Returns the critic's loss (a tensor: no host
        sync per step)."""
        idx = torch.as_tensor(rng.integers(run.size, size=cfg.batch_size), device=device)
        s, a, r, s2, d = (buffer[k][idx] for k in KEYS)
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            y = soft_q_target(r, agent.next_value(s2, critic_target, alpha), torch.zeros_like(r), d, cfg.gamma, 0.0)  # fmt: skip
        loss = (critic(s, a) - y).square().mean(-1).sum()
        q_opt.zero_grad(set_to_none=True)
        loss.backward()
        q_opt.step()
        if policy_step:
            critic.requires_grad_(False)
            pi_loss, log_prob = agent.policy_loss(s, a, critic, alpha)
            pi_opt.zero_grad(set_to_none=True)
            pi_loss.backward()
            pi_opt.step()
            critic.requires_grad_(True)
            if cfg.autotune:
                alpha_opt.zero_grad(set_to_none=True)
                temperature_loss(log_alpha, log_prob, target_entropy).backward()
                alpha_opt.step()
        polyak_update(critic_target, critic, cfg.tau)
        return loss.detach()

    start = time.perf_counter()
    pretrain = [update(False) for _ in progress_bar(range(cfg.pretrain_steps), desc="critic on offline data", enabled=progress and cfg.pretrain_steps > 0)]  # fmt: skip
    obs_np, _ = envs.reset(seed=cfg.seed)
    since = {"finished": [], "loss": pretrain[-100:], "time": 0.0}
    history = [evaluate(0, since, start, 0)]
    since = {"finished": [], "loss": [], "time": 0.0}
    bar = progress_bar(total=cfg.total_steps, desc=cfg.method, enabled=progress)
    for step in range(1, cfg.total_steps + 1):
        tick = time.perf_counter()
        obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
        if cfg.random_starts and step <= cfg.learning_starts:
            action = rng.uniform(low, high, size=(1, act_dim)).astype(np.float32)
        else:
            with torch.no_grad():
                action = agent.act(obs, critic_target).cpu().numpy()
        obs_np, reward, term, trunc, info = envs.step(action)
        real_next = np.stack(info["final_obs"]) if (term | trunc)[0] else obs_np
        i = run.size
        for k, v in zip(KEYS, (obs[0], action[0], reward[0], real_next[0], term[0])):
            buffer[k][i] = torch.as_tensor(v, dtype=torch.float32, device=device)
        run.size += 1
        if (term | trunc)[0]:
            since["finished"].append(float(term[0]))

        if step > cfg.learning_starts:
            since["loss"].append(update(policy_step=step > cfg.actor_starts))
        since["time"] += time.perf_counter() - tick
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.total_steps:
            history.append(evaluate(step, since, start, history[-1]["step"]))
            bar.set_postfix(success=f"{history[-1]['success']:.2f}")
            since = {"finished": [], "loss": [], "time": 0.0}
    bar.close()
    envs.close()
    return pd.DataFrame(history), run
