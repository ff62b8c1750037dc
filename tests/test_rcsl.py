"""Notebook 07c's library: RCSL's labels and inputs against loops, the stitching data, the learned
tabular model and MBRCSL's rollouts, and the stitching claim over three seeds."""

import pytest
import torch
from torch import nn

from rlnb.envs.tabular import Transitions, reward_chain
from rlnb.exercises import solutions
from rlnb.train.rcsl import (
    DOWN,
    RIGHT,
    MLPPolicy,
    contexts,
    fit_tabular_model,
    mbrcsl_dataset,
    model_rollouts,
    rcsl_inputs,
    rcsl_return,
    return_to_go,
    scripted_episode,
    stitching_dataset,
    stitching_gridworld,
    train_rcsl,
)


def test_return_to_go_matches_the_loop():
    _, data = stitching_dataset(5, episodes=9, seed=1)
    want = solutions.return_to_go(data.rewards, data.terminated, data.truncated, 0.95)
    torch.testing.assert_close(return_to_go(data, 0.95), want)


def test_the_optimal_path_is_in_the_data_only_in_pieces():
    mdp, data = stitching_dataset(5, episodes=30, seed=0)
    start, goal, corner = 0, 24, 20
    ends = torch.nonzero(data.done).squeeze(1).tolist()
    first = 0
    kinds = []
    for end in ends:
        s = data.states[first : end + 1].tolist() + [int(data.next_states[end])]
        assert not (s[0] == start and goal in s), s  # no episode holds the whole path
        kinds.append((s[0], s[-1]))
        first = end + 1
    assert len(ends) == 30
    assert kinds.count((start, 4)) == 10 and kinds.count((corner, goal)) == 10  # decoy, bottom row
    _, two = stitching_dataset(5, episodes=30, seed=0, kinds=2)
    assert goal not in two.next_states.tolist()
    with pytest.raises(ValueError, match="kinds"):
        stitching_dataset(kinds=4)


def test_reward_chain_values_by_hand():
    mdp = reward_chain(5, gamma=0.9, seed=3)
    v, pi = mdp.value_iteration()
    assert (pi[:4].argmax(-1) == 1).all()  # always right
    r = torch.tensor([mdp.R[s, 1, s + 1].item() for s in range(4)], dtype=torch.float64)
    want = torch.zeros(5, dtype=torch.float64)
    for s in reversed(range(4)):
        want[s] = r[s] + 0.9 * want[s + 1]
    torch.testing.assert_close(v, want)


def test_contexts_stay_inside_the_episode():
    rows = rcsl_inputs(
        Transitions(
            torch.tensor([1, 2, 3, 7, 8]), torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.float64),
            torch.tensor([2, 3, 4, 8, 9]), torch.tensor([False, False, True, False, True]), torch.zeros(5, dtype=torch.bool),
        ),
        0.9,
    )  # fmt: skip
    S, _ = contexts(rows, 3)
    assert S.tolist() == [[1, 1, 1], [1, 1, 2], [1, 2, 3], [7, 7, 7], [7, 7, 8]]


def test_tabular_model_and_rollouts_by_hand():
    mdp = stitching_gridworld(5)
    data = scripted_episode(mdp, 0, [RIGHT] * 4, 5)  # into the decoy
    model = fit_tabular_model(data, 25, 4)
    assert model.seen.sum() == 4 and model.terminal[4] and model.behaviour[0, RIGHT] == 1
    torch.testing.assert_close(model.P[model.seen].sum(-1), torch.ones(4, dtype=torch.float64))
    steps, returns = model_rollouts(model, 0, 3, 10, mdp.gamma)
    torch.testing.assert_close(returns, torch.full((3,), 0.5 * 0.95**3, dtype=torch.float64))
    assert steps.states.tolist() == [0, 1, 2, 3] * 3 and steps.terminated.sum() == 3


def test_mbrcsl_keeps_the_top_returns():
    mdp, data = stitching_dataset(5, episodes=30, seed=0)
    kept, returns = mbrcsl_dataset(data, (25, 4), 0, mdp.gamma, rollouts=500, keep=0.1)
    cut = torch.quantile(returns, 0.9)
    kept_returns = return_to_go(kept, mdp.gamma)[rcsl_inputs(kept, mdp.gamma).episode_start]
    assert (kept_returns >= cut - 1e-12).all() and len(kept_returns) >= 50
    assert 24 in kept.next_states.tolist()  # the stitched path reaches the goal
    with pytest.raises(ValueError, match="keep"):
        mbrcsl_dataset(data, (25, 4), 0, mdp.gamma, keep=0.0)


class Scripted(nn.Module):
    """A "policy" that always picks ``action``."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def forward(self, states, returns):
        return nn.functional.one_hot(torch.full((len(states),), self.action), 4).float()


def test_rcsl_return_runs_the_policy_in_the_true_mdp():
    mdp = stitching_gridworld(5)
    assert rcsl_return(mdp, Scripted(RIGHT), 1.0) == pytest.approx(0.5 * 0.95**3)
    assert rcsl_return(mdp, Scripted(DOWN), 1.0, max_steps=10) == 0.0


def test_rcsl_inputs_are_checked():
    mdp, data = stitching_dataset(5, episodes=6)
    rows = rcsl_inputs(data, mdp.gamma)
    with pytest.raises(ValueError, match="kind"):
        train_rcsl(rows, 25, 4, "lstm")
    with pytest.raises(ValueError, match="state_features"):
        train_rcsl(rows, 25, 4, "transformer", state_features=torch.eye(25))
    with pytest.raises(ValueError, match="state_features"):
        MLPPolicy(25, 4, state_features=torch.eye(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mbrcsl_stitches_where_rcsl_does_not(seed):
    mdp, data = stitching_dataset(5, episodes=30, seed=seed)
    optimum = mdp.value_iteration()[0][0].item()
    rows = rcsl_inputs(data, mdp.gamma)
    rcsl, _ = train_rcsl(rows, 25, 4, "mlp", steps=600, seed=seed)
    kept, _ = mbrcsl_dataset(data, (25, 4), 0, mdp.gamma, rollouts=1000, seed=seed)
    mb_rows = rcsl_inputs(kept, mdp.gamma)
    mbrcsl, _ = train_rcsl(mb_rows, 25, 4, "mlp", steps=600, seed=seed)
    best_from_start = rows.returns[rows.states == 0].max().item()
    assert (
        rcsl_return(mdp, rcsl, rows.returns[rows.episode_start].max().item())
        <= best_from_start + 1e-6
    )
    assert (
        rcsl_return(mdp, mbrcsl, mb_rows.returns[mb_rows.episode_start].max().item())
        >= 0.95 * optimum
    )
