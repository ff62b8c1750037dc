"""Every verl 0.9 advantage estimator and KL estimator rlnb implements, pinned to verl's own
function (``verl.trainer.ppo.core_algos``, called directly) to 1e-6 on random grouped batches with
ragged masks, three seeds each. Runs in ``.venv-verl`` (``make test``); skipped where verl is not
installed. grpo, dr_grpo, rloo and grpo_passk are pinned in ``test_verl.py``.
"""

import numpy as np
import pytest
import torch

from tests.batches import ragged_mask, shuffled_groups

pytest.importorskip("verl")

from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from rlnb.estimators import group as G  # noqa: E402
from rlnb.estimators import kl_penalty  # noqa: E402
from rlnb.estimators import tokens as T  # noqa: E402
from rlnb.estimators.registry import AdvantageInputs, compute_advantages  # noqa: E402

SEEDS = [0, 1, 2]


def batch(seed, n_groups=6, min_group=2, max_group=5, L=9, multi_turn=False):
    """Groups of random sizes (shuffled), ragged right-padded masks (with observation gaps inside
    the response when ``multi_turn``), dense token rewards, old log-probs and Σπ²."""
    g = torch.Generator().manual_seed(seed)
    ids = shuffled_groups(g, n_groups, min_group, max_group)
    B = len(ids)
    mask, lengths = ragged_mask(g, B, L)
    mask = mask.float()
    if multi_turn:  # a tool's observation tokens inside the response
        mask = mask * (torch.rand(B, L, generator=g) > 0.3).float()
        mask[:, 0] = 1.0
    rewards = torch.randn(B, L, generator=g) * mask
    old_logp = -torch.rand(B, L, generator=g) * 3
    sum_pi2 = torch.rand(B, L, generator=g) * 0.9 + 0.05
    index = np.array([f"uid-{int(i)}" for i in ids], dtype=object)
    return dict(rewards=rewards, mask=mask, ids=ids, index=index, old_logp=old_logp, pi2=sum_pi2)


def close(ours, theirs, mask):
    # float32 with values up to ~10: a relative term too (an absolute 1e-6 alone failed on one
    # element of 7.07, off by 1.4e-6 = 2e-7 relative, with unseeded importance weights)
    torch.testing.assert_close(ours * mask, theirs * mask, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("multi_turn", [False, True])
def test_reinforce_plus_plus(seed, gamma, multi_turn):
    b = batch(seed, multi_turn=multi_turn)
    theirs, returns = core_algos.get_adv_estimator_fn("reinforce_plus_plus")(
        b["rewards"], b["mask"], config=AlgoConfig(gamma=gamma)
    )
    close(T.reward_to_go(b["rewards"], b["mask"], gamma), returns, b["mask"])
    close(T.reinforce_plus_plus(b["rewards"], b["mask"], gamma), theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_plus_plus_with_the_kl_folded_into_the_reward(seed):
    b = batch(seed)
    g = torch.Generator().manual_seed(200 + seed)
    ref_logp = b["old_logp"] + 0.3 * torch.randn(b["old_logp"].shape, generator=g)
    scores = b["rewards"].sum(-1)
    last = (b["mask"].cumsum(-1) == b["mask"].sum(-1, keepdim=True)) & b["mask"].bool()
    token_scores = scores[:, None] * last
    kld = core_algos.kl_penalty(b["old_logp"], ref_logp, "low_var_kl") * b["mask"]
    theirs, _ = core_algos.get_adv_estimator_fn("reinforce_plus_plus")(
        token_scores - 0.05 * kld, b["mask"], config=AlgoConfig()
    )  # verl's apply_kl_penalty, then the estimator
    inputs = AdvantageInputs(
        scores, b["mask"], group_ids=b["ids"], old_logp=b["old_logp"], ref_logp=ref_logp
    )
    ours = compute_advantages("reinforce_plus_plus", inputs, kl_coef=0.05, kl="k3")
    close(ours, theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
def test_reinforce_plus_plus_baseline(seed):
    b = batch(seed, min_group=1)  # groups of one too: verl's raw score = singleton="score"
    theirs, _ = core_algos.get_adv_estimator_fn("reinforce_plus_plus_baseline")(
        b["rewards"], b["mask"], b["index"]
    )
    scores = b["rewards"].sum(-1)
    ours = T.reinforce_plus_plus_baseline(scores, b["mask"], group_ids=b["ids"], singleton="score")
    close(ours, theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
def test_remax(seed):
    b = batch(seed, min_group=1)
    greedy = torch.randn(len(b["ids"]), generator=torch.Generator().manual_seed(seed))
    theirs, _ = core_algos.get_adv_estimator_fn("remax")(b["rewards"], greedy, b["mask"])
    inputs = AdvantageInputs(
        b["rewards"].sum(-1), b["mask"], group_ids=b["ids"], token_rewards=b["rewards"],
        extras={"greedy_scores": greedy},
    )  # fmt: skip
    close(compute_advantages("remax", inputs), theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["opo", "gpg"])
def test_opo_and_gpg(seed, name):
    b = batch(seed, min_group=1)
    if seed == 2:  # binary outcomes, many zero scores: GPG's α = B / M is not 1
        b["rewards"] = (b["rewards"] > 0.5).float() * b["mask"]
    theirs, _ = core_algos.get_adv_estimator_fn(name)(b["rewards"], b["mask"], b["index"])
    inputs = AdvantageInputs(b["rewards"].sum(-1), b["mask"], group_ids=b["ids"])
    close(compute_advantages(name, inputs, singleton="score"), theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_is", [False, True])
@pytest.mark.parametrize(
    "name, multi_turn",
    [
        ("optimal_token_baseline", False),
        ("tir_optimal_token_baseline", False),
        ("tir_optimal_token_baseline", True),
    ],
)
def test_optimal_token_baselines(seed, with_is, name, multi_turn):
    b = batch(seed, min_group=1, multi_turn=multi_turn)
    if seed == 1:  # every group with one strictly longest response: the zero tail applies
        b["mask"][:, -1] = 0
        b["mask"][torch.unique(b["ids"], return_inverse=True)[1].argsort()[:1], -1] = 1
    g = torch.Generator().manual_seed(100 + seed)  # not the global RNG: the same weights every run
    is_w = torch.rand(b["mask"].shape, generator=g).clamp(max=0.9) + 0.5 if with_is else None
    theirs, _ = core_algos.get_adv_estimator_fn(name)(
        b["rewards"], b["mask"], b["index"], b["old_logp"], b["pi2"], rollout_is_weights=is_w
    )
    ours_fn = T.optimal_token_baseline if name == "optimal_token_baseline" else (
        T.multi_turn_optimal_token_baseline
    )  # fmt: skip
    ours = ours_fn(
        b["rewards"], b["mask"], b["old_logp"], b["pi2"], group_ids=b["ids"], is_weights=is_w,
        singleton="score",
    )  # fmt: skip
    close(ours, theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weights", [None, [1.0, 0.5, 2.0]])
def test_gdpo(seed, weights):
    b = batch(seed, min_group=1)
    B, L = b["mask"].shape
    g = torch.Generator().manual_seed(seed)
    comps = torch.stack([torch.randn(B, generator=g), (torch.rand(B, generator=g) < 0.5).float(),
                         torch.rand(B, generator=g)], dim=1)  # fmt: skip
    P = 3  # verl reads each component at the last response token from the attention mask
    attention = torch.cat([torch.ones(B, P), b["mask"]], dim=1).long()
    keys = ["a", "b", "c"]
    config = {"gdpo_reward_keys": keys, "gdpo_reward_weights": weights}
    theirs, _ = core_algos.get_adv_estimator_fn("gdpo")(
        torch.zeros(B, L), b["mask"], b["index"], config=config,
        non_tensor_batch={k: comps[:, i].numpy() for i, k in enumerate(keys)},
        batch={"prompts": torch.zeros(B, P), "attention_mask": attention},
    )  # fmt: skip
    inputs = AdvantageInputs(
        torch.zeros(B), b["mask"], group_ids=b["ids"], extras={"reward_components": comps}
    )
    ours = compute_advantages("gdpo", inputs, weights=weights, singleton="score")
    close(ours, theirs, b["mask"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "ours, theirs",
    [("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl"), ("abs", "abs"), ("k1+", "k1+"),
     ("k3+", "k3+"), ("abs+", "abs+")],
)  # fmt: skip
def test_kl_estimators_in_value_and_gradient(seed, ours, theirs):
    g = torch.Generator().manual_seed(seed)
    ref = -torch.rand(5, 7, generator=g) * 4
    values = []
    for fn in (
        lambda lp: kl_penalty(lp, ref, ours),
        lambda lp: core_algos.kl_penalty(lp, ref, theirs),
    ):
        logp = (
            ref + torch.randn(5, 7, generator=torch.Generator().manual_seed(seed))
        ).requires_grad_()
        out = fn(logp)
        (grad,) = torch.autograd.grad((out * torch.linspace(0.5, 2, 7)).sum(), logp)
        values.append((out.detach(), grad))
    torch.testing.assert_close(values[0][0], values[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(values[0][1], values[1][1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_carried_estimators_are_the_registry_ones_inside_verl(seed):
    """The ``rlnb_*`` plugins verl can feed (scores, token rewards, uids, γ) equal a direct call."""
    from rlnb.integrations.verl import VERL_ESTIMATORS

    b = batch(seed, min_group=1)
    cfg = AlgoConfig(gamma=0.9)
    for name in ("reinforce_plus_plus", "reinforce_plus_plus_baseline", "opo", "gpg", "maxrl"):
        ours, _ = VERL_ESTIMATORS[f"rlnb_{name}"](b["rewards"], b["mask"], b["index"], config=cfg)
        inputs = AdvantageInputs(
            b["rewards"].sum(-1), b["mask"], group_ids=b["ids"], token_rewards=b["rewards"]
        )
        options = {"gamma": 0.9} if name == "reinforce_plus_plus" else {}
        torch.testing.assert_close(ours, compute_advantages(name, inputs, **options))
    for name in ("remax", "gdpo", "optimal_token_baseline", "multi_turn_optimal_token_baseline"):
        assert f"rlnb_{name}" not in VERL_ESTIMATORS  # their inputs never reach a plugin
    assert G.maxrl is not None
