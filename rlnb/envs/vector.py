"""Gymnasium helpers shared by the deep-RL training loops."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def _vector_env(env_id: str, num_envs: int, space: type) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of ``env_id`` with same-step autoreset (the last observation of a
    finished episode is in ``info["final_obs"]``); a ``ValueError`` if its action space is not a
    ``space``."""
    if num_envs < 1:
        raise ValueError(f"num_envs: expected ≥ 1, got {num_envs}")
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    if not isinstance(envs.single_action_space, space):
        envs.close()
        raise ValueError(
            f"env_id: expected a {space.__name__} action space, {env_id} has {envs.single_action_space}"
        )
    return envs


def discrete_vector_env(env_id: str, num_envs: int) -> tuple[gym.vector.SyncVectorEnv, int, int]:
    """``num_envs`` copies of an environment with ``Discrete`` actions (see ``_vector_env``);
    returns ``(envs, obs_dim, n_actions)``."""
    envs = _vector_env(env_id, num_envs, gym.spaces.Discrete)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    return envs, obs_dim, int(envs.single_action_space.n)


def box_vector_env(
    env_id: str, num_envs: int
) -> tuple[gym.vector.SyncVectorEnv, int, int, np.ndarray, np.ndarray]:
    """``num_envs`` copies of an environment with ``Box`` actions (see ``_vector_env``); returns
    ``(envs, obs_dim, act_dim, low, high)`` with the action bounds of one environment."""
    envs = _vector_env(env_id, num_envs, gym.spaces.Box)
    space = envs.single_action_space
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    return envs, obs_dim, int(np.prod(space.shape)), space.low, space.high
