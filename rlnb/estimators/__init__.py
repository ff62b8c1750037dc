"""Pure functions on tensors that turn rewards and values into targets and advantages.

Conventions are stated once, at the top of ``rlnb.estimators.returns``. ``rlnb.estimators``
imports nothing else of rlnb. ``rlnb.estimators.reference`` holds the plain loops the tests
compare against. ``rlnb.estimators.registry`` is the one registry of advantage estimators for
language-model RL (``compute_advantages(name, inputs)``, ``register_estimator``);
``rlnb.estimators.group`` holds the per-response group baselines, ``rlnb.estimators.tokens`` the
token-level ones.
"""

from rlnb.estimators.advantages import Advantages, gae, last_token, token_gae, vtrace
from rlnb.estimators.distributional import (
    categorical_projection,
    decode,
    hl_gauss,
    symexp,
    symlog,
    two_hot,
)
from rlnb.estimators.group import (
    broadcast_to_tokens,
    dr_grpo,
    gdpo,
    gpg,
    group_advantages,
    grpo,
    knapsack_value,
    lite_ppo,
    maxrl,
    opo,
    passk_advantages,
    pvpo,
    qae,
    reinforce_pp_baseline,
    remax,
    rloo,
    whiten,
)
from rlnb.estimators.losses import PolicyLoss, aggregate, kl_penalty, policy_loss
from rlnb.estimators.registry import (
    ESTIMATORS,
    AdvantageInputs,
    Estimator,
    accepted_options,
    compute_advantages,
    get_estimator,
    outcome_estimators,
    register_estimator,
)
from rlnb.estimators.returns import (
    discounted_returns,
    lambda_returns,
    n_step_returns,
    reverse_discounted_cumsum,
    td_errors,
)
from rlnb.estimators.tokens import (
    multi_turn_optimal_token_baseline,
    optimal_token_baseline,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
    reward_to_go,
)

__all__ = [
    "ESTIMATORS",
    "AdvantageInputs",
    "Estimator",
    "accepted_options",
    "compute_advantages",
    "get_estimator",
    "outcome_estimators",
    "register_estimator",
    "last_token",
    "token_gae",
    "Advantages",
    "PolicyLoss",
    "aggregate",
    "broadcast_to_tokens",
    "categorical_projection",
    "decode",
    "hl_gauss",
    "symexp",
    "symlog",
    "two_hot",
    "dr_grpo",
    "group_advantages",
    "grpo",
    "kl_penalty",
    "knapsack_value",
    "lite_ppo",
    "passk_advantages",
    "policy_loss",
    "pvpo",
    "qae",
    "reinforce_pp_baseline",
    "rloo",
    "opo",
    "gpg",
    "maxrl",
    "remax",
    "gdpo",
    "whiten",
    "reward_to_go",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "optimal_token_baseline",
    "multi_turn_optimal_token_baseline",
    "discounted_returns",
    "gae",
    "lambda_returns",
    "n_step_returns",
    "reverse_discounted_cumsum",
    "td_errors",
    "vtrace",
]
