"""Environments with exact answers: tabular MDPs (``tabular``), prompt bandits (``bandits``; their
training loop is ``rlnb.train.bandit``), verifiable tasks for tiny language models (``tasks``), a
ride-hailing city (``ride_hailing``) and gymnasium helpers (``vector``)."""

from rlnb.envs.tabular import (
    TabularMDP,
    Transitions,
    chain,
    cliff_world,
    garnet,
    gridworld,
    random_walk,
    river_swim,
)

__all__ = [
    "TabularMDP",
    "Transitions",
    "chain",
    "cliff_world",
    "garnet",
    "gridworld",
    "random_walk",
    "river_swim",
]
