"""The one registry of advantage estimators: every built-in equals its direct function, one calling
convention, a user's own estimator by name, and clear errors."""

import pytest
import torch

from rlnb.estimators import group as G
from rlnb.estimators.advantages import last_token, token_gae
from rlnb.estimators.registry import (
    ESTIMATORS,
    AdvantageInputs,
    accepted_options,
    compute_advantages,
    get_estimator,
    outcome_estimators,
    register_estimator,
)
from tests.batches import ragged_mask

# what each outcome estimator must equal: the group function, called directly
DIRECT = {
    "grpo": lambda s, g, ref: G.grpo(s, **g),
    "dr_grpo": lambda s, g, ref: G.dr_grpo(s, **g),
    "rloo": lambda s, g, ref: G.rloo(s, **g),
    "lite_ppo": lambda s, g, ref: G.lite_ppo(s, **g),
    "reinforce_pp": lambda s, g, ref: G.reinforce_pp_baseline(s, **g),
    "qae": lambda s, g, ref: G.qae(s, **g, k=0.4),
    "pvpo": lambda s, g, ref: G.pvpo(s, ref, **g),
    "passk": lambda s, g, ref: G.passk_advantages(s, **g),
    "gpg": lambda s, g, ref: G.gpg(s, **g),
    "maxrl": lambda s, g, ref: G.maxrl(s, **g),
}
# estimators whose advantage depends on the response mask or differs per token (their own tests:
# tests/test_lm_estimators.py), and those that need inputs beyond scores and groups
MASKED = ("opo", "reinforce_plus_plus", "reinforce_plus_plus_baseline")
NEEDS = {
    "gae": ("values",),
    "pvpo": ("reference_values",),
    "remax": ("greedy_scores",),
    "gdpo": ("reward_components",),
    "single_rollout": ("tracked_values",),
    "mssr": ("tracked_values", "old_logp"),
    "optimal_token_baseline": ("old_logp", "sum_pi_squared"),
    "multi_turn_optimal_token_baseline": ("old_logp", "sum_pi_squared"),
}


def ragged_batch(seed, B=12, L=7, group_size=4):
    g = torch.Generator().manual_seed(seed)
    mask = ragged_mask(g, B, L)[0].long()
    scores = (torch.rand(B, generator=g) < 0.5).float() if seed % 2 else torch.randn(B, generator=g)
    ref = torch.rand(B, generator=g)
    ids = torch.arange(B) // group_size
    return scores, mask, ref, ids[torch.randperm(B, generator=g)]


def test_the_builtins_are_registered_under_todays_names():
    assert set(DIRECT) | set(MASKED) | set(NEEDS) == set(ESTIMATORS)
    assert set(outcome_estimators()) == set(DIRECT) | set(MASKED)
    for name, needs in NEEDS.items():
        assert get_estimator(name).needs == needs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(DIRECT))
def test_each_outcome_estimator_is_its_group_function_on_every_token(name, seed):
    scores, mask, ref, ids = ragged_batch(seed)
    for groups in ({"group_size": 4}, {"group_ids": ids}):
        inputs = AdvantageInputs(scores, mask, **groups, extras={"reference_values": ref})
        got = compute_advantages(name, inputs)
        want = DIRECT[name](scores, groups, ref)
        assert got.shape == mask.shape
        torch.testing.assert_close(got, want[:, None] * mask, atol=0, rtol=0)
    # no response mask: one token per response, as on the prompt bandit
    one = compute_advantages(
        name, AdvantageInputs(scores, group_size=4, extras={"reference_values": ref})
    )
    torch.testing.assert_close(one[:, 0], DIRECT[name](scores, {"group_size": 4}, ref))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_is_token_gae_against_the_values(seed):
    scores, mask, _, _ = ragged_batch(seed)
    values = torch.randn(mask.shape, generator=torch.Generator().manual_seed(seed)) * mask
    inputs = AdvantageInputs(scores, mask, group_size=4, values=values)
    for lam in (0.0, 0.9, 1.0):
        got = compute_advantages("gae", inputs, lmbda=lam)
        torch.testing.assert_close(got, token_gae(scores, values, mask, lam).advantages)


def test_options_go_to_the_estimator_that_takes_them():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    inputs = AdvantageInputs(scores, group_size=4)
    torch.testing.assert_close(
        compute_advantages("qae", inputs, k=0.8)[:, 0], G.qae(scores, group_size=4, k=0.8)
    )
    assert accepted_options("qae", k=0.8, lmbda=0.5) == {"k": 0.8}
    assert accepted_options("gae", k=0.8, lmbda=0.5) == {"lmbda": 0.5}
    assert accepted_options("rloo", k=0.8, lmbda=0.5) == {}
    with pytest.raises(TypeError):
        compute_advantages("rloo", inputs, k=0.8)  # an option the estimator does not take


def test_qae_group_size_is_keyword_only():
    with pytest.raises(TypeError):
        G.qae(torch.zeros(4), 4)


@pytest.fixture
def own_estimator():
    """An estimator registered the way a user would, from outside rlnb."""

    @register_estimator("test_last_token_only")
    def last_token_only(inputs):
        return last_token(inputs.mask).float()

    yield "test_last_token_only"
    del ESTIMATORS["test_last_token_only"]


def test_a_users_estimator_is_called_by_name(own_estimator):
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    adv = compute_advantages(own_estimator, AdvantageInputs(torch.zeros(3), mask, group_size=3))
    assert adv.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="already registered"):
        register_estimator(own_estimator)(lambda inputs: inputs.mask)
    register_estimator(own_estimator, replace=True)(lambda inputs: 2.0 * inputs.mask)
    assert compute_advantages(own_estimator, AdvantageInputs(torch.zeros(3), mask)).sum() == 12


def test_extras_carry_what_one_estimator_needs():
    @register_estimator("test_weighted", needs=("importance",))
    def weighted(inputs):
        return inputs.get("importance") * inputs.mask

    try:
        mask = torch.ones(2, 3)
        w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        got = compute_advantages(
            "test_weighted", AdvantageInputs(torch.zeros(2), mask, extras={"importance": w})
        )
        torch.testing.assert_close(got, w)
        with pytest.raises(ValueError, match="importance"):
            compute_advantages("test_weighted", AdvantageInputs(torch.zeros(2), mask))
    finally:
        del ESTIMATORS["test_weighted"]


def test_errors_name_the_argument():
    inputs = AdvantageInputs(torch.zeros(4), torch.ones(4, 2), group_size=2)
    with pytest.raises(ValueError, match="estimator: expected one of"):
        compute_advantages("a2c", inputs)
    with pytest.raises(ValueError, match=r"needs \['values'\]"):
        compute_advantages("gae", inputs)
    with pytest.raises(ValueError, match="reference_values"):
        compute_advantages("pvpo", inputs)
    with pytest.raises(ValueError, match="response_mask"):
        compute_advantages("grpo", AdvantageInputs(torch.zeros(4), torch.ones(3, 2), group_size=2))
    with pytest.raises(ValueError, match="name"):
        register_estimator("not a name")
    register_estimator("test_bad_shape")(lambda inputs: inputs.scores)
    try:
        with pytest.raises(ValueError, match="returned shape"):
            compute_advantages("test_bad_shape", inputs)
    finally:
        del ESTIMATORS["test_bad_shape"]
