import math

import pytest
import torch

from rlnb.train.ppo import PPOConfig, train


def test_short_run_is_reproducible_and_reports_history():
    cfg = PPOConfig(total_steps=1024, num_envs=2, num_steps=128, seed=3)
    h1, agent = train(cfg, progress=False)
    h2, _ = train(cfg, progress=False)
    assert list(h1.columns) == [
        "step", "episode_return", "episodes", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "sps",
    ]  # fmt: skip
    assert h1.step.tolist() == [256, 512, 768, 1024]
    assert h1.drop(columns="sps").equals(h2.drop(columns="sps"))  # same seed, same run
    assert (h1.episodes > 0).all() and h1.entropy.between(0, math.log(2) + 1e-6).all()
    assert agent.dist(torch.zeros(1, 4)).probs.shape == (1, 2)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"lmbda": 1.5}, "lmbda"),
        ({"num_minibatches": 3}, "num_minibatches"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**kw)


def test_continuous_actions_are_rejected():
    with pytest.raises(ValueError, match="Discrete"):
        train(
            PPOConfig(env_id="Pendulum-v1", total_steps=8, num_steps=4, num_minibatches=1),
            progress=False,
        )
