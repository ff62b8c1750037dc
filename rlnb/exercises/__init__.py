"""Exercises that check themselves.

In a notebook's "Try it" cell the reader writes a function and runs
``rlnb.exercises.check("gae", my_gae)``: the grader calls it on a battery of inputs (random ones
and the edge cases: terminated and truncated steps, groups of one, all-equal groups, padding),
compares with the library, and prints ✓, "not attempted yet", or the first failing input with the
expected and the returned values and a hint. ``hint(name)`` gives the next general hint,
``solution(name)`` prints a reference solution. ``EXERCISES`` lists them all (``exercises_of("02")``
those of one notebook).
"""

from rlnb.exercises import catalog  # noqa: F401  (registers the exercises)
from rlnb.exercises.grader import (
    EXERCISES,
    Case,
    Exercise,
    Verdict,
    check,
    exercises_of,
    get_exercise,
    hint,
    solution,
)

__all__ = [
    "EXERCISES",
    "Case",
    "Exercise",
    "Verdict",
    "check",
    "exercises_of",
    "get_exercise",
    "hint",
    "solution",
]
