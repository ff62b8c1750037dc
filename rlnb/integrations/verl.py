"""rlnb's group estimators and policy loss inside verl (needs ``verl``; ``pip install "rlnb[verl]"``).

Loaded without a fork through verl's plugin entry point (``[project.entry-points."verl.plugins"]``
in rlnb's ``pyproject.toml``): ``import verl`` imports this module, which registers

* advantage estimators (``algorithm.adv_estimator=...``): ``rlnb_grpo``, ``rlnb_dr_grpo``,
  ``rlnb_rloo``, ``rlnb_reinforce_pp``, ``rlnb_lite_ppo``, ``rlnb_passk``, and ``rlnb_qae``
  (k = 0.4) with ``rlnb_qae_k10`` … ``rlnb_qae_k90`` for the quantile k = 0.1 … 0.9: verl hands
  an estimator its ``AlgoConfig``, a frozen dataclass with no room for extra keys, so the
  quantile travels in the name;
* a policy loss (``actor_rollout_ref.actor.policy_loss.loss_mode=rlnb``): ``rlnb.estimators.
  policy_loss`` with verl's clip settings (``clip_ratio``, ``clip_ratio_low``/``_high``,
  ``clip_ratio_c`` as the dual clip) and verl's global-batch normalisation (so the loss does not
  depend on the data-parallel layout).

Each estimator sums ``token_level_rewards`` over the response to one score per response, groups
responses by verl's per-prompt ``index`` (uids), calls the estimator registered under that name in
``rlnb.estimators.registry`` (every one that needs no input beyond scores, mask and groups; a
user's own, registered before ``import verl``, included), and returns
``(advantages, returns)``, both the per-response advantage spread over ``response_mask``, as verl's
outcome estimators do. ``rlnb_grpo``, ``rlnb_dr_grpo``, ``rlnb_rloo`` and ``rlnb_passk`` equal verl's
``grpo`` (eps 1e-6), ``grpo`` with ``norm_adv_by_std_in_grpo=False``, ``rloo`` and ``grpo_passk``
(tested to 1e-6), except that a group of one gets advantage 0 in rlnb (no relative signal) where
verl returns its raw score. ``rlnb_reinforce_pp`` whitens over responses, verl's
``reinforce_plus_plus_baseline`` over tokens (see ``rlnb.estimators.group.reinforce_pp_baseline``).
The estimators ignore ``norm_adv_by_std_in_grpo``: the name says what is computed.

Not carried into verl, and why:

* PVPO (``rlnb.estimators.group.pvpo``): its baseline is the success rate of the *frozen initial*
  policy on each prompt, estimated by extra rollouts. verl's trainer has no step that produces
  them, and an estimator only receives rewards, masks, uids and the algorithm config.
* Critic-based estimators (rlnb's GAE and λ-returns): verl routes ``adv_estimator="gae"`` to its
  own GAE before the registry is consulted, and a registered estimator is never given the critic's
  ``values``. Use verl's ``gae`` (it uses the same recursion, checked in rlnb's tests).
* Rollout importance weights (``rollout_is_weights``, verl's rollout correction) in the policy
  loss: rlnb's ``policy_loss`` has no per-token weights; the ``rlnb`` loss raises if given them.
"""

from __future__ import annotations

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est, register_policy_loss

from rlnb.estimators.losses import AGG_MODES, policy_loss
from rlnb.estimators.registry import (
    ESTIMATORS,
    AdvantageInputs,
    accepted_options,
    compute_advantages,
)

QAE_QUANTILES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def group_ids_from_index(index) -> torch.Tensor:
    """verl's per-response prompt uids (any hashable values) → rlnb's integer ``group_ids``."""
    if index is None:
        raise ValueError("index: expected verl's per-response prompt uids, got None")
    _, ids = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    return torch.as_tensor(ids.reshape(-1), dtype=torch.long)


def outcome_estimator(name: str, **options):
    """A verl advantage estimator from rlnb's registered estimator ``name`` (with ``options``):
    the scores are the sums of ``token_level_rewards``, which also travel as ``token_rewards``
    (REINFORCE++'s reward-to-go reads them), and verl's ``algorithm.gamma`` goes to an estimator
    that takes a ``gamma``."""

    def estimator(token_level_rewards, response_mask, index=None, config=None, **_):
        if token_level_rewards.shape != response_mask.shape:
            raise ValueError(
                "token_level_rewards: expected the shape of response_mask "
                f"{tuple(response_mask.shape)}, got {tuple(token_level_rewards.shape)}"
            )
        scores = token_level_rewards.sum(dim=-1)
        gamma = {} if config is None else accepted_options(name, gamma=config.get("gamma", 1.0))
        with torch.no_grad():
            ids = group_ids_from_index(index).to(scores.device)
            inputs = AdvantageInputs(
                scores, response_mask, group_ids=ids, token_rewards=token_level_rewards
            )
            adv = compute_advantages(name, inputs, **gamma, **options)
        return adv, adv

    estimator.__name__ = f"rlnb_{name}"
    estimator.__doc__ = f"verl adapter of rlnb's registered estimator {name!r} {options or ''}"
    return estimator


# every registered estimator that needs nothing verl does not hand over (scores, mask, uids)
VERL_ESTIMATORS = {
    f"rlnb_{name}": outcome_estimator(name) for name, est in ESTIMATORS.items() if not est.needs
}
VERL_ESTIMATORS.update(
    {f"rlnb_qae_k{round(100 * k)}": outcome_estimator("qae", k=k) for k in QAE_QUANTILES}
)
for _name, _fn in VERL_ESTIMATORS.items():
    register_adv_est(_name)(_fn)


def _global_scale(mode: str, mask: torch.Tensor, info: dict) -> float | torch.Tensor:
    """Factor turning rlnb's local aggregate into verl's global-batch one (``agg_loss``): with
    ``dp`` ranks, token means divide by the global token count, sequence means by the global
    number of sequences, and each rank's loss is multiplied by ``dp`` (gradients are averaged)."""
    dp = info.get("dp_size", 1) or 1
    if mode == "token-sum":
        return dp
    if mode == "token-mean":
        total = info.get("batch_num_tokens")
        local = mask.sum().clamp(min=1)
        return 1.0 if total is None else local * dp / total
    total = info.get("global_batch_size")
    local = (
        (mask.sum(-1) > 0).sum().clamp(min=1) if mode != "seq-mean-token-sum-norm" else len(mask)
    )
    return 1.0 if total is None else local * dp / total


@register_policy_loss("rlnb")
def rlnb_policy_loss(
    old_log_prob,
    log_prob,
    advantages,
    response_mask,
    loss_agg_mode="token-mean",
    config=None,
    rollout_is_weights=None,
):
    """verl policy loss ``rlnb``: ``rlnb.estimators.losses.policy_loss`` with verl's actor config
    (and verl's rollout correction weights, when it passes them, as ``is_weights``)."""
    if config is None:
        raise ValueError("config: expected verl's actor config (clip_ratio, ...), got None")
    if loss_agg_mode not in AGG_MODES:
        raise ValueError(f"loss_agg_mode: expected one of {AGG_MODES}, got {loss_agg_mode!r}")
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    info = dict(getattr(config, "global_batch_info", None) or {})
    out = policy_loss(
        log_prob,
        old_log_prob,
        advantages,
        response_mask,
        clip_low=low,
        clip_high=high,
        dual_clip=config.get("clip_ratio_c", 3.0),
        agg=loss_agg_mode,
        is_weights=rollout_is_weights,
    )
    loss = out.loss
    if loss_agg_mode == "seq-mean-token-sum-norm" and info.get("loss_scale_factor"):
        loss = loss * response_mask.shape[-1] / info["loss_scale_factor"]
    loss = loss * _global_scale(loss_agg_mode, response_mask, info)
    metrics = {"actor/pg_clipfrac": out.clip_frac.item(), "actor/ppo_kl": out.approx_kl.item()}
    return loss, metrics


__all__ = ["VERL_ESTIMATORS", "QAE_QUANTILES", "group_ids_from_index", "rlnb_policy_loss"]
