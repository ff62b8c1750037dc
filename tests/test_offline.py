"""Notebook 07's library: offline value losses against hand formulas, the tabular learners
against plain loops and exact values, and the bandit agents."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rlnb.envs.tabular import Transitions, chain, gridworld
from rlnb.estimators.offline import (
    chi2_dual_loss,
    cql_penalty,
    dual_value_loss,
    expectile_loss,
    gumbel_loss,
    tv_dual_loss,
)
from rlnb.exercises import solutions
from rlnb.train.exploration import bandit_regret, mex_index, ucb_index
from rlnb.train.offline import (
    InterventionData,
    behaviour_dataset,
    chunk_td_values,
    cql_training,
    dual_value_learning,
    edge_of_reach,
    epsilon_greedy,
    fitted_q_sweep,
    goal_value_learning,
    intervention_episodes,
    monte_carlo_values,
    option_target,
    random_walk_chain,
    rollout,
    rollout_fqi,
    state_action_counts,
    subgoal_sign_accuracy,
    supported_optimum,
    workflow_checkpoint,
)


# --- the losses, against their formulas -------------------------------------------------------------
def test_expectile_loss_by_hand():
    diff = torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(expectile_loss(diff, 0.8), torch.tensor([0.2 * 4, 0.0, 0.8 * 9]))


def test_gumbel_loss_by_hand_and_clipped():
    diff = torch.tensor([-1.0, 0.5, 20.0])
    z = diff / 2.0
    torch.testing.assert_close(gumbel_loss(diff, 2.0), torch.exp(z) - z - 1)
    clipped = torch.tensor([math.exp(-0.5) + 0.5 - 1, math.exp(0.25) - 0.25 - 1, math.exp(7) - 8])
    torch.testing.assert_close(gumbel_loss(diff, 2.0, max_exponent=7.0), clipped)


def test_gumbel_minimiser_is_the_soft_maximum():
    """argmin_V E[exp((t − V)/β) − (t − V)/β − 1] = β log E[exp(t/β)]."""
    targets = torch.tensor([0.1, 0.4, 0.9, 0.3], dtype=torch.float64)
    beta = 0.2
    V = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([V], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = gumbel_loss(targets - V, beta).mean()
        loss.backward()
        return loss

    opt.step(closure)
    soft_max = beta * torch.log(torch.exp(targets / beta).mean())
    torch.testing.assert_close(V.detach(), soft_max, atol=1e-7, rtol=0)


def test_chi2_dual_loss_by_hand_on_both_branches():
    lam, beta = 0.6, 0.5
    diff = torch.tensor([-3.0, -0.5, 0.0, 1.0])
    y = diff / beta
    conj = torch.where(y >= -2, y + y**2 / 4, torch.tensor(-1.0))
    want = -(1 - lam) * diff + lam * beta * conj
    torch.testing.assert_close(chi2_dual_loss(diff, beta, weight=lam), want)
    assert chi2_dual_loss(torch.tensor(-3.0), 0.5, 0.6).item() == pytest.approx(0.4 * 3 - 0.6 * 0.5)


def test_tv_dual_loss_by_hand():
    diff = torch.tensor([-2.0, 0.2, 1.0])
    want = -(0.3) * diff + 0.7 * 1.0 * torch.tensor([-0.5, 0.2, 1.0])
    torch.testing.assert_close(tv_dual_loss(diff, 1.0, weight=0.7), want)


def test_gumbel_overflows_in_float32_where_chi2_and_tv_stay_finite():
    diff = torch.tensor([1.0])  # a Q one unit above V, at β = 0.01: exp(100)
    assert torch.isinf(gumbel_loss(diff, 0.01)).all()
    assert torch.isfinite(gumbel_loss(diff, 0.01, max_exponent=7.0)).all()
    assert torch.isfinite(chi2_dual_loss(diff, 0.01)).all()
    assert torch.isfinite(tv_dual_loss(diff, 0.01)).all()


def test_cql_penalty_against_a_loop():
    q = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    a = torch.tensor([0, 2, 1, 1, 0])
    want = torch.stack(
        [torch.log(sum(torch.exp(q[i, j]) for j in range(3))) - q[i, a[i]] for i in range(5)]
    )
    torch.testing.assert_close(cql_penalty(q, a), want)
    assert (cql_penalty(q, a) >= 0).all()


def test_loss_inputs_are_checked():
    d = torch.zeros(3)
    with pytest.raises(ValueError, match="loss"):
        dual_value_loss("kl", d, 1.0)
    with pytest.raises(ValueError, match="beta"):
        gumbel_loss(d, 0.0)
    with pytest.raises(ValueError, match="tau"):
        expectile_loss(d, 1.5)
    with pytest.raises(ValueError, match="weight"):
        chi2_dual_loss(d, 1.0, weight=2.0)
    with pytest.raises(ValueError, match="weight"):
        tv_dual_loss(d, 1.0, weight=0.5)  # flat in V: no minimiser
    with pytest.raises(ValueError, match="q_values, actions"):
        cql_penalty(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


# --- tabular learners ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid():
    mdp = gridworld(12, 12, slip=0.1, gamma=0.95)
    v_star, pi = mdp.value_iteration()
    return mdp, v_star, pi


def test_fitted_q_sweep_against_a_loop(grid):
    mdp, _, pi = grid
    data = behaviour_dataset(mdp, pi, 0.3, 5, 40, seed=1)
    Q = torch.randn(
        mdp.n_states, mdp.n_actions, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    V = Q.max(-1).values
    want = Q.clone()
    for s in range(mdp.n_states):
        for a in range(mdp.n_actions):
            ys = [
                r + mdp.gamma * (0.0 if term else V[s2].item())
                for s_, a_, r, s2, term in zip(data.states.tolist(), data.actions.tolist(), data.rewards.tolist(), data.next_states.tolist(), data.terminated.tolist())
                if (s_, a_) == (s, a)
            ]  # fmt: skip
            if ys:
                want[s, a] = sum(ys) / len(ys)
    torch.testing.assert_close(fitted_q_sweep(mdp, data, Q, V), want)


def test_rollouts_follow_the_dynamics_and_stop_at_terminal_states():
    mdp = chain(5, slip=0.0)
    right = torch.tensor([[0.0, 1.0]] * 5, dtype=torch.float64)
    out = rollout(mdp, right, torch.tensor([0, 2, 4]), 3, torch.Generator().manual_seed(0))
    # from 0: 0→1→2→3; from 2: 2→3→4 (terminal, stops); 4 is terminal: no rollout
    assert sorted(zip(out.states.tolist(), out.next_states.tolist())) == [
        (0, 1),
        (1, 2),
        (2, 3),
        (2, 3),
        (3, 4),
    ]
    assert out.terminated.tolist().count(True) == 1 and not out.truncated.any()


def test_edge_of_reach_matches_the_plain_loop():
    g = torch.Generator().manual_seed(3)
    terminal = torch.zeros(10, dtype=torch.bool)
    terminal[9] = True
    for _ in range(5):
        s, s2 = torch.randint(0, 5, (8,), generator=g), torch.randint(0, 10, (8,), generator=g)
        assert torch.equal(edge_of_reach(s, s2, terminal), solutions.edge_of_reach(s, s2, terminal))


def test_ravl_ensemble_keeps_the_edge_pessimistic(grid):
    """The notebook's claim at k = 2: RAVL (the default ensemble) reaches 85% of V* with no
    overestimation at the edge. An ensemble of one (``n_heads=1``) fails this test: its greedy
    policy walks into the void (value ≈ 0)."""
    mdp, v_star, pi = grid
    start = int(mdp.initial.argmax())
    for seed in range(3):
        data = behaviour_dataset(mdp, pi, 0.05, 20, 60, seed=seed)
        h = rollout_fqi(mdp, data, rollout_length=2, iterations=30, seed=seed).history.iloc[-1]
        assert h.policy_value >= 0.85 * v_star[start], (seed, h)
        assert h.edge_overestimation == 0.0 and h.edge_states > 0, (seed, h)


def test_single_head_with_short_rollouts_overestimates_and_full_rollouts_fix_it(grid):
    mdp, v_star, pi = grid
    start = int(mdp.initial.argmax())
    data = behaviour_dataset(mdp, pi, 0.05, 20, 60, seed=0)
    short = rollout_fqi(mdp, data, n_heads=1, rollout_length=1, iterations=30).history.iloc[-1]
    assert short.start_value > 2 * v_star[start] and short.policy_value < 0.5 * v_star[start]
    full = rollout_fqi(mdp, data, n_heads=1, rollout_length=100, iterations=30).history.iloc[-1]
    assert full.edge_states == 0 and full.policy_value >= 0.9 * v_star[start]


def test_rollout_fqi_checks_its_inputs(grid):
    mdp, _, pi = grid
    data = behaviour_dataset(mdp, pi, 0.05, 2, 10)
    with pytest.raises(ValueError, match="n_heads"):
        rollout_fqi(mdp, data, n_heads=0)
    with pytest.raises(ValueError, match="rollout_length"):
        rollout_fqi(mdp, data, rollout_length=-1)
    with pytest.raises(ValueError, match="coverage"):
        behaviour_dataset(mdp, pi, 1.5, 2)
    with pytest.raises(ValueError, match="narrow"):
        behaviour_dataset(mdp, pi[:3], 0.1, 2)
    with pytest.raises(ValueError, match="iterations"):
        rollout_fqi(mdp, data, iterations=0)
    with pytest.raises(ValueError, match="epsilon"):
        rollout_fqi(mdp, data, epsilon=2.0)


def test_supported_optimum_with_full_support_is_the_optimum():
    mdp = gridworld(4, 4, slip=0.1, gamma=0.9, start=None)
    v_star, _ = mdp.value_iteration()
    data = behaviour_dataset(mdp, mdp.uniform_policy(), 1.0, 200, 40)
    torch.testing.assert_close(supported_optimum(mdp, data), v_star, atol=1e-8, rtol=0)


def test_supported_optimum_keeps_negative_values():
    """A corridor that costs 1 a step: moving right from 0 is worth −(1 + γ + γ²), not clipped to 0."""
    from rlnb.envs.tabular import TabularMDP

    base = chain(4, slip=0.0, gamma=0.9)
    mdp = TabularMDP(base.P, -torch.ones(4, 2), 0.9, base.initial, base.terminal)
    right = Transitions(
        torch.tensor([0, 1, 2]), torch.tensor([1, 1, 1]), -torch.ones(3, dtype=torch.float64),
        torch.tensor([1, 2, 3]), torch.tensor([False, False, True]), torch.zeros(3, dtype=torch.bool),
    )  # fmt: skip
    torch.testing.assert_close(
        supported_optimum(mdp, right), torch.tensor([-2.71, -1.9, -1.0, 0.0], dtype=torch.float64)
    )
    allowed = state_action_counts(mdp, right) > 0
    torch.testing.assert_close(
        mdp.value_iteration(allowed=allowed)[0], supported_optimum(mdp, right)
    )
    with pytest.raises(ValueError, match="allowed"):
        mdp.value_iteration(allowed=allowed[:, :1])


def test_supported_optimum_only_uses_the_data_actions():
    mdp = chain(4, slip=0.0, gamma=0.9)
    left_only = Transitions(
        torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0]), torch.zeros(3, dtype=torch.float64),
        torch.tensor([0, 0, 1]), torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool),
    )  # fmt: skip
    assert supported_optimum(mdp, left_only).abs().max() == 0  # never moving right, never paid


def test_dual_value_learning_gumbel_overflows_chi2_does_not():
    mdp = gridworld(6, 6, slip=0.1, gamma=0.9)
    _, pi = mdp.value_iteration()
    data = behaviour_dataset(mdp, pi, 0.5, 30, 40, seed=0)
    gumbel = dual_value_learning(mdp, data, "gumbel", [0.03, 0.001], steps=2000, lr=0.02)
    chi2 = dual_value_learning(mdp, data, "chi2", [0.03, 0.001], steps=2000, lr=0.02, weight=0.6)
    assert gumbel.finite.tolist() == [True, False] and chi2.finite.all()
    assert gumbel.value_error[1] == np.inf
    assert chi2.value_error[0] < 0.1 and chi2.rmse_over_constant[0] < 1, chi2
    with pytest.raises(ValueError, match="betas"):
        dual_value_learning(mdp, data, "chi2", [0.0])


# --- OTA ---------------------------------------------------------------------------------------------
def test_option_target_by_hand():
    state = torch.tensor([5, 5, 3])
    ahead = torch.tensor([[6, 7], [4, 5], [4, 5]])
    goal = torch.tensor([9, 4, 3])
    v_next = torch.tensor([-2.0, -2.0, -2.0])
    # not reached: −1 + γ V; goal among ahead: −1; at the goal: 0
    torch.testing.assert_close(
        option_target(state, ahead, goal, v_next, 0.9), torch.tensor([-1 - 1.8, -1.0, 0.0])
    )


def test_subgoal_sign_accuracy_is_one_for_exact_values_and_zero_for_a_constant():
    S = 30
    d = (torch.arange(S)[:, None] - torch.arange(S)[None, :]).abs().double()
    exact = subgoal_sign_accuracy(-d, 5)
    assert (exact.accuracy == 1).all() and exact.distance.min() == 6
    assert (subgoal_sign_accuracy(torch.zeros(S, S), 5).accuracy == 0).all()


def test_goal_values_learn_the_signs_near_the_goal():
    walks = random_walk_chain(30, 50, 100, seed=0)
    assert walks.shape == (50, 101) and ((walks[:, 1:] - walks[:, :-1]).abs() <= 1).all()
    out = goal_value_learning(walks, 30, option_steps=3, steps=400, hidden=(64, 64))
    acc = subgoal_sign_accuracy(out.values, 3)
    assert acc[acc.distance <= 10].accuracy.mean() > 0.9, acc
    with pytest.raises(ValueError, match="option_steps"):
        goal_value_learning(walks, 30, option_steps=0)


# --- ALOE: chunked TD on data with takeovers -----------------------------------------------------------
def takeover_example() -> tuple:
    """0 →(policy) 1 →(expert) 2 →(policy) 3 terminal, paying 1 on the last step."""
    mdp = chain(4, slip=0.0, gamma=0.5)
    tr = Transitions(
        torch.tensor([0, 1, 2]), torch.tensor([1, 1, 1]), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
        torch.tensor([1, 2, 3]), torch.tensor([False, False, True]), torch.zeros(3, dtype=torch.bool),
    )  # fmt: skip
    return mdp, InterventionData(tr, torch.tensor([False, True, False]))


def test_chunk_td_stops_at_a_takeover_and_monte_carlo_does_not():
    mdp, data = takeover_example()
    V = chunk_td_values(mdp, data, chunk=4)
    # V(0) = 0 + γ V(1) and state 1 has no policy step (0); V(2) = 1
    torch.testing.assert_close(V, torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    mc = monte_carlo_values(mdp, data)
    torch.testing.assert_close(
        mc, torch.tensor([0.25, 0.0, 1.0, 0.0], dtype=torch.float64)
    )  # the expert's help


def test_long_chunks_without_takeovers_are_monte_carlo():
    mdp = chain(6, slip=0.2, gamma=0.9)
    policy = epsilon_greedy(mdp.value_iteration()[1], 0.3)
    data = intervention_episodes(mdp, policy, policy, 30, p_intervene=0.0, max_steps=500, seed=0)
    assert not data.intervened.any() and not data.transitions.truncated.any()
    torch.testing.assert_close(chunk_td_values(mdp, data, chunk=600), monte_carlo_values(mdp, data))


def test_chunk_td_beats_monte_carlo_on_mixed_data():
    mdp = gridworld(6, 6, slip=0.1, gamma=0.95, start=None)
    _, expert = mdp.value_iteration()
    policy = epsilon_greedy(expert, 0.7)
    v_pi = mdp.evaluate(policy).V
    for seed in range(3):
        data = intervention_episodes(mdp, policy, expert, 100, seed=seed)
        own = torch.bincount(data.transitions.states[~data.intervened], minlength=36) > 0
        err = {H: (chunk_td_values(mdp, data, H) - v_pi)[own].pow(2).mean().sqrt() for H in (1, 4)}
        mc = (monte_carlo_values(mdp, data) - v_pi)[own].pow(2).mean().sqrt()
        assert err[4] < 2 / 3 * mc and err[1] < mc, (seed, err, mc)


def test_interventions_all_or_nothing():
    mdp = gridworld(4, 4, start=None)
    u = mdp.uniform_policy()
    assert intervention_episodes(mdp, u, u, 5, p_intervene=1.0).intervened.all()
    assert not intervention_episodes(mdp, u, u, 5, p_intervene=0.0).intervened.any()
    with pytest.raises(ValueError, match="p_intervene"):
        intervention_episodes(mdp, u, u, 5, p_intervene=2.0)


# --- CQL and the workflow ----------------------------------------------------------------------------
def test_workflow_checkpoint_picks_the_smoothed_peak():
    q = [0.0, 1.0, 1.4, 1.5, 1.3, 1.0, 0.9, 0.8]
    assert workflow_checkpoint(pd.DataFrame({"dataset_q": q})) == 3
    assert workflow_checkpoint(pd.DataFrame({"dataset_q": [0.0, 0.5, 1.0, 2.0]}), window=1) == 3


def test_cql_training_records_the_workflow_signals():
    mdp = gridworld(4, 4, slip=0.1, gamma=0.9, start=None)
    _, pi = mdp.value_iteration()
    data = behaviour_dataset(mdp, pi, 0.2, 5, 30)
    hist, Q = cql_training(
        mdp, data, torch.eye(16), steps=200, checkpoint_every=50, hidden=(), lr=0.05
    )
    assert list(hist.columns) == ["step", "dataset_q", "td_error", "policy_value"]
    assert hist.step.tolist() == [0, 50, 100, 150, 200] and Q.shape == (16, 4)
    assert hist.td_error.iloc[-1] < hist.td_error.iloc[1] and hist.policy_value.iloc[-1] > 0
    with pytest.raises(ValueError, match="features"):
        cql_training(mdp, data, torch.eye(5))


# --- exploration -------------------------------------------------------------------------------------
def test_mex_index_is_the_maximum_of_its_objective():
    """Plain reference: maximise μ_k − η Σ_j n_j (μ_j − r̄_j)² over a grid of μ_k (the other arms at
    their means), for each arm k."""
    means, counts, eta = np.array([0.2, 0.5, -0.1]), np.array([4.0, 9.0, 2.0]), 0.1
    grid = np.linspace(-2, 4, 600_001)
    numeric = [(grid - eta * counts[k] * (grid - means[k]) ** 2).max() for k in range(3)]
    np.testing.assert_allclose(mex_index(means, counts, eta), numeric, atol=1e-8)
    with pytest.raises(ValueError, match="eta"):
        mex_index(means, counts, 0.0)


def test_ucb_index_by_hand():
    np.testing.assert_allclose(
        ucb_index(np.array([0.5]), np.array([4.0]), 100, 2.0),
        0.5 + math.sqrt(2 * math.log(100) / 4),
    )


def test_mex_regret_is_below_epsilon_greedy():
    means = np.random.default_rng(0).standard_normal((100, 10))
    mex = bandit_regret("mex", means, 500, eta=0.1).regret.iloc[-1]
    eps = bandit_regret("epsilon-greedy", means, 500).regret.iloc[-1]
    assert mex < 0.5 * eps, (mex, eps)
    with pytest.raises(ValueError, match="agent"):
        bandit_regret("thompson", means, 500)
    with pytest.raises(ValueError, match="steps"):
        bandit_regret("mex", means, 5)
