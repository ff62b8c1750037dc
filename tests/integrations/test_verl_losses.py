"""Every verl 0.9 policy loss, pinned: rlnb's loss equals verl's own function
(``core_algos.get_policy_loss_fn(mode)``, called directly) to 1e-6 in value *and* in its gradient
with respect to ``logp``, in every aggregation mode verl honours, on random ragged batches, on-
and off-policy (ratios ≠ 1), with and without rollout importance weights, three seeds each. The
rollout correction weights are pinned to ``rollout_corr_helper.compute_rollout_correction_weights``.
Runs in ``.venv-verl`` (``make test``); skipped where verl is not installed.
"""

import pytest
import torch

from tests.batches import ragged_mask

pytest.importorskip("verl")

from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights  # noqa: E402
from verl.workers.config.actor import ActorConfig, PolicyLossConfig  # noqa: E402

from rlnb.estimators.losses import AGG_MODES, compute_policy_loss, rollout_is_weights  # noqa: E402

SEEDS = [0, 1, 2]


def batch(seed, B=12, L=7, off_policy=True, per_token=True):
    """Ragged right-padded masks (lengths 1..L), log-probs of sampled tokens, old log-probs that
    differ by ~0.3 in log space when ``off_policy`` (equal otherwise), advantages per token or
    per response, and rollout IS weights."""
    g = torch.Generator().manual_seed(seed)
    mask = ragged_mask(g, B, L)[0].float()
    logp = -torch.rand(B, L, generator=g) * 3 - 0.01
    old = logp + 0.3 * torch.randn(B, L, generator=g) if off_policy else logp.clone()
    old = old.clamp(max=-1e-3)
    adv = 2 * torch.randn(B, L if per_token else 1, generator=g)
    adv = adv.expand(B, L).contiguous()
    w = (0.3 * torch.randn(B, L, generator=g)).exp() * mask
    return dict(logp=logp, old=old, adv=adv, mask=mask, w=w)


def actor_config(mode, clip_low=0.2, clip_high=0.28, clip_c=3.0, **policy_loss):
    return ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=clip_low,
        clip_ratio_low=clip_low, clip_ratio_high=clip_high, clip_ratio_c=clip_c,
        policy_loss=PolicyLossConfig(loss_mode=mode, **policy_loss),
    )  # fmt: skip


def value_and_grad(fn, b, with_weights):
    logp = b["logp"].clone().requires_grad_()
    loss = fn(logp, b["w"] if with_weights else None)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


def pin(ours_fn, verl_mode, cfg, b, agg, with_weights, seed=None):
    def theirs(logp, w):
        if seed is not None:
            torch.manual_seed(seed)
        return core_algos.get_policy_loss_fn(verl_mode)(
            old_log_prob=b["old"], log_prob=logp, advantages=b["adv"], response_mask=b["mask"],
            loss_agg_mode=agg, config=cfg, rollout_is_weights=w,
        )[0]  # fmt: skip

    def ours(logp, w):
        if seed is not None:
            torch.manual_seed(seed)
        return ours_fn(logp, w)

    v_ours, g_ours = value_and_grad(ours, b, with_weights)
    v_theirs, g_theirs = value_and_grad(theirs, b, with_weights)
    torch.testing.assert_close(v_ours, v_theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)


# name, verl loss_mode, rlnb options, verl config (clip ratios / policy_loss fields)
CASES = {
    "vanilla": ("ppo", dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0), {}),
    "dppo_tv": (
        "dppo", dict(divergence="tv", clip_low=0.02, clip_high=0.03, ratio_cap=3.0),
        dict(clip_low=0.02, clip_high=0.03),
    ),
    "dppo_kl": (
        "dppo", dict(divergence="kl", clip_low=0.01, clip_high=0.02, ratio_cap=3.0),
        dict(clip_low=0.01, clip_high=0.02),
    ),
    "gspo": (
        "gspo", dict(level="token", clip_low=0.05, clip_high=0.08),
        dict(clip_low=0.05, clip_high=0.08),
    ),
    "gpg": ("gpg", {}, {}),
    "kl_cov": ("cov", dict(kind="kl", ratio=0.2, kl_coef=0.1), dict(kl_cov_ratio=0.2)),
    "dro": ("dro", dict(beta=0.5), dict(dro_beta=0.5)),
    "cispo": ("cispo", dict(clip_low=0.2, clip_high=0.28), {}),
}  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("mode", list(CASES))
def test_loss_matches_verl_in_every_aggregation(mode, seed, agg, off_policy, with_weights):
    name, options, config = CASES[mode][0], CASES[mode][1], dict(CASES[mode][2])
    clips = {k: config.pop(k) for k in ("clip_low", "clip_high") if k in config}
    cfg = actor_config(mode, **clips, **config)
    b = batch(seed, off_policy=off_policy)

    def ours(logp, w):
        return compute_policy_loss(
            name, logp, b["old"], b["adv"], b["mask"], agg=agg, is_weights=w, **options
        ).loss

    pin(ours, mode, cfg, b, agg, with_weights)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize("ratio", [2e-4, 0.3])
def test_clip_cov_matches_verl_with_the_same_random_draw(seed, agg, off_policy, ratio):
    """Clip-Cov cuts the gradient of tokens drawn at random; both draw from the global generator,
    seeded alike. ``ratio=2e-4`` cuts one token, 0.3 several."""
    cfg = actor_config("clip_cov", clip_cov_ratio=ratio, clip_cov_lb=0.5, clip_cov_ub=5.0)
    b = batch(seed, off_policy=off_policy)

    def ours(logp, w):
        return compute_policy_loss(
            "cov", logp, b["old"], b["adv"], b["mask"], kind="clip", ratio=ratio, cov_low=0.5,
            cov_high=5.0, clip_low=0.2, clip_high=0.28, agg=agg, is_weights=w,
        ).loss  # fmt: skip

    pin(ours, "clip_cov", cfg, b, agg, with_weights=True, seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("mode", ["sapo", "geo_mean"])
def test_losses_verl_aggregates_over_sequences(mode, seed, off_policy, with_weights):
    """verl's ``sapo`` and ``geo_mean`` ignore ``loss_agg_mode`` and average over sequences:
    rlnb's ``sapo``/``gmpo`` with ``agg="seq-mean-token-mean"`` (their default)."""
    cfg = actor_config(mode)
    name, options = {
        "sapo": ("sapo", {}),
        "geo_mean": ("gmpo", dict(clip_low=0.2, clip_high=0.28)),
    }[mode]
    b = batch(seed, off_policy=off_policy, per_token=mode == "sapo")

    def ours(logp, w):
        return compute_policy_loss(
            name, logp, b["old"], b["adv"], b["mask"], is_weights=w, **options
        ).loss

    for agg in ("token-mean", "seq-mean-token-sum"):  # what verl is told does not matter
        pin(ours, mode, cfg, b, agg, with_weights)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("threshold", [2.0, 1.2, "0.8_1.25"])
def test_rollout_is_weights_match_verl(seed, level, threshold):
    b = batch(seed)
    theirs, _ = compute_rollout_correction_weights(
        b["logp"] - b["old"], b["mask"], rollout_is=level, rollout_is_threshold=threshold
    )
    if isinstance(threshold, str):
        floor, cap = map(float, threshold.split("_"))
        ours = rollout_is_weights(
            b["logp"], b["old"], b["mask"], level=level, mode="mask", cap=cap, floor=floor
        )
    else:
        ours = rollout_is_weights(b["logp"], b["old"], b["mask"], level=level, cap=threshold)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    assert (ours != 0).any() and (theirs * b["mask"] != theirs).sum() == 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum"])
def test_bypass_mode_reinforce_is_gpg_with_rollout_weights(seed, level, agg):
    """verl's ``bypass_mode`` (old = rollout log-probs) with ``loss_type="reinforce"``: the plain
    policy gradient weighted by the truncated rollout IS weights of the current policy."""
    cfg = actor_config(
        "bypass_mode",
        rollout_correction=dict(loss_type="reinforce", rollout_is=level, rollout_is_threshold=2.0),
    )
    b = batch(seed)

    def ours(logp, w):
        weights = rollout_is_weights(logp, b["old"], b["mask"], level=level, cap=2.0)
        return compute_policy_loss(
            "gpg", logp, b["old"], b["adv"], b["mask"], agg=agg, is_weights=weights
        ).loss

    pin(ours, "bypass_mode", cfg, b, agg, with_weights=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_off_policy_batches_reach_every_cut(seed):
    """The pins above mean something only if the batches trigger each loss's clip, mask or cut."""
    b = batch(seed)
    for mode in ("vanilla", "dppo_tv", "dppo_kl", "gspo", "cispo"):
        name, options, _ = CASES[mode]
        out = compute_policy_loss(name, b["logp"], b["old"], b["adv"], b["mask"], **options)
        assert 0 < out.clip_frac < 1, (mode, out.clip_frac)
    for ratio in (2e-4, 0.3):
        out = compute_policy_loss(
            "cov", b["logp"], b["old"], b["adv"], b["mask"], ratio=ratio, cov_low=0.5
        )
        assert out.clip_frac > 0, ratio
