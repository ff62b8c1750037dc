"""verl's and TRL's estimators in rlnb against plain loops, and the hazards users report.

The loops below are readable per-group, per-token definitions written from the formulas of verl
0.9.1's ``core_algos.py`` and TRL 0.29's ``grpo_trainer.py`` (L1812–1849: ``scale_rewards``,
``multi_objective_aggregation``; L2109–2114: ``use_bias_correction_kl``). TRL is not installed in
the test environments (its GRPO advantages are inline in ``GRPOTrainer._generate_and_score_
completions``, not a function one can call), so TRL is pinned through these loops re-derived
from its source; verl is also pinned to its own functions in
``tests/integrations/test_verl_estimators.py`` (``.venv-verl``).
"""

import warnings

import pytest
import torch

from rlnb.estimators import group as G
from rlnb.estimators import kl_penalty
from rlnb.estimators import tokens as T
from rlnb.estimators.registry import AdvantageInputs, compute_advantages
from tests.batches import ragged_mask, shuffled_groups

SEEDS = [0, 1, 2]


def batch(seed, n_groups=5, min_group=2, max_group=5, L=8, multi_turn=False, binary=False):
    g = torch.Generator().manual_seed(seed)
    ids = shuffled_groups(g, n_groups, min_group, max_group)
    B = len(ids)
    mask, lengths = ragged_mask(g, B, L)
    mask = mask.double()
    if multi_turn:
        mask = mask * (torch.rand(B, L, generator=g) > 0.3).double()
        mask[:, 0] = 1.0
    rewards = torch.randn(B, L, generator=g, dtype=torch.float64) * mask
    scores = (torch.rand(B, generator=g) < 0.4).double() if binary else rewards.sum(-1)
    old_logp = -torch.rand(B, L, generator=g, dtype=torch.float64) * 3
    pi2 = torch.rand(B, L, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return dict(rewards=rewards, mask=mask, ids=ids, scores=scores, old_logp=old_logp, pi2=pi2)


def members(ids):
    return {int(k): [i for i in range(len(ids)) if ids[i] == k] for k in torch.unique(ids)}


# --- loops -----------------------------------------------------------------------------------------


def reward_to_go_loop(rewards, mask, gamma):
    out = torch.zeros_like(rewards)
    for b in range(len(rewards)):
        running = 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[b, t]:
                running = rewards[b, t] + gamma * running
                out[b, t] = running
    return out


def whiten_loop(values, mask):
    picked = [
        values[b, t] for b in range(len(values)) for t in range(values.shape[1]) if mask[b, t]
    ]
    x = torch.stack(picked)
    return (values - x.mean()) / torch.sqrt(x.var() + 1e-8) * mask


def per_group(scores, ids, baseline_of):
    """``scores[i] − baseline_of(group's indices)`` with verl's group of one: baseline 0."""
    out = scores.clone()
    for idx in members(ids).values():
        b = baseline_of(idx) if len(idx) > 1 else 0.0
        for i in idx:
            out[i] = scores[i] - b
    return out


def opo_loop(scores, lengths, ids):
    return per_group(
        scores,
        ids,
        lambda idx: sum(lengths[i] * scores[i] for i in idx) / sum(lengths[i] for i in idx),
    )


def gpg_loop(scores, ids):
    alpha = len(scores) / max(int((scores != 0).sum()), 1)
    return alpha * per_group(scores, ids, lambda idx: scores[idx].mean())


def maxrl_loop(scores, ids):
    out = torch.zeros_like(scores)
    for idx in members(ids).values():
        mean = scores[idx].mean()
        for i in idx:
            out[i] = 0.0 if mean == 0 else (scores[i] - mean) / mean
    return out


def otb_loop(rewards, mask, old_logp, pi2, ids, multi_turn):
    """Per group and per position (a column, or the k-th response token when ``multi_turn``):
    B_t = Σ G_t W_t / (Σ W_t + 1e-8), with the longest response's tail past the second longest
    at baseline 0; a group of one keeps its return (verl)."""
    returns = reward_to_go_loop(rewards, mask, 1.0)
    w = (1 - 2 * old_logp.exp() + pi2) * mask
    W = w.cumsum(-1)
    tokens = [[t for t in range(mask.shape[1]) if mask[b, t]] for b in range(len(mask))]
    adv = torch.zeros_like(rewards)
    for idx in members(ids).values():
        if multi_turn:
            idx = [i for i in idx if tokens[i]]
        lengths = {i: len(tokens[i]) if multi_turn else int(mask[i].sum()) for i in idx}
        ordered = sorted(lengths.values(), reverse=True)
        longest = [i for i in idx if lengths[i] == ordered[0]]
        for i in idx:
            cols = tokens[i]
            for k, t in enumerate(cols):
                pos = k if multi_turn else t
                if len(idx) == 1:
                    base = 0.0
                elif len(longest) == 1 and i == longest[0] and pos >= ordered[1]:
                    base = 0.0
                else:
                    num = den = 0.0
                    for j in idx:
                        if multi_turn and k < len(tokens[j]):
                            num += returns[j, tokens[j][k]] * W[j, tokens[j][k]]
                            den += W[j, tokens[j][k]]
                        elif not multi_turn and mask[j, t]:
                            num += returns[j, t] * W[j, t]
                            den += W[j, t]
                    base = num / (den + 1e-8)
                adv[i, t] = returns[i, t] - base
    return adv


def trl_advantages_loop(rewards_per_func, weights, n, scale_rewards, aggregation):
    """TRL 0.29 ``GRPOTrainer``: contiguous groups of ``n``, eps 1e-4, unbiased std."""
    B, K = rewards_per_func.shape
    out = torch.zeros(B, dtype=rewards_per_func.dtype)
    if aggregation == "sum_then_normalize":
        rewards = [sum(weights[k] * rewards_per_func[i, k] for k in range(K)) for i in range(B)]
        rewards = torch.stack(rewards)
        for start in range(0, B, n):
            group = rewards[start : start + n]
            for i in range(start, start + n):
                a = rewards[i] - group.mean()
                if scale_rewards == "group":
                    a = a / (group.std() + 1e-4)
                elif scale_rewards == "batch":
                    a = a / (rewards.std() + 1e-4)
                out[i] = a
        return out
    summed = torch.zeros(B, dtype=rewards_per_func.dtype)
    for i in range(B):
        start = i - i % n
        for k in range(K):
            group = rewards_per_func[start : start + n, k]
            summed[i] += weights[k] * (rewards_per_func[i, k] - group.mean()) / (group.std() + 1e-4)
    return (summed - summed.mean()) / (summed.std() + 1e-4)


# --- the estimators against the loops ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reward_to_go_and_reinforce_plus_plus(seed, gamma):
    b = batch(seed, multi_turn=seed == 1)
    rtg = reward_to_go_loop(b["rewards"], b["mask"], gamma)
    torch.testing.assert_close(T.reward_to_go(b["rewards"], b["mask"], gamma), rtg)
    want = whiten_loop(rtg, b["mask"])
    torch.testing.assert_close(T.reinforce_plus_plus(b["rewards"], b["mask"], gamma), want)
    inputs = AdvantageInputs(b["scores"], b["mask"], group_ids=b["ids"], token_rewards=b["rewards"])
    got = compute_advantages("reinforce_plus_plus", inputs, gamma=gamma)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_plus_plus_baseline_whitens_over_tokens(seed):
    b = batch(seed, min_group=1)
    centered = per_group(b["scores"], b["ids"], lambda idx: b["scores"][idx].mean())
    want = whiten_loop(centered[:, None] * b["mask"], b["mask"])
    got = T.reinforce_plus_plus_baseline(
        b["scores"], b["mask"], group_ids=b["ids"], singleton="score"
    )
    torch.testing.assert_close(got, want)
    by_response = G.reinforce_pp_baseline(b["scores"], group_ids=b["ids"], singleton="score")
    assert not torch.allclose(
        got, by_response[:, None] * b["mask"]
    )  # the two differ: tokens vs responses


@pytest.mark.parametrize("seed", SEEDS)
def test_opo_gpg_maxrl(seed):
    b = batch(seed, min_group=1, binary=seed != 0)
    s, ids, lengths = b["scores"], b["ids"], b["mask"].sum(-1)
    torch.testing.assert_close(
        G.opo(s, lengths, group_ids=ids, singleton="score"), opo_loop(s, lengths, ids)
    )
    torch.testing.assert_close(G.gpg(s, group_ids=ids, singleton="score"), gpg_loop(s, ids))
    b = batch(seed, binary=True)  # maxrl: 0/1 rewards, some groups all 0 (mean 0)
    torch.testing.assert_close(
        G.maxrl(b["scores"], group_ids=b["ids"]), maxrl_loop(b["scores"], b["ids"])
    )


def test_maxrl_weighs_a_success_by_one_over_p():
    adv = G.maxrl(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]), group_size=4)
    torch.testing.assert_close(adv[:4], torch.tensor([3.0, -1, -1, -1]))  # p = 1/4: (1 − p)/p
    torch.testing.assert_close(adv[4:8], torch.tensor([1 / 3, 1 / 3, 1 / 3, -1]))
    assert (adv[8:] == 0).all()  # r̄ = 0: 0, not NaN


@pytest.mark.parametrize("seed", SEEDS)
def test_remax_is_reward_to_go_minus_the_greedy_reward(seed):
    b = batch(seed)
    greedy = torch.randn(
        len(b["ids"]), dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    inputs = AdvantageInputs(
        b["scores"], b["mask"], group_ids=b["ids"], token_rewards=b["rewards"],
        extras={"greedy_scores": greedy},
    )  # fmt: skip
    want = (reward_to_go_loop(b["rewards"], b["mask"], 1.0) - greedy[:, None]) * b["mask"]
    torch.testing.assert_close(compute_advantages("remax", inputs), want)
    outcome = AdvantageInputs(
        b["scores"], b["mask"], group_ids=b["ids"], extras={"greedy_scores": greedy}
    )
    torch.testing.assert_close(
        compute_advantages("remax", outcome), (b["scores"] - greedy)[:, None] * b["mask"]
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("multi_turn", [False, True])
def test_optimal_token_baselines(seed, multi_turn):
    b = batch(seed, min_group=1, multi_turn=multi_turn)
    fn = T.multi_turn_optimal_token_baseline if multi_turn else T.optimal_token_baseline
    got = fn(
        b["rewards"], b["mask"], b["old_logp"], b["pi2"], group_ids=b["ids"], singleton="score"
    )
    want = otb_loop(b["rewards"], b["mask"], b["old_logp"], b["pi2"], b["ids"], multi_turn)
    torch.testing.assert_close(got, want)


def test_the_optimal_token_baseline_is_the_group_mean_when_every_token_weighs_the_same():
    # W_t the same for every response (equal lengths, same π and Σπ²): B_t = mean of G_t
    b = batch(0)
    mask = torch.ones_like(b["mask"])
    got = T.optimal_token_baseline(
        b["rewards"],
        mask,
        torch.full_like(mask, -1.0),
        torch.full_like(mask, 0.3),
        group_ids=b["ids"],
    )
    rtg = reward_to_go_loop(b["rewards"], mask, 1.0)
    for idx in members(b["ids"]).values():
        torch.testing.assert_close(got[idx], rtg[idx] - rtg[idx].mean(0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_scale_rewards(seed, scale):
    g = torch.Generator().manual_seed(seed)
    r = (
        (torch.rand(24, 1, generator=g) < 0.5).double()
        if seed
        else torch.randn(24, 1, generator=g, dtype=torch.float64)
    )
    want = trl_advantages_loop(r, [1.0], 6, scale, "sum_then_normalize")
    got = {"group": G.grpo, "batch": G.lite_ppo, "none": G.dr_grpo}[scale]
    eps = {} if scale == "none" else {"eps": 1e-4}
    torch.testing.assert_close(got(r[:, 0], group_size=6, **eps), want)


@pytest.mark.parametrize("seed", SEEDS)
def test_gdpo_is_trls_normalize_then_sum_and_verls_token_whitening(seed):
    b = batch(seed, n_groups=4, min_group=6, max_group=6)
    g = torch.Generator().manual_seed(seed)
    B = len(b["ids"])
    comps = torch.stack(
        [
            torch.randn(B, generator=g, dtype=torch.float64) * 10,
            (torch.rand(B, generator=g) < 0.5).double(),
        ],
        1,
    )
    weights = [1.0, 2.0]
    want = trl_advantages_loop(comps, weights, 6, "group", "normalize_then_sum")
    got = G.gdpo(comps, weights=weights, group_size=6, eps=1e-4, whiten_eps=1e-4)
    torch.testing.assert_close(got, want)
    inputs = AdvantageInputs(
        torch.zeros(B, dtype=torch.float64),
        b["mask"],
        group_size=6,
        extras={"reward_components": comps},
    )
    responses = compute_advantages("gdpo", inputs, weights=weights, eps=1e-4, whiten="responses")
    torch.testing.assert_close(responses, want[:, None] * b["mask"])
    summed = G.gdpo(comps, weights=weights, group_size=6, whiten=False)
    tokens = compute_advantages("gdpo", inputs, weights=weights)
    torch.testing.assert_close(tokens, whiten_loop(summed[:, None] * b["mask"], b["mask"]))
    # the point of decoupling: the 10×-wider component does not drown the binary one
    coupled = G.grpo(comps @ torch.tensor(weights, dtype=torch.float64), group_size=6)
    corr = torch.corrcoef(torch.stack([coupled, comps[:, 1]]))[0, 1]
    corr_gdpo = torch.corrcoef(torch.stack([got, comps[:, 1]]))[0, 1]
    assert corr_gdpo > corr + 0.2


# --- KL -------------------------------------------------------------------------------------------


def test_kl_estimators_in_expectation_value_and_gradient():
    """Exact expectations over a categorical π (no sampling): k1 and k3 are unbiased in value; the
    gradient of k2 (and of k3+, k1+, abs+) is the gradient of KL(π ‖ π_ref); k3's is that of
    KL(π_ref ‖ π)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_()
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    logp = torch.log_softmax(logits, 0)
    p = logp.exp().detach()
    kl = (logp.exp() * (logp - ref)).sum()
    reverse = (ref.exp() * (ref - logp)).sum()
    (grad_kl,) = torch.autograd.grad(kl, logits, retain_graph=True)
    (grad_reverse,) = torch.autograd.grad(reverse, logits, retain_graph=True)

    def expected(kind):
        est = kl_penalty(logp, ref, kind, clamp=None)
        value = (p * est).sum()  # E_π[estimate], the samples' probabilities held fixed
        (grad,) = torch.autograd.grad(value, logits, retain_graph=True)
        return value.detach(), grad

    for kind in ("k1", "k3"):
        torch.testing.assert_close(expected(kind)[0], kl.detach())
    assert abs(expected("k2")[0] - kl) > 1e-3  # biased in value (here below KL, elsewhere above)
    for kind in ("k2", "k1+", "k3+", "abs+"):
        torch.testing.assert_close(expected(kind)[1], grad_kl)
    torch.testing.assert_close(expected("k3")[1], grad_reverse)
    assert not torch.allclose(grad_kl, grad_reverse)
    torch.testing.assert_close(expected("k1")[1], torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("seed", SEEDS)
def test_importance_corrected_kl_is_trls(seed):
    g = torch.Generator().manual_seed(seed)
    ref, old = -torch.rand(4, 6, generator=g) * 3, -torch.rand(4, 6, generator=g) * 3
    logp = (old + 0.2 * torch.randn(4, 6, generator=g)).requires_grad_()
    ours = kl_penalty(logp, ref, "k3", clamp=None, old_logp=old)
    trl = (torch.exp(ref - logp) - (ref - logp) - 1) * torch.exp(logp - old)  # TRL L2109–2114
    torch.testing.assert_close(ours, trl)
    torch.testing.assert_close(
        *(torch.autograd.grad(x.sum(), logp, retain_graph=True)[0] for x in (ours, trl))
    )


def test_importance_corrected_kl_is_unbiased_from_old_samples():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    old = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    ref = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    kl = (logp.exp() * (logp - ref)).sum()
    from_old = (old.exp() * kl_penalty(logp, ref, "k3", None, old_logp=old)).sum()
    torch.testing.assert_close(from_old, kl)
    assert not torch.isclose((old.exp() * kl_penalty(logp, ref, "k3", None)).sum(), kl)


# --- hazards users report ------------------------------------------------------------------------------


def test_leave_one_out_baseline_with_std_scaling_stays_finite():
    """NeMo RL #1518: a leave-one-out std of [0, 0, 0] gave ±1e6. rlnb scales by the whole
    group's std: [1, 0, 0, 0] → (1 − 0, 0 − ⅓ …) / 0.5."""
    adv = G.group_advantages(torch.tensor([1.0, 0, 0, 0]), group_size=4, baseline="loo", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([2.0, -2 / 3, -2 / 3, -2 / 3]))


@pytest.mark.parametrize("value", [0.35, 0.3, 0.1, 0.7])
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_non_dyadic_rewards_whose_std_is_a_rounding_residue(value, eps):
    """NeMo RL #4161: equal non-dyadic fp32 rewards have a std that is a rounding residue, not 0;
    dividing the residue of r − mean by it gave 4000× spikes. Equal groups are exactly 0 here, and
    a 7-vs-1 group equals its float64 value."""
    equal = torch.full((8,), value)
    std = equal.std()
    for baseline in ("mean", "loo"):
        adv = G.group_advantages(equal, group_size=8, baseline=baseline, eps=eps)
        assert (adv == 0).all(), (baseline, adv, std)
    split = torch.tensor([value] * 7 + [0.95])
    for baseline in ("mean", "loo"):
        got = G.group_advantages(split, group_size=8, baseline=baseline, eps=eps)
        want = G.group_advantages(split.double(), group_size=8, baseline=baseline, eps=eps)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        assert got.abs().max() < 3


@pytest.mark.parametrize(
    "fn",
    [G.grpo, G.rloo, G.lite_ppo, G.maxrl, G.reinforce_pp_baseline, G.passk_advantages],
    ids=lambda f: f.__name__,
)
def test_eps_zero_on_an_all_equal_group_is_never_nan_in_value_or_gradient(fn):
    scores = torch.tensor([0.35, 0.35, 0.35, 0.35, 1.0, 1.0, 1.0, 1.0], requires_grad=True)
    eps = {"eps": 0.0} if "eps" in fn.__code__.co_varnames else {}
    adv = fn(scores, group_size=4, **eps)
    (grad,) = torch.autograd.grad((adv * torch.arange(8.0)).sum(), scores)
    assert (adv == 0).all() and torch.isfinite(grad).all()


def test_eps_zero_whiten_of_equal_values_is_zero():
    mask = torch.tensor([[1.0, 1, 0], [1, 0, 0]])
    values = torch.full((2, 3), 0.35, requires_grad=True)
    out = T.whiten(values, mask)
    (grad,) = torch.autograd.grad(out.sum(), values)
    assert (out == 0).all() and torch.isfinite(grad).all()
    assert (T.whiten(values, torch.zeros_like(mask)) == 0).all()  # an empty mask: 0, not NaN


@pytest.mark.parametrize(
    "name", ["grpo", "dr_grpo", "rloo", "lite_ppo", "reinforce_pp", "qae", "opo", "gpg", "maxrl"]
)
def test_a_batch_of_singleton_groups_warns_and_is_documented(name):
    scores = torch.tensor([1.0, 0.0, 0.5])
    inputs = AdvantageInputs(scores, group_size=1)
    with pytest.warns(UserWarning, match="every group is a singleton"):
        zero = compute_advantages(name, inputs)
    assert (zero == 0).all()
    with pytest.warns(UserWarning, match="raw score"):
        raw = compute_advantages(name, inputs, singleton="score")
    if name not in ("reinforce_pp", "lite_ppo", "gpg"):  # those rescale over the batch
        torch.testing.assert_close(raw[:, 0], scores)
    else:
        assert (raw[:, 0] != 0).any()
    with warnings.catch_warnings():  # a batch with a real group: no warning
        warnings.simplefilter("error")
        compute_advantages(name, AdvantageInputs(scores, group_ids=torch.tensor([0, 0, 1])))
    with pytest.raises(ValueError, match="singleton"):
        compute_advantages(name, AdvantageInputs(scores, group_size=3), singleton="raw")


def test_bad_inputs_name_the_argument():
    mask = torch.ones(4, 3)
    with pytest.raises(ValueError, match="components"):
        G.gdpo(torch.zeros(4), group_size=2)
    with pytest.raises(ValueError, match="weights"):
        G.gdpo(torch.zeros(4, 2), weights=[1.0], group_size=2)
    with pytest.raises(ValueError, match="weights"):
        G.opo(torch.zeros(4), torch.ones(3), group_size=2)
    with pytest.raises(ValueError, match="gamma"):
        T.reward_to_go(torch.zeros(4, 3), mask, 1.5)
    with pytest.raises(ValueError, match="old_logp"):
        T.optimal_token_baseline(
            torch.zeros(4, 3), mask, torch.zeros(4, 2), torch.zeros(4, 3), group_size=2
        )
    with pytest.raises(ValueError, match="needs old_logp and ref_logp"):
        compute_advantages(
            "reinforce_plus_plus", AdvantageInputs(torch.zeros(4), mask), kl_coef=0.1
        )
    with pytest.raises(ValueError, match="needs"):
        compute_advantages("remax", AdvantageInputs(torch.zeros(4), mask, group_size=2))
    with pytest.raises(ValueError, match="whiten"):
        inputs = AdvantageInputs(
            torch.zeros(4), mask, group_size=2, extras={"reward_components": torch.zeros(4, 2)}
        )
        compute_advantages("gdpo", inputs, whiten="batch")
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(torch.zeros(3), torch.zeros(3), "k2+x")
