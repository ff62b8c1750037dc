import itertools
import math

import ipywidgets as W
import numpy as np
import pytest
import torch

from rlnb.envs.tabular import chain
from rlnb.widgets import explorer, tour_estimates, tour_explorer


@pytest.mark.parametrize("alpha,gamma", list(itertools.product([0.01, 0.1, 0.5], [0.5, 0.9, 1.0])))
def test_tour_estimates_on_a_grid(alpha, gamma):
    est = tour_estimates(alpha, gamma, episodes=200, seed=1)
    policy = torch.tensor([[0.3, 0.7]], dtype=torch.float64).expand(7, 2)
    torch.testing.assert_close(est["exact"], chain(7, gamma=gamma).evaluate(policy).V)
    assert est["mc"].shape == est["td"].shape == (7,)
    assert est["mc_rmse"].shape == est["td_rmse"].shape == (200,)
    for v in est.values():
        assert torch.isfinite(v).all()
    # learning happened: both end closer to the exact values than the all-zero start
    start = est["exact"][:-1].pow(2).mean().sqrt()
    assert est["mc_rmse"][-50:].mean() < start and est["td_rmse"][-50:].mean() < start


def test_tour_estimates_is_pure():
    a, b = tour_estimates(0.1, 0.9, 50, seed=3), tour_estimates(0.1, 0.9, 50, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_explorer_draws_once_and_on_every_change():
    calls = []
    slider = W.FloatSlider(value=0.1)
    box = explorer({"x": slider}, lambda x: calls.append(x))
    assert calls == [0.1]
    slider.value = 0.3
    assert calls == [0.1, 0.3]
    assert isinstance(box, W.VBox) and box.output is not None


def test_tour_explorer_builds_and_redraws():
    box = tour_explorer(episodes=30)
    sliders = [c for c in box.children[1].children if isinstance(c, W.FloatSlider)]
    assert [s.description for s in sliders] == ["α", "γ"]
    sliders[0].value = 0.2  # fires the callback; must not raise


@pytest.mark.parametrize("lmbda", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("seed", [0, 5])
def test_lambda_return_example_on_a_grid(lmbda, seed):
    from rlnb.widgets import lambda_return_example

    ex = lambda_return_example(lmbda, seed)
    torch.testing.assert_close(ex["weights"].sum(), torch.tensor(1.0, dtype=torch.float64))
    assert (ex["weights"] >= 0).all()
    torch.testing.assert_close(ex["weighted_sum"], ex["lambda_return"])
    if lmbda == 0.0:  # the TD target
        torch.testing.assert_close(ex["lambda_return"], ex["n_step"][0])
    if lmbda == 1.0:  # the Monte Carlo return: ±1 on the 19-state walk
        torch.testing.assert_close(ex["lambda_return"], ex["n_step"][-1])
        assert abs(ex["lambda_return"].item()) == 1.0


def test_lambda_return_weights_errors_and_explorer():
    from rlnb.widgets import lambda_return_explorer, lambda_return_weights

    torch.testing.assert_close(
        lambda_return_weights(0.5, 3), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="lmbda"):
        lambda_return_weights(1.5, 3)
    with pytest.raises(ValueError, match="horizon"):
        lambda_return_weights(0.5, 0)
    box = lambda_return_explorer()
    box.children[1].children[0].value = 0.3  # fires the callback; must not raise


@pytest.mark.parametrize("gamma", [0.5, 0.95])
@pytest.mark.parametrize("lmbda", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("critic_error", [0.0, 0.3])
def test_gae_example_on_a_grid(gamma, lmbda, critic_error):
    from rlnb.widgets import gae_example

    ex = gae_example(gamma, lmbda, critic_error, seed=2, episodes=3)
    assert ex["advantages"].shape == ex["exact"].shape and torch.isfinite(ex["advantages"]).all()
    if critic_error == 0.0 and lmbda == 0.0:
        # with the exact critic, the TD error is an unbiased one-sample estimate of A: check on average
        many = gae_example(gamma, 0.0, 0.0, seed=2, episodes=400)
        assert (many["advantages"] - many["exact"]).mean().abs() < 0.01


def test_gridworld_task_and_explorer():
    from rlnb.widgets import gae_explorer, gridworld_task

    task = gridworld_task(0.9, 0.0, seed=1)
    torch.testing.assert_close(task["critic"], task["exact"].V)
    with pytest.raises(ValueError, match="critic_error"):
        gridworld_task(0.9, -1.0)
    box = gae_explorer()
    box.children[1].children[1].value = 0.5  # λ slider fires the callback


@pytest.mark.parametrize("rewards", ["1, 0, 0, 0", "1 1 0 1", "0 0 0 0", "2.5, -1, 0.5", "1"])
def test_group_advantage_table_on_examples(rewards):
    from rlnb.widgets import group_advantage_table

    t = group_advantage_table(rewards)
    assert t.shape[1] == len(rewards.replace(",", " ").split()) and t.notna().all().all()
    if len(set(rewards.replace(",", " ").split())) == 1:  # all equal: no group-relative signal
        assert (t.drop(index="pvpo") == 0).all().all()


def test_group_widgets_errors_and_build():
    from rlnb.widgets import (
        aggregation_explorer,
        aggregation_weights,
        group_advantage_table,
        group_explorer,
    )

    with pytest.raises(ValueError, match="rewards"):
        group_advantage_table("1, x")
    with pytest.raises(ValueError, match="lengths"):
        aggregation_weights([0, 3])
    w = aggregation_weights([2, 8])
    assert w.loc[2, "seq-mean-token-mean"] == pytest.approx(4 * w.loc[8, "seq-mean-token-mean"])
    box = group_explorer()
    box.children[1].children[0].value = "1 1 1 1"  # fires the callback
    box.children[1].children[1].value = ()  # no estimator picked: a message, no error
    aggregation_explorer().children[1].children[0].value = 128


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "qae"])
@pytest.mark.parametrize(
    "loss", ["ppo", "gspo", "cispo", "sapo", "gmpo", "dppo", "dro", "cov", "gpg", "vespo", "luspo"]
)
@pytest.mark.parametrize("drift", [0.0, 0.4, 1.5])
def test_loss_token_weights_on_a_grid(estimator, loss, drift):
    from rlnb.widgets import loss_token_weights

    out = loss_token_weights("1, 0, 0, 1", estimator, loss, drift)
    w = out["weights"].to_numpy()
    pad = np.isnan(w)
    assert pad.sum() == sum(8 - n for n in (2, 4, 6, 8)) and np.isfinite(w[~pad]).all()
    if drift == 0:  # on policy every loss weighs ∇log π_t by A_t
        np.testing.assert_allclose(w, np.repeat(out["advantages"][:, None], 8, 1) + 0 * w)
    if loss == "gpg":  # the plain policy gradient at any drift
        np.testing.assert_allclose(w, np.repeat(out["advantages"][:, None], 8, 1) + 0 * w)


def test_loss_zoo_widget_errors_and_build():
    from rlnb.widgets import loss_token_weights, loss_zoo_explorer

    with pytest.raises(ValueError, match="drift"):
        loss_token_weights(drift=-1.0)
    with pytest.raises(ValueError, match="loss"):
        loss_token_weights(loss="ppo2")
    box = loss_zoo_explorer()
    controls = box.children[1].children
    controls[2].value = "vespo"  # fires the callback
    controls[3].value = 1.2
    controls[0].value = "1, x"  # a message, no error


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_passk_table_on_random_counts(seed):
    from rlnb.widgets import passk_table

    g = torch.Generator().manual_seed(seed)
    counts = {t: torch.randint(0, 17, (50,), generator=g) for t in (0.5, 1.0, 1.5)}
    table = passk_table(counts, 16)
    assert list(table.index) == [1, 2, 4, 8, 16] and list(table.columns) == [0.5, 1.0, 1.5]
    for t, c in counts.items():
        assert table[t].is_monotonic_increasing
        assert abs(table.loc[1, t] - (c / 16).double().mean().item()) < 1e-12
        assert abs(table.loc[16, t] - (c > 0).double().mean().item()) < 1e-12
    with pytest.raises(ValueError, match="n_correct"):
        passk_table({}, 16)


def test_passk_explorer_redraws_on_temperature():
    from rlnb.widgets import passk_explorer

    counts = {0.5: torch.tensor([0, 8, 16]), 1.0: torch.tensor([2, 4, 6])}
    box = passk_explorer(counts, 16)
    slider = box.children[1].children[0]
    assert slider.options == (0.5, 1.0)
    slider.value = 1.0  # redraws; must not raise


@pytest.mark.parametrize("kl,entropy", [(0.0, 0.0), (1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (2.0, 0.1)])
def test_mdvi_curves_on_a_grid(kl, entropy):
    from rlnb.widgets import mdvi_curves

    table = mdvi_curves(kl, entropy, iterations=60)
    assert list(table.columns) == ["VI", "MDVI"] and table.index.is_monotonic_increasing
    assert (table >= 0).all().all() and table.notna().all().all()
    reference = mdvi_curves(0.0, 0.0, iterations=60)
    assert table["VI"].equals(reference["VI"])  # the VI curve does not depend on the sliders
    if kl == entropy == 0.0:
        assert table["MDVI"].equals(table["VI"])


def test_mdvi_explorer_builds_and_redraws():
    from rlnb.widgets import mdvi_explorer

    box = mdvi_explorer(iterations=30)
    sliders = box.children[1].children
    assert [s.description for s in sliders] == ["KL λ", "entropy κ"]
    sliders[1].value = 0.5  # redraws; must not raise


@pytest.mark.parametrize(
    "x,sigma_ratio,n_bins", [(0.0, 0.75, 21), (1.3, 0.3, 11), (-4.9, 2.0, 51), (7.0, 0.75, 21)]
)
def test_target_distributions_on_a_grid(x, sigma_ratio, n_bins):
    from rlnb.widgets import target_distributions

    table = target_distributions(x, sigma_ratio, n_bins)
    assert len(table) == n_bins and (table >= 0).all().all()
    assert abs(table.sum() - 1).max() < 1e-12
    clipped = min(max(x, table.index[0]), table.index[-1])
    assert abs((table["two-hot"] * table.index).sum() - clipped) < 1e-9  # two-hot decodes exactly


def test_hl_gauss_explorer_builds_and_redraws():
    from rlnb.widgets import hl_gauss_explorer

    box = hl_gauss_explorer()
    sliders = box.children[1].children
    assert [s.description for s in sliders] == ["target", "σ / bin", "bins"]
    sliders[1].value = 2.0  # redraws; must not raise


def _stub_tree():
    """root → a (inner: leaves a1 r=1, a2 r=0), b (leaf r=1); a second prompt's root alone."""
    from rlnb.decoding.tree import Tree

    return Tree(
        prompts=["p=", "q="],
        parent=torch.tensor([-1, -1, 0, 0, 2, 2]),
        depth=torch.tensor([0, 0, 1, 1, 2, 2]),
        prompt_index=torch.tensor([0, 1, 0, 0, 0, 0]),
        start=torch.zeros(6, dtype=torch.long),
        end=torch.zeros(6, dtype=torch.long),
        tokens=torch.zeros(0, dtype=torch.long),
        logprobs=torch.zeros(0),
        is_leaf=torch.tensor([False, True, False, True, True, True]),
        reward=torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
        text=["", "", "a;", "b", "1", "2"],
    )


@pytest.mark.parametrize("leaf", [0, 1, 2])
def test_tree_layout_on_a_hand_built_tree(leaf):
    from rlnb.decoding.tree import prefix_values
    from rlnb.widgets import tree_layout

    tree = _stub_tree()
    values, _ = prefix_values(tree)
    layout = tree_layout(tree, values, prompt=0, leaf=leaf)
    assert layout["nodes"] == [0, 2, 4, 5, 3]  # depth first
    assert layout["leaves"] == [4, 5, 3]
    x = dict(zip(layout["nodes"], layout["x"]))
    assert (x[4], x[5], x[3]) == (0.0, 1.0, 2.0) and x[2] == 0.5 and x[0] == (0.5 + 2.0) / 2
    assert dict(zip(layout["nodes"], layout["y"])) == {0: 0, 2: -1, 4: -2, 5: -2, 3: -1}
    assert len(layout["edges"]) == 4
    path = layout["path"]
    assert path[0] == 0 and path[-1] == layout["leaves"][leaf] and tree.is_leaf[path[-1]]
    assert [s for s, _ in layout["steps"]][0] == "p="
    assert layout["value"][0] == pytest.approx(values[0].item())  # (0.5 + 1) / 2
    assert values[0].item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="leaf"):
        tree_layout(tree, values, 0, leaf=3)
    with pytest.raises(ValueError, match="prompt"):
        tree_layout(tree, values, prompt=2)
    with pytest.raises(ValueError, match="values"):
        tree_layout(tree, values[:3])


def test_tree_explorer_redraws_on_leaf():
    from rlnb.decoding.tree import prefix_values
    from rlnb.widgets import tree_explorer

    tree = _stub_tree()
    box = tree_explorer(tree, prefix_values(tree)[0])
    slider = box.children[1].children[0]
    assert (slider.min, slider.max) == (0, 2)
    slider.value = 2  # redraws; must not raise


def test_step_score_table_and_explorer():
    from rlnb.widgets import step_score_explorer, step_score_table

    steps = ["3+4=7", "7*2=15", "15"]
    scores = {"oracle": [1, 0, 0], "PRM": [0.9, 0.2, 0.1]}
    table = step_score_table(steps, scores)
    assert list(table.index) == steps and list(table.columns) == ["oracle", "PRM"]
    assert table.loc["7*2=15", "PRM"] == 0.2 and table.dtypes.eq(float).all()
    with pytest.raises(ValueError, match=r"scores\['PRM'\]"):
        step_score_table(steps, {"PRM": [0.5]})
    box = step_score_explorer([("3+4*2=", "3+4=7;7*2=15;15", steps, scores)] * 2)
    slider = box.children[1].children[0]
    assert (slider.min, slider.max) == (0, 1)
    slider.value = 1  # redraws; must not raise


def test_path_loss_is_each_model_at_the_ends_and_the_widget_builds():
    from rlnb.envs.tasks import Addition
    from rlnb.models.lm import load_reasoner
    from rlnb.train.lm_sft import answer_batch, answer_loss
    from rlnb.widgets import path_loss, soup_path_explorer

    a, tok = load_reasoner("addition_sft_a")
    b, _ = load_reasoner("addition_sft_b")
    task = Addition(2)
    prompts = task.prompts(32, "test", seed=0)
    batch = answer_batch(tok, prompts, [task.answer(p) for p in prompts])
    with torch.no_grad():
        ends = [float(answer_loss(m, *batch)) for m in (a, b)]
    assert path_loss(a, b, 0.0, *batch) == pytest.approx(ends[0], abs=1e-6)
    assert path_loss(a, b, 1.0, *batch) == pytest.approx(ends[1], abs=1e-6)
    assert path_loss(a, b, 0.5, *batch) != pytest.approx(ends[0], abs=1e-4)
    box = soup_path_explorer(a, b, batch, [0.0, 0.5, 1.0], [ends[0], 0.2, ends[1]])
    box.children[1].children[0].value = 1.25  # fires the callback (an error would raise)
    with pytest.raises(ValueError, match="alphas"):
        soup_path_explorer(a, b, batch, [0.0, 0.5], [1.0, 1.0])


def test_token_weights_on_policy_are_the_advantages_and_the_batch_widget_builds():
    from rlnb.widgets import batch_weights_explorer, token_weights

    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(4)[None, :] < torch.tensor([4, 2, 3])[:, None]).double()
    old = -torch.rand(3, 4, generator=g, dtype=torch.float64) * mask
    adv = torch.tensor([1.0, -0.5, 0.25])[:, None].expand(3, 4)
    for loss in ("ppo", "gspo", "cispo", "sapo"):
        for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
            w = token_weights(loss, old, old, adv, mask, agg=agg)  # on policy: A in every mode
            torch.testing.assert_close(w, adv * mask)
        w = token_weights(loss, old, old, adv, mask)  # the loss's own default aggregation
        torch.testing.assert_close(w, adv * mask)
    moved = old + 0.5 * torch.randn(3, 4, generator=g, dtype=torch.float64) * mask
    box = batch_weights_explorer({0: old, 4: moved}, old, adv, mask, ["a", "b", "c"])
    box.children[1].children[1].value = 4  # fires the callback (an error would raise)
    box.children[1].children[0].value = "sapo"
    with pytest.raises(ValueError, match="snapshots"):
        batch_weights_explorer({}, old, adv, mask, ["a", "b", "c"])
    with pytest.raises(ValueError, match="labels"):
        batch_weights_explorer({0: old}, old, adv, mask, ["a", "b"])
    with pytest.raises(ValueError, match="losses"):
        batch_weights_explorer({0: old}, old, adv, mask, ["a", "b", "c"], losses=())


def test_kl_optimum_explorer_builds_and_redraws():
    """The callback's math is pinned in tests/test_beyond_group.py; here the widget itself."""
    from rlnb.widgets import kl_optimum_explorer, kl_regularized_optimum

    ref, r = [1e-3] + [0.999 / 3] * 3, [1.0, 0.0, 0.0, 0.0]
    box = kl_optimum_explorer(ref, r, beta=0.2)
    beta_slider, direction = box.children[1].children[:2]
    beta_slider.value = 1.0  # redraws; must not raise
    direction.value = "reverse"
    far = kl_regularized_optimum(ref, r, 1e3, "forward")
    np.testing.assert_allclose(far, ref, rtol=1e-2)  # a huge β keeps the reference


@pytest.mark.parametrize("coverage", [0.0, 0.3, 1.0])
def test_offline_values_on_a_grid(coverage):
    from rlnb.envs.tabular import gridworld
    from rlnb.widgets import offline_values
    from rlnb.widgets.offline import SIDE

    values = offline_values(coverage)
    assert list(values) == ["true", "FQI", "FQI + rollouts", "RAVL", "CQL", "data"]
    assert all(v.shape == (SIDE * SIDE,) and torch.isfinite(v).all() for v in values.values())
    v_star, _ = gridworld(SIDE, SIDE, slip=0.1, gamma=0.95).value_iteration()
    torch.testing.assert_close(values["true"], v_star)
    assert values["data"].sum() > 0
    # RAVL's min over ten tables is never above the single table's value where both are untrained
    unseen = values["data"] == 0
    if unseen.any():
        assert values["RAVL"][unseen].mean() < values["FQI"][unseen].mean()


def test_offline_explorer_builds_and_redraws():
    from rlnb.widgets import offline_explorer

    box = offline_explorer()
    slider = box.children[1].children[0]
    assert slider.description == "coverage"
    slider.value = 0.5  # redraws; must not raise


@pytest.mark.parametrize("kinds", [1, 2, 3])
def test_stitching_returns_on_a_grid(kinds):
    from rlnb.widgets import stitching_returns

    out = stitching_returns(kinds, steps=200)
    assert set(out["returns"]) == {"FQI", "RCSL", "MBRCSL"}
    assert all(0 <= v <= out["optimum"] + 1e-9 for v in out["returns"].values())
    assert out["visits"].shape == (5, 5) and out["visits"][0, 0] > 0
    if kinds < 3:  # the goal is not in the data: nothing can return more than the decoy
        assert max(out["returns"].values()) <= 0.5 * 0.95**3 + 1e-9


def test_stitching_explorer_builds_and_redraws():
    from rlnb.widgets import stitching_explorer

    box = stitching_explorer(kinds=1)
    slider = box.children[1].children[0]
    assert slider.description == "kinds"
    slider.value = 2  # redraws; must not raise


@pytest.mark.parametrize("alpha", [0.001, 0.1, 10.0])
def test_soft_values_on_a_grid(alpha):
    from rlnb.widgets import soft_values

    out = soft_values(alpha)
    assert out["V_soft"].shape == (4, 8) and out["entropy"].shape == (4, 8)
    assert (out["entropy"] >= 0).all() and (out["entropy"] <= math.log(4) + 1e-9).all()
    # the soft value adds a non-negative entropy bonus to the policy's own return
    assert out["policy_return"] - 1e-9 <= out["soft_value"]
    assert out["policy_return"] <= out["optimal_return"] + 1e-9
    if alpha == 0.001:
        assert out["policy_return"] > out["optimal_return"] - 0.05
    with pytest.raises(ValueError, match="alpha"):
        soft_values(0.0)


def test_soft_explorer_builds_and_redraws():
    from rlnb.widgets import soft_explorer

    box = soft_explorer(log10_alpha=-2.0)
    slider = box.children[1].children[0]
    assert slider.description == "log10 α" and slider.value < slider.max
    slider.value = 0.5  # redraws; must not raise
