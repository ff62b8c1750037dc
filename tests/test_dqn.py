"""DQN: the ε schedule, the loss on a hand-made batch for every variant, and learning on CartPole."""

import pytest
import torch

from rlnb.estimators.distributional import categorical_projection
from rlnb.models.value import ValueNetwork
from rlnb.train.dqn import DQNConfig, dqn_loss, epsilon_at, train


def test_epsilon_decays_linearly_then_stays():
    cfg = DQNConfig(total_steps=1000, eps_start=1.0, eps_end=0.1, eps_fraction=0.5)
    assert epsilon_at(cfg, 0) == 1.0 and epsilon_at(cfg, 250) == pytest.approx(0.55)
    assert epsilon_at(cfg, 500) == pytest.approx(0.1) and epsilon_at(cfg, 900) == pytest.approx(0.1)


def batch_and_nets(head="scalar"):
    torch.manual_seed(0)
    qnet = ValueNetwork(3, 2, head, hidden=(16,), n_bins=11, v_min=-5, v_max=5)
    target = ValueNetwork(3, 2, head, hidden=(16,), n_bins=11, v_min=-5, v_max=5)
    obs, next_obs = torch.randn(6, 3), torch.randn(6, 3)
    batch = (
        obs,
        torch.tensor([0, 1, 1, 0, 1, 0]),
        torch.randn(6),
        next_obs,
        torch.tensor([0, 0, 1, 0, 0, 1]).bool(),
    )
    return qnet, target, batch


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("loss", ["td", "dqnreg"])
def test_scalar_losses_match_their_formulas(loss, double):
    qnet, target, (obs, a, r, next_obs, term) = batch_and_nets()
    cfg = DQNConfig(loss=loss, double=double, huber=False, gamma=0.9)
    chooser = qnet if double else target
    best = chooser.value(next_obs).argmax(-1)
    y = r + 0.9 * (~term) * target.value(next_obs)[torch.arange(6), best]
    q = qnet.value(obs)[torch.arange(6), a]
    expected = ((q - y) ** 2).mean() if loss == "td" else ((q - y) ** 2 + 0.1 * q).mean()
    torch.testing.assert_close(dqn_loss(cfg, qnet, target, (obs, a, r, next_obs, term)), expected)


def test_dqnclipped_matches_its_formula():
    """max(Q, δ² + Y) + max(Q − Y, γ_t Q̄(s', a*)²) ("Evolving Reinforcement Learning
    Algorithms"), with γ_t = 0 after a terminal step."""
    qnet, target, (obs, a, r, next_obs, term) = batch_and_nets()
    cfg = DQNConfig(loss="dqnclipped", gamma=0.9)
    next_v = target.value(next_obs).max(-1).values
    gamma_t = 0.9 * (~term)
    y = r + gamma_t * next_v
    q = qnet.value(obs)[torch.arange(6), a]
    expected = (
        torch.maximum(q, (q - y) ** 2 + y) + torch.maximum(q - y, gamma_t * next_v**2)
    ).mean()
    torch.testing.assert_close(dqn_loss(cfg, qnet, target, (obs, a, r, next_obs, term)), expected)


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss="td"),
        dict(loss="td", huber=False, double=True),
        dict(loss="dqnreg"),
        dict(loss="dqnclipped"),
        dict(head="two_hot"),
        dict(head="hl_gauss"),
        dict(head="c51"),
    ],
)
def test_one_update_with_each_loss_changes_the_parameters_and_stays_finite(kw):
    head = kw.get("head", "scalar")
    qnet, target, batch = batch_and_nets(head)
    cfg = DQNConfig(gamma=0.9, v_min=-5, v_max=5, n_bins=11, **kw)
    before = [p.detach().clone() for p in qnet.parameters()]
    opt = torch.optim.Adam(qnet.parameters(), lr=1e-3)
    loss = dqn_loss(cfg, qnet, target, batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in qnet.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, qnet.parameters()))


def test_c51_loss_uses_the_projected_target():
    qnet, target, (obs, a, r, next_obs, term) = batch_and_nets("c51")
    cfg = DQNConfig(head="c51", gamma=0.9, v_min=-5, v_max=5, n_bins=11)
    best = target.value(next_obs).argmax(-1)
    p_next = torch.softmax(target.logits(next_obs)[torch.arange(6), best], -1)
    m = categorical_projection(p_next, r, 0.9 * (~term).float(), qnet.support)
    logp = torch.log_softmax(qnet.logits(obs)[torch.arange(6), a], -1)
    torch.testing.assert_close(
        dqn_loss(cfg, qnet, target, (obs, a, r, next_obs, term)), -(m * logp).sum(-1).mean()
    )


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="loss"):
        DQNConfig(loss="mse")
    with pytest.raises(ValueError, match="dqnreg"):
        DQNConfig(loss="dqnreg", head="hl_gauss")
    with pytest.raises(ValueError, match="dqnclipped"):
        DQNConfig(loss="dqnclipped", head="c51")
    with pytest.raises(ValueError, match="reward_noise"):
        DQNConfig(reward_noise=-1.0)
    with pytest.raises(ValueError, match="tau, gamma"):
        DQNConfig(tau=0.0)


@pytest.mark.parametrize("head", ["scalar", "hl_gauss", "two_hot", "c51"])
def test_a_short_run_of_every_head_produces_its_history(head):
    cfg = DQNConfig(
        total_steps=400,
        learning_starts=100,
        eval_every=200,
        eval_episodes=1,
        head=head,
        hidden=(16,),
        seed=1,
    )
    history, qnet = train(cfg, progress=False)
    assert history.step.tolist() == [0, 200, 400]
    assert set(history.columns) >= {"eval_return", "q_estimate", "mc_return", "loss", "epsilon"}
    assert history.loss.iloc[1:].notna().all()


@pytest.mark.parametrize("seed", [0, 1])
def test_dqn_learns_cartpole(seed):
    cfg = DQNConfig(total_steps=12_000, eval_every=12_000, eval_episodes=5, seed=seed)
    history, _ = train(cfg, progress=False)
    assert history.eval_return.iloc[-1] > max(100.0, 2 * history.eval_return.iloc[0])


def test_training_stops_at_the_first_evaluation_that_reaches_stop_return():
    cfg = DQNConfig(
        total_steps=2_000, learning_starts=100, eval_every=400, eval_episodes=1, hidden=(16,),
        reward_noise=1.0, stop_return=0.0,
    )  # fmt: skip
    history = train(cfg, progress=False)[0]
    assert history.step.tolist() == [0, 400]  # any return reaches 0: stop at the first row
    assert history.updates.iloc[-1] == (400 - 100) // 4 + 1  # one per vector step from step 100
    assert history.wall.iloc[-1] > 0
