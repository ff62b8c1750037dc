"""rlnb's GAE as a TorchRL value estimator: equal to TorchRL's own GAE module, installable on
ClipPPOLoss, and a PPO run through a 2-worker collector learns CartPole."""

import pytest
import torch

torchrl = pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torch import nn  # noqa: E402
from torchrl.collectors import MultiSyncCollector  # noqa: E402
from torchrl.envs import GymEnv, StepCounter, TransformedEnv  # noqa: E402
from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator  # noqa: E402
from torchrl.objectives import ClipPPOLoss  # noqa: E402
from torchrl.objectives.value import GAE  # noqa: E402

from rlnb.integrations.torchrl import RlnbGAE  # noqa: E402


def batch(seed, B=4, T=16, obs_dim=3):
    g = torch.Generator().manual_seed(seed)
    term = torch.rand(B, T, 1, generator=g) < 0.1
    trunc = (torch.rand(B, T, 1, generator=g) < 0.1) & ~term
    return TensorDict(
        {
            "observation": torch.randn(B, T, obs_dim, generator=g),
            "next": {
                "observation": torch.randn(B, T, obs_dim, generator=g),
                "reward": torch.randn(B, T, 1, generator=g),
                "done": term | trunc,
                "terminated": term,
                "truncated": trunc,
            },
        },
        [B, T],
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_torchrl_gae_with_terminated_and_truncated_steps(seed):
    torch.manual_seed(seed)
    critic = ValueOperator(nn.Linear(3, 1), in_keys=["observation"])
    theirs = GAE(gamma=0.97, lmbda=0.9, value_network=critic)(batch(seed))
    ours = RlnbGAE(gamma=0.97, lmbda=0.9, value_network=critic)(batch(seed))
    for key in ("advantage", "value_target"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=1e-5)
    # precomputed values, no network
    td = batch(seed).set("state_value", torch.randn(4, 16, 1))
    td.set(("next", "state_value"), torch.randn(4, 16, 1))
    theirs = GAE(gamma=0.97, lmbda=0.9, value_network=None)(td.clone())
    ours = RlnbGAE(gamma=0.97, lmbda=0.9)(td.clone())
    torch.testing.assert_close(ours["advantage"], theirs["advantage"], atol=1e-5, rtol=1e-5)


def test_rejects_what_it_does_not_support():
    with pytest.raises(ValueError, match="shifted"):
        RlnbGAE(gamma=0.9, lmbda=0.9, shifted=True)
    with pytest.raises(ValueError, match="state_value"):
        RlnbGAE(gamma=0.9, lmbda=0.9)(batch(0))


def make_env():
    return TransformedEnv(GymEnv("CartPole-v1"), StepCounter())


def test_ppo_with_rlnb_gae_and_a_two_worker_collector_learns_cartpole():
    torch.manual_seed(0)
    env = make_env()
    n_obs, n_act = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    policy = nn.Sequential(nn.Linear(n_obs, 64), nn.Tanh(), nn.Linear(64, n_act))
    actor = ProbabilisticActor(
        TensorDictModule(policy, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=OneHotCategorical,
        spec=env.action_spec,
        return_log_prob=True,
    )
    critic = ValueOperator(
        nn.Sequential(nn.Linear(n_obs, 64), nn.Tanh(), nn.Linear(64, 1)), in_keys=["observation"]
    )
    loss = ClipPPOLoss(actor, critic, entropy_coeff=0.01)
    loss.make_value_estimator(RlnbGAE, gamma=0.99, lmbda=0.95, value_network=critic)
    assert isinstance(loss.value_estimator, RlnbGAE)
    opt = torch.optim.Adam(loss.parameters(), lr=3e-3)
    collector = MultiSyncCollector(
        [make_env, make_env], actor, frames_per_batch=1000, total_frames=10_000
    )
    collector.set_seed(0)
    lengths = []
    try:
        for data in collector:
            with torch.no_grad():
                loss.value_estimator(data)
            done = data["next", "done"]
            lengths.append(data["next", "step_count"][done].float().mean().item())
            flat = data.reshape(-1)
            for _ in range(4):
                for idx in torch.randperm(len(flat)).split(250):
                    out = loss(flat[idx])
                    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                    opt.zero_grad()
                    total.backward()
                    opt.step()
            collector.update_policy_weights_()
    finally:
        collector.shutdown()
    assert sum(lengths[-3:]) / 3 > 2 * lengths[0], lengths
