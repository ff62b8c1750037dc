"""The reach task, its demonstrators, the improvement loop (EXPO, residual SAC, SAC) and the
dimensional soft Q (ARSQ), each against a plain reference or an exact property."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlnb.envs.reach import (
    ENV_ID,
    GOAL,
    HORIZON,
    OBSTACLE_RADIUS,
    SPEED,
    demonstrations,
    expert_action,
    reach_step,
    rollout,
)
from rlnb.estimators.soft import soft_advantages
from rlnb.models.continuous import QEnsemble, SquashedGaussianPolicy
from rlnb.train.arsq import DimensionalSoftQ, train_soft_q
from rlnb.train.build_reach import DeterministicPolicy, diffusion_policy, load_reach, torch_policy
from rlnb.train.improve import EXPO, ImproveConfig, ResidualSAC, train_improver


def step_by_hand(p, a):
    """One point, one move, as the module docstring says."""
    a = [min(max(x, -1.0), 1.0) for x in a]
    q = [min(max(p[i] + SPEED * a[i], -1.0), 1.0) for i in range(2)]
    if (q[0] ** 2 + q[1] ** 2) ** 0.5 < OBSTACLE_RADIUS:
        q = list(p)
    reached = ((q[0] - GOAL[0]) ** 2 + (q[1] - GOAL[1]) ** 2) ** 0.5 < 0.12
    return q, reached


def test_reach_step_matches_a_loop():
    rng = np.random.default_rng(0)
    p = rng.uniform(-1, 1, (500, 2)).astype(np.float32)
    a = rng.uniform(-2, 2, (500, 2)).astype(np.float32)
    nxt, reached = reach_step(p, a)
    for i in range(500):
        q, r = step_by_hand(p[i].tolist(), a[i].tolist())
        np.testing.assert_allclose(nxt[i], q, atol=1e-6)
        assert reached[i] == r
    with pytest.raises(ValueError, match="pos, action"):
        reach_step(p, a[:, :1])


def test_gym_env_blocks_the_obstacle_and_ends_at_the_goal():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    env.unwrapped.pos = np.array([-0.3, -0.3], dtype=np.float32)
    obs, r, term, trunc, _ = env.step(np.array([1.0, 1.0]))  # into the obstacle: stays
    np.testing.assert_allclose(obs, [-0.3, -0.3])
    assert (r, term) == (0.0, False)
    env.unwrapped.pos = np.array([0.55, 0.6], dtype=np.float32)
    obs, r, term, trunc, _ = env.step(np.array([1.0, 1.0]))
    assert (r, term) == (1.0, True)
    env.reset(seed=0)
    for _step in range(HORIZON):
        *_, term, trunc, _ = env.step(np.zeros(2))
    assert trunc and not term


def test_the_expert_succeeds_on_both_sides_and_demonstrations_are_mixed():
    for side in (0, 1):
        out = rollout(lambda p: expert_action(p, np.full(len(p), side)), 100)
        assert out["success"].all()
        mid = out["path"][12]
        assert (np.sign(mid[:, 1] - mid[:, 0]) == (1 if side == 0 else -1)).all()  # its side
    data = demonstrations(60, seed=0)
    per_episode = np.bincount(data["episode"], weights=data["reward"], minlength=60)
    noise = np.array([data["noise"][data["episode"] == e][0] for e in range(60)])
    assert per_episode[noise == noise.min()].mean() == 1.0
    assert per_episode[noise == noise.max()].mean() < 0.9
    assert set(np.unique(data["side"])) == {0, 1}
    with pytest.raises(ValueError, match="n_episodes"):
        demonstrations(0)


def test_soft_advantages_have_soft_max_zero():
    f = torch.randn(7, 5)
    a = soft_advantages(f, 0.3)
    torch.testing.assert_close(
        0.3 * torch.logsumexp(a / 0.3, -1), torch.zeros(7), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="alpha"):
        soft_advantages(f, 0.0)


def test_dimensional_q_has_soft_value_v_and_factorized_ignores_earlier_dims():
    torch.manual_seed(0)
    for autoregressive in (True, False):
        m = DimensionalSoftQ(2, 2, bins=4, alpha=0.2, hidden=(16,), autoregressive=autoregressive)
        obs = torch.randn(3, 2)
        grid = torch.cartesian_prod(torch.arange(4), torch.arange(4))  # every joint action
        q = torch.stack([m.q(obs, g.expand(3, 2)) for g in grid], 1)  # [3, 16]
        torch.testing.assert_close(
            0.2 * torch.logsumexp(q / 0.2, 1), m.value(obs), atol=1e-5, rtol=0
        )
        prev = torch.tensor([[1.0, 0.0]]).expand(3, 2)
        moved = (m.advantages(obs, prev, 1) - m.advantages(obs, torch.zeros(3, 2), 1)).abs().max()
        assert (moved > 1e-4) == autoregressive
        # greedy acting picks, dimension by dimension, the best bin given the earlier choice
        a = m.act(obs)
        first = m.advantages(obs, torch.zeros(3, 2), 0).argmax(-1)
        torch.testing.assert_close(a[:, 0], m.values[first])
        second = m.advantages(obs, a, 1).argmax(-1)  # given the first choice
        torch.testing.assert_close(a[:, 1], m.values[second])


def test_soft_q_learns_on_the_demonstrations():
    data = demonstrations(40, seed=1)
    m = DimensionalSoftQ(2, 2, bins=5, hidden=(32, 32))
    hist, _ = train_soft_q(m, data, steps=300, eval_every=150, eval_episodes=10, progress=False)
    assert list(hist.step) == [0, 150, 300]
    assert hist.heldout_td.iloc[-1] < hist.heldout_td.iloc[0]
    assert np.isfinite(hist[["loss", "success"]].iloc[1:].to_numpy()).all()


def test_expo_selects_the_candidate_with_the_highest_q_and_base_breaks_it():
    torch.manual_seed(0)
    cfg = ImproveConfig(n_samples=3, hidden=(16,))
    agent = EXPO(2, 2, cfg, base=diffusion_policy())
    critic = lambda obs, act: torch.stack([-(act - 0.3).square().sum(-1)] * 2)  # noqa: E731
    critic.outputs = 1
    obs = torch.randn(5, 2)
    torch.manual_seed(1)
    chosen = agent.choose(obs, critic)
    torch.manual_seed(1)
    cands = agent.candidates(obs)
    assert cands.shape == (5, 6, 2)
    best = cands[torch.arange(5), (-(cands - 0.3).square().sum(-1)).argmax(-1)]
    torch.testing.assert_close(chosen, best)
    assert (cands[:, 3:] - cands[:, :3]).abs().max() <= cfg.edit_scale + 1e-6
    agent.select = "base"
    torch.manual_seed(1)
    torch.testing.assert_close(agent.choose(obs, critic), cands[:, 0])


@pytest.mark.parametrize("method", ["sac", "residual", "expo"])
def test_train_improver_runs_and_reports(method):
    base = {"sac": None, "residual": DeterministicPolicy(), "expo": diffusion_policy()}[method]
    data = demonstrations(5, seed=0)
    cfg = ImproveConfig(method=method, total_steps=60, learning_starts=20, batch_size=16,
                        hidden=(16,), eval_every=30, eval_episodes=4, device="cpu")  # fmt: skip
    hist, run = train_improver(cfg, base=base, offline=data if method != "residual" else None, progress=False)  # fmt: skip
    assert list(hist.step) == [0, 30, 60]
    assert run.size == 60 + (len(data["obs"]) if method != "residual" else 0)
    assert hist.critic_loss.iloc[1:].notna().all() and (hist.ms_per_step.iloc[1:] > 0).all()
    assert run.policy()(np.zeros((3, 2), dtype=np.float32)).shape == (3, 2)


def test_improve_config_rejects_bad_input():
    with pytest.raises(ValueError, match="method"):
        ImproveConfig(method="ppo")
    with pytest.raises(ValueError, match="select"):
        ImproveConfig(select="random")
    with pytest.raises(ValueError, match="base"):
        train_improver(ImproveConfig(method="residual", total_steps=5), progress=False)
    with pytest.raises(ValueError, match="eval_episodes"):
        ImproveConfig(eval_episodes=0)
    with pytest.raises(ValueError, match="actor_starts"):
        ImproveConfig(actor_starts=-1)
    with pytest.raises(ValueError, match="pretrain_steps"):
        train_improver(ImproveConfig(method="sac", total_steps=5, pretrain_steps=3), progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        train_soft_q(DimensionalSoftQ(2, 2), demonstrations(3), eval_every=0, progress=False)
    with pytest.raises(ValueError, match="conservative"):
        train_soft_q(DimensionalSoftQ(2, 2), demonstrations(3), conservative=-1.0, progress=False)


def test_expo_target_is_the_selected_candidates_min_q_and_its_entropy_target_is_reachable():
    torch.manual_seed(0)
    cfg = ImproveConfig(n_samples=3, hidden=(16,))
    agent = EXPO(2, 2, cfg, base=diffusion_policy())
    critic = QEnsemble(2, 2, 2, (16,))
    obs = torch.randn(6, 2)
    torch.manual_seed(3)
    chosen = agent.choose(obs, critic)
    torch.manual_seed(3)
    value = agent.next_value(obs, critic, torch.tensor(0.7))  # no entropy term, whatever α
    torch.testing.assert_close(value, critic(obs, chosen).min(0).values)
    box_max_entropy = 2 * math.log(2 * cfg.edit_scale)  # uniform on the edit's box
    assert agent.target_entropy < box_max_entropy


def test_the_residual_starts_as_its_base():
    base = DeterministicPolicy()
    agent = ResidualSAC(2, 2, ImproveConfig(method="residual", hidden=(16,)), base=base)
    obs = torch.rand(8, 2) * 2 - 1
    torch.testing.assert_close(agent.act(obs, None, greedy=True), base(obs).clamp(-1, 1))
    with pytest.raises(ValueError, match="base"):
        ResidualSAC(
            2,
            2,
            ImproveConfig(method="residual"),
            base=SquashedGaussianPolicy(2, 2, [-1, -1], [1, 1]),
        )


def test_shipped_reach_data_loads_and_reproduces_its_metrics():
    reach = load_reach()
    data, metrics = reach["offline"], reach["metrics"]
    assert len(data["obs"]) == metrics["transitions"]
    assert data["reward"].sum() / metrics["n_episodes"] == pytest.approx(
        metrics["success"]["demonstrations"]
    )
    biased = rollout(torch_policy(reach["biased"], "deterministic"), 500, seed=123)
    assert biased["success"].mean() == pytest.approx(metrics["success"]["biased_bc"])


def test_squashed_gaussian_log_prob_matches_sample():
    torch.manual_seed(0)
    p = SquashedGaussianPolicy(3, 2, [-2, -1], [2, 1], (16,))
    obs = torch.randn(50, 3)
    action, log_prob, _ = p.sample(obs)
    torch.testing.assert_close(p.log_prob(obs, action), log_prob, atol=1e-3, rtol=1e-3)


def test_edit_field_is_pure_and_the_explorer_redraws():
    from rlnb.widgets import edit_field, edit_field_explorer

    cfg = ImproveConfig(method="expo", total_steps=30, learning_starts=10, batch_size=8,
                        hidden=(16,), eval_every=30, eval_episodes=2, device="cpu")  # fmt: skip
    _, run = train_improver(cfg, base=diffusion_policy(), offline=demonstrations(3), progress=False)
    a, b = edit_field(run, n_samples=3, grid=6), edit_field(run, n_samples=3, grid=6)
    np.testing.assert_array_equal(a["chosen"], b["chosen"])  # a fixed seed: the callback is pure
    assert a["states"].shape == a["edit"].shape == a["chosen"].shape
    assert (np.linalg.norm(a["states"], axis=-1) > OBSTACLE_RADIUS).all()
    assert np.abs(a["edit"]).max() <= cfg.edit_scale + 1e-6 and np.isfinite(a["gain"])
    with pytest.raises(ValueError, match="n_samples"):
        edit_field(run, n_samples=0)
    box = edit_field_explorer(run)
    controls = box.children[1].children
    assert [c.description for c in controls] == ["N", "field"]
    controls[0].value = 8  # fires the callback; must not raise
    controls[1].value = "chosen"
