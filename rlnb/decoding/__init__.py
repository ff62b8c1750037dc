"""Decoding: batched KV-cache sampling, sequence log-probs, pass@k, voting and best-of-N, tree
rollouts that share prefixes and Monte Carlo prefix values; sampling a diffusion model toward a
reward (``rlnb.decoding.diffusion``: SVDD, a Doob h-transform correction, best-of-N)."""

from rlnb.decoding.diffusion import (
    DiffusionSamples,
    ancestral_sample,
    best_of_n_samples,
    doob_guided,
    svdd,
)
from rlnb.decoding.sampling import Samples, completion_logprobs, sample, sequence_logprobs
from rlnb.decoding.selection import (
    best_of_n,
    count_correct,
    evaluate_pass_at_k,
    majority_vote,
    pass_at_k,
)
from rlnb.decoding.tree import Tree, mc_prefix_values, prefix_values, sample_tree

__all__ = [
    "DiffusionSamples",
    "ancestral_sample",
    "best_of_n_samples",
    "doob_guided",
    "svdd",
    "Samples",
    "completion_logprobs",
    "sample",
    "sequence_logprobs",
    "best_of_n",
    "count_correct",
    "evaluate_pass_at_k",
    "majority_vote",
    "pass_at_k",
    "Tree",
    "mc_prefix_values",
    "prefix_values",
    "sample_tree",
]
