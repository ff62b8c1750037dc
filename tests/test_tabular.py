import pytest
import torch

from rlnb.envs.tabular import TabularMDP, chain, random_walk
from rlnb.train.tabular import mc_prediction, rms_error, td0_prediction


def test_random_walk_values_match_sutton_barto():
    m5 = random_walk(5)
    torch.testing.assert_close(
        m5.evaluate(m5.uniform_policy()).V[1:-1], torch.arange(1, 6, dtype=torch.float64) / 6
    )
    m19 = random_walk(19)
    i = torch.arange(1, 20, dtype=torch.float64)
    torch.testing.assert_close(m19.evaluate(m19.uniform_policy()).V[1:-1], (2 * i - 20) / 20)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_evaluate_satisfies_bellman(gamma):
    mdp = chain(6, slip=0.2, gamma=gamma)
    policy = torch.tensor([[0.4, 0.6]], dtype=torch.float64).expand(6, 2)
    ev = mdp.evaluate(policy)
    live = ~mdp.terminal
    # Q(s,a) = Σ P(s'|s,a) [R + γ V(s')] on live states; V = Σ π Q; A = Q − V
    q = (mdp.P * (mdp.R + gamma * ev.V)).sum(-1)
    torch.testing.assert_close(ev.Q[live], q[live])
    torch.testing.assert_close(ev.V, (policy * ev.Q).sum(-1))
    torch.testing.assert_close((policy * ev.A).sum(-1), torch.zeros(6, dtype=torch.float64))
    assert ev.V[mdp.terminal].abs().max() == 0


def test_evaluate_rejects_bad_policy_and_singular_system():
    mdp = chain(4)
    with pytest.raises(ValueError, match="policy"):
        mdp.evaluate(torch.ones(3, 2) / 2)
    with pytest.raises(ValueError, match="policy"):
        mdp.evaluate(torch.ones(4, 2))
    # γ = 1 and a policy that never reaches the goal: no finite value
    left = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(4, 2)
    with pytest.raises(ValueError, match="singular"):
        chain(4, slip=0.0, gamma=1.0).evaluate(left)


def test_constructor_errors_name_the_argument():
    P = torch.ones(3, 1, 3) / 3
    init, term = torch.tensor([1.0, 0, 0]), torch.zeros(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="P"):
        TabularMDP(torch.ones(3, 1, 3), torch.zeros(3, 1), 0.9, init, term)
    with pytest.raises(ValueError, match="gamma"):
        TabularMDP(P, torch.zeros(3, 1), 1.5, init, term)
    with pytest.raises(ValueError, match="R"):
        TabularMDP(P, torch.zeros(2, 1), 0.9, init, term)
    with pytest.raises(ValueError, match="initial"):
        TabularMDP(P, torch.zeros(3, 1), 0.9, torch.ones(3), term)
    with pytest.raises(ValueError, match="n_states"):
        random_walk(4)
    with pytest.raises(ValueError, match="slip"):
        chain(5, slip=2.0)


def test_sample_episodes_format():
    mdp = chain(5, slip=0.3)
    policy = mdp.uniform_policy()
    data = mdp.sample_episodes(policy, n=200, max_steps=8, seed=1)
    n = len(data.states)
    assert all(x.shape == (n,) for x in data)
    assert data.n_episodes == 200
    assert not (data.terminated & data.truncated).any()
    assert data.done[-1]
    # terminated exactly when entering the terminal state, and only then is the reward paid
    torch.testing.assert_close(data.terminated, mdp.terminal[data.next_states])
    torch.testing.assert_close(data.rewards, data.terminated.double())
    # steps are consecutive inside an episode; episode lengths never exceed max_steps
    starts = torch.cat([torch.tensor([0]), torch.nonzero(data.done).squeeze(1)[:-1] + 1])
    lengths = torch.diff(torch.cat([starts, torch.tensor([n])]))
    assert lengths.max() <= 8 and data.truncated.any()
    assert (data.states[starts] == 0).all()
    inside = ~data.done[:-1]
    assert (data.next_states[:-1][inside] == data.states[1:][inside]).all()
    # truncation happens exactly at the time limit
    assert (lengths[data.truncated[data.done]] == 8).all()
    # same seed, same data
    again = mdp.sample_episodes(policy, n=200, max_steps=8, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(data, again))


def test_sampled_returns_are_unbiased_for_v():
    mdp = chain(4, slip=0.1, gamma=0.8)
    policy = torch.tensor([[0.2, 0.8]], dtype=torch.float64).expand(4, 2)
    data = mdp.sample_episodes(policy, n=4000, max_steps=200, seed=0)
    # first-step returns: the return from state 0 averaged over episodes
    v0 = mc_prediction(data, 4, 0.8, alpha=1.0)  # α = 1: V(s) = the last return seen
    # average of discounted returns from the start state, computed directly
    done = data.done.tolist()
    G, returns = 0.0, []
    for t in range(len(done) - 1, -1, -1):
        G = data.rewards[t].item() + 0.8 * (0.0 if done[t] else G)
        if t == 0 or done[t - 1]:
            returns.append(G)
    mean = torch.tensor(returns).mean().item()
    assert abs(mean - mdp.evaluate(policy).V[0].item()) < 0.02
    assert v0.shape == (4000, 4)


@pytest.mark.parametrize("learner", [td0_prediction, mc_prediction])
def test_learners_converge_to_exact_values(learner):
    mdp = random_walk(5)
    exact = mdp.evaluate(mdp.uniform_policy()).V
    live = ~mdp.terminal
    errors = []
    for seed in range(3):
        data = mdp.sample_episodes(mdp.uniform_policy(), n=1000, max_steps=1000, seed=seed)
        hist = learner(data, mdp.n_states, 1.0, alpha=0.01, v0=0.5)
        assert hist.shape == (1000, 7)
        errors.append(rms_error(hist[-200:], exact, live).mean().item())
    assert max(errors) < 0.1, errors  # from 0.24 at V = 0.5; 10 seeds: MC ≤ 0.071, TD ≤ 0.037


def test_wrong_discount_is_detected():
    """The convergence check above fails for a learner with the wrong γ (the test can fail)."""
    mdp = chain(5, gamma=0.8)
    policy = mdp.uniform_policy()
    exact = mdp.evaluate(policy).V
    data = mdp.sample_episodes(policy, n=1000, max_steps=200, seed=0)
    good = rms_error(td0_prediction(data, 5, 0.8, 0.02)[-200:], exact, ~mdp.terminal).mean()
    bad = rms_error(td0_prediction(data, 5, 1.0, 0.02)[-200:], exact, ~mdp.terminal).mean()
    assert good < 0.06 < bad


def test_truncation_bootstraps_in_both_learners():
    """A stream with one truncated step: both learners bootstrap from V(next) instead of 0."""
    from rlnb.envs.tabular import Transitions

    t = Transitions(
        torch.tensor([0]),
        torch.tensor([0]),
        torch.tensor([0.0]),
        torch.tensor([1]),
        torch.tensor([False]),
        torch.tensor([True]),
    )
    v0 = torch.tensor([0.0, 1.0])
    for learner in (td0_prediction, mc_prediction):
        assert learner(t, 2, 0.5, alpha=1.0, v0=v0)[-1, 0].item() == 0.5
    t = t._replace(terminated=torch.tensor([True]), truncated=torch.tensor([False]))
    for learner in (td0_prediction, mc_prediction):
        assert learner(t, 2, 0.5, alpha=1.0, v0=v0)[-1, 0].item() == 0.0


@pytest.mark.parametrize("kw", [{"gamma": 1.5}, {"alpha": 0.0}, {"n_states": 0}])
def test_learner_errors(kw):
    data = chain(3).sample_episodes(chain(3).uniform_policy(), 2, 5)
    args = {"n_states": 3, "gamma": 0.9, "alpha": 0.1, **kw}
    with pytest.raises(ValueError, match=next(iter(kw))):
        td0_prediction(data, **args)


def test_value_iteration_is_optimal():
    from rlnb.envs.tabular import garnet, gridworld

    for mdp in (gridworld(3, 4, slip=0.2), garnet(12, 3, 4, seed=1)):
        V, greedy = mdp.value_iteration()
        torch.testing.assert_close(mdp.evaluate(greedy).V, V, atol=1e-8, rtol=0)
        Q = (mdp.P * (mdp.R + mdp.gamma * V)).sum(-1) * (~mdp.terminal)[:, None]
        torch.testing.assert_close(Q.max(-1).values, V, atol=1e-8, rtol=0)  # Bellman optimality
        g = torch.Generator().manual_seed(0)
        for _ in range(5):  # no random policy does better anywhere
            pi = torch.softmax(
                torch.randn(mdp.n_states, mdp.n_actions, generator=g, dtype=torch.float64), -1
            )
            assert (mdp.evaluate(pi).V <= V + 1e-8).all()


def test_generative_model_frequencies():
    from rlnb.envs.tabular import garnet

    mdp = garnet(6, 2, 3, seed=2)
    nxt = mdp.sample_next_states(20000, seed=0)
    freq = torch.nn.functional.one_hot(nxt, 6).double().mean(2)
    assert nxt.shape == (6, 2, 20000)
    assert (freq - mdp.P).abs().max() < 0.02
    assert ((mdp.P > 0).sum(-1) <= 3).all()


def test_gridworld_layout():
    from rlnb.envs.tabular import gridworld

    mdp = gridworld(2, 3, slip=0.0, step_reward=-1.0, goal_reward=0.0, gamma=1.0)
    V = mdp.value_iteration()[0]
    # deterministic moves, −1 per step, 0 for the step into the goal: V = 1 − distance to the goal
    torch.testing.assert_close(V, -torch.tensor([2.0, 1, 0, 1, 0, 0], dtype=torch.float64))
    with pytest.raises(ValueError, match="rows"):
        gridworld(1, 1)


def test_offline_lambda_one_is_monte_carlo_and_alphas_vectorise():
    from rlnb.estimators import lambda_returns
    from rlnb.train.tabular import offline_prediction

    mdp = random_walk(5)
    data = mdp.sample_episodes(mdp.uniform_policy(), n=50, max_steps=1000, seed=3)
    alphas = [0.05, 0.2]
    target = lambda *x: lambda_returns(*x, 1.0, 1.0)  # noqa: E731
    off = offline_prediction(data, 7, alphas, target, v0=0.5)
    assert off.shape == (50, 2, 7)
    for k, a in enumerate(alphas):
        torch.testing.assert_close(off[:, k], mc_prediction(data, 7, 1.0, a, v0=0.5))
        torch.testing.assert_close(off[:, k], offline_prediction(data, 7, a, target, v0=0.5))
    both = td0_prediction(data, 7, 1.0, alphas, v0=0.5)
    torch.testing.assert_close(both[:, 1], td0_prediction(data, 7, 1.0, 0.2, v0=0.5))


def test_nan_rewards_are_named_not_blamed_on_a_singular_system():
    mdp = chain(4)
    R = mdp.R.clone()
    R[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="R: contains NaN"):
        TabularMDP(mdp.P, R, mdp.gamma, mdp.initial, mdp.terminal)
