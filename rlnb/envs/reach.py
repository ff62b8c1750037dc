"""A 2-D reach task with a sparse success reward, its demonstrators and its offline data.

The point ``p ∈ [−1, 1]²`` starts near ``(−0.7, −0.7)`` and must reach the goal disc of radius
``GOAL_RADIUS`` around ``(0.7, 0.7)``; a disc obstacle of radius ``OBSTACLE_RADIUS`` sits at the
origin, on the straight line between them, so a good path goes around it on one side or the
other. An action ``a ∈ [−1, 1]²`` moves the point by ``SPEED · a`` (clipped to the square); a move
that would end inside the obstacle leaves the point where it was. Reward 1 and the episode ends
on reaching the goal; otherwise reward 0, truncated after ``HORIZON`` steps.

- ``reach_step``: the dynamics on a batch (the gymnasium environment ``Reach2D`` calls it).
- ``Reach2D``: the gymnasium interface, registered as ``rlnb/Reach2D-v0`` (``gym.make``,
  ``rlnb.envs.vector.box_vector_env``).
- ``expert_action``: the scripted demonstrator: head for a waypoint beside the obstacle on the
  episode's ``side`` (0: up and left, 1: down and right), then for the goal, at full speed.
- ``rollout``: batched episodes of any policy ``f(obs [n, 2]) → actions [n, 2]`` (numpy).
- ``demonstrations``: episodes of the demonstrator with Gaussian action noise of several scales
  (mixed quality) and a random side per episode (two modes at the same states).

The shipped offline data and BC policies are loaded by ``rlnb.train.build_reach.load_reach``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

START = np.array([-0.7, -0.7], dtype=np.float32)
START_NOISE = 0.1  # the start is uniform in START ± START_NOISE
GOAL = np.array([0.7, 0.7], dtype=np.float32)
GOAL_RADIUS = 0.12
OBSTACLE_RADIUS = 0.35
SPEED = 0.1
HORIZON = 40
WAYPOINTS = np.array([[-0.55, 0.55], [0.55, -0.55]], dtype=np.float32)  # side 0, side 1
ENV_ID = "rlnb/Reach2D-v0"


def reach_step(pos: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(next positions [n, 2], reached the goal [n])`` for positions and actions ``[n, 2]``;
    actions are clipped to ``[−1, 1]``, a move into the obstacle is cancelled."""
    pos, action = np.asarray(pos, dtype=np.float32), np.asarray(action, dtype=np.float32)
    if pos.shape != action.shape or pos.shape[-1] != 2:
        raise ValueError(
            f"pos, action: expected two arrays of shape [n, 2], got {pos.shape}, {action.shape}"
        )
    moved = np.clip(pos + SPEED * np.clip(action, -1.0, 1.0), -1.0, 1.0)
    blocked = np.linalg.norm(moved, axis=-1) < OBSTACLE_RADIUS
    nxt = np.where(blocked[..., None], pos, moved).astype(np.float32)
    return nxt, np.linalg.norm(nxt - GOAL, axis=-1) < GOAL_RADIUS


def start_positions(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 2]`` start positions, uniform in ``START ± START_NOISE``."""
    return (START + rng.uniform(-START_NOISE, START_NOISE, (n, 2))).astype(np.float32)


class Reach2D(gym.Env):
    """The reach task (module docstring) as a gymnasium environment: observation the position,
    action the move, both in ``[−1, 1]²``. Use ``gym.make("rlnb/Reach2D-v0")``, which adds the
    time limit of ``HORIZON`` steps."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = START.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = start_positions(1, self.np_random)[0]
        return self.pos.copy(), {}

    def step(self, action):
        nxt, reached = reach_step(self.pos[None], np.asarray(action, dtype=np.float32)[None])
        self.pos = nxt[0]
        return self.pos.copy(), float(reached[0]), bool(reached[0]), False, {}


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=Reach2D, max_episode_steps=HORIZON)


def expert_action(pos: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The demonstrator's actions ``[n, 2]`` at positions ``[n, 2]`` for sides ``[n]`` (0 or 1):
    toward ``WAYPOINTS[side]`` until past it (its coordinate along the start-goal diagonal is
    reached), then toward the goal; the largest coordinate of the action is 1."""
    pos = np.asarray(pos, dtype=np.float32)
    way = WAYPOINTS[np.asarray(side, dtype=int)]
    past = pos.sum(-1) >= way.sum(-1) - 0.05  # both waypoints lie on the anti-diagonal
    target = np.where(past[:, None], GOAL, way)
    direction = target - pos
    return (direction / np.abs(direction).max(-1, keepdims=True).clip(1e-6)).astype(np.float32)


def rollout(policy, n: int, seed: int = 0, horizon: int = HORIZON) -> dict:
    """``n`` episodes of ``policy(obs [n, 2]) → actions [n, 2]`` run together; returns
    ``success [n]`` (bool), ``steps [n]`` (steps taken, ``horizon`` if not reached), ``path
    [horizon + 1, n, 2]`` (positions; a finished episode stays at its last one) and ``action
    [horizon, n, 2]`` (the policy's actions; zeros after the end)."""
    rng = np.random.default_rng(seed)
    pos = start_positions(n, rng)
    alive = np.ones(n, dtype=bool)
    steps = np.full(n, horizon)
    path, actions = [pos], np.zeros((horizon, n, 2), dtype=np.float32)
    for t in range(horizon):
        act = np.asarray(policy(pos), dtype=np.float32)
        nxt, reached = reach_step(pos, act)
        actions[t] = np.where(alive[:, None], act, 0.0)
        pos = np.where(alive[:, None], nxt, pos)
        steps[alive & reached] = t + 1
        alive &= ~reached
        path.append(pos)
        if not alive.any():
            path += [pos] * (horizon - t - 1)
            break
    return {"success": ~alive, "steps": steps, "path": np.stack(path), "action": actions}


def demonstrations(n_episodes: int, noise_scales=(0.1, 0.5, 1.0), seed: int = 0) -> dict:
    """Episodes of ``expert_action`` with Gaussian action noise (std cycling over
    ``noise_scales``, clipped to ``[−1, 1]``) and a random side each, as flat transitions:
    ``obs``, ``action``, ``reward``, ``next_obs``, ``terminated`` (float32 arrays), ``episode``,
    ``noise`` (the episode's noise scale) and ``side`` per transition."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes: expected ≥ 1, got {n_episodes}")
    rng = np.random.default_rng(seed)
    noise = np.asarray(noise_scales, dtype=np.float32)[np.arange(n_episodes) % len(noise_scales)]
    side = rng.integers(2, size=n_episodes)
    pos = start_positions(n_episodes, rng)
    alive = np.ones(n_episodes, dtype=bool)
    rows = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "episode")}
    for _ in range(HORIZON):
        idx = np.flatnonzero(alive)
        act = expert_action(pos[idx], side[idx]) + noise[idx, None] * rng.standard_normal((len(idx), 2))  # fmt: skip
        act = np.clip(act, -1.0, 1.0).astype(np.float32)
        nxt, reached = reach_step(pos[idx], act)
        for k, v in zip(rows, (pos[idx], act, reached.astype(np.float32), nxt, reached.astype(np.float32), idx)):  # fmt: skip
            rows[k].append(v)
        pos[idx] = nxt
        alive[idx[reached]] = False
        if not alive.any():
            break
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out["noise"], out["side"] = noise[out["episode"]], side[out["episode"]]
    return out
