"""RL on the prompt bandit (``rlnb.envs.bandits``): language-model RL with verifiable rewards,
minus the language model, with any estimator of ``rlnb.estimators.registry``."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor

from rlnb.decoding.selection import majority_vote
from rlnb.envs.bandits import PromptBandit, Sample
from rlnb.estimators.losses import policy_loss
from rlnb.estimators.registry import (
    AdvantageInputs,
    accepted_options,
    compute_advantages,
    get_estimator,
)
from rlnb.progress import progress_bar


def train(
    bandit: PromptBandit,
    estimator: str = "grpo",
    steps: int = 200,
    group_size: int = 8,
    prompts_per_step: int = 16,
    lr: float = 0.1,
    k: int = 16,
    qae_k: float = 0.4,
    reward_fn: Callable[[Sample, int], Tensor] | None = None,
    reference_rollouts: int = 16,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, PromptBandit]:
    """On-policy RL on the bandit, in place: each step samples ``group_size`` answers for
    ``prompts_per_step`` random prompts, computes advantages with ``estimator`` (a name registered
    in ``rlnb.estimators.registry``; QAE's quantile is ``qae_k``) and takes one ``optimizer`` step
    (``adam`` or ``sgd``; SGD keeps each estimator's scale visible, Adam normalises it away) on
    ``policy_loss``.

    ``reward_fn(sample, group_size) → scores`` replaces the verifier's rewards (e.g. majority-vote
    pseudo-rewards); pass@k and pass@1 are always measured against the true correctness. PVPO's
    reference is the mean reward of ``reference_rollouts`` samples per prompt from the initial
    policy. Returns ``(history, bandit)``: one row per step, ``step, reward, pass1, passk,
    entropy, zero_adv_frac, grad_norm`` (exact quantities averaged over all prompts; ``reward`` is
    the sampled mean), and the trained bandit.
    """
    get_estimator(estimator)  # an unknown name fails here, before any work
    options = accepted_options(estimator, k=qae_k)
    g = torch.Generator().manual_seed(seed)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {optimizer!r}")
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(bandit.parameters(), lr=lr)
    with torch.no_grad():
        ref_sample = bandit.sample(reference_rollouts, generator=g)
        reference = ref_sample.rewards.view(bandit.n_prompts, -1).mean(1)

    def row(step, reward=float("nan"), zero=float("nan"), gnorm=float("nan")):
        return {
            "step": step,
            "reward": reward,
            "pass1": bandit.pass_at_1().mean().item(),
            "passk": bandit.pass_at_k(k).mean().item(),
            "entropy": bandit.entropy().mean().item(),
            "zero_adv_frac": zero,
            "grad_norm": gnorm,
        }

    history = [row(0)]
    for step in progress_bar(range(1, steps + 1), desc=f"bandit {estimator}", enabled=progress):
        prompts = torch.randperm(bandit.n_prompts, generator=g)[:prompts_per_step]
        s = bandit.sample(group_size, prompts, generator=g)
        scores = s.rewards if reward_fn is None else reward_fn(s, group_size)
        inputs = AdvantageInputs(
            scores, group_size=group_size, extras={"reference_values": reference[s.prompts]}
        )
        adv = compute_advantages(estimator, inputs, **options)[:, 0].detach()
        mask = torch.ones(len(adv), 1)
        loss = policy_loss(s.logp[:, None], s.logp.detach()[:, None], adv, mask).loss
        opt.zero_grad()
        loss.backward()
        gnorm = torch.sqrt(sum((p.grad**2).sum() for p in bandit.parameters()))
        opt.step()
        history.append(
            row(step, s.rewards.mean().item(), (adv == 0).float().mean().item(), gnorm.item())
        )
    return pd.DataFrame(history), bandit


def majority_vote_rewards(sample: Sample, group_size: int) -> Tensor:
    """Unsupervised RLVR's pseudo-reward: 1 if the answer equals its group's majority vote
    (``rlnb.decoding.majority_vote``; ties: the answer seen first in the group), else 0. No
    verifier involved."""
    answers = sample.answers.view(-1, group_size)
    winners = torch.tensor(majority_vote(sample.answers.tolist(), group_size))
    return (answers == winners[:, None].to(answers.device)).float().reshape(-1)
