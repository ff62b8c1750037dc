"""Notebook 09b's pieces: MSSR's tracked baseline and shaping, EVOL-RL's reward, the exact KLs and
RAPO's reweighted reference, RL-PLUS's weights, and the bandit trainers that use them."""

import functools

import numpy as np
import pytest
import torch

from rlnb.envs.bandits import make_boundary_bandit, make_prompt_bandit, make_styled_bandit
from rlnb.estimators import (
    AdvantageInputs,
    beta_mean,
    beta_prior,
    beta_tracker_update,
    categorical_kl,
    compute_advantages,
    entropy_advantage_shaping,
    evol_rl_rewards,
    exploration_advantage,
    get_estimator,
    mis_weight,
    reweighted_reference,
    single_rollout_advantages,
)
from rlnb.estimators.reference import evol_rl_rewards_loop
from rlnb.exercises import solutions
from rlnb.train.bandit import (
    evol_rl_bandit_rewards,
    kl_regularizer,
    majority_vote_rewards,
    train,
    train_with_demonstrations,
)
from rlnb.widgets import kl_regularized_optimum

SEEDS = [0, 1, 2]


# --- MSSR: the Beta tracker, the normalised advantage, the shaping ------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_beta_tracker_update_matches_the_loop(seed):
    g = torch.Generator().manual_seed(seed)
    alpha, beta = 1 + 5 * torch.rand(10, generator=g), 1 + 5 * torch.rand(10, generator=g)
    prompts = torch.randperm(10, generator=g)[:6]
    rewards = (torch.rand(6, generator=g) < 0.5).float()
    new = torch.stack(beta_tracker_update(alpha, beta, prompts, rewards, 0.9))
    torch.testing.assert_close(
        new, solutions.beta_tracker_update(alpha, beta, prompts, rewards, 0.9)
    )
    untouched = torch.ones(10, dtype=torch.bool).index_fill(0, prompts, False)
    assert torch.equal(new[0, untouched], alpha[untouched])  # not sampled: kept exactly


def test_beta_tracker_checks_its_inputs():
    a = torch.ones(4)
    with pytest.raises(ValueError, match="prompts"):
        beta_tracker_update(a, a, torch.tensor([1, 1]), torch.ones(2), 0.9)
    with pytest.raises(ValueError, match="rho"):
        beta_tracker_update(a, a, torch.tensor([1]), torch.ones(1), 0.0)
    with pytest.raises(ValueError, match="rewards"):
        beta_tracker_update(a, a, torch.tensor([1]), torch.tensor([3.0]), 0.9)
    with pytest.raises(ValueError, match="success_rates"):
        beta_prior(torch.tensor([1.5]))


def test_beta_prior_and_mean():
    alpha, beta = beta_prior(torch.tensor([0.0, 0.25, 1.0]))
    torch.testing.assert_close(alpha, torch.tensor([0.0, 2.0, 8.0]))
    torch.testing.assert_close(beta_mean(alpha, beta), torch.tensor([0.0, 0.25, 1.0]))
    assert beta_mean(torch.zeros(1), torch.zeros(1)).item() == 0.5  # no evidence at all


@pytest.mark.parametrize("seed", SEEDS)
def test_single_rollout_advantages_match_the_loop(seed):
    g = torch.Generator().manual_seed(seed)
    r, b = (
        (torch.rand(9, generator=g) < 0.5).double(),
        torch.rand(9, generator=g, dtype=torch.float64),
    )
    a = [float(ri - bi) for ri, bi in zip(r, b)]
    mean = sum(a) / len(a)
    std = (sum((x - mean) ** 2 for x in a) / len(a)) ** 0.5  # biased, as MSSR's code
    want = torch.tensor([(x - mean) / std for x in a], dtype=torch.float64)
    torch.testing.assert_close(single_rollout_advantages(r, b), want)


def test_single_rollout_degenerate_batches_give_zero():
    assert single_rollout_advantages(torch.ones(1), torch.zeros(1)).tolist() == [0.0]
    flat = single_rollout_advantages(torch.full((5,), 0.35), torch.full((5,), 0.1))
    assert flat.tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="baseline"):
        single_rollout_advantages(torch.ones(3), torch.ones(2))


@pytest.mark.parametrize("seed", SEEDS)
def test_entropy_shaping_is_the_formula_and_keeps_every_sign(seed):
    g = torch.Generator().manual_seed(seed)
    adv, p = torch.randn(200, generator=g), torch.rand(200, generator=g)
    h = -p * p.log()
    shaped = entropy_advantage_shaping(adv, h, alpha=0.4, kappa=2.0)
    torch.testing.assert_close(shaped, adv + torch.minimum(0.4 * h, adv.abs() / 2))
    assert ((shaped > 0) == (adv > 0)).all() and (shaped >= adv).all()
    with pytest.raises(ValueError, match="kappa"):
        entropy_advantage_shaping(adv, h, kappa=0.0)


def test_registered_single_rollout_estimators_match_the_functions():
    r, b = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0.7, 0.2, 0.5, 0.3])
    old = torch.log(torch.tensor([[0.5], [0.2], [0.9], [0.05]]))
    inputs = AdvantageInputs(r, old_logp=old, extras={"tracked_values": b})
    plain = compute_advantages("single_rollout", inputs)[:, 0]
    torch.testing.assert_close(plain, single_rollout_advantages(r, b))
    shaped = compute_advantages("mssr", inputs)[:, 0]
    torch.testing.assert_close(
        shaped, entropy_advantage_shaping(plain, -old[:, 0].exp() * old[:, 0])
    )
    assert get_estimator("mssr").needs == ("tracked_values", "old_logp")
    with pytest.raises(ValueError, match="tracked_values"):
        compute_advantages("single_rollout", AdvantageInputs(r))


# --- EVOL-RL -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_evol_rl_rewards_match_the_loop(seed):
    g = torch.Generator().manual_seed(seed)
    in_majority = torch.rand(5, 6, generator=g) < 0.6
    in_majority[0] = True  # one group all majority
    in_majority[1] = torch.tensor([True] * 5 + [False])  # a minority of one
    sim = torch.rand(5, 6, 6, generator=g, dtype=torch.float64)
    sim = (sim + sim.transpose(1, 2)) / 2
    in_majority[2] = torch.tensor([True] * 3 + [False] * 3)
    sim[2] = 1.0  # all alike: every novelty equal
    got = evol_rl_rewards(in_majority, sim)
    torch.testing.assert_close(got, evol_rl_rewards_loop(in_majority, sim))
    assert got[1, 5].item() == -0.5  # a lone minority answer
    assert set(got[2].tolist()) <= {0.75, -0.75}
    lo_major = got.masked_fill(~in_majority, np.inf).amin(1)
    hi_minor = got.masked_fill(in_majority, -np.inf).amax(1)
    assert (lo_major > hi_minor).all()  # the vote still orders everything


def test_evol_rl_group_of_one_and_bad_inputs():
    assert evol_rl_rewards(torch.tensor([[True]]), torch.ones(1, 1, 1)).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="similarity"):
        evol_rl_rewards(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, 2))


def test_bandit_label_free_rewards_vote_on_the_final_answer():
    bandit = make_styled_bandit(n_prompts=2, n_finals=3, n_styles=2, seed=0)
    s = bandit.sample(4, generator=torch.Generator().manual_seed(0))
    s.answers = torch.tensor([0, 1, 1, 4, 2, 3, 5, 5])  # finals 0 0 0 2 | 1 1 2 2 (tie: first seen)
    assert majority_vote_rewards(s, 4, n_styles=2).tolist() == [1, 1, 1, 0, 1, 1, 0, 0]
    r = evol_rl_bandit_rewards(s, 4, n_styles=2)
    assert r[0] > r[1] == r[2] and r[3] == -0.5  # the unique style in the majority ranks first


# --- exact KLs and the reweighted reference -----------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_categorical_kl_matches_torch(seed):
    g = torch.Generator().manual_seed(seed)
    p, q = (
        torch.randn(4, 7, generator=g).log_softmax(-1),
        torch.randn(4, 7, generator=g).log_softmax(-1),
    )
    want = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q)
    )
    torch.testing.assert_close(categorical_kl(p, q), want)
    zero = torch.tensor([0.0, -torch.inf]), torch.tensor([-1e-9, -20.0])  # p(a) = 0 counts 0
    assert torch.isfinite(categorical_kl(*zero))


def test_reweighted_reference_ends():
    ref = torch.randn(3, 5).log_softmax(-1)
    torch.testing.assert_close(reweighted_reference(ref, torch.ones(3, 1)), ref)
    torch.testing.assert_close(
        reweighted_reference(ref, torch.zeros(3, 1)).exp(), torch.full((3, 5), 0.2)
    )
    with pytest.raises(ValueError, match="phi"):
        reweighted_reference(ref, torch.full((3, 1), 1.5))


def test_kl_regularizer_is_the_exact_kl_of_the_step_prompts():
    bandit = make_prompt_bandit(n_prompts=4, n_answers=6, seed=0)
    ref = torch.randn(4, 6)
    prompts = torch.tensor([2, 0])
    logp = bandit.logits()[prompts].log_softmax(-1)
    ref_logp = ref.log_softmax(-1)[prompts]
    fwd = kl_regularizer(ref, "forward", 0.5)(bandit, prompts)
    rev = kl_regularizer(ref, "reverse", 0.5)(bandit, prompts)
    torch.testing.assert_close(fwd, 0.5 * categorical_kl(ref_logp, logp).mean())
    torch.testing.assert_close(rev, 0.5 * categorical_kl(logp, ref_logp).mean())
    with pytest.raises(ValueError, match="direction"):
        kl_regularizer(ref, "both", 0.5)


@pytest.mark.parametrize("beta", [0.05, 0.3, 2.0])
def test_kl_regularized_optimum_is_stationary(beta):
    ref = np.array([1e-3, 0.3, 0.2, 0.499])
    r = np.array([1.0, 0.0, 0.5, 0.0])
    rev = kl_regularized_optimum(ref, r, beta, "reverse")
    want = ref * np.exp(r / beta)
    np.testing.assert_allclose(rev, want / want.sum())
    fwd = kl_regularized_optimum(ref, r, beta, "forward")
    lam = r + beta * ref / fwd  # the Lagrangian's gradient is 0: the same λ for every answer
    assert fwd.sum() == pytest.approx(1) and np.ptp(lam) < 1e-8 * lam.max()
    values = {d: (p * r).sum() - beta * (p * np.log(p / ref) if d == "reverse" else ref * np.log(ref / p)).sum()
              for d, p in (("reverse", rev), ("forward", fwd))}  # fmt: skip
    for d, p in (("reverse", rev), ("forward", fwd)):  # no nearby distribution does better
        for k in range(4):
            q = p.copy()
            q[k] *= 1.01
            q /= q.sum()
            kl = q * np.log(q / ref) if d == "reverse" else ref * np.log(ref / q)
            assert (q * r).sum() - beta * kl.sum() <= values[d] + 1e-12


def test_kl_regularized_optimum_checks_its_inputs():
    with pytest.raises(ValueError, match="ref_probs"):
        kl_regularized_optimum([0.5, 0.6], [1, 0], 0.1, "forward")
    with pytest.raises(ValueError, match="direction"):
        kl_regularized_optimum([0.5, 0.5], [1, 0], 0.1, "sideways")
    with pytest.raises(ValueError, match="beta"):
        kl_regularized_optimum([0.5, 0.5], [1, 0], 0.0, "reverse")


# --- RL-PLUS ------------------------------------------------------------------------------------
def test_mis_weight_is_the_balance_heuristic_with_gradient_through_the_numerator():
    logp = torch.log(torch.tensor([0.3, 1e-4, 0.9])).requires_grad_()
    old = torch.log(torch.tensor([0.2, 1e-4, 0.5]))
    ext = torch.log(torch.tensor([1.0, 1.0, 0.1]))
    w = mis_weight(logp, old, ext)
    torch.testing.assert_close(w, logp.exp() / (0.5 * old.exp() + 0.5 * ext.exp()))
    w.sum().backward()
    torch.testing.assert_close(logp.grad, w.detach())  # d w / d log π_θ = w
    big = mis_weight(torch.zeros(1), torch.tensor([-9.2]), torch.zeros(1))  # π_θ = 1, π_old = 1e-4
    assert big.item() <= 2.0


def test_exploration_advantage():
    adv = torch.tensor([1.0, -2.0, 1.0])
    logp = torch.log(torch.tensor([0.0001, 0.75, 1.0]))
    torch.testing.assert_close(
        exploration_advantage(adv, logp), adv * torch.tensor([0.9999**0.5, 0.5, 0.0])
    )


def test_boundary_bandit_and_demonstrations():
    bandit, outside = make_boundary_bandit(n_prompts=8, n_outside=3, floor=1e-4, seed=0)
    torch.testing.assert_close(bandit.pass_at_1()[outside], torch.full((3,), 1e-4))
    torch.testing.assert_close(bandit.probs().sum(-1), torch.ones(8))
    demos = torch.argmax(bandit.probs().detach() * bandit.correct, 1)
    h, trained = train_with_demonstrations(
        bandit, demos, "rl_plus", steps=30, prompts_per_step=8, progress=False
    )
    assert list(h.columns) == ["step", "reward", "pass1", "passk", "entropy"] and len(h) == 31
    assert (
        trained.pass_at_1()[outside].mean() > 1e-3
    )  # 10× its start: learned from the demonstrations
    with pytest.raises(ValueError, match="weighting"):
        train_with_demonstrations(bandit, demos, "magic", progress=False)
    with pytest.raises(ValueError, match="demonstrations"):
        train_with_demonstrations(bandit, demos[:2], progress=False)


# --- the bandit trainer's new inputs ------------------------------------------------------------
def test_single_rollout_training_tracks_the_success_rate():
    h, _ = train(make_prompt_bandit(seed=0), "mssr", steps=60, group_size=1, prompts_per_step=64,
                 reference_rollouts=1, progress=False)  # fmt: skip
    assert h.baseline_error.iloc[-1] < 0.1 and h.pass1.iloc[-1] > h.pass1.iloc[0] + 0.2


def test_a_tracker_that_never_updates_falls_behind(monkeypatch):
    """The break the notebook's tracker check is there for: without the update, the baseline
    stays at the start while the policy moves."""
    import rlnb.train.bandit as tb

    monkeypatch.setattr(tb, "beta_tracker_update", lambda a, b, *args: (a, b))
    h, _ = train(make_prompt_bandit(seed=0), "mssr", steps=60, group_size=1, prompts_per_step=64,
                 reference_rollouts=1, progress=False)  # fmt: skip
    assert h.baseline_error.iloc[-1] > 0.2


def test_record_prompts_and_a_regularizer():
    seen = []

    def reg(bandit, prompts):
        seen.append(len(prompts))
        return bandit.logits().sum() * 0

    h, b = train(make_prompt_bandit(n_prompts=8, seed=0), steps=3, prompts_per_step=4, regularizer=reg,
                 record_prompts=True, reward_fn=functools.partial(majority_vote_rewards, n_styles=1),
                 progress=False)  # fmt: skip
    assert seen == [4, 4, 4] and h.pass1_by_prompt.iloc[-1].shape == (8,)
    np.testing.assert_allclose(h.pass1_by_prompt.iloc[-1], b.pass_at_1().numpy())


def test_styled_bandit_correctness_is_per_final_answer():
    b = make_styled_bandit(n_prompts=5, n_finals=4, n_styles=3, seed=1)
    right = b.correct.view(5, 4, 3)
    assert (right.all(-1) == right.any(-1)).all() and (right.any(-1).sum(-1) == 1).all()


def test_tracked_estimators_need_one_rollout_per_prompt_and_phi_zero_handles_zero_mass():
    with pytest.raises(ValueError, match="group_size"):
        train(make_prompt_bandit(seed=0), "mssr", steps=1, group_size=4, progress=False)
    ref = torch.tensor([[0.0, -torch.inf, -1.0]]).log_softmax(-1)
    torch.testing.assert_close(
        reweighted_reference(ref, torch.zeros(1, 1)).exp(), torch.full((1, 3), 1 / 3)
    )
