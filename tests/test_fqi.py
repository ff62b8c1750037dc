"""Fitted Q-iteration with every head: it learns Q* without noise, and under heavy-tailed reward
noise cross-entropy over bins stays accurate where squared error is thrown off (notebook 04 §3)."""

import pytest
import torch

from rlnb.envs.tabular import chain, gridworld
from rlnb.train.fqi import fitted_q_iteration, grid_features


def test_grid_features_are_coordinates_in_the_unit_square():
    f = grid_features(3, 4)
    assert f.shape == (12, 2)
    torch.testing.assert_close(f[0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(f[4 * 1 + 2], torch.tensor([0.0, 1.0 / 3.0]))
    torch.testing.assert_close(f[-1], torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize("head", ["scalar", "two_hot", "hl_gauss", "c51"])
def test_fqi_learns_q_star_without_noise(head):
    mdp = chain(6, slip=0.0, gamma=0.9)
    features = torch.eye(6)
    history, net = fitted_q_iteration(
        mdp, features, head, reward_noise=0.0, iterations=25, steps=40, v_min=-0.5, v_max=1.5
    )
    assert net.head == head  # (history, trained object)
    assert history.q_rmse.iloc[-1] < 0.05 < history.q_rmse.iloc[0]
    assert history.regret.iloc[-1] < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heavy_tailed_reward_noise_throws_off_squared_error_not_hl_gauss(seed):
    mdp = gridworld(5, 5, gamma=0.9, goal_reward=10.0, start=None)
    kw = dict(reward_noise=1.0, noise="student-t", iterations=20, v_min=-5, v_max=15, seed=seed)
    mse = fitted_q_iteration(mdp, grid_features(5, 5), "scalar", **kw)[0].q_rmse.iloc[-5:].mean()
    hl = fitted_q_iteration(mdp, grid_features(5, 5), "hl_gauss", **kw)[0].q_rmse.iloc[-5:].mean()
    assert hl < 0.5 * mse


def test_fqi_rejects_bad_input():
    mdp = chain(4)
    with pytest.raises(ValueError, match="features"):
        fitted_q_iteration(mdp, torch.eye(3))
    with pytest.raises(ValueError, match="noise"):
        fitted_q_iteration(mdp, torch.eye(4), noise="cauchy")
    with pytest.raises(ValueError, match="iterations"):
        fitted_q_iteration(mdp, torch.eye(4), iterations=0)
