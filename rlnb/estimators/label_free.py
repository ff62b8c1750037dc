"""Rewards without a verifier, computed from a group of responses to one prompt.

The majority vote (``rlnb.decoding.selection.majority_vote``) gives "Test-Time RL"'s pseudo-label:
1 for the responses that agree with the group's most frequent answer, 0 for the rest. EVOL-RL
("Evolving Language Models without Labels: Majority Drives Selection, Novelty Promotes Variation")
keeps that vote as the anchor and ranks the responses inside each side by how different they are
from the others. Conventions follow the authors' code (github.com/YujunZhou/EVOL-RL,
``semantic_novelty.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def evol_rl_rewards(in_majority: Tensor, similarity: Tensor) -> Tensor:
    """EVOL-RL's reward for ``N`` groups of ``n`` responses: ``in_majority [N, n]`` (bool: the
    response's answer is its group's majority vote) and ``similarity [N, n, n]`` (pairwise, in
    [0, 1]; the paper embeds the responses' solutions and takes cosines).

    Novelty ``u_i = 1 − (½ s̄_i + ½ m_i)``: ``s̄_i`` the mean similarity to the *other* responses on
    the same side of the vote (to all others when ``i`` is alone on its side), ``m_i`` the largest
    similarity to any other response. ``u`` is min–max normalised within each side (``ũ = 1`` for
    a side of one response, ``½`` when all of a side's novelties are equal). Reward:
    ``½ + ½ ũ ∈ [½, 1]`` in the majority, ``−1 + ½ ũ ∈ [−1, −½]`` in the minority — every
    majority response above every minority one, the novel ones on top of each side. ``[N, n]``
    out; a lone majority response gets 1, a lone minority one −½."""
    if in_majority.dtype != torch.bool or in_majority.ndim != 2:
        raise ValueError(
            f"in_majority: expected a bool [N, n] tensor, got {in_majority.dtype} "
            f"of shape {tuple(in_majority.shape)}"
        )
    N, n = in_majority.shape
    if similarity.shape != (N, n, n):
        raise ValueError(f"similarity: expected shape {(N, n, n)}, got {tuple(similarity.shape)}")
    sim = similarity.clamp(0, 1).to(torch.promote_types(similarity.dtype, torch.float32))
    other = ~torch.eye(n, dtype=torch.bool, device=sim.device)  # j ≠ i
    same_side = in_majority[:, :, None] == in_majority[:, None, :]
    peers = same_side & other
    alone = peers.sum(-1) == 0
    peers = torch.where(alone[..., None], other.expand(N, n, n), peers)
    count = peers.sum(-1).clamp(min=1)
    mean_sim = (sim * peers).sum(-1) / count
    max_sim = sim.masked_fill(~other, 0).amax(-1)
    novelty = 1 - (0.5 * mean_sim + 0.5 * max_sim)
    normalised = torch.empty_like(novelty)
    for side in (True, False):
        on = in_majority == side
        hi = novelty.masked_fill(~on, -torch.inf).amax(-1, keepdim=True)
        lo = novelty.masked_fill(~on, torch.inf).amin(-1, keepdim=True)
        size = on.sum(-1, keepdim=True)
        scaled = (novelty - lo) / (hi - lo).clamp(min=torch.finfo(novelty.dtype).tiny)
        scaled = torch.where(hi > lo, scaled, torch.full_like(novelty, 0.5))
        scaled = torch.where(size == 1, torch.ones_like(novelty), scaled)
        normalised = torch.where(on, scaled, normalised)
    return torch.where(in_majority, 0.5 + 0.5 * normalised, -1 + 0.5 * normalised)
