"""Random test batches shared by the estimator and loss tests: groups of random sizes, shuffled,
and ragged right-padded response masks. Draws in a fixed order from the caller's generator."""

import torch


def shuffled_groups(g: torch.Generator, n_groups: int, min_group: int, max_group: int):
    """Group ids ``[B]``: ``n_groups`` groups of sizes in ``[min_group, max_group]``, shuffled."""
    sizes = torch.randint(min_group, max_group + 1, (n_groups,), generator=g)
    ids = torch.repeat_interleave(torch.arange(n_groups), sizes)
    return ids[torch.randperm(len(ids), generator=g)]


def ragged_mask(g: torch.Generator, B: int, L: int):
    """``(mask [B, L] bool, lengths [B])``: response lengths uniform in ``1..L``, right-padded."""
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    return torch.arange(L)[None, :] < lengths[:, None], lengths
