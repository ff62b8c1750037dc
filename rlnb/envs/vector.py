"""Gymnasium helpers shared by the deep-RL training loops."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def discrete_vector_env(env_id: str, num_envs: int) -> tuple[gym.vector.SyncVectorEnv, int, int]:
    """``num_envs`` copies of ``env_id`` in a ``SyncVectorEnv`` with same-step autoreset (the last
    observation of a finished episode is in ``info["final_obs"]``); returns ``(envs, obs_dim,
    n_actions)``. A ``ValueError`` if the action space is not ``Discrete``."""
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        envs.close()
        raise ValueError(
            f"env_id: expected a Discrete action space, {env_id} has {envs.single_action_space}"
        )
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    return envs, obs_dim, int(envs.single_action_space.n)
