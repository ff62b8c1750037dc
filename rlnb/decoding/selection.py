"""Choosing among samples: the unbiased pass@k estimator, majority voting and best-of-N."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from rlnb.decoding.sampling import sample


def pass_at_k(n_correct, n, k: int):
    """Unbiased pass@k from ``n`` samples of which ``n_correct`` are correct ("Evaluating Large
    Language Models Trained on Code"): ``1 − C(n − c, k) / C(n, k)`` (1 when ``n − c < k``).

    ``n_correct`` and ``n`` are integers or integer tensors/arrays (broadcast); the result is a
    float, or a float64 tensor of their broadcast shape.
    """
    scalar = all(isinstance(x, int) for x in (n_correct, n))
    c = torch.as_tensor(n_correct, dtype=torch.float64)
    total = torch.as_tensor(n, dtype=torch.float64)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    if bool(c.isnan().any() or total.isnan().any()):
        raise ValueError("n_correct, n: expected integer counts, got NaN")
    if bool((total < k).any()):
        raise ValueError(f"n: expected every n ≥ k = {k}, got min {total.min().item():g}")
    if bool((c < 0).any() or (c > total).any()):
        raise ValueError("n_correct: expected 0 ≤ n_correct ≤ n")
    wrong = total - c
    # log C(n − c, k) − log C(n, k), only where n − c ≥ k
    safe = torch.where(wrong >= k, wrong, torch.full_like(wrong, float(k)))
    log_ratio = (
        torch.lgamma(safe + 1)
        - torch.lgamma(safe - k + 1)
        - torch.lgamma(total + 1)
        + torch.lgamma(total - k + 1)
    )
    result = torch.where(wrong >= k, 1.0 - log_ratio.exp(), torch.ones_like(wrong))
    return result.item() if scalar else result


def majority_vote(answers: Sequence[str], group_size: int) -> list[str]:
    """The most frequent answer of each consecutive group of ``group_size`` (ties: the one that
    appears first in the group)."""
    if not isinstance(group_size, int) or group_size < 1 or len(answers) % group_size:
        raise ValueError(
            f"group_size: expected a positive integer dividing {len(answers)}, got {group_size!r}"
        )
    votes = []
    for start in range(0, len(answers), group_size):
        group = list(answers[start : start + group_size])
        counts = Counter(group)
        votes.append(max(group, key=lambda a: (counts[a], -group.index(a))))
    return votes


def best_of_n(scores: Tensor, group_size: int) -> Tensor:
    """Index (into the flat batch) of the highest-scoring sample in each consecutive group
    (ties: the first)."""
    if scores.ndim != 1 or group_size < 1 or scores.numel() % group_size:
        raise ValueError(
            f"scores, group_size: expected a 1-D tensor whose length is a multiple of "
            f"group_size, got shape {tuple(scores.shape)} and {group_size!r}"
        )
    best = scores.view(-1, group_size).argmax(dim=1)  # argmax returns the first maximum
    return best + torch.arange(0, scores.numel(), group_size, device=scores.device)


def count_correct(
    model,
    tokenizer,
    task,
    prompts: Sequence[str],
    n: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
) -> Tensor:
    """Number of correct completions (``task.reward == 1``) among ``n`` samples per prompt, ``[P]``.
    ``temperature=0`` decodes greedily (then every sample is the same)."""
    per_batch = max(1, batch_size // n)
    correct = []
    for start in range(0, len(prompts), per_batch):
        chunk = list(prompts[start : start + per_batch])
        out = sample(
            model, tokenizer, chunk, n=n, max_new_tokens=task.max_new_tokens,
            temperature=temperature, seed=seed + start,
        )  # fmt: skip
        rewards = torch.tensor(task.rewards(out.prompts, out.text))
        correct.append((rewards == 1.0).view(len(chunk), n).sum(1))
    return torch.cat(correct)


def evaluate_pass_at_k(
    model,
    tokenizer,
    task,
    prompts: Sequence[str],
    n: int = 16,
    ks: Sequence[int] = (1, 16),
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[int, float]:
    """Mean unbiased pass@k over ``prompts`` from ``n`` samples each (see ``count_correct``).
    ``temperature=0`` with ``n=1`` gives greedy accuracy."""
    n_correct = count_correct(model, tokenizer, task, prompts, n, temperature, seed)
    return {k: pass_at_k(n_correct, n, k).mean().item() for k in ks}
