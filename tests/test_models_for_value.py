"""Notebook 07b's pieces: the distracted point mass and its exact value, VaGraM against maximum
likelihood, and TCRL's representation against an autoencoder."""

import math

import pytest
import torch
from torch import nn

from rlnb.envs.point_mass import DistractedPointMass
from rlnb.train.representation import (
    MRQ_SUPPORT,
    LatentModel,
    consistency_loss,
    fit_value_head,
    mrq_loss,
    tcrl_loss,
    train_representation,
)
from rlnb.train.vagram import (
    DynamicsModel,
    mle_loss,
    planning_regret,
    train_model,
    vagram_loss,
    value_error,
    value_gradient_weights,
)


class TrueModel(nn.Module):
    def __init__(self, env):
        super().__init__()
        self.env = env

    def forward(self, states, actions):
        return self.env.step(states, actions)[0]


def test_riccati_solution_and_optimal_value():
    env = DistractedPointMass(distractors=3, seed=1)
    A, B, g, c, P = env.A, env.B, env.gamma, env.action_cost, env.P
    rhs = (
        torch.eye(2)
        + g * A.T @ P @ A
        - g**2 * A.T @ P @ B @ torch.linalg.solve(c + g * B.T @ P @ B, B.T @ P @ A)
    )
    assert torch.allclose(rhs, P, atol=1e-4)
    gen = torch.Generator().manual_seed(0)
    s = env.sample_states(64, gen)
    # V*(s) = Q*(s, a*(s)) and no action does better
    assert torch.allclose(env.q_value(s, env.optimal_action(s)), env.value(s), atol=1e-4)
    for a in torch.linspace(-5, 5, 11):
        assert (env.q_value(s, a.expand(64, 1)) <= env.value(s) + 1e-4).all()


def test_optimal_value_is_the_discounted_return_of_the_optimal_policy():
    env = DistractedPointMass(distractors=2, seed=0)
    s0 = torch.tensor([[0.7, -0.4, 0.1, 0.2], [-1.0, 1.0, -0.5, 0.9]])
    for i in range(2):
        s, ret = s0[i : i + 1], 0.0
        for t in range(300):  # γ^300 ≈ 2e-14
            a = env.optimal_action(s)
            s, r = env.step(s, a)
            ret += env.gamma**t * float(r)
        assert math.isclose(ret, float(env.value(s0[i : i + 1])), rel_tol=1e-4)


def test_distractors_touch_neither_reward_nor_position():
    env = DistractedPointMass(distractors=4, seed=0)
    gen = torch.Generator().manual_seed(0)
    s = env.sample_states(8, gen)
    a = torch.rand(8, 1, generator=gen)
    other = s.clone()
    other[:, 2:] = env.sample_states(8, gen)[:, 2:]
    (n1, r1), (n2, r2) = env.step(s, a), env.step(other, a)
    assert torch.equal(r1, r2) and torch.equal(n1[:, :2], n2[:, :2])
    assert torch.equal(env.value(s), env.value(other))
    chunks = env.trajectories(5, 4, gen)
    assert chunks.states.shape == (5, 4, 6) and chunks.rewards.shape == (5, 4)
    assert torch.equal(chunks.next_states[:, :-1], chunks.states[:, 1:])


@pytest.mark.parametrize(
    "kwargs", [{"distractors": -1}, {"gamma": 1.0}, {"dt": 0.0}, {"action_cost": 0}]
)
def test_point_mass_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DistractedPointMass(**kwargs)


def test_value_gradient_weights_and_losses_against_loops():
    env = DistractedPointMass(distractors=3, seed=0)
    gen = torch.Generator().manual_seed(1)
    s_next = env.sample_states(6, gen)
    pred = s_next + 0.1 * torch.randn(6, 5, generator=gen)
    w = value_gradient_weights(env.value, s_next)
    for n in range(6):
        x = s_next[n, :2]
        grad = -2 * env.P @ x  # ∇(−xᵀPx)
        assert torch.allclose(w[n, :2], grad**2, atol=1e-5)
        assert torch.equal(w[n, 2:], torch.zeros(3))
    vagram = (
        sum(
            float(w[n, i]) * float(pred[n, i] - s_next[n, i]) ** 2
            for n in range(6)
            for i in range(5)
        )
        / 6
    )
    mle = sum(float(pred[n, i] - s_next[n, i]) ** 2 for n in range(6) for i in range(5)) / 6
    assert math.isclose(float(vagram_loss(pred, s_next, env.value)), vagram, rel_tol=1e-5)
    assert math.isclose(float(mle_loss(pred, s_next)), mle, rel_tol=1e-5)


def test_a_true_model_has_no_value_error_and_plans_optimally():
    env = DistractedPointMass(distractors=2, seed=0)
    gen = torch.Generator().manual_seed(0)
    batch = env.transitions(256, gen)
    assert value_error(TrueModel(env), env.value, batch) == 0.0
    regret = planning_regret(TrueModel(env), env, batch.states)
    assert 0.0 <= regret < 2e-3  # only the action grid's resolution
    assert planning_regret(DynamicsModel(env.state_dim), env, batch.states) > 10 * regret


def test_vagram_beats_maximum_likelihood_with_distractors():
    env = DistractedPointMass(distractors=8, seed=0)
    gen = torch.Generator().manual_seed(0)
    data, test = env.transitions(2048, gen), env.transitions(512, gen)
    errors = {}
    for loss in ("mle", "vagram"):
        history, _ = train_model(env, data, test, loss=loss, steps=600, eval_every=300)
        errors[loss] = history["value_error"].iloc[-1]
        falls = "value_error" if loss == "vagram" else "mse"  # what each loss is after
        assert history[falls].iloc[-1] < history[falls].iloc[0], history
    assert errors["vagram"] < 0.5 * errors["mle"], errors
    with pytest.raises(ValueError, match="loss"):
        train_model(env, data, test, loss="vaml")


def test_consistency_loss_values():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(consistency_loss(z, t), torch.tensor([0.0, 4.0, 2.0]))


def test_tcrl_loss_against_a_plain_loop():
    env = DistractedPointMass(distractors=1, seed=0)
    gen = torch.Generator().manual_seed(0)
    chunk = env.trajectories(3, 2, gen)
    torch.manual_seed(0)
    enc, target, model = nn.Linear(3, 2), nn.Linear(3, 2), LatentModel(2, 1, (8,))
    rho = 0.5
    total = 0.0
    for h in range(2):
        per_row = []
        for n in range(3):
            z = enc(chunk.states[n, 0])
            for k in range(h + 1):
                z, r_hat = model(z.unsqueeze(0), chunk.actions[n, k].unsqueeze(0))
                z = z[0]
            zt = target(chunk.next_states[n, h])
            cos = float((z @ zt).detach()) / float((z.norm() * zt.norm()).detach())
            per_row.append(2 - 2 * cos + (float(r_hat.detach()) - float(chunk.rewards[n, h])) ** 2)
        total += rho**h * sum(per_row) / 3
    assert math.isclose(
        float(tcrl_loss(enc, target, model, chunk, rho).detach()), total / 2, rel_tol=1e-4
    )


def test_mrq_loss_against_a_plain_loop():
    env = DistractedPointMass(distractors=1, seed=0)
    chunk = env.trajectories(3, 2, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    enc, target = nn.Linear(3, 2), nn.Linear(3, 2)
    model = LatentModel(2, 1, (8,), reward_dim=len(MRQ_SUPPORT))
    total = 0.0
    for h in range(2):
        for n in range(3):
            z = enc(chunk.states[n, 0]).unsqueeze(0)
            for k in range(h + 1):
                z, logits = model(z, chunk.actions[n, k].unsqueeze(0))
            zt = target(chunk.next_states[n, h])
            dyn = float(((z[0] - zt) ** 2).mean().detach())
            # two-hot by hand: the two bins around r, weights by linear interpolation
            r = float(chunk.rewards[n, h])
            i = max(j for j in range(len(MRQ_SUPPORT)) if float(MRQ_SUPPORT[j]) <= r)
            lo, hi = float(MRQ_SUPPORT[i]), float(MRQ_SUPPORT[i + 1])
            w = (r - lo) / (hi - lo)
            logp = torch.log_softmax(logits[0].detach(), -1)
            ce = -((1 - w) * float(logp[i]) + w * float(logp[i + 1]))
            total += (dyn + 0.1 * ce) / 3
    assert math.isclose(float(mrq_loss(enc, target, model, chunk).detach()), total, rel_tol=1e-4)


@pytest.mark.parametrize("method", ["tcrl", "mrq"])
def test_latent_models_learn_features_that_beat_an_untrained_encoder(method):
    env = DistractedPointMass(distractors=16, seed=0)
    gen = torch.Generator().manual_seed(0)
    chunks = env.trajectories(2048, 3, gen)
    labelled, test = env.sample_states(128, gen), env.sample_states(512, gen)
    errors = {}
    for name in (method, "random"):
        history, encoder = train_representation(chunks, name, steps=1500)
        if name == "random":
            assert history.empty
        else:  # the target moves, so the loss need not fall; it stays finite
            assert len(history) == 15 and history["loss"].notna().all()
        fit, _ = fit_value_head(
            encoder(labelled), env.value(labelled), encoder(test), env.value(test), steps=1000
        )
        errors[name] = fit["test_mse"].iloc[-1]
    assert errors[method] < 0.5 * errors["random"], errors
    assert errors[method] < fit["constant_mse"].iloc[-1]
    with pytest.raises(ValueError, match="method"):
        train_representation(chunks, "vae")


def test_distractor_errors_is_pure_and_the_explorer_redraws():
    import pandas as pd

    from rlnb.widgets import distractor_errors, distractor_explorer

    table = pd.DataFrame(
        [
            {"distractors": n, "loss": loss, "seed": s, "value_error": (1 + n) * (s + 1) * (10 if loss == "mle" else 1), "mse": 1.0, "regret": 0.1}
            for n in (0, 4, 8)
            for loss in ("mle", "vagram")
            for s in (0, 1)
        ]
    )  # fmt: skip
    out = distractor_errors(table, 4)
    assert out == distractor_errors(table, 4)
    assert out["counts"] == [0, 4, 8]
    assert out["at"] == {"mle": 75.0, "vagram": 7.5}  # mean over seeds of 5·1·10 and 5·2·10
    assert out["curves"]["vagram"] == [1.5, 7.5, 13.5]
    with pytest.raises(ValueError, match="distractors"):
        distractor_errors(table, 3)
    with pytest.raises(ValueError, match="metric"):
        distractor_errors(table, 4, "return")
    box = distractor_explorer(table)
    controls = box.children[1].children
    assert [c.description for c in controls] == ["distractors", "metric"]
    assert controls[0].value == 4
    controls[0].value = 8  # fires the callback; must not raise
    controls[1].value = "regret"


# ---- action-free trajectories: inverse-dynamics labels and value pretraining ----------------


class TrueQ(nn.Module):
    def __init__(self, env):
        super().__init__()
        self.env = env

    def forward(self, states, actions):
        return self.env.q_value(states, actions)


def test_greedy_actions_and_max_q_against_loops():
    from rlnb.train.action_free import greedy_actions, max_q

    env = DistractedPointMass(distractors=1, seed=0)
    states = env.sample_states(5, torch.Generator().manual_seed(0))
    grid = torch.linspace(-2, 2, 9)
    q = TrueQ(env)
    chosen, best = greedy_actions(q, states, grid), max_q(q, states, grid)
    for n in range(5):
        values = [float(env.q_value(states[n : n + 1], a.view(1, 1))) for a in grid]
        k = max(range(9), key=lambda i: values[i])
        assert float(chosen[n]) == float(grid[k])
        assert math.isclose(float(best[n]), values[k], rel_tol=1e-6)


def test_fitted_q_target_against_a_loop():
    from rlnb.train.action_free import fitted_q_target

    env = DistractedPointMass(distractors=1, seed=0)
    batch = env.transitions(4, torch.Generator().manual_seed(1))
    grid = torch.linspace(-1, 1, 5)
    y = fitted_q_target(TrueQ(env), batch.rewards, batch.next_states, 0.5, grid)
    for n in range(4):
        best = max(float(env.q_value(batch.next_states[n : n + 1], a.view(1, 1))) for a in grid)
        assert math.isclose(float(y[n]), float(batch.rewards[n]) + 0.5 * best, rel_tol=1e-6)


def test_greedy_regret_is_zero_for_the_true_q_and_positive_otherwise():
    from rlnb.train.action_free import EncodedQ, greedy_regret, q_error
    from rlnb.train.representation import make_encoder

    env = DistractedPointMass(distractors=2, seed=0)
    gen = torch.Generator().manual_seed(0)
    states, grid = env.sample_states(256, gen), torch.linspace(-3, 3, 25)
    assert greedy_regret(TrueQ(env), env, states, grid) == 0.0
    assert q_error(TrueQ(env), env, states, torch.zeros(256, 1)) == 0.0
    torch.manual_seed(0)
    assert greedy_regret(EncodedQ(make_encoder(4, 8), 8), env, states, grid) > 0.1


def test_inverse_dynamics_recovers_the_actions():
    from rlnb.train.action_free import fit_inverse_dynamics, label_actions

    env = DistractedPointMass(distractors=4, seed=0)
    gen = torch.Generator().manual_seed(0)
    labelled, free = (
        env.transitions(128, gen, max_action=3.0),
        env.transitions(512, gen, max_action=3.0),
    )
    idm = fit_inverse_dynamics(labelled)
    labels = label_actions(idm, free)
    assert torch.equal(labels.states, free.states) and torch.equal(labels.rewards, free.rewards)
    error = float((labels.actions - free.actions).abs().mean())
    assert error < 0.1 * float(free.actions.abs().mean()), error


def test_value_pretraining_learns_the_behaviour_value_without_actions():
    from rlnb.train.action_free import pretrain_value

    env = DistractedPointMass(distractors=2, seed=0)
    free = env.transitions(2048, torch.Generator().manual_seed(0), max_action=3.0)
    free_no_actions = free._replace(actions=torch.full_like(free.actions, float("nan")))
    history, encoder = pretrain_value(free_no_actions, env.gamma, steps=500)  # never reads actions
    assert history["td_loss"].notna().all()
    assert history["td_loss"].iloc[-1] < history["td_loss"].iloc[0]
    assert encoder(free.states[:4]).shape == (4, 8)


def test_action_free_comparison_runs_each_arm_and_labels_help():
    from rlnb.train.action_free import ARMS, action_free_comparison

    env = DistractedPointMass(distractors=4, seed=0)
    gen = torch.Generator().manual_seed(0)
    labelled = env.transitions(64, gen, max_action=3.0)
    free = env.transitions(1024, gen, max_action=3.0)
    test = env.sample_states(256, gen)
    table, histories = action_free_comparison(
        env,
        labelled,
        free,
        test,
        torch.linspace(-3, 3, 13),
        arms=("none", "inverse dynamics"),
        steps=600,
        pretrain_steps=100,
    )
    assert list(table.index) == ["none", "inverse dynamics"]
    assert table.loc["inverse dynamics", "transitions"] == 64 + 1024
    assert table.loc["inverse dynamics", "regret"] < 0.5 * table.loc["none", "regret"], table
    assert set(histories) == {"none", "inverse dynamics"} and "q_mse" in histories["none"]
    assert set(ARMS) >= {"value pretraining", "reconstruction pretraining", "all actions"}
    with pytest.raises(ValueError, match="arms"):
        action_free_comparison(env, labelled, free, test, torch.linspace(-1, 1, 3), arms=("video",))


def test_no_distractors_and_bad_arguments():
    from rlnb.train.action_free import fit_inverse_dynamics, pretrain_value
    from rlnb.train.vagram import distractor_sweep

    env = DistractedPointMass(distractors=0)
    gen = torch.Generator().manual_seed(0)
    batch = env.transitions(16, gen)
    assert batch.states.shape == (16, 2) and torch.equal(
        env.P, DistractedPointMass(distractors=3).P
    )
    with pytest.raises(ValueError, match="steps"):
        fit_value_head(batch.states, batch.rewards, batch.states, batch.rewards, steps=0)
    with pytest.raises(ValueError, match="gamma"):
        pretrain_value(batch, gamma=1.0)
    with pytest.raises(ValueError, match="steps"):
        fit_inverse_dynamics(batch, steps=0)
    with pytest.raises(ValueError, match="n_actions"):
        planning_regret(TrueModel(env), env, batch.states, n_actions=0)
    with pytest.raises(ValueError, match="counts"):
        distractor_sweep([])
    with pytest.raises(ValueError, match="steps"):
        train_model(env, batch, batch, steps=0)
