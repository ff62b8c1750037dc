"""One registry of advantage estimators for language-model RL, one way to call them.

Every estimator is registered once, by name, and called the same way::

    adv = compute_advantages("qae", AdvantageInputs(scores, mask, group_size=8), k=0.4)  # [B, L]

``AdvantageInputs`` carries the fields every trainer has (one score per response, the groups, the
response mask) and those some estimators read (per-token rewards, old and reference log-probs,
critic values, step boundaries), plus an open ``extras`` mapping for what one estimator alone
needs (Σπ² per token, a greedy completion's reward, reward components, importance weights, a
frozen policy's reference values): a new estimator adds inputs without changing the types.
Keyword ``options`` are the estimator's own knobs (QAE's ``k``, GAE's ``lmbda``, GRPO's ``eps``).
Out come token-level advantages ``[B, L]``, 0 off the mask; a sequence-level estimator (one number
per response) is spread over its response's tokens.

A user adds an estimator from their own code, and every trainer then accepts its name::

    @register_estimator("last_token_only")
    def last_token_only(inputs):
        return last_token(inputs.mask).float()

The prompt bandit, the widgets, ``rlnb.train.lm_rl`` and the verl plugin all resolve names here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from rlnb.estimators import group as G
from rlnb.estimators import single_rollout as S
from rlnb.estimators import tokens as T
from rlnb.estimators._checks import check_new_name
from rlnb.estimators.advantages import last_token, token_gae
from rlnb.estimators.losses import kl_penalty


@dataclass
class AdvantageInputs:
    """What an advantage estimator may read. All tensors are batch-major, ``B`` responses.

    ``scores [B]``: one outcome score per response. ``response_mask [B, L]``: 1 on response tokens
    (``None``: one token per response, ``[B, 1]`` of ones, as on the prompt bandit). Groups: either
    ``group_size`` (contiguous blocks) or ``group_ids [B]``. Optional ``[B, L]`` inputs:
    ``token_rewards``, ``old_logp`` and ``ref_logp`` (log-probs of the sampling and the reference
    policy), ``values`` (a critic's ``V(x_<t)``), ``step_boundaries`` (bool, True where a reasoning
    step ends). ``extras``: anything else, by name — the built-ins read ``reference_values`` (PVPO:
    ``[B]`` or ``[G]``), ``greedy_scores`` (ReMax: the reward of each prompt's greedy completion,
    ``[B]`` or ``[G]``), ``sum_pi_squared`` (``[B, L]``, Σ_a π(a | x_<t)² of the sampling
    distribution: the optimal token baselines), ``is_weights`` (``[B, L]`` truncated importance
    weights, optional there), ``reward_components`` (``[B, K]``: GDPO) and ``tracked_values``
    (``[B]``, a baseline carried across steps: MSSR).
    """

    scores: Tensor
    response_mask: Tensor | None = None
    group_size: int | None = None
    group_ids: Tensor | None = None
    token_rewards: Tensor | None = None
    old_logp: Tensor | None = None
    ref_logp: Tensor | None = None
    values: Tensor | None = None
    step_boundaries: Tensor | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> Tensor:
        """``response_mask``, or ``[B, 1]`` ones when none was given."""
        if self.response_mask is None:
            return torch.ones(
                len(self.scores), 1, dtype=self.scores.dtype, device=self.scores.device
            )
        return self.response_mask

    def groups(self) -> dict:
        """``{"group_size": n}`` or ``{"group_ids": ids}``, as the group functions take them."""
        if self.group_ids is not None:
            return {"group_ids": self.group_ids}
        return {"group_size": self.group_size}

    def get(self, name: str):
        """A field or an ``extras`` entry by name; ``None`` when absent."""
        if name in _FIELDS:
            return getattr(self, name)
        return self.extras.get(name)


_FIELDS = {f.name for f in fields(AdvantageInputs)} - {"extras"}


class Estimator(NamedTuple):
    """A registered estimator: ``fn(inputs, **options) → [B, L]`` and the inputs it ``needs``
    beyond scores, mask and groups (field or ``extras`` names)."""

    name: str
    fn: Callable[..., Tensor]
    needs: tuple[str, ...]


ESTIMATORS: dict[str, Estimator] = {}  # name → Estimator; add with register_estimator


def register_estimator(name: str, *, needs: tuple[str, ...] = (), replace: bool = False):
    """Decorator: register ``fn(inputs: AdvantageInputs, **options) → Tensor [B, L]`` as ``name``.

    ``needs`` names the inputs ``fn`` reads beyond scores, mask and groups (``"values"``,
    ``"reference_values"``, …): ``compute_advantages`` checks they are there, and a trainer reads
    them to know what to compute (a critic for ``values``). Registering a taken name raises unless
    ``replace=True``.
    """
    check_new_name(ESTIMATORS, name, replace)

    def decorator(fn):
        ESTIMATORS[name] = Estimator(name, fn, tuple(needs))
        return fn

    return decorator


def get_estimator(name: str) -> Estimator:
    """The registered estimator ``name``; a ``ValueError`` listing the names otherwise."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {tuple(ESTIMATORS)}, got {name!r}")
    return ESTIMATORS[name]


def outcome_estimators() -> tuple[str, ...]:
    """The registered estimators that read only the scores (and, for PVPO, a reference value per
    response): those the prompt bandit and the group widget can run without a language model."""
    return tuple(n for n, e in ESTIMATORS.items() if set(e.needs) <= {"reference_values"})


def accepted_options(name: str, **options) -> dict:
    """The subset of ``options`` that estimator ``name`` takes as keywords: a caller that holds
    several knobs (``k=qae_k, lmbda=lmbda``) passes each estimator the ones it has."""
    params = inspect.signature(get_estimator(name).fn).parameters
    return {k: v for k, v in options.items() if k in params}


def compute_advantages(name: str, inputs: AdvantageInputs, **options) -> Tensor:
    """Token-level advantages ``[B, L]`` (0 off the mask) from estimator ``name``."""
    est = get_estimator(name)
    missing = [n for n in est.needs if inputs.get(n) is None]
    if missing:
        raise ValueError(f"inputs: estimator {name!r} needs {missing}, which are missing")
    mask = inputs.mask
    if mask.ndim != 2 or mask.shape[0] != len(inputs.scores):
        raise ValueError(
            f"response_mask: expected [B, L] with B = {len(inputs.scores)}, got {tuple(mask.shape)}"
        )
    adv = est.fn(inputs, **options)
    if adv.shape != mask.shape:
        raise ValueError(
            f"estimator {name!r}: returned shape {tuple(adv.shape)}, expected {tuple(mask.shape)}"
        )
    return adv * mask.to(adv.dtype)


# --- the built-in estimators (formulas and papers in rlnb.estimators.group and .tokens) ----------
# ``singleton``: what a group of one gets, "zero" (rlnb) or "score" (verl); see rlnb.estimators.group.


def _spread(adv: Tensor, inputs: AdvantageInputs) -> Tensor:
    return G.broadcast_to_tokens(adv, inputs.mask)


def _token_rewards(inputs: AdvantageInputs) -> Tensor:
    """``token_rewards`` when given, else each score on its response's last token."""
    if inputs.token_rewards is not None:
        return inputs.token_rewards
    return inputs.scores[:, None] * last_token(inputs.mask).to(inputs.scores.dtype)


@register_estimator("grpo")
def grpo_tokens(inputs: AdvantageInputs, *, eps: float = 1e-6, singleton: str = "zero") -> Tensor:
    """``group.grpo``: ``(r − mean_g) / (std_g + eps)`` on every token of the response."""
    return _spread(G.grpo(inputs.scores, **inputs.groups(), eps=eps, singleton=singleton), inputs)


@register_estimator("dr_grpo")
def dr_grpo_tokens(inputs: AdvantageInputs, *, singleton: str = "zero") -> Tensor:
    """``group.dr_grpo``: ``r − mean_g``."""
    return _spread(G.dr_grpo(inputs.scores, **inputs.groups(), singleton=singleton), inputs)


@register_estimator("rloo")
def rloo_tokens(inputs: AdvantageInputs, *, singleton: str = "zero") -> Tensor:
    """``group.rloo``: ``r − mean of the others``."""
    return _spread(G.rloo(inputs.scores, **inputs.groups(), singleton=singleton), inputs)


@register_estimator("lite_ppo")
def lite_ppo_tokens(
    inputs: AdvantageInputs, *, eps: float = 1e-4, singleton: str = "zero"
) -> Tensor:
    """``group.lite_ppo``: ``(r − mean_g) / (std_batch + eps)``."""
    adv = G.lite_ppo(inputs.scores, **inputs.groups(), eps=eps, singleton=singleton)
    return _spread(adv, inputs)


@register_estimator("reinforce_pp")
def reinforce_pp_tokens(inputs: AdvantageInputs, *, singleton: str = "zero") -> Tensor:
    """``group.reinforce_pp_baseline``: ``r − mean_g``, whitened over the batch's *responses*
    (``reinforce_plus_plus_baseline`` is verl's form, whitened over tokens)."""
    adv = G.reinforce_pp_baseline(inputs.scores, **inputs.groups(), singleton=singleton)
    return _spread(adv, inputs)


@register_estimator("qae")
def qae_tokens(inputs: AdvantageInputs, *, k: float = 0.4, singleton: str = "zero") -> Tensor:
    """``group.qae``: ``r − Q_k(group)``."""
    return _spread(G.qae(inputs.scores, **inputs.groups(), k=k, singleton=singleton), inputs)


@register_estimator("pvpo", needs=("reference_values",))
def pvpo_tokens(inputs: AdvantageInputs) -> Tensor:
    """``group.pvpo``: ``r − V_ref``, with ``extras["reference_values"]`` per response or group."""
    ref = inputs.get("reference_values")
    return _spread(G.pvpo(inputs.scores, ref, **inputs.groups()), inputs)


@register_estimator("single_rollout", needs=("tracked_values",))
def single_rollout_tokens(inputs: AdvantageInputs, *, eps: float = 1e-6) -> Tensor:
    """``single_rollout.single_rollout_advantages``: ``r − b(x)`` normalised over the batch, with
    ``extras["tracked_values"] [B]`` each response's tracked baseline (MSSR's Beta mean, read before
    this step's update). Groups are not read: one response per prompt (MSSR's MVSR baseline)."""
    adv = S.single_rollout_advantages(inputs.scores, inputs.get("tracked_values"), eps=eps)
    return _spread(adv, inputs)


@register_estimator("mssr", needs=("tracked_values", "old_logp"))
def mssr_tokens(
    inputs: AdvantageInputs, *, eps: float = 1e-6, entropy_alpha: float = 0.4, kappa: float = 2.0
) -> Tensor:
    """MSSR: ``single_rollout`` shaped per token by ``single_rollout.entropy_advantage_shaping``,
    with the sampled token's ``H = −p log p``, ``p = exp(old_logp)`` (as the authors' code)."""
    entropy = -inputs.old_logp.exp() * inputs.old_logp
    adv = single_rollout_tokens(inputs, eps=eps)
    return S.entropy_advantage_shaping(adv, entropy, alpha=entropy_alpha, kappa=kappa)


@register_estimator("passk")
def passk_tokens(inputs: AdvantageInputs, *, norm_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """``group.passk_advantages``: only each group's best response, ``r_max − r_second``."""
    adv = G.passk_advantages(inputs.scores, **inputs.groups(), norm_by_std=norm_by_std, eps=eps)
    return _spread(adv, inputs)


@register_estimator("opo")
def opo_tokens(inputs: AdvantageInputs, *, singleton: str = "zero") -> Tensor:
    """``group.opo``: ``r − Σ|o_j| r_j / Σ|o_j|``, the lengths read from the response mask."""
    lengths = inputs.mask.sum(-1).to(inputs.scores.dtype)
    return _spread(G.opo(inputs.scores, lengths, **inputs.groups(), singleton=singleton), inputs)


@register_estimator("gpg")
def gpg_tokens(inputs: AdvantageInputs, *, singleton: str = "zero") -> Tensor:
    """``group.gpg``: ``B/M · (r − mean_g)``, M the responses with a non-zero score."""
    return _spread(G.gpg(inputs.scores, **inputs.groups(), singleton=singleton), inputs)


@register_estimator("maxrl")
def maxrl_tokens(inputs: AdvantageInputs, *, singleton: str = "zero") -> Tensor:
    """``group.maxrl``: ``(r − r̄_g) / r̄_g``, 0 where ``r̄_g = 0``."""
    return _spread(G.maxrl(inputs.scores, **inputs.groups(), singleton=singleton), inputs)


@register_estimator("remax", needs=("greedy_scores",))
def remax_tokens(inputs: AdvantageInputs) -> Tensor:
    """``group.remax`` on every token: ``G_t − r_greedy``, with ``G_t`` the reward-to-go of
    ``token_rewards`` (the score when there are none) and ``extras["greedy_scores"]`` per response
    or group. verl's ``remax``."""
    zero = torch.zeros_like(inputs.scores)  # remax(0, ·) = −r_greedy per response (or group)
    minus_greedy = G.remax(zero, inputs.get("greedy_scores"), **inputs.groups())
    return T.reward_to_go(_token_rewards(inputs), inputs.mask) + _spread(minus_greedy, inputs)


@register_estimator("gdpo", needs=("reward_components",))
def gdpo_tokens(
    inputs: AdvantageInputs,
    *,
    weights=None,
    eps: float = 1e-6,
    whiten: str = "tokens",
    singleton: str = "zero",
) -> Tensor:
    """``group.gdpo`` of ``extras["reward_components"] [B, K]`` (the ``scores`` are not read):
    each component normalised in its group (``eps``), summed with ``weights``, then whitened over
    the batch's tokens (``whiten="tokens"``, verl's ``gdpo``) or responses (``"responses"``, TRL's
    ``normalize_then_sum``; use ``eps=1e-4`` for TRL's value)."""
    if whiten not in ("tokens", "responses"):
        raise ValueError(f"whiten: expected 'tokens' or 'responses', got {whiten!r}")
    total = G.gdpo(
        inputs.get("reward_components"), weights=weights, **inputs.groups(), eps=eps,
        whiten=whiten == "responses", singleton=singleton,
    )  # fmt: skip
    spread = _spread(total, inputs)
    return T.whiten(spread, inputs.mask) if whiten == "tokens" else spread


@register_estimator("reinforce_plus_plus")
def reinforce_plus_plus_tokens(
    inputs: AdvantageInputs, *, gamma: float = 1.0, kl_coef: float = 0.0, kl: str = "k1"
) -> Tensor:
    """``tokens.reinforce_plus_plus`` of ``token_rewards`` (each score on its last token when there
    are none) minus ``kl_coef`` × the per-token KL estimator ``kl`` of ``old_logp`` to ``ref_logp``
    (needed when ``kl_coef > 0``), as verl's ``use_kl_in_reward`` folds it: whitened reward-to-go."""
    rewards = _token_rewards(inputs)
    if kl_coef:
        if inputs.old_logp is None or inputs.ref_logp is None:
            raise ValueError(
                "inputs: reinforce_plus_plus with kl_coef > 0 needs old_logp and ref_logp"
            )
        with torch.no_grad():
            rewards = rewards - kl_coef * kl_penalty(inputs.old_logp, inputs.ref_logp, kl)
    return T.reinforce_plus_plus(rewards, inputs.mask, gamma)


@register_estimator("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline_tokens(inputs: AdvantageInputs, *, singleton: str = "zero"):
    """``tokens.reinforce_plus_plus_baseline``: ``r − mean_g``, whitened over the batch's tokens
    (verl's form; ``reinforce_pp`` whitens over responses)."""
    return T.reinforce_plus_plus_baseline(
        inputs.scores, inputs.mask, **inputs.groups(), singleton=singleton
    )


def _optimal_token_options(inputs: AdvantageInputs) -> dict:
    return dict(**inputs.groups(), is_weights=inputs.get("is_weights"))


@register_estimator("optimal_token_baseline", needs=("old_logp", "sum_pi_squared"))
def optimal_token_baseline_tokens(
    inputs: AdvantageInputs,
    *,
    handle_zero_tail: bool = True,
    eps: float = 1e-8,
    singleton: str = "zero",
) -> Tensor:
    """``tokens.optimal_token_baseline`` of ``token_rewards`` (or the scores on the last token),
    ``old_logp`` and ``extras["sum_pi_squared"]`` (and ``extras["is_weights"]`` when present)."""
    return T.optimal_token_baseline(
        _token_rewards(inputs), inputs.mask, inputs.old_logp, inputs.get("sum_pi_squared"),
        **_optimal_token_options(inputs), handle_zero_tail=handle_zero_tail, eps=eps,
        singleton=singleton,
    )  # fmt: skip


@register_estimator("multi_turn_optimal_token_baseline", needs=("old_logp", "sum_pi_squared"))
def multi_turn_optimal_token_baseline_tokens(
    inputs: AdvantageInputs,
    *,
    handle_zero_tail: bool = True,
    eps: float = 1e-8,
    singleton: str = "zero",
) -> Tensor:
    """``tokens.multi_turn_optimal_token_baseline``: as ``optimal_token_baseline``, positions
    counted in response tokens (verl's ``tir_optimal_token_baseline``)."""
    return T.multi_turn_optimal_token_baseline(
        _token_rewards(inputs), inputs.mask, inputs.old_logp, inputs.get("sum_pi_squared"),
        **_optimal_token_options(inputs), handle_zero_tail=handle_zero_tail, eps=eps,
        singleton=singleton,
    )  # fmt: skip


@register_estimator("gae", needs=("values",))
def gae_tokens(inputs: AdvantageInputs, *, lmbda: float = 1.0) -> Tensor:
    """``advantages.token_gae``: token-level GAE with γ = 1 against a critic's ``values``, the
    score the reward of the last response token (PPO with a critic)."""
    return token_gae(inputs.scores, inputs.values, inputs.mask, lmbda).advantages
