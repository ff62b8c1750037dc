"""Dyna-Q with a declarative prior: Q-learning as the special case, the prior used from the start,
and the speed-up notebook 03 claims."""

import numpy as np
import pytest
import torch

from rlnb.envs.tabular import TabularMDP, gridworld
from rlnb.train.dyna import dyna_q, known_model

GRID = gridworld(8, 8, slip=0.0, gamma=0.95)
NEAR_GOAL = [s for s in range(64) if abs(s // 8 - 7) + abs(s % 8 - 7) <= 4 and s != 63]


def test_known_model_reads_the_deterministic_moves():
    prior = known_model(GRID, [62])  # the cell left of the goal
    assert len(prior) == 4
    assert prior.transitions[(62, 1)] == (1.0, 63, True)  # moving right enters the goal
    assert prior.transitions[(62, 3)] == (0.0, 61, False)
    with pytest.raises(ValueError, match="deterministic"):
        known_model(gridworld(3, 3, slip=0.1), [0])
    with pytest.raises(ValueError, match="states"):
        known_model(GRID, [64])


def test_the_prior_is_planned_with_before_the_first_step():
    _, Q = dyna_q(GRID, 1, max_steps=1, planning_steps=0, prior=known_model(GRID, NEAR_GOAL))
    assert Q[62, 1] > 0.9 and Q[54, 2] > 0.8  # two steps from the goal, already valued
    _, Q0 = dyna_q(GRID, 1, max_steps=1, planning_steps=0)
    assert Q0.max() == 0.0


def test_without_planning_it_is_q_learning():
    # one decision: from state 0, action 0 pays 1 and action 1 pays 0, both end the episode
    P = torch.zeros(2, 2, 2, dtype=torch.float64)
    P[:, :, 1] = 1.0
    R = torch.zeros(2, 2, 2, dtype=torch.float64)
    R[0, 0, 1] = 1.0
    mdp = TabularMDP(P, R, 0.9, torch.tensor([1.0, 0.0]), torch.tensor([False, True]))
    history, Q = dyna_q(mdp, 1, alpha=0.5, epsilon=0.0, planning_steps=0, seed=0)
    taken = int(Q[0].argmax()) if Q[0].max() > 0 else 1
    assert Q[0, taken] == 0.5 * R[0, taken, 1].item() and Q.sum() == Q[0, taken]
    assert history.steps.tolist() == [1]
    history, _ = dyna_q(GRID, 3, max_steps=50, planning_steps=0, seed=1)
    assert list(history.columns) == ["episode", "steps", "return", "env_steps"]
    assert history.env_steps.iloc[-1] == history.steps.sum()


def test_planning_and_the_prior_each_save_steps():
    def steps(seed, **kw):
        return dyna_q(GRID, 20, max_steps=500, seed=seed, **kw)[0].env_steps.iloc[-1]

    seeds = range(8)
    q = np.mean([steps(s, planning_steps=0) for s in seeds])
    dyna = np.mean([steps(s, planning_steps=10) for s in seeds])
    prior = np.mean(
        [steps(s, planning_steps=10, prior=known_model(GRID, NEAR_GOAL)) for s in seeds]
    )
    assert dyna < 0.5 * q and prior < 0.9 * dyna


def test_dyna_q_rejects_bad_input():
    with pytest.raises(ValueError, match="episodes"):
        dyna_q(GRID, 0)
    with pytest.raises(ValueError, match="alpha, epsilon"):
        dyna_q(GRID, 1, epsilon=2.0)
    with pytest.raises(ValueError, match="planning_steps"):
        dyna_q(GRID, 1, planning_steps=-1)
