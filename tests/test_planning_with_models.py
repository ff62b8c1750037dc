"""Notebook 07d's pieces: GrASP's tree search and affordances over a value-equivalent model, and
fitted value iteration in learned models with a Lipschitz-regularized value."""

import pandas as pd
import pytest
import torch

from rlnb.envs.point_mass import Batch, DistractedPointMass
from rlnb.train.affordances import (
    AffordanceNet,
    GridAffordances,
    RandomAffordances,
    ValueEquivalentModel,
    affordance_sweep,
    planning_value,
    search_regret,
    train_affordances,
    train_value_equivalent_model,
    tree_q,
    value_equivalent_loss,
)
from rlnb.train.lipschitz import (
    VARIANTS,
    StateValueNet,
    TrueDynamics,
    Variant,
    adversarial_perturbation,
    lipschitz_comparison,
    model_backup,
    model_value_iteration,
    slope,
    train_models,
)
from rlnb.train.vagram import planning_regret
from rlnb.widgets import affordance_explorer, affordance_regrets


def plain_tree_value(model, affordances, z, depth, gamma):
    """One latent state ``z [L]`` at a time, child by child."""
    if depth == 0:
        return float(model.value(z[None])[0])
    best = None
    for a in affordances(z[None])[0]:
        next_z, r = model.step(z[None], a.view(1, 1))
        q = float(r[0]) + gamma * plain_tree_value(model, affordances, next_z[0], depth - 1, gamma)
        best = q if best is None else max(best, q)
    return best


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_tree_value_matches_a_plain_recursion(depth):
    torch.manual_seed(0)
    model = ValueEquivalentModel(state_dim=2, latent_dim=4, hidden=(8,))
    affordances = AffordanceNet(latent_dim=4, k=3, max_action=2.0, hidden=(8,))
    z = model.encode(torch.randn(5, 2))
    with torch.no_grad():
        fast = planning_value(model, affordances, z, depth, 0.9)
        slow = torch.tensor(
            [plain_tree_value(model, affordances, z[i], depth, 0.9) for i in range(5)]
        )
    assert torch.allclose(fast, slow, atol=1e-5)


def test_tree_q_and_affordances_shapes_and_ranges():
    torch.manual_seed(0)
    model = ValueEquivalentModel(state_dim=2, latent_dim=4, hidden=(8,))
    z = model.encode(torch.randn(6, 2))
    grid = GridAffordances(4, 3.0)
    q, actions = tree_q(model, grid, z, 2, 0.9)
    assert q.shape == actions.shape == (6, 4)
    assert torch.equal(actions[0], torch.tensor([-3.0, -1.0, 1.0, 3.0]))
    rand = RandomAffordances(5, 2.0, torch.Generator().manual_seed(0))(z)
    learned = AffordanceNet(4, 5, 2.0)(z)
    for a in (rand, learned):
        assert a.shape == (6, 5) and a.abs().max() <= 2.0
    with pytest.raises(ValueError, match="depth"):
        tree_q(model, grid, z, 0, 0.9)


def test_value_equivalent_loss_matches_a_loop():
    torch.manual_seed(0)
    env = DistractedPointMass(distractors=1, seed=0)
    chunk = env.trajectories(4, 3, torch.Generator().manual_seed(0))
    model = ValueEquivalentModel(env.state_dim, latent_dim=4, hidden=(8,)).requires_grad_(False)
    total = 0.0
    for n in range(4):
        z = model.encode(chunk.states[n, :1])
        for h in range(3):
            total += float((model.value(z)[0] - env.value(chunk.states[n, h])) ** 2) / 4
            z, r = model.step(z, chunk.actions[n, h : h + 1])
            total += float((r[0] - chunk.rewards[n, h]) ** 2) / 4
        total += float((model.value(z)[0] - env.value(chunk.next_states[n, 2])) ** 2) / 4
    assert float(value_equivalent_loss(model, chunk, env.value)) == pytest.approx(
        total / 3, rel=1e-5
    )


@pytest.fixture(scope="module")
def grasp_setup():
    env = DistractedPointMass(distractors=0, seed=0)
    gen = torch.Generator().manual_seed(1)
    chunks = env.trajectories(1024, 3, gen, max_action=4.0)
    test = env.sample_states(256, gen)
    history, model = train_value_equivalent_model(env, chunks, test, steps=600, seed=0)
    return env, model, env.sample_states(1024, gen), test, history


def test_value_equivalent_model_learns_the_value(grasp_setup):
    *_, history = grasp_setup
    assert history.value_mse.iloc[-1] < 0.2 * history.value_mse.iloc[0]
    assert history.value_mse.iloc[-1] < 0.2 * history.constant_mse.iloc[0]


def test_grasp_affordances_beat_random_ones_at_equal_budget(grasp_setup):
    env, model, states, test, _ = grasp_setup
    history, learned = train_affordances(model, env, states, test, k=3, depth=2, steps=150)
    random = RandomAffordances(3, 4.0, torch.Generator().manual_seed(0))
    assert history.regret.iloc[-1] < history.regret.iloc[0]
    assert search_regret(model, learned, env, test, 2) < 0.5 * search_regret(
        model, random, env, test, 2
    )
    assert search_regret(model, learned, env, test, 2) >= 0
    with pytest.raises(ValueError, match="k, depth"):
        train_affordances(model, env, states, test, k=0)


def test_affordance_sweep_and_widget(grasp_setup):
    env, model, states, test, _ = grasp_setup
    table = affordance_sweep(model, env, states, test, ks=[1, 2], steps=20)
    assert set(table.method) == {"grasp", "random", "grid"} and len(table) == 6
    out = affordance_regrets(table, 2)
    assert out["counts"] == [1, 2]
    assert out["at"]["grid"] == pytest.approx(
        float(table.query("k == 2 and method == 'grid'").regret.iloc[0])
    )
    with pytest.raises(ValueError, match="k"):
        affordance_regrets(table, 5)
    with pytest.raises(ValueError, match="ks"):
        affordance_sweep(model, env, states, test, ks=[])
    box = affordance_explorer(table)
    (slider,) = box.children[1].children
    assert slider.description == "K" and slider.value == 1
    slider.value = 2  # fires the callback; must not raise


def test_adversarial_perturbation_stays_in_the_box_and_finds_a_larger_change():
    torch.manual_seed(0)
    value = StateValueNet(2, hidden=(32,))
    s = torch.randn(512, 2)
    gen = torch.Generator().manual_seed(0)
    delta = adversarial_perturbation(value, s, 0.1, gen)
    assert delta.abs().max() <= 0.1 + 1e-7
    random = 0.1 * (2 * torch.rand(s.shape, generator=gen) - 1)
    with torch.no_grad():
        adv_gap = ((value(s + delta) - value(s)) ** 2).mean()
        rand_gap = ((value(s + random) - value(s)) ** 2).mean()
    assert adv_gap > 2 * rand_gap


def test_spectral_value_is_scale_lipschitz():
    torch.manual_seed(0)
    value = StateValueNet(2, spectral=True, scale=5.0)
    for _ in range(20):  # power iterations converge over forward passes
        value(torch.randn(8, 2))
    sigma = [
        torch.linalg.matrix_norm(m.weight, 2) for m in value.net if isinstance(m, torch.nn.Linear)
    ]
    assert all(abs(float(s) - 1) < 0.05 for s in sigma)
    states = 3 * torch.randn(2048, 2)
    assert slope(value, states) <= 5.0 * 1.05
    plain = StateValueNet(2)
    assert slope(plain, states) > 0


def test_model_backup_matches_a_loop():
    env = DistractedPointMass(distractors=0, seed=0)
    torch.manual_seed(0)
    models = [TrueDynamics(env), lambda s, a: env.step(s, a)[0] + 0.1]
    value = StateValueNet(2, hidden=(8,))
    s = env.sample_states(16, torch.Generator().manual_seed(0))
    grid = torch.linspace(-2, 2, 5)
    with torch.no_grad():
        fast = model_backup(models, env, value, s, grid, torch.Generator().manual_seed(3))
        member = torch.randint(2, (16,), generator=torch.Generator().manual_seed(3))
        for i in range(16):
            m = models[int(member[i])]
            qs = [
                float(
                    env.step(s[i : i + 1], a.view(1, 1))[1]
                    + env.gamma * value(m(s[i : i + 1], a.view(1, 1)))
                )
                for a in grid
            ]
            assert float(fast[i]) == pytest.approx(max(qs), abs=1e-5)


def test_train_models_bootstraps_only_an_ensemble():
    env = DistractedPointMass(distractors=0, seed=0)
    data = env.transitions(32, torch.Generator().manual_seed(0), max_action=4.0)
    single = train_models(data, 1, steps=50)
    members = train_models(data, 3, steps=50)
    x = data.states[:4], data.actions[:4]
    assert len(single) == 1 and len(members) == 3
    assert not torch.allclose(members[0](*x), members[1](*x))
    with pytest.raises(ValueError, match="n, steps"):
        train_models(data, 0)


def test_value_iteration_in_the_true_model_learns_and_planning_regret_takes_a_value():
    env = DistractedPointMass(distractors=0, seed=0)
    test = env.sample_states(512, torch.Generator().manual_seed(0))
    history, value = model_value_iteration(env, [TrueDynamics(env)], test, steps=400)
    assert history.value_mse.iloc[-1] < 0.5 * history.value_mse.iloc[0]
    assert history.value_mse.iloc[-1] < history.constant_mse.iloc[0]
    truth = TrueDynamics(env)
    assert planning_regret(truth, env, test, 4.0, 21, env.value) == planning_regret(
        truth, env, test, 4.0, 21
    )
    assert planning_regret(truth, env, test, 4.0, 21, value) >= 0
    with pytest.raises(ValueError, match="models"):
        model_value_iteration(env, [], test)


def test_lipschitz_comparison_runs_every_arm():
    env = DistractedPointMass(distractors=0, seed=0)
    gen = torch.Generator().manual_seed(0)
    data = env.transitions(32, gen, max_action=4.0)
    test = env.sample_states(128, gen)
    variants = {"single model": Variant(), "ensemble of 2": Variant(models=2)}
    table, histories, values = lipschitz_comparison(
        env, data, test, variants, model_steps=20, value_steps=20
    )
    assert list(table.index) == ["single model", "ensemble of 2", "true model"]
    assert table.loc["true model", "model_mse"] == 0
    assert table.notna().all().all() and set(histories) == set(values) == set(table.index)
    assert set(VARIANTS) == {"single model", "spectral norm", "adversarial", "ensemble of 5"}
    assert isinstance(table, pd.DataFrame) and isinstance(data, Batch)
