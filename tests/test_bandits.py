import pytest
import torch

from rlnb.envs.bandits import PromptBandit, Sample, make_prompt_bandit, make_two_strategy_bandit
from rlnb.estimators.registry import ESTIMATORS, outcome_estimators, register_estimator
from rlnb.train.bandit import majority_vote_rewards, train


def test_exact_quantities_match_sampling():
    b = make_prompt_bandit(n_prompts=4, n_answers=10, seed=1)
    p = b.pass_at_1()
    with torch.no_grad():
        s = b.sample(20000, generator=torch.Generator().manual_seed(0))
    sampled = s.rewards.view(4, -1).mean(1)
    assert (sampled - p).abs().max() < 0.015
    torch.testing.assert_close(b.pass_at_k(1), p)
    assert (b.pass_at_k(8) >= p).all() and (b.entropy() > 0).all()
    adv = b.exact_advantage(s.prompts, s.answers)
    assert adv.view(4, -1).mean(1).abs().max() < 0.015  # E_π[A^π] = 0


def test_sample_shapes_logp_and_determinism():
    b = make_prompt_bandit(n_prompts=3, n_answers=5, seed=0)
    s = b.sample(4, torch.tensor([2, 0]), generator=torch.Generator().manual_seed(3))
    assert s.prompts.tolist() == [2, 2, 2, 2, 0, 0, 0, 0]
    torch.testing.assert_close(s.logp, torch.log_softmax(b.logits(), -1)[s.prompts, s.answers])
    assert s.logp.requires_grad
    again = b.sample(4, torch.tensor([2, 0]), generator=torch.Generator().manual_seed(3))
    assert torch.equal(s.answers, again.answers)
    assert torch.equal(make_prompt_bandit(seed=5).theta, make_prompt_bandit(seed=5).theta)


def test_difficulty_distribution_and_outliers():
    easy = make_prompt_bandit(n_prompts=400, difficulty=(8.0, 1.0), seed=0).pass_at_1().mean()
    hard = make_prompt_bandit(n_prompts=400, difficulty=(1.0, 8.0), seed=0).pass_at_1().mean()
    assert abs(easy - 8 / 9) < 0.03 and abs(hard - 1 / 9) < 0.03
    noisy = make_prompt_bandit(n_prompts=2, seed=0, outlier_prob=1.0, outlier_reward=7.0)
    assert (noisy.sample(5).rewards == 7.0).all()


@pytest.mark.parametrize("estimator", outcome_estimators())
def test_every_estimator_learns(estimator):
    b = make_prompt_bandit(n_prompts=16, seed=2)
    h, trained = train(
        b, estimator, steps=150, group_size=8, prompts_per_step=8, seed=2, progress=False
    )
    assert list(h.columns) == [
        "step",
        "reward",
        "pass1",
        "passk",
        "entropy",
        "zero_adv_frac",
        "grad_norm",
    ]
    assert len(h) == 151 and h.pass1.iloc[-1] > h.pass1.iloc[0] + 0.2
    assert trained is b  # (history, trained object), trained in place


@pytest.fixture
def zero_estimator():
    register_estimator("test_zero")(lambda inputs: torch.zeros_like(inputs.mask))
    yield "test_zero"
    del ESTIMATORS["test_zero"]


def test_zero_advantages_teach_nothing(zero_estimator):
    b = make_prompt_bandit(n_prompts=8, seed=0)
    before = b.theta.detach().clone()
    train(b, zero_estimator, steps=5, progress=False)
    torch.testing.assert_close(b.theta.detach(), before)


def test_shared_strategies_couple_prompts():
    b = make_two_strategy_bandit(n_prompts=8, n_answers=6, hard_fraction=0.25, seed=0)
    assert b.correct[:2, 3:].any(1).all() and not b.correct[:2, :3].any()
    assert b.correct[2:, :3].sum(1).eq(2).all()
    b.w.data = torch.tensor([1.0, -1.0])
    assert (
        b.pass_at_1()[:2].max()
        < make_two_strategy_bandit(n_prompts=8, n_answers=6, seed=0).pass_at_1()[:2].min()
    )


def test_majority_vote_rewards():
    s = Sample(
        torch.zeros(6, dtype=torch.long),
        torch.tensor([3, 3, 1, 2, 2, 5]),
        torch.zeros(6),
        torch.zeros(6),
    )
    assert majority_vote_rewards(s, 3).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    tie = Sample(torch.zeros(4, dtype=torch.long), torch.tensor([4, 1, 1, 4]), *torch.zeros(2, 4))
    assert majority_vote_rewards(tie, 4).tolist() == [1.0, 0.0, 0.0, 1.0]  # the first seen wins


def test_errors():
    with pytest.raises(ValueError, match="estimator"):
        train(make_prompt_bandit(n_prompts=2), "ppo", steps=1, progress=False)
    with pytest.raises(ValueError, match="values"):  # GAE needs a critic the bandit does not have
        train(make_prompt_bandit(n_prompts=2), "gae", steps=1, progress=False)
    with pytest.raises(ValueError, match="correct"):
        PromptBandit(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_correct"):
        make_prompt_bandit(n_answers=4, n_correct=4)
    with pytest.raises(ValueError, match="optimizer"):
        train(make_prompt_bandit(n_prompts=2), steps=1, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="group_size"):
        make_prompt_bandit(n_prompts=2).sample(0)


@pytest.mark.parametrize(
    "kw, lr",
    [
        (dict(concentration=0.02, difficulty=(1.0, 19.0)), 0.1),
        (
            dict(concentration=0.05, difficulty=(1.0, 9.0), outlier_prob=0.05, outlier_reward=3.0),
            0.05,
        ),
    ],
)
def test_qae_keeps_entropy_from_overshooting_where_the_mean_baseline_does_not(kw, lr):
    """Notebook 09 §4b: on hard prompts with confident wrong answers (and under reward outliers)
    the mean baseline's negative advantages push entropy above its start; QAE's stays lower."""
    peak = {}
    for name in ("dr_grpo", "qae"):
        h, _ = train(
            make_prompt_bandit(seed=3, **kw), name, steps=100, lr=lr, seed=3, progress=False
        )
        peak[name] = (h.entropy.max() / h.entropy.iloc[0]).item()
    assert peak["dr_grpo"] > 1.01 and peak["qae"] < peak["dr_grpo"] - 0.01, peak
