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
from rlnb.estimators.advantages import token_gae


@dataclass
class AdvantageInputs:
    """What an advantage estimator may read. All tensors are batch-major, ``B`` responses.

    ``scores [B]``: one outcome score per response. ``response_mask [B, L]``: 1 on response tokens
    (``None``: one token per response, ``[B, 1]`` of ones, as on the prompt bandit). Groups: either
    ``group_size`` (contiguous blocks) or ``group_ids [B]``. Optional ``[B, L]`` inputs:
    ``token_rewards``, ``old_logp`` and ``ref_logp`` (log-probs of the sampling and the reference
    policy), ``values`` (a critic's ``V(x_<t)``), ``step_boundaries`` (bool, True where a reasoning
    step ends). ``extras``: anything else, by name (e.g. ``reference_values`` for PVPO).
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
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected an identifier-like string, got {name!r}")
    if name in ESTIMATORS and not replace:
        raise ValueError(f"name: {name!r} is already registered (pass replace=True to override)")

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


# --- the built-in estimators (formulas and papers in rlnb.estimators.group) -----------------------


def _spread(adv: Tensor, inputs: AdvantageInputs) -> Tensor:
    return G.broadcast_to_tokens(adv, inputs.mask)


@register_estimator("grpo")
def grpo_tokens(inputs: AdvantageInputs, *, eps: float = 1e-6) -> Tensor:
    """``group.grpo``: ``(r − mean_g) / (std_g + eps)`` on every token of the response."""
    return _spread(G.grpo(inputs.scores, **inputs.groups(), eps=eps), inputs)


@register_estimator("dr_grpo")
def dr_grpo_tokens(inputs: AdvantageInputs) -> Tensor:
    """``group.dr_grpo``: ``r − mean_g``."""
    return _spread(G.dr_grpo(inputs.scores, **inputs.groups()), inputs)


@register_estimator("rloo")
def rloo_tokens(inputs: AdvantageInputs) -> Tensor:
    """``group.rloo``: ``r − mean of the others``."""
    return _spread(G.rloo(inputs.scores, **inputs.groups()), inputs)


@register_estimator("lite_ppo")
def lite_ppo_tokens(inputs: AdvantageInputs, *, eps: float = 1e-4) -> Tensor:
    """``group.lite_ppo``: ``(r − mean_g) / (std_batch + eps)``."""
    return _spread(G.lite_ppo(inputs.scores, **inputs.groups(), eps=eps), inputs)


@register_estimator("reinforce_pp")
def reinforce_pp_tokens(inputs: AdvantageInputs) -> Tensor:
    """``group.reinforce_pp_baseline``: ``r − mean_g``, whitened over the batch."""
    return _spread(G.reinforce_pp_baseline(inputs.scores, **inputs.groups()), inputs)


@register_estimator("qae")
def qae_tokens(inputs: AdvantageInputs, *, k: float = 0.4) -> Tensor:
    """``group.qae``: ``r − Q_k(group)``."""
    return _spread(G.qae(inputs.scores, **inputs.groups(), k=k), inputs)


@register_estimator("pvpo", needs=("reference_values",))
def pvpo_tokens(inputs: AdvantageInputs) -> Tensor:
    """``group.pvpo``: ``r − V_ref``, with ``extras["reference_values"]`` per response or group."""
    ref = inputs.get("reference_values")
    return _spread(G.pvpo(inputs.scores, ref, **inputs.groups()), inputs)


@register_estimator("passk")
def passk_tokens(inputs: AdvantageInputs, *, norm_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """``group.passk_advantages``: only each group's best response, ``r_max − r_second``."""
    adv = G.passk_advantages(inputs.scores, **inputs.groups(), norm_by_std=norm_by_std, eps=eps)
    return _spread(adv, inputs)


@register_estimator("gae", needs=("values",))
def gae_tokens(inputs: AdvantageInputs, *, lmbda: float = 1.0) -> Tensor:
    """``advantages.token_gae``: token-level GAE with γ = 1 against a critic's ``values``, the
    score the reward of the last response token (PPO with a critic)."""
    return token_gae(inputs.scores, inputs.values, inputs.mask, lmbda).advantages
