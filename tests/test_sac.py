"""SAC and DSAC-T: the soft targets and losses against hand formulas, the networks against plain
loops and torch.distributions, Polyak averaging, truncation, and soft policy iteration."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlnb.envs.tabular import garnet
from rlnb.envs.vector import box_vector_env
from rlnb.estimators.soft import (
    gaussian_critic_loss,
    soft_actor_loss,
    soft_q_target,
    temperature_loss,
)
from rlnb.models.continuous import QEnsemble, SquashedGaussianPolicy
from rlnb.models.value import polyak_update
from rlnb.train.planning import soft_policy_evaluation, soft_policy_iteration, soft_value_iteration
from rlnb.train.sac import SACConfig, gaussian_critic_fit, gaussian_targets, soft_returns, train


def test_soft_q_target_by_hand_and_truncation_bootstraps():
    r, q, lp = (
        torch.tensor([1.0, 2.0, 3.0]),
        torch.tensor([4.0, 5.0, 6.0]),
        torch.tensor([-1.0, 0.5, 2.0]),
    )
    term = torch.tensor([False, True, False])
    y = soft_q_target(r, q, lp, term, 0.9, 0.2)
    hand = [1 + 0.9 * (4 + 0.2), 2.0, 3 + 0.9 * (6 - 0.2 * 2)]
    torch.testing.assert_close(y, torch.tensor(hand))
    # a truncated step passes terminated=False: it bootstraps like any other step
    assert y[2] != r[2]
    with pytest.raises(ValueError, match="gamma"):
        soft_q_target(r, q, lp, term, 1.5, 0.2)


def test_actor_and_temperature_losses_by_hand():
    lp, q = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 3.0])
    assert soft_actor_loss(lp, q, 0.5).item() == pytest.approx(
        ((0.5 * -1 - 2) + (0.5 * 0.5 - 3)) / 2
    )
    log_alpha = torch.tensor(math.log(0.3), requires_grad=True)
    loss = temperature_loss(log_alpha, lp, target_entropy=-1.0)
    assert loss.item() == pytest.approx(-0.3 * ((-1 - 1) + (0.5 - 1)) / 2)
    loss.backward()  # entropy 0.25 is above the target −1: the gradient lowers α (positive gradient)
    assert log_alpha.grad.item() == pytest.approx(loss.item()) and log_alpha.grad > 0


def hand_gradients(mean, std, y_q, y_z, mean_std, bound, eps):
    """DSAC-T's critic gradient, one sample at a time (the paper's formula, ∂/∂Q and ∂/∂σ)."""
    gq, gs = [], []
    for q, s, a, b in zip(mean.tolist(), std.tolist(), y_q.tolist(), y_z.tolist()):
        dz = b - q
        w = 1.0
        if mean_std is not None:
            dz = min(max(dz, -bound * mean_std), bound * mean_std)
            w = mean_std**2 + eps
        gq.append(-w * (a - q) / (s**2 + eps) / len(mean))
        gs.append(-w * (dz**2 - s**2) / (s**3 + eps) / len(mean))
    return torch.tensor(gq, dtype=torch.float64), torch.tensor(gs, dtype=torch.float64)


@pytest.mark.parametrize("mean_std", [None, 0.4, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_critic_loss_gradient_is_dsac_t(mean_std, seed):
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(9, generator=gen, dtype=torch.float64).requires_grad_()
    std = (torch.rand(9, generator=gen, dtype=torch.float64) + 0.2).requires_grad_()
    y_q = torch.randn(9, generator=gen, dtype=torch.float64)
    y_z = y_q + 3 * torch.randn(9, generator=gen, dtype=torch.float64)  # some beyond the clip
    gaussian_critic_loss(mean, std, y_q, y_z, mean_std, bound=3.0, eps=0.1).backward()
    gq, gs = hand_gradients(mean.detach(), std.detach(), y_q, y_z, mean_std, 3.0, 0.1)
    torch.testing.assert_close(mean.grad, gq)
    torch.testing.assert_close(std.grad, gs)


def test_gaussian_critic_loss_without_refinements_is_the_gaussian_likelihood():
    """With y_q = y_z and no adjustment the gradient is that of −log N(y_z; Q, σ²) (the ε aside)."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()
    std = (torch.rand(5, generator=gen, dtype=torch.float64) + 5.0).requires_grad_()
    y = torch.randn(5, generator=gen, dtype=torch.float64)
    gaussian_critic_loss(mean, std, y, y, None, eps=1e-12).backward()
    m2, s2 = mean.detach().clone().requires_grad_(), std.detach().clone().requires_grad_()
    (-torch.distributions.Normal(m2, s2).log_prob(y)).mean().backward()
    torch.testing.assert_close(mean.grad, m2.grad)
    torch.testing.assert_close(std.grad, s2.grad)


def test_gaussian_critic_loss_rejects_bad_input():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="one shape"):
        gaussian_critic_loss(x, x, x, torch.zeros(4))
    with pytest.raises(ValueError, match="bound, eps"):
        gaussian_critic_loss(x, x, x, x, bound=0.0)


def test_gaussian_targets_expected_value_substitution_and_twin():
    """The mean's target is the expected soft target of the distribution with the smaller mean
    (expected value substituting); y_z is a draw from it. Switched off, the mean gets y_z."""
    next_mean = torch.tensor([[1.0, 5.0, 2.0], [3.0, 4.0, 2.5]])
    next_std = torch.tensor([[0.5, 1.0, 2.0], [9.0, 0.1, 9.0]])
    noise = torch.tensor([1.0, -2.0, 5.0])
    r, lp, term = (
        torch.tensor([0.0, 1.0, 2.0]),
        torch.tensor([0.1, 0.2, 0.3]),
        torch.tensor([0.0, 0.0, 1.0]),
    )
    cfg = SACConfig(gamma=0.5, distributional=True)
    y_mean, y_z = gaussian_targets(cfg, next_mean, next_std, noise, r, lp, term, 0.1)
    smaller = [(1.0, 0.5), (4.0, 0.1), (2.0, 2.0)]  # (mean, std) of the smaller-mean critic
    hand_q = [r[i] + 0.5 * (1 - term[i]) * (m - 0.1 * lp[i]) for i, (m, _) in enumerate(smaller)]
    hand_z = [
        r[i] + 0.5 * (1 - term[i]) * (m + s * max(-3.0, min(3.0, noise[i].item())) - 0.1 * lp[i])
        for i, (m, s) in enumerate(smaller)
    ]
    torch.testing.assert_close(y_mean, torch.tensor(hand_q))
    torch.testing.assert_close(y_z, torch.tensor(hand_z))
    cfg_off = SACConfig(gamma=0.5, distributional=True, expected_value=False)
    y_mean_off, _ = gaussian_targets(cfg_off, next_mean, next_std, noise, r, lp, term, 0.1)
    torch.testing.assert_close(y_mean_off, y_z)


def test_q_ensemble_is_n_separate_mlps():
    torch.manual_seed(0)
    ens = QEnsemble(3, 2, n=3, hidden=(8, 8), outputs=2)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    mean, std = ens(obs, act)
    layers = [m for m in ens.net if hasattr(m, "weight")]
    for i in range(3):
        h = torch.cat([obs, act], -1)
        for k, layer in enumerate(layers):
            h = h @ layer.weight[i] + layer.bias[i]
            if k < len(layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(mean[i], h[:, 0])
        torch.testing.assert_close(std[i], torch.nn.functional.softplus(h[:, 1]))
    with pytest.raises(ValueError, match="outputs"):
        QEnsemble(3, 2, outputs=3)


def test_squashed_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    pi = SquashedGaussianPolicy(3, 2, low=[-2.0, -1.0], high=[2.0, 3.0], hidden=(16,))
    obs = torch.randn(64, 3)
    torch.manual_seed(1)
    action, log_prob, mean_action = pi.sample(obs)
    mu, log_std = pi(obs)
    base = torch.distributions.Normal(mu, log_std.exp())
    squash = [
        torch.distributions.TanhTransform(),
        torch.distributions.AffineTransform(pi.bias, pi.scale),
    ]
    dist = torch.distributions.Independent(
        torch.distributions.TransformedDistribution(base, squash), 1
    )
    ref = dist.log_prob(action.detach().clamp(pi.bias - pi.scale + 1e-5, pi.bias + pi.scale - 1e-5))
    inner = (action - pi.bias).abs() < 0.99 * pi.scale  # away from the bounds, where atanh is exact
    ok = inner.all(-1)
    torch.testing.assert_close(log_prob[ok], ref[ok], atol=2e-3, rtol=1e-3)  # 1e-6 in the Jacobian
    assert ((action >= pi.bias - pi.scale) & (action <= pi.bias + pi.scale)).all()
    torch.testing.assert_close(mean_action, torch.tanh(mu) * pi.scale + pi.bias)


def test_polyak_update_is_exact():
    torch.manual_seed(0)
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    polyak_update(target, online, 0.25)
    for b, p_t, p in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(p_t, 0.75 * b + 0.25 * p, rtol=0, atol=1e-7)
    polyak_update(target, online, 1.0)
    for p_t, p in zip(target.parameters(), online.parameters()):
        assert torch.equal(p_t, p)
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, online, 0.0)


def test_soft_returns_by_loop():
    rng = np.random.default_rng(0)
    r, lp = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    g = soft_returns(r, lp, 0.9, 0.3)
    for t in range(6):
        hand = sum(0.9**k * r[t + k] for k in range(6 - t))
        hand -= 0.3 * sum(0.9**k * lp[t + k] for k in range(1, 6 - t))
        np.testing.assert_allclose(g[t], hand)


class ConstantReward(gym.Env):
    """One observation, reward 1 every step, never terminal; the time limit truncates."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}


gym.register("rlnb-test/ConstantReward-v0", ConstantReward, max_episode_steps=5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncated_steps_bootstrap(seed):
    """Every episode is cut after 5 steps and never ends: Q must reach 1/(1−γ) = 5. Treating the
    cut as termination would give 1/(1 − γ·4/5) ≈ 2.8."""
    cfg = SACConfig(
        env_id="rlnb-test/ConstantReward-v0", total_steps=1_500, learning_starts=100, batch_size=64,
        hidden=(16, 16), gamma=0.8, tau=0.1, q_lr=1e-2, alpha=1e-4, autotune=False,
        eval_every=1_500, eval_episodes=1, buffer_size=2_000, seed=seed,
    )  # fmt: skip
    history, agent = train(cfg, progress=False)
    assert agent.buffer["terminated"][: agent.size].sum() == 0
    q = agent.critic(torch.zeros(8, 1), torch.linspace(-1, 1, 8)[:, None])
    assert (q - 5.0).abs().max() < 0.5, q


def test_pendulum_buffer_keeps_the_last_observation_of_a_truncated_episode():
    cfg = SACConfig(
        total_steps=210,
        learning_starts=1_000,
        eval_every=1_000,
        eval_episodes=1,
        batch_size=8,
        buffer_size=300,
    )
    _, agent = train(cfg, progress=False)
    b = agent.buffer
    assert b["terminated"][:210].sum() == 0
    # step 200 ends the episode: its next_obs is the real last state, not the reset one
    assert not torch.equal(b["next_obs"][199], b["obs"][200])
    torch.testing.assert_close(b["next_obs"][198], b["obs"][199])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"distributional": True},
        {"distributional": True, "twin": False, "expected_value": False, "adjust": False},
    ],
)
def test_train_runs_and_records_history(kw):
    cfg = SACConfig(
        total_steps=400,
        learning_starts=100,
        eval_every=200,
        eval_episodes=2,
        batch_size=32,
        hidden=(16, 16),
        **kw,
    )
    history, agent = train(cfg, progress=False)
    assert list(history.step) == [0, 200, 400] and history.updates.iloc[-1] == 300
    assert np.isfinite(
        history[["eval_return", "q_estimate", "mc_return", "alpha", "critic_loss"]]
        .iloc[1:]
        .to_numpy()
    ).all()
    assert np.isfinite(history["std"].iloc[-1]) == bool(kw.get("distributional"))
    assert agent.critic.n == (1 if kw.get("twin") is False else 2)


def test_config_and_env_errors():
    with pytest.raises(ValueError, match="tau"):
        SACConfig(tau=0.0)
    with pytest.raises(ValueError, match="alpha"):
        SACConfig(alpha=0.0)
    with pytest.raises(ValueError, match="buffer_size"):
        SACConfig(batch_size=10, buffer_size=5)
    with pytest.raises(ValueError, match="Box action space"):
        box_vector_env("CartPole-v1", 1)


def test_adjustment_makes_the_critic_fit_scale_free_and_expected_value_calms_it():
    """Plain SGD on one state-action: with the gradient adjustment the mean converges at reward
    scales 0.1 and 10; without it, at ×10 the mean's step δ/σ² is too small to get there in 1500
    steps. Expected value substituting lowers the jitter of Q once converged."""
    for scale in (0.1, 10.0):
        assert gaussian_critic_fit(scale, steps=1500).error.iloc[-1] < 0.05
    assert gaussian_critic_fit(10.0, adjust=False, steps=1500).error.iloc[-1] > 0.5
    calm = gaussian_critic_fit(1.0, expected_value=True, steps=1500).q.iloc[750:].std()
    noisy = gaussian_critic_fit(1.0, expected_value=False, steps=1500).q.iloc[750:].std()
    assert calm < 0.5 * noisy
    with pytest.raises(ValueError, match="scale"):
        gaussian_critic_fit(0.0)


@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_soft_policy_iteration_reaches_soft_value_iteration(tau):
    mdp = garnet(n_states=12, n_actions=3, branching=3, gamma=0.9, seed=1)
    Qs, policy = soft_policy_iteration(mdp, tau)
    Q_star, _, pi_star = soft_value_iteration(mdp, tau, tol=1e-13)
    assert (Qs[-1] - Q_star).abs().max() < 1e-6
    assert (policy - pi_star).abs().max() < 1e-6
    gaps = (Qs - Q_star).abs().amax((1, 2))
    assert (gaps[1:] <= gaps[:-1] + 1e-9).all()  # policy improvement: monotone


def test_soft_policy_evaluation_by_iteration():
    mdp = garnet(n_states=6, n_actions=2, branching=2, gamma=0.8, seed=0)
    pi = torch.softmax(
        torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), -1
    )
    Q = torch.zeros(6, 2, dtype=torch.float64)
    r = (mdp.P * mdp.R).sum(-1)
    for _ in range(2000):
        V = (pi * (Q - 0.3 * pi.log())).sum(-1) * (~mdp.terminal)
        Q = (r + 0.8 * mdp.P @ V) * (~mdp.terminal)[:, None]
    torch.testing.assert_close(soft_policy_evaluation(mdp, pi, 0.3), Q)
