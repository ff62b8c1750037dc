"""Tabular planners: regularized VI (soft VI, MDVI), pessimistic offline VI, robust VI and the
optimistic actor-critic, against plain loops, closed forms and the claims notebook 03 makes."""

import math

import pytest
import torch

from rlnb.envs.tabular import TabularMDP, chain, cliff_world, garnet, river_swim
from rlnb.train.planning import (
    OfflineData,
    conservative_value_iteration,
    expected_rewards,
    greedy,
    mdvi,
    mdvi_values,
    offline_dataset,
    offline_value_iteration,
    optimistic_actor_critic,
    robust_value_iteration,
    soft_value_iteration,
)


def sampled_vi_loop(mdp, iterations, n, seed):
    """Plain sampled value iteration, read top to bottom: Q ← r + γ · mean of max Q at n sampled
    next states (the same generator calls as ``mdvi``)."""
    g = torch.Generator().manual_seed(seed)
    S, A = mdp.n_states, mdp.n_actions
    r = expected_rewards(mdp)
    Q = torch.zeros(S, A, dtype=torch.float64)
    policies = []
    for _ in range(iterations):
        policies.append(greedy(Q))
        nxt = torch.multinomial(mdp.P.reshape(S * A, S), n, replacement=True, generator=g)
        V = Q.max(-1).values
        Q = r + mdp.gamma * V[nxt].mean(-1).reshape(S, A)
    return policies


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mdvi_without_regularization_is_sampled_value_iteration(seed):
    mdp = garnet(12, 3, 3, seed=seed, gamma=0.9)
    run = mdvi(mdp, 0.0, 0.0, 40, samples_per_iteration=2, seeds=[seed], eval_at=range(1, 41))
    policies = sampled_vi_loop(mdp, 40, 2, seed)
    V_star = mdp.value_iteration()[0]
    expected = torch.stack([(V_star - mdp.evaluate(p).V).abs().max() for p in policies])
    torch.testing.assert_close(run.errors[0], expected)
    assert run.samples.tolist() == [k * 12 * 3 * 2 for k in range(1, 41)]


def test_batched_evaluation_matches_one_policy_at_a_time():
    mdp = garnet(10, 3, 4, seed=3)
    policies = torch.softmax(
        torch.randn(2, 5, 10, 3, generator=torch.Generator().manual_seed(0)), -1
    )
    batch = mdp.evaluate(policies.double())
    assert batch.V.shape == (2, 5, 10) and batch.Q.shape == batch.A.shape == (2, 5, 10, 3)
    for p, v, q, a in zip(
        policies.double().flatten(0, 1),
        batch.V.flatten(0, 1),
        batch.Q.flatten(0, 1),
        batch.A.flatten(0, 1),
    ):
        one = mdp.evaluate(p)
        torch.testing.assert_close(v, one.V)
        torch.testing.assert_close(q, one.Q)
        torch.testing.assert_close(a, one.A)


def test_soft_value_iteration_matches_the_closed_form():
    # one state, three actions that all loop back: V = τ log Σ_a exp(r_a/τ) / (1 − γ)
    r = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    mdp = TabularMDP(torch.ones(1, 3, 1), r, 0.8, torch.ones(1), torch.zeros(1, dtype=torch.bool))
    for tau in (0.1, 0.5, 2.0):
        Q, V, pi = soft_value_iteration(mdp, tau)
        exact = tau * torch.logsumexp(r[0] / tau, 0) / (1 - 0.8)
        torch.testing.assert_close(V[0], exact, atol=1e-9, rtol=0)
        torch.testing.assert_close(pi[0], torch.softmax(r[0] / tau, 0))
    # on a Garnet: the soft Bellman equation holds, and τ → 0 gives value iteration
    g = garnet(15, 4, 3, seed=1)
    Q, V, pi = soft_value_iteration(g, 0.3)
    torch.testing.assert_close(Q, expected_rewards(g) + g.gamma * g.P @ V, atol=1e-8, rtol=0)
    torch.testing.assert_close(V, 0.3 * torch.logsumexp(Q / 0.3, -1), atol=1e-8, rtol=0)
    torch.testing.assert_close(soft_value_iteration(g, 0.0)[1], g.value_iteration()[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mdvi_averages_the_noise_that_stalls_value_iteration(seed):
    mdp = garnet(20, 4, 4, seed=seed, gamma=0.9)
    vi = mdvi(mdp, 0.0, 0.0, 300, seeds=range(3))
    md = mdvi(mdp, 1.0, 0.0, 300, seeds=range(3))
    assert md.errors[:, -1].mean() < 0.25 * vi.errors[:, -1].mean()
    half = len(vi.iterations) // 2  # VI's plateau: no better at the end than half-way
    assert vi.errors[:, -5:].mean() > 0.5 * vi.errors[:, half - 2 : half + 3].mean()


def behavior_policy(mdp, seed):
    """Optimal action in 70% of the states, a random one elsewhere."""
    best = mdp.value_iteration()[1].argmax(-1)
    g = torch.Generator().manual_seed(100 + seed)
    random = torch.randint(mdp.n_actions, (mdp.n_states,), generator=g)
    return torch.where(torch.rand(mdp.n_states, generator=g) < 0.7, best, random)


def test_offline_dataset_follows_the_behavior_and_coverage():
    mdp = garnet(10, 4, 3, seed=0)
    beh = behavior_policy(mdp, 0)
    data = offline_dataset(mdp, 200, 0.1, behavior=beh, seed=0)
    n = data.n
    assert n.sum() == 2000 and (n.sum(-1) == 200).all()
    share = n[torch.arange(10), beh].sum() / n.sum()
    assert abs(share - 0.9) < 0.03
    assert offline_dataset(mdp, 5, 0.0, behavior=beh).n[torch.arange(10), beh].tolist() == [5] * 10
    with pytest.raises(ValueError, match="coverage"):
        offline_dataset(mdp, 5, 1.5)


@pytest.mark.parametrize("seed", range(5))
def test_pessimistic_value_is_a_lower_bound_and_naive_is_not(seed):
    mdp = garnet(20, 4, 4, seed=seed, gamma=0.9)
    data = offline_dataset(mdp, 50, 0.1, behavior=behavior_policy(mdp, seed), seed=seed)
    Q, pi = offline_value_iteration(data, 0.9, penalty=5.0, v_max=30.0)
    assert (Q.max(-1).values <= mdp.evaluate(pi).V + 1e-6).all()
    Q0, pi0 = offline_value_iteration(data, 0.9)
    assert (Q0.max(-1).values - mdp.evaluate(pi0).V).max() > 1.0  # naive VI overestimates


def test_pessimism_helps_when_coverage_is_poor():
    regret = {"naive": [], "pessimistic": []}
    for seed in range(16):
        mdp = garnet(20, 4, 4, seed=seed, gamma=0.9)
        V_star = mdp.value_iteration()[0]
        data = offline_dataset(mdp, 50, 0.05, behavior=behavior_policy(mdp, seed), seed=seed)
        for name, penalty in (("naive", 0.0), ("pessimistic", 1.0)):
            pi = offline_value_iteration(data, 0.9, penalty=penalty, v_max=30.0)[1]
            regret[name].append((V_star - mdp.evaluate(pi).V).mean().item())
    assert sum(regret["pessimistic"]) < 0.8 * sum(regret["naive"])


def test_robust_value_iteration():
    mdp = cliff_world(slip=0.02)
    Q_nom, pi_nom = robust_value_iteration(mdp, 1e6)
    assert torch.equal(pi_nom, mdp.value_iteration()[1])  # β → ∞: plain VI
    Q_rob, pi_rob = robust_value_iteration(mdp, 0.3)
    assert (Q_rob <= Q_nom + 1e-9).all()  # the adversary only lowers values
    start = mdp.initial.argmax()
    values = lambda pi, slip: cliff_world(slip=slip).evaluate(pi).V[start].item()  # noqa: E731
    assert values(pi_nom, 0.02) > values(pi_rob, 0.02)  # robustness costs on the nominal model
    for slip in (0.1, 0.2, 0.3):  # ... and pays under a shift
        assert values(pi_rob, slip) > values(pi_nom, slip) + 0.1
    with pytest.raises(ValueError, match="beta"):
        robust_value_iteration(mdp, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimism_finds_the_far_bank(seed):
    mdp = river_swim(8)
    best = mdp.value_iteration()[0][0].item()
    optimistic = optimistic_actor_critic(mdp, 100, 30, bonus=0.1, seed=seed)
    greedy_ac = optimistic_actor_critic(mdp, 100, 30, bonus=0.0, seed=seed)
    assert math.isclose(optimistic.value.iloc[-1], best, rel_tol=1e-3)
    assert greedy_ac.value.iloc[-1] < 0.1 * best


def exact_data(mdp, n=100.0):
    """An "infinite" dataset: counts proportional to P, reward sums to n · E[R]."""
    counts = n * mdp.P * (~mdp.terminal)[:, None, None]
    return OfflineData(counts, n * expected_rewards(mdp) * (~mdp.terminal)[:, None])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conservative_operator_evaluates_the_prior(seed):
    """B-Coder's operator with exact data is policy evaluation of the prior: Q = Q^μ, and its
    greedy policy is one step of policy improvement (at least as good as μ everywhere)."""
    mdp = garnet(8, 3, 3, seed=seed)
    prior = torch.randint(3, (8,), generator=torch.Generator().manual_seed(seed))
    Q, policy = conservative_value_iteration(exact_data(mdp), mdp.gamma, prior, mdp.terminal)
    evaluation = mdp.evaluate(torch.nn.functional.one_hot(prior, 3).double())
    torch.testing.assert_close(Q, evaluation.Q, atol=1e-8, rtol=0)
    assert (mdp.evaluate(policy).V >= evaluation.V - 1e-9).all()


def test_conservative_operator_overestimates_less_than_the_max_on_small_noisy_data():
    """The claim of notebook 05 §3, on 30 datasets: the max operator's predicted values exceed
    what its greedy policy obtains by far more than the conservative operator's do."""
    mdp = chain(8, slip=0.2, gamma=0.9)
    optimal = mdp.value_iteration()[1].argmax(-1)
    live = ~mdp.terminal
    over_max, over_con = [], []
    for i in range(30):
        g = torch.Generator().manual_seed(100 + i)
        prior = torch.where(torch.rand(8, generator=g) < 0.3, 1 - optimal, optimal)
        data = offline_dataset(mdp, 20, 0.3, behavior=prior, reward_noise=0.5, seed=100 + i)
        for out, (q, pi) in (
            (over_max, offline_value_iteration(data, mdp.gamma, terminal=mdp.terminal)),
            (over_con, conservative_value_iteration(data, mdp.gamma, prior, mdp.terminal)),
        ):
            out.append((q.max(-1).values - mdp.evaluate(pi).V)[live].mean().item())
    over_max, over_con = torch.tensor(over_max), torch.tensor(over_con)
    assert over_max.mean() > 0.5 and over_con.mean() < 0.3
    assert (over_con < over_max).float().mean() >= 0.9


def test_planners_reject_bad_input():
    mdp = garnet(5, 2, 2)
    with pytest.raises(ValueError, match="kl, entropy"):
        mdvi(mdp, -1.0, 0.0, 10)
    with pytest.raises(ValueError, match="iterations"):
        mdvi(mdp, 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="tau"):
        soft_value_iteration(mdp, -0.1)
    with pytest.raises(ValueError, match="penalty"):
        offline_value_iteration(offline_dataset(mdp, 3, 0.5), 0.9, penalty=-1.0)
    with pytest.raises(ValueError, match="bonus"):
        optimistic_actor_critic(mdp, 3, 3, bonus=-1.0)
    with pytest.raises(ValueError, match="n_states"):
        river_swim(2)
    with pytest.raises(ValueError, match="prior_actions"):
        conservative_value_iteration(offline_dataset(mdp, 3, 0.5), 0.9, torch.zeros(3).long())


def test_mdvi_values_iterated_reach_soft_and_plain_value_iteration():
    """With λ = 0 the MDVI step is the soft Bellman backup (fixed point: ``soft_value_iteration``'s
    Q); with κ = 0 < λ its softmax policy concentrates on value iteration's greedy actions."""
    mdp = garnet(n_states=6, n_actions=3, branching=2, seed=0)
    P, r, tau = mdp.P, expected_rewards(mdp), 0.5
    Q_star = soft_value_iteration(mdp, tau)[0]
    Q = torch.zeros_like(Q_star)
    for _ in range(2000):
        w, _ = mdvi_values(Q, torch.zeros_like(Q), 0.0, tau)
        Q = r + mdp.gamma * P @ w
    torch.testing.assert_close(Q, Q_star, atol=1e-8, rtol=0)
    Q, s = torch.zeros_like(Q_star), torch.zeros_like(Q_star)
    for _ in range(300):
        w, s = mdvi_values(Q, s, 1.0, 0.0)
        Q = r + mdp.gamma * P @ w
    assert torch.equal(s.argmax(-1), soft_value_iteration(mdp, 0.0)[2].argmax(-1))
    w, s = mdvi_values(Q, s, 0.0, 0.0)  # λ = κ = 0: the max, no memory
    assert torch.equal(w, Q.max(-1).values) and torch.equal(s, Q)
    with pytest.raises(ValueError, match="kl, entropy"):
        mdvi_values(Q, s, -1.0, 0.0)
