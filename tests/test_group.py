"""Group baselines against DESIGN §7b's numbers and verl's / TRL's formulas re-derived here."""

import pytest
import torch

from rlnb.estimators import group as G

TWO_GROUPS = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1])


def close(a, b, tol=1e-6):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=0, atol=tol)


def test_design_reference_numbers():
    close(
        G.grpo(TWO_GROUPS, group_size=4),
        [1.499997, -0.499999, -0.499999, -0.499999, 0.499999, 0.499999, -1.499997, 0.499999],
    )
    close(
        G.grpo(TWO_GROUPS, group_size=4, eps=1e-4),
        [1.4997, -0.4999, -0.4999, -0.4999, 0.4999, 0.4999, -1.4997, 0.4999],
        1e-4,
    )
    close(G.dr_grpo(TWO_GROUPS, group_size=4), [0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25])
    third = 1 / 3
    close(G.rloo(TWO_GROUPS, group_size=4), [1, -third, -third, -third, third, third, -1, third])
    close(G.lite_ppo(TWO_GROUPS, group_size=4)[:2], [1.402859, -0.46762], 1e-5)
    for k in (0.4, 0.6):
        close(G.qae(TWO_GROUPS, group_size=4, k=k), [1, 0, 0, 0, 0, 0, -1, 0])
    # k = 0.8 on [0,0,0,1]: the order statistic r_(4) = 1 (easy-prompt regime: failures penalised)
    close(G.qae(torch.tensor([0.0, 0, 0, 1]), group_size=4, k=0.8), [-1, -1, -1, 0])


def random_groups(seed, n_groups=6, binary=False):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 7, (n_groups,), generator=g)
    ids = torch.repeat_interleave(torch.randperm(100, generator=g)[:n_groups], sizes)
    ids = ids[torch.randperm(len(ids), generator=g)]  # interleaved, unequal groups
    scores = (
        (torch.rand(len(ids), generator=g) < 0.5).double()
        if binary
        else torch.randn(len(ids), generator=g, dtype=torch.float64)
    )
    return scores, ids


def verl_grpo(scores, ids, eps=1e-6, norm=True):
    out = scores.clone()
    for i in range(len(scores)):
        grp = scores[ids == ids[i]]
        out[i] = (scores[i] - grp.mean()) / (grp.std() + eps) if norm else scores[i] - grp.mean()
    return out


def verl_rloo(scores, ids):
    out = scores.clone()
    for i in range(len(scores)):
        grp = scores[ids == ids[i]]
        n = len(grp)
        out[i] = scores[i] * n / (n - 1) - grp.mean() * n / (n - 1)
    return out


def verl_passk(scores, ids, eps=1e-6):
    out = torch.zeros_like(scores)
    for gid in ids.unique():
        pos = torch.nonzero(ids == gid).squeeze(1)
        r = scores[pos]
        top, idx = torch.topk(r, 2)
        out[pos[idx[0]]] = (top[0] - top[1]) / (r.std() + eps)
    return out


def trl_advantages(scores, G_, scale, eps=1e-4):
    r = scores.view(-1, G_)
    adv = (r - r.mean(1, keepdim=True)).view(-1)
    if scale == "group":
        return adv / (r.std(1).repeat_interleave(G_) + eps)
    if scale == "batch":
        return adv / (scores.std() + eps)
    return adv


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_verl_formulas_on_random_groups(seed):
    scores, ids = random_groups(seed)
    torch.testing.assert_close(G.grpo(scores, group_ids=ids), verl_grpo(scores, ids))
    torch.testing.assert_close(G.dr_grpo(scores, group_ids=ids), verl_grpo(scores, ids, norm=False))
    torch.testing.assert_close(G.rloo(scores, group_ids=ids), verl_rloo(scores, ids))
    binary, ids2 = random_groups(seed + 10, binary=True)
    binary = binary + 1e-3 * torch.arange(
        len(binary)
    )  # no ties: verl's topk order is then unambiguous
    torch.testing.assert_close(G.passk_advantages(binary, group_ids=ids2), verl_passk(binary, ids2))
    # REINFORCE++-baseline: group mean, then whitening (verl whitens tokens; one token per response here)
    a = verl_grpo(scores, ids, norm=False)
    torch.testing.assert_close(
        G.reinforce_pp_baseline(scores, group_ids=ids), (a - a.mean()) * torch.rsqrt(a.var() + 1e-8)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_against_trl_scale_rewards(seed, scale):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(24, generator=g, dtype=torch.float64)
    ours = G.group_advantages(scores, group_size=4, scale=scale, eps=1e-4)
    torch.testing.assert_close(ours, trl_advantages(scores, 4, scale))


def test_contiguous_and_id_forms_agree_and_ids_can_be_any_integers():
    scores = torch.randn(12, dtype=torch.float64)
    ids = torch.tensor([7, 7, 7, -3, -3, -3, 100, 100, 100, 5, 5, 5])
    for fn in (G.grpo, G.dr_grpo, G.rloo, G.lite_ppo, G.reinforce_pp_baseline, G.passk_advantages):
        torch.testing.assert_close(fn(scores, group_size=3), fn(scores, group_ids=ids))
    torch.testing.assert_close(
        G.qae(scores, group_size=3, k=0.5), G.qae(scores, k=0.5, group_ids=ids)
    )


def test_degenerate_groups():
    equal = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    for fn in (G.grpo, G.dr_grpo, G.rloo, G.lite_ppo, G.passk_advantages):
        out = fn(equal, group_size=3)
        assert torch.isfinite(out).all() and (out == 0).all(), fn.__name__
    assert (G.qae(equal, group_size=3, k=0.4) == 0).all()
    single = torch.tensor([0.3, 0.9])
    with pytest.warns(UserWarning, match="singleton"):
        for fn in (G.grpo, G.dr_grpo, G.rloo):
            assert (fn(single, group_size=1) == 0).all(), fn.__name__
        assert torch.isfinite(G.reinforce_pp_baseline(torch.tensor([1.0]), group_size=1)).all()
    assert (G.passk_advantages(single, group_size=1) == 0).all()


def test_reference_baseline_per_sample_and_per_group():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0])
    close(G.pvpo(scores, torch.tensor([0.25, 0.75]), group_size=2), [0.75, -0.25, 0.25, 0.25])
    close(G.pvpo(scores, torch.tensor([0.5, 0.5, 0.0, 1.0]), group_size=2), [0.5, -0.5, 1.0, 0.0])
    # per group with ids: groups ordered as torch.unique orders the ids
    close(
        G.pvpo(scores, torch.tensor([0.1, 0.9]), group_ids=torch.tensor([9, 2, 9, 2])),
        [0.1, -0.1, 0.1, 0.9],
    )


def test_group_quantile_order_statistic():
    r = torch.tensor([3.0, 1.0, 2.0, 4.0, 10.0, 20.0])
    idx = torch.tensor([0, 0, 0, 0, 1, 1])
    torch.testing.assert_close(G.group_quantile(r, idx, 2, 0.5), torch.tensor([2.0, 10.0]))
    torch.testing.assert_close(G.group_quantile(r, idx, 2, 0.51), torch.tensor([3.0, 20.0]))


def test_knapsack_value():
    p = torch.linspace(0, 1, 11, dtype=torch.float64)
    v8 = G.knapsack_value(p, 8)
    assert v8[0] == 0 and v8[-1] == 0 and (v8[1:-1] > 0).all()
    assert (G.knapsack_value(p, 32) >= v8).all()  # more rollouts never lower the value
    # a hard prompt gains more from a larger budget than an easy-medium one (the paper's point)
    gain = lambda q: (G.knapsack_value(q, 32) - G.knapsack_value(q, 8)).item()  # noqa: E731
    assert gain(0.02) > gain(0.5)
    torch.testing.assert_close(G.knapsack_value(0.5, 2), torch.tensor(0.0625, dtype=torch.float64))
    # InfoGain p(1 − p)² peaks at p = 1/3 once a gradient is certain (n large)
    grid = torch.linspace(0, 1, 301, dtype=torch.float64)
    assert abs(grid[G.knapsack_value(grid, 10_000).argmax()].item() - 1 / 3) < 0.01
    with pytest.raises(ValueError, match="p:"):
        G.knapsack_value(1.5, 4)
    with pytest.raises(ValueError, match="n:"):
        G.knapsack_value(0.5, 0)


def test_broadcast_to_tokens():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(
        G.broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask), [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]
    )
    with pytest.raises(ValueError, match="advantages, mask"):
        G.broadcast_to_tokens(torch.ones(3), mask)


def test_bad_inputs():
    s = torch.tensor([1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="group_size"):
        G.grpo(s, group_size=2)
    with pytest.raises(ValueError, match="exactly one"):
        G.grpo(s)
    with pytest.raises(ValueError, match="group_ids.*integer"):
        G.grpo(s, group_ids=torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="group_ids"):
        G.grpo(s, group_ids=torch.tensor([0, 1]))
    for q in (0.0, 1.0, None, 1.5):
        with pytest.raises(ValueError, match="quantile"):
            G.group_advantages(s, group_size=3, baseline="quantile", quantile=q)
    with pytest.raises(ValueError, match="reference"):
        G.pvpo(s, torch.ones(2), group_size=3)
    with pytest.raises(ValueError, match="baseline"):
        G.group_advantages(s, group_size=3, baseline="median")
    with pytest.raises(ValueError, match="scale"):
        G.group_advantages(s, group_size=3, scale="token")
    with pytest.raises(ValueError, match="scores"):
        G.grpo(torch.ones(2, 2), group_size=2)
    with pytest.raises(ValueError, match="scores"):
        G.grpo(torch.tensor([1, 0]), group_size=2)
    nan = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="scores.*NaN"):
        G.group_advantages(nan, group_size=2, validate=True)


def test_passk_rejects_a_negative_eps():
    with pytest.raises(ValueError, match="eps"):
        G.passk_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2, eps=-1.0)
