"""The tiny loss search of notebook 05: the search space, the TD-equivalence test and the claim
that the search ranks the TD loss first."""

import pytest
import torch

from rlnb.envs.tabular import chain
from rlnb.train.loss_search import (
    TERMS,
    candidate_losses,
    is_td_equivalent,
    loss_gradient,
    search_losses,
)


def test_the_search_space_lists_each_loss_once():
    names, weights = candidate_losses()
    n = len(TERMS)
    assert (
        len(names) == len(weights) == n + n * (n - 1) // 2 + n * (n - 1)
    )  # singles, w = 1, w = 0.1
    assert len({tuple(w.tolist()) for w in weights}) == len(weights)


def test_gradients_of_simple_losses():
    q = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    names = list(TERMS)
    w = torch.zeros(3, len(names), dtype=torch.float64)
    w[0, names.index("δ²")] = 1.0
    w[1, names.index("Q")] = 1.0
    w[2, names.index("|δ|")] = 1.0
    grad = loss_gradient(w, q.expand(3, -1), y.expand(3, -1))
    torch.testing.assert_close(grad[0], 2 * (q - y)[0])
    torch.testing.assert_close(grad[1], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(grad[2], torch.sign(q - y)[0])


def test_td_equivalence_means_a_positive_multiple_of_delta_squared():
    names = list(TERMS)
    w = torch.zeros(4, len(names), dtype=torch.float64)
    w[0, names.index("δ²")] = 1.0  # TD
    w[1, names.index("δ²")] = 0.1  # rescaled TD
    w[2, names.index("δ²")], w[2, names.index("Q")] = 1.0, 0.1  # DQNReg: shifted fixed point
    w[3, names.index("|δ|")] = 1.0  # same sign, not proportional
    assert is_td_equivalent(w).tolist() == [True, True, False, False]
    _, weights = candidate_losses()
    assert is_td_equivalent(weights).sum() == 1  # only δ² itself in the search space


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_search_ranks_the_td_loss_first(seed):
    ranked = search_losses(chain(8, slip=0.1, gamma=0.9), seed=seed)
    assert ranked.loss.iloc[0] == "δ²" and ranked.td_equivalent.iloc[0]
    assert ranked.fitness.iloc[0] > ranked.fitness.iloc[1] + 0.01
    assert (ranked.return_ratio > 0.99).sum() > 10  # many losses act optimally: values decide


def test_search_rejects_bad_input():
    with pytest.raises(ValueError, match="steps"):
        search_losses(chain(4), steps=0)
