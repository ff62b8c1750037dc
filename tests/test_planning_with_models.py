"""Notebook 07d's pieces: GrASP's tree search and affordances over a value-equivalent model, and
fitted value iteration in learned models with a Lipschitz-regularized value."""

import pytest
import torch

from rlnb.envs.point_mass import Batch, DistractedPointMass
from rlnb.train.affordances import (
    AffordanceNet,
    GridAffordances,
    RandomAffordances,
    ValueEquivalentModel,
    affordance_sweep,
    plan,
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
    adversarial_penalty,
    adversarial_perturbation,
    bootstrap_rows,
    lipschitz_comparison,
    model_backup,
    model_value_iteration,
    slope,
    train_models,
)
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
    assert torch.allclose(actions[0], torch.tensor([-2.25, -0.75, 0.75, 2.25]))
    assert GridAffordances(1, 3.0)(z)[0].tolist() == [0.0]
    rand = RandomAffordances(5, 2.0, torch.Generator().manual_seed(0))(z)
    learned = AffordanceNet(4, 5, 2.0)(z)
    for a in (rand, learned):
        assert a.shape == (6, 5) and a.abs().max() <= 2.0
    with pytest.raises(ValueError, match="depth"):
        tree_q(model, grid, z, 0, 0.9)
    for make in (lambda: GridAffordances(0, 1.0), lambda: AffordanceNet(4, 2, 0.0)):
        with pytest.raises(ValueError, match="k, max_action"):
            make()


def test_plan_takes_the_root_argmax_and_regret_scores_it_in_the_true_task():
    torch.manual_seed(0)
    env = DistractedPointMass(distractors=0, seed=0)
    model = ValueEquivalentModel(state_dim=2, latent_dim=4, hidden=(8,)).requires_grad_(False)
    affordances = AffordanceNet(4, 3, 2.0, hidden=(8,))
    states = env.sample_states(6, torch.Generator().manual_seed(0))
    chosen = plan(model, affordances, states, 2, env.gamma)
    regret = 0.0
    with torch.no_grad():
        for i in range(6):
            z = model.encode(states[i : i + 1])
            best_q, best_a = None, None
            for a in affordances(z)[0]:
                next_z, r = model.step(z, a.view(1, 1))
                q = float(r[0]) + env.gamma * float(
                    planning_value(model, affordances, next_z, 1, env.gamma)[0]
                )
                if best_q is None or q > best_q:
                    best_q, best_a = q, a
            assert float(chosen[i, 0]) == pytest.approx(float(best_a))
            s = states[i : i + 1]
            regret += float(env.value(s)[0] - env.q_value(s, best_a.view(1, 1))[0]) / 6
    assert search_regret(model, affordances, env, states, 2) == pytest.approx(regret, rel=1e-5)


def test_the_planning_gradient_reaches_every_affordance_weight_and_no_model_weight():
    torch.manual_seed(0)
    model = ValueEquivalentModel(state_dim=2, latent_dim=4, hidden=(8,)).requires_grad_(False)
    affordances = AffordanceNet(4, 3, 2.0, hidden=(8,))
    planning_value(model, affordances, model.encode(torch.randn(16, 2)), 2, 0.9).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in affordances.parameters())
    assert all(p.grad is None for p in model.parameters())


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


def test_adversarial_perturbation_matches_the_fgsm_formula_row_by_row():
    torch.manual_seed(0)
    value = StateValueNet(2, hidden=(16,))
    s = torch.randn(8, 2)
    eps = 0.1
    delta = adversarial_perturbation(value, s, eps, torch.Generator().manual_seed(5))
    start = eps * (2 * torch.rand(s.shape, generator=torch.Generator().manual_seed(5)) - 1)
    for i in range(8):
        d0 = start[i].clone().requires_grad_(True)
        gap = (value(s[i : i + 1] + d0)[0] - value(s[i : i + 1])[0].detach()) ** 2
        (grad,) = torch.autograd.grad(gap, d0)
        expected = (start[i] + eps * grad.sign()).clamp(-eps, eps)
        assert torch.allclose(delta[i], expected, atol=1e-6)
    gen = torch.Generator().manual_seed(5)
    penalty = adversarial_penalty(value, s, eps, gen)
    with torch.no_grad():
        assert float(penalty) == pytest.approx(
            float(((value(s + delta) - value(s)) ** 2).mean()), rel=1e-5
        )
    with pytest.raises(ValueError, match="epsilon"):
        adversarial_perturbation(value, s, 0.0, gen)


def test_slope_matches_finite_differences():
    torch.manual_seed(0)
    value = StateValueNet(2, hidden=(16,)).double().requires_grad_(False)
    s = torch.randn(32, 2, dtype=torch.float64)
    h = 1e-6
    norms = []
    for i in range(32):
        g = [
            (float(value(s[i : i + 1] + h * e) - value(s[i : i + 1] - h * e)) / (2 * h))
            for e in torch.eye(2, dtype=torch.float64)
        ]
        norms.append((g[0] ** 2 + g[1] ** 2) ** 0.5)
    assert slope(value, s) == pytest.approx(max(norms), rel=1e-4)


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
        torch.linalg.matrix_norm(m.weight.detach(), 2) for m in value.net if isinstance(m, torch.nn.Linear)
    ]
    assert all(abs(float(s) - 1) < 0.05 for s in sigma)
    states = 3 * torch.randn(2048, 2)
    assert slope(value, states) <= 5.0 * 1.05**3
    with pytest.raises(ValueError, match="scale"):
        StateValueNet(2, scale=0.0)


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


def test_bootstrap_rows_and_a_single_model_sees_all_the_data():
    rows = bootstrap_rows(50, 3, torch.Generator().manual_seed(0))
    assert rows.shape == (3, 50) and rows.min() >= 0 and rows.max() < 50
    assert all(len(r.unique()) < 50 for r in rows)  # drawn with replacement
    env = DistractedPointMass(distractors=0, seed=0)
    data = env.transitions(32, torch.Generator().manual_seed(0), max_action=4.0)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    shuffled = Batch(*(f[perm] for f in data))
    x = data.states[:4], data.actions[:4]
    # full-batch least squares does not depend on the rows' order; a resample would
    assert torch.allclose(
        train_models(data, 1, steps=30)[0](*x),
        train_models(shuffled, 1, steps=30)[0](*x),
        atol=1e-5,
    )
    members, members_shuffled = train_models(data, 2, steps=30), train_models(shuffled, 2, steps=30)
    assert not torch.allclose(members[0](*x), members_shuffled[0](*x), atol=1e-3)
    with pytest.raises(ValueError, match="n, steps"):
        train_models(data, 0)


def test_value_iteration_in_the_true_model_learns():
    env = DistractedPointMass(distractors=0, seed=0)
    test = env.sample_states(512, torch.Generator().manual_seed(0))
    history, _ = model_value_iteration(env, [TrueDynamics(env)], test, steps=400)
    assert history.value_mse.iloc[-1] < 0.5 * history.value_mse.iloc[0]
    assert history.value_mse.iloc[-1] < history.constant_mse.iloc[0]
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
    assert table.loc["single model", "model_mse"] > 0
    assert set(VARIANTS) == {"single model", "spectral norm", "adversarial", "ensemble of 5"}
