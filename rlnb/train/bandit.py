"""RL on the prompt bandit (``rlnb.envs.bandits``): language-model RL with verifiable rewards,
minus the language model, with any estimator of ``rlnb.estimators.registry``."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor

from rlnb.decoding.selection import majority_vote
from rlnb.envs.bandits import PromptBandit, Sample
from rlnb.estimators.group import dr_grpo
from rlnb.estimators.label_free import evol_rl_rewards
from rlnb.estimators.losses import (
    categorical_kl,
    exploration_advantage,
    mis_weight,
    policy_loss,
    reweighted_reference,
)
from rlnb.estimators.registry import (
    AdvantageInputs,
    accepted_options,
    compute_advantages,
    get_estimator,
)
from rlnb.estimators.single_rollout import beta_mean, beta_prior, beta_tracker_update
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
    regularizer: Callable[[PromptBandit, Tensor], Tensor] | None = None,
    tracker_rho: float = 0.9,
    record_prompts: bool = False,
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
    policy. An estimator that needs ``tracked_values`` (``single_rollout``, ``mssr``: use
    ``group_size=1``) reads a per-prompt Beta tracker started from that reference (the
    verifier's rewards, even under a ``reward_fn``; ``beta_prior``) and updated after each step
    with forgetting factor ``tracker_rho``; the history then has ``baseline_error``, the mean
    |b(x) − pass@1(x)| over prompts.
    ``record_prompts`` adds ``pass1_by_prompt``, each prompt's exact pass@1 (an array per row).
    ``regularizer(bandit, prompts) → scalar`` is added to the loss (an exact KL to a reference, an
    entropy bonus). Returns ``(history, bandit)``: one row per step, ``step, reward, pass1, passk,
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
    tracked = "tracked_values" in get_estimator(estimator).needs
    if tracked and group_size != 1:
        raise ValueError(f"group_size: {estimator!r} tracks one rollout per prompt, expected 1")
    alpha, beta = beta_prior(reference.clamp(0, 1)) if tracked else (None, None)

    def row(step, reward=float("nan"), zero=float("nan"), gnorm=float("nan")):
        out = {"step": step, "reward": reward, **_exact_metrics(bandit, k),
               "zero_adv_frac": zero, "grad_norm": gnorm}  # fmt: skip
        if tracked:  # how far the tracked baseline is from the true success rate
            error = (beta_mean(alpha, beta) - bandit.pass_at_1()).abs().mean()
            out["baseline_error"] = error.item()
        if record_prompts:
            out["pass1_by_prompt"] = bandit.pass_at_1().numpy().copy()
        return out

    history = [row(0)]
    for step in progress_bar(range(1, steps + 1), desc=f"bandit {estimator}", enabled=progress):
        prompts = torch.randperm(bandit.n_prompts, generator=g)[:prompts_per_step]
        s = bandit.sample(group_size, prompts, generator=g)
        scores = s.rewards if reward_fn is None else reward_fn(s, group_size)
        extras = {"reference_values": reference[s.prompts]}
        if tracked:
            extras["tracked_values"] = beta_mean(alpha, beta)[s.prompts].to(scores.dtype)
        inputs = AdvantageInputs(
            scores, group_size=group_size, old_logp=s.logp.detach()[:, None], extras=extras
        )
        adv = compute_advantages(estimator, inputs, **options)[:, 0].detach()
        if tracked:
            success = (scores > 0.5).to(alpha.dtype)  # MSSR's code counts score > 0.5 a success
            alpha, beta = beta_tracker_update(alpha, beta, s.prompts, success, tracker_rho)
        mask = torch.ones(len(adv), 1)
        loss = policy_loss(s.logp[:, None], s.logp.detach()[:, None], adv, mask).loss
        if regularizer is not None:
            loss = loss + regularizer(bandit, prompts)
        opt.zero_grad()
        loss.backward()
        gnorm = torch.sqrt(sum((p.grad**2).sum() for p in bandit.parameters()))
        opt.step()
        history.append(
            row(step, s.rewards.mean().item(), (adv == 0).float().mean().item(), gnorm.item())
        )
    return pd.DataFrame(history), bandit


def kl_regularizer(
    reference_logits: Tensor, direction: str, coef: float, reweight: bool = False
) -> Callable[[PromptBandit, Tensor], Tensor]:
    """A ``regularizer`` for ``train``: ``coef`` × the exact KL between the policy and a reference
    ``[P, M]`` (logits or log-probs), averaged over the step's prompts. ``direction="reverse"``:
    ``KL(π ‖ π_ref)``, the penalty of GRPO's loss; ``"forward"``: ``KL(π_ref ‖ π)``, RAPO's.
    ``reweight``: the reference is first reweighted by each prompt's current exact success rate
    φ (``reweighted_reference``: φ = 0, an unsolved prompt, flattens it to uniform)."""
    if direction not in ("reverse", "forward"):
        raise ValueError(f"direction: expected 'reverse' or 'forward', got {direction!r}")
    if not coef >= 0:
        raise ValueError(f"coef: expected a non-negative coefficient, got {coef!r}")
    ref_logp = torch.log_softmax(reference_logits.detach(), -1)

    def regularizer(bandit: PromptBandit, prompts: Tensor) -> Tensor:
        logp = torch.log_softmax(bandit.logits()[prompts], -1)
        ref = ref_logp[prompts]
        if reweight:
            ref = reweighted_reference(ref, bandit.pass_at_1()[prompts][:, None])
        pair = (logp, ref) if direction == "reverse" else (ref, logp)
        return coef * categorical_kl(*pair).mean()

    return regularizer


def entropy_bonus(coef: float) -> Callable[[PromptBandit, Tensor], Tensor]:
    """A ``regularizer`` for ``train``: ``−coef`` × the mean exact entropy of the step's prompts."""

    def regularizer(bandit: PromptBandit, prompts: Tensor) -> Tensor:
        logits = bandit.logits()[prompts]
        return -coef * torch.distributions.Categorical(logits=logits).entropy().mean()

    return regularizer


def _exact_metrics(bandit: PromptBandit, k: int) -> dict:
    """Exact pass@1, pass@k and entropy, averaged over all prompts."""
    return {
        "pass1": bandit.pass_at_1().mean().item(),
        "passk": bandit.pass_at_k(k).mean().item(),
        "entropy": bandit.entropy().mean().item(),
    }


def _in_majority(sample: Sample, group_size: int, n_styles: int) -> Tensor:
    """``[G, n]`` bool: the response's final answer (``answer // n_styles``) is its group's majority
    vote (``rlnb.decoding.majority_vote``; ties: the answer seen first in the group)."""
    if n_styles < 1:
        raise ValueError(f"n_styles: expected a positive int, got {n_styles}")
    finals = (sample.answers // n_styles).view(-1, group_size)
    winners = torch.tensor(majority_vote(finals.reshape(-1).tolist(), group_size))
    return finals == winners[:, None].to(finals.device)


def majority_vote_rewards(sample: Sample, group_size: int, n_styles: int = 1) -> Tensor:
    """Unsupervised RLVR's pseudo-reward: 1 if the answer equals its group's majority vote, else 0.
    No verifier involved. With ``n_styles > 1`` the bandit's answers are (final answer, style)
    pairs, ``answer = final · n_styles + style``, and the vote is on the final answer."""
    return _in_majority(sample, group_size, n_styles).float().reshape(-1)


def evol_rl_bandit_rewards(sample: Sample, group_size: int, n_styles: int = 1) -> Tensor:
    """``rlnb.estimators.label_free.evol_rl_rewards`` on the bandit: the majority vote on the final
    answer, and a similarity of 1 between two responses that are the same answer (same final
    answer, same style), 0 otherwise — the bandit's stand-in for the paper's embedding cosine."""
    answers = sample.answers.view(-1, group_size)
    similarity = (answers[:, :, None] == answers[:, None, :]).float()
    return evol_rl_rewards(_in_majority(sample, group_size, n_styles), similarity).reshape(-1)


def _rl_plus_weight(logp: Tensor, old_logp: Tensor, advantages: Tensor) -> Tensor:
    """RL-PLUS: ``mis_weight · exploration_advantage``; a deterministic demonstrator, π_ω(e) = 1."""
    return mis_weight(logp, old_logp, torch.zeros_like(logp)) * exploration_advantage(
        advantages, logp
    )


def _importance_weight(logp: Tensor, old_logp: Tensor, advantages: Tensor) -> Tensor:
    """Plain importance sampling from the demonstrator: ``π_θ(e) / π_ω(e) · A`` with π_ω(e) = 1."""
    return logp.exp() * advantages


def _on_policy_weight(logp: Tensor, old_logp: Tensor, advantages: Tensor) -> Tensor:
    """The demonstration treated as the policy's own sample: ``π_θ(e) / π_θold(e) · A``."""
    return (logp - old_logp).exp() * advantages


# how an external demonstration's advantage is weighted in the loss ``−Σ weight``, by name
DEMONSTRATION_WEIGHTS = {
    "rl_plus": _rl_plus_weight,
    "importance_sampling": _importance_weight,
    "on_policy": _on_policy_weight,
}


def train_with_demonstrations(
    bandit: PromptBandit,
    demonstrations: Tensor,
    weighting: str = "rl_plus",
    steps: int = 200,
    group_size: int = 7,
    prompts_per_step: int = 16,
    lr: float = 0.1,
    k: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, PromptBandit]:
    """Hybrid on-policy + external RL on the bandit, as RL-PLUS's recipe: each prompt's group is
    ``group_size`` sampled answers plus its ``demonstrations[p]`` (one correct answer id per prompt,
    ``[P]``, from a deterministic demonstrator), all scored by the verifier; advantages
    ``A = r − mean`` over the ``group_size + 1`` (no std, as the authors' script). Loss: ``−A·ρ``
    on the sampled answers and ``−w`` on the demonstration, ``w`` from
    ``DEMONSTRATION_WEIGHTS[weighting]``; the sum over the batch divided by its size. Returns
    ``(history, bandit)`` like ``train`` (``reward`` is the sampled answers' mean)."""
    if weighting not in DEMONSTRATION_WEIGHTS:
        raise ValueError(
            f"weighting: expected one of {tuple(DEMONSTRATION_WEIGHTS)}, got {weighting!r}"
        )
    if demonstrations.shape != (bandit.n_prompts,):
        raise ValueError(
            f"demonstrations: expected one answer id per prompt ({bandit.n_prompts},), got "
            f"{tuple(demonstrations.shape)}"
        )
    weight_fn = DEMONSTRATION_WEIGHTS[weighting]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(bandit.parameters(), lr=lr)
    history = [{"step": 0, "reward": float("nan"), **_exact_metrics(bandit, k)}]
    for step in progress_bar(range(1, steps + 1), desc=f"demos {weighting}", enabled=progress):
        prompts = torch.randperm(bandit.n_prompts, generator=g)[:prompts_per_step]
        s = bandit.sample(group_size, prompts, generator=g)
        demo = demonstrations[prompts]
        demo_logp = torch.log_softmax(bandit.logits()[prompts], -1).gather(1, demo[:, None])[:, 0]
        rewards = torch.cat(
            [s.rewards.view(-1, group_size), bandit.reward_table[prompts, demo][:, None]], 1
        )
        adv = dr_grpo(rewards.reshape(-1), group_size=group_size + 1).view_as(rewards).detach()
        sampled = -(adv[:, :-1].reshape(-1) * (s.logp - s.logp.detach()).exp()).sum()
        external = -weight_fn(demo_logp, demo_logp.detach(), adv[:, -1]).sum()
        loss = (sampled + external) / rewards.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(
            {"step": step, "reward": s.rewards.mean().item(), **_exact_metrics(bandit, k)}
        )
    return pd.DataFrame(history), bandit
