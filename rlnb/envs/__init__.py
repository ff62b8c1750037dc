"""Environments with exact answers: tabular MDPs (and, later, bandits and verifiable tasks)."""

from rlnb.envs.tabular import TabularMDP, Transitions, chain, garnet, gridworld, random_walk

__all__ = ["TabularMDP", "Transitions", "chain", "garnet", "gridworld", "random_walk"]
