"""A prompt bandit: language-model RL with verifiable rewards, minus the language model.

Each of ``P`` prompts has ``M`` candidate answers; a softmax policy over them stands in for the
LLM, a correctness mask for the verifier. Everything a group estimator needs is exact here:
per-prompt pass@1 ``p = Σ π·correct``, pass@k ``1 − (1 − p)^k``, entropy, and the advantage
``A^π(answer) = r(answer) − E_π[r]``. Optional shared *strategy* logits (one per answer family,
shared by all prompts) make prompts interact, as the weights of a real model do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Sample:
    """One batch of groups: ``prompts``, ``answers``, ``rewards``, ``logp`` (with grad), all ``[N]``."""

    prompts: Tensor
    answers: Tensor
    rewards: Tensor
    logp: Tensor


class PromptBandit:
    """``P × M`` answers with a softmax policy ``π(m | p) ∝ exp(θ[p, m] + w[strategy[p, m]])``.

    ``init_logits [P, M]`` start θ (trainable), ``correct [P, M]`` bool, ``rewards [P, M]`` graded
    rewards (default: ``correct`` as 0/1), ``strategy [P, M]`` answer families with shared
    trainable logits ``w`` (default: none). ``outlier_prob``/``outlier_reward``: each sampled reward
    is replaced by ``outlier_reward`` with that probability (a noisy verifier).
    """

    def __init__(
        self,
        init_logits: Tensor,
        correct: Tensor,
        rewards: Tensor | None = None,
        strategy: Tensor | None = None,
        outlier_prob: float = 0.0,
        outlier_reward: float = 0.0,
    ):
        if init_logits.ndim != 2:
            raise ValueError(f"init_logits: expected [P, M], got shape {tuple(init_logits.shape)}")
        if correct.shape != init_logits.shape or correct.dtype != torch.bool:
            raise ValueError(f"correct: expected a bool tensor of shape {tuple(init_logits.shape)}")
        if not 0.0 <= outlier_prob <= 1.0:
            raise ValueError(f"outlier_prob: expected a probability, got {outlier_prob}")
        self.theta = torch.nn.Parameter(init_logits.detach().clone().float())
        self.correct = correct
        self.reward_table = correct.float() if rewards is None else rewards.float()
        if self.reward_table.shape != correct.shape:
            raise ValueError(
                f"rewards: expected shape {tuple(correct.shape)}, got {tuple(self.reward_table.shape)}"
            )
        self.strategy = strategy
        n_strat = 0 if strategy is None else int(strategy.max()) + 1
        self.w = torch.nn.Parameter(torch.zeros(n_strat))
        self.outlier_prob, self.outlier_reward = outlier_prob, outlier_reward

    @property
    def n_prompts(self) -> int:
        return self.theta.shape[0]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.theta] + ([self.w] if self.strategy is not None else [])

    def logits(self) -> Tensor:
        return self.theta if self.strategy is None else self.theta + self.w[self.strategy]

    def probs(self) -> Tensor:
        return torch.softmax(self.logits(), -1)

    @torch.no_grad()
    def pass_at_1(self) -> Tensor:
        """Exact per-prompt success probability ``[P]``."""
        return (self.probs() * self.correct).sum(-1)

    @torch.no_grad()
    def pass_at_k(self, k: int) -> Tensor:
        """Exact per-prompt pass@k with independent samples: ``1 − (1 − p)^k``."""
        return 1 - (1 - self.pass_at_1()).clamp(min=0) ** k

    @torch.no_grad()
    def entropy(self) -> Tensor:
        """Per-prompt entropy of the answer distribution (nats) ``[P]``."""
        return torch.distributions.Categorical(logits=self.logits()).entropy()

    @torch.no_grad()
    def expected_reward(self) -> Tensor:
        return (self.probs() * self.reward_table).sum(-1)

    def exact_advantage(self, prompts: Tensor, answers: Tensor) -> Tensor:
        """``A^π = r(answer) − E_π[r | prompt]`` (noise-free rewards)."""
        return self.reward_table[prompts, answers] - self.expected_reward()[prompts]

    def sample(
        self,
        group_size: int,
        prompts: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Sample:
        """``group_size`` answers for each prompt in ``prompts`` (default: all), grouped contiguously."""
        if group_size < 1:
            raise ValueError(f"group_size: expected a positive int, got {group_size}")
        prompts = torch.arange(self.n_prompts) if prompts is None else prompts
        logp_all = torch.log_softmax(self.logits()[prompts], -1)
        answers = torch.multinomial(
            logp_all.detach().exp(), group_size, replacement=True, generator=generator
        )
        logp = logp_all.gather(1, answers).reshape(-1)
        prompt_ids = prompts.repeat_interleave(group_size)
        answers = answers.reshape(-1)
        rewards = self.reward_table[prompt_ids, answers]
        if self.outlier_prob > 0:
            hit = torch.rand(len(rewards), generator=generator) < self.outlier_prob
            rewards = torch.where(hit, torch.full_like(rewards, self.outlier_reward), rewards)
        return Sample(prompt_ids, answers, rewards, logp)


def make_prompt_bandit(
    n_prompts: int = 64,
    n_answers: int = 32,
    n_correct: int = 2,
    difficulty: tuple[float, float] = (1.0, 3.0),
    concentration: float = 1.0,
    seed: int = 0,
    **kwargs,
) -> PromptBandit:
    """Prompts whose initial pass@1 is drawn from ``Beta(*difficulty)`` (mean ``a/(a+b)``), with
    ``n_correct`` correct answers each; the wrong answers' mass follows a ``Dirichlet(concentration)``
    draw (smaller = peakier). ``kwargs`` go to ``PromptBandit``."""
    if not 1 <= n_correct < n_answers:
        raise ValueError(f"n_correct: expected an int in [1, n_answers), got {n_correct}")
    rng = np.random.default_rng(seed)
    p0 = torch.from_numpy(rng.beta(*difficulty, size=n_prompts)).float().clamp(1e-3, 1 - 1e-3)
    wrong = torch.from_numpy(
        rng.dirichlet([concentration] * (n_answers - n_correct), size=n_prompts)
    ).float()
    right = torch.from_numpy(rng.dirichlet([1.0] * n_correct, size=n_prompts)).float()
    g = torch.Generator().manual_seed(seed)
    probs = torch.cat([p0[:, None] * right, (1 - p0)[:, None] * wrong], 1).clamp(min=1e-8)
    perm = torch.argsort(torch.rand(n_prompts, n_answers, generator=g), -1)
    probs = probs.gather(1, perm)
    correct = perm < n_correct
    return PromptBandit(probs.log(), correct, **kwargs)


def make_two_strategy_bandit(
    n_prompts: int = 64,
    n_answers: int = 16,
    hard_fraction: float = 0.25,
    b_mass: float = 0.15,
    seed: int = 0,
) -> PromptBandit:
    """Prompts that share two answer strategies, A (first half of the answers) and B (second half),
    with one shared logit each. Easy prompts (the majority) have two correct A answers; hard prompts
    (the first ``hard_fraction``) have a single correct B answer. B starts with ``b_mass`` of each
    prompt's probability. Training on easy prompts pushes B down for everyone — the mechanism behind
    "The Invisible Leash" in miniature."""
    if not 0.0 <= hard_fraction <= 1.0 or not 0.0 < b_mass < 1.0:
        raise ValueError(
            f"hard_fraction, b_mass: expected [0, 1] and (0, 1), got {hard_fraction}, {b_mass}"
        )
    rng = np.random.default_rng(seed)
    half = n_answers // 2
    strategy = torch.tensor([0] * half + [1] * (n_answers - half)).expand(n_prompts, n_answers)
    a = torch.from_numpy(rng.dirichlet([1.0] * half, size=n_prompts)).float() * (1 - b_mass)
    b = torch.from_numpy(rng.dirichlet([1.0] * (n_answers - half), size=n_prompts)).float() * b_mass
    correct = torch.zeros(n_prompts, n_answers, dtype=torch.bool)
    n_hard = int(round(n_prompts * hard_fraction))
    for p in range(n_prompts):
        if p < n_hard:
            correct[p, half + int(rng.integers(n_answers - half))] = True
        else:
            correct[p, rng.choice(half, 2, replace=False)] = True
    return PromptBandit(torch.cat([a, b], 1).log(), correct, strategy=strategy)


def make_styled_bandit(
    n_prompts: int = 64,
    n_finals: int = 8,
    n_styles: int = 4,
    difficulty: tuple[float, float] = (3.0, 2.0),
    concentration: float = 1.0,
    seed: int = 0,
) -> PromptBandit:
    """Answers that are (final answer, style) pairs, ``answer = final · n_styles + style``: the
    stand-in for responses that reach the same final answer by different reasoning. One final
    answer per prompt is correct, with initial pass@1 drawn from ``Beta(*difficulty)``; its mass
    and the wrong finals' are spread over finals and styles by ``Dirichlet(concentration)`` draws.
    A majority vote reads ``answer // n_styles``."""
    if n_finals < 2 or n_styles < 1:
        raise ValueError(f"n_finals, n_styles: expected ≥ 2 and ≥ 1, got {n_finals}, {n_styles}")
    rng = np.random.default_rng(seed)
    p0 = rng.beta(*difficulty, size=n_prompts).clip(1e-3, 1 - 1e-3)
    wrong = rng.dirichlet([concentration] * (n_finals - 1), size=n_prompts) * (1 - p0[:, None])
    finals = np.concatenate([p0[:, None], wrong], 1)  # final 0 correct before the shuffle
    styles = rng.dirichlet([concentration] * n_styles, size=(n_prompts, n_finals))
    order = np.argsort(rng.random((n_prompts, n_finals)), 1)  # where each final goes
    probs = np.zeros((n_prompts, n_finals, n_styles))
    np.put_along_axis(probs, order[:, :, None], (finals[:, :, None] * styles), 1)
    correct = np.zeros((n_prompts, n_finals, n_styles), dtype=bool)
    np.put_along_axis(correct, order[:, :1, None], True, 1)
    probs = torch.from_numpy(probs.reshape(n_prompts, -1)).float().clamp(min=1e-8)
    return PromptBandit(probs.log(), torch.from_numpy(correct.reshape(n_prompts, -1)))


def make_boundary_bandit(
    n_prompts: int = 64, n_outside: int = 16, floor: float = 1e-4, seed: int = 0
) -> tuple[PromptBandit, Tensor]:
    """``make_prompt_bandit(n_prompts, seed=seed)`` with the first ``n_outside`` prompts
    pushed outside the policy's capability boundary: their correct answers keep ``floor`` of the
    probability in total (the wrong answers share the rest in their old proportions), so sampling
    almost never finds them. Returns ``(bandit, outside)``, ``outside`` a bool ``[P]``."""
    if not 0 <= n_outside <= n_prompts or not 0 < floor < 1:
        raise ValueError(
            f"n_outside, floor: expected 0 ≤ n_outside ≤ {n_prompts} and 0 < floor < 1, got "
            f"{n_outside}, {floor}"
        )
    base = make_prompt_bandit(n_prompts, seed=seed)
    probs, right = base.probs().detach(), base.correct
    outside = torch.arange(n_prompts) < n_outside
    mass = (probs * right).sum(1, keepdim=True)
    scale = torch.where(right, floor / mass, (1 - floor) / (1 - mass))
    probs = torch.where(outside[:, None], probs * scale, probs)
    return PromptBandit(probs.log(), right), outside
