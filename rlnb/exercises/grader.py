"""The grader: run a reader's function on an exercise's battery of inputs and say what went wrong.

An ``Exercise`` has an ordered battery of ``Case``s, from the plainest input to the edge cases
(terminated and truncated steps, groups of one, all-equal groups, padding), each with the hint
that a failure *there* most likely means: a function that treats truncation as termination
passes the cases without truncation and fails the first one with it, so the verdict can say
"truncated steps must bootstrap from next_values". The expected values come from the library
(``rlnb.estimators`` and friends), never from the reference solution, which the tests check
against the same grader.

The reader's function is only called, positionally, with copies of the inputs.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rlnb.notebook import EXERCISE_METRIC, record


@dataclass(frozen=True)
class Case:
    """One input of a battery: ``key`` names what it tests; ``hint`` says what a failure here
    most likely means; ``inputs`` are the arguments, in the order of the exercise's signature."""

    key: str
    hint: str
    inputs: dict


@dataclass(frozen=True)
class Exercise:
    """``expected(**inputs)`` computes the library's answer; ``cases(generator)`` builds the
    battery; ``hints`` are the general hints ``hint(name)`` gives one at a time."""

    name: str
    notebook: str
    expected: Callable
    cases: Callable[[torch.Generator], list[Case]]
    solution: Callable
    hints: tuple[str, ...]
    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass
class Verdict:
    """``status``: ``"passed"``, ``"failed"`` or ``"not attempted"``; ``case``: the key of the
    first failing case (empty otherwise); ``message``: what ``check`` printed."""

    name: str
    status: str
    case: str = ""
    message: str = ""

    def __bool__(self) -> bool:
        return self.status == "passed"

    def _ipython_display_(self) -> None:
        """Show nothing: ``check`` printed the verdict already (``print(v.message)`` shows it again)."""


EXERCISES: dict[str, Exercise] = {}
_hints_shown: dict[str, int] = {}


def register_exercise(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"name: exercise {exercise.name!r} is already registered")
    EXERCISES[exercise.name] = exercise
    return exercise


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"name: expected one of {sorted(EXERCISES)}, got {name!r}")
    return EXERCISES[name]


def _copy(value):
    """A copy the reader's function may change freely (functions are passed as they are)."""
    return value if callable(value) else copy.deepcopy(value)


def _as_tensor(value) -> Tensor | None:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None


def compare(got, want, rtol: float, atol: float) -> str:
    """What is wrong with ``got`` against ``want`` (a tensor, a float, a tuple of them, or a list of
    names compared as a set), or ``""``."""
    if isinstance(want, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"expected a tuple of {len(want)} results, got {type(got).__name__}"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = compare(g, w, rtol, atol)
            if problem:
                return f"result {i}: {problem}"
        return ""
    if isinstance(want, list):  # names, compared as a set
        if not isinstance(got, (list, tuple, set)):
            return f"expected a list, got a {type(got).__name__}"
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        parts = [
            f"{what} {names}"
            for what, names in (("missing", missing), ("not expected", extra))
            if names
        ]
        return ", ".join(parts)
    w = _as_tensor(want)
    g = _as_tensor(got)
    if g is None:
        return f"expected a tensor of shape {tuple(w.shape)}, got a {type(got).__name__}"
    if g.shape != w.shape:
        if w.ndim == 0 and g.numel() == 1:
            g = g.reshape(())
        else:
            return f"expected shape {tuple(w.shape)}, got shape {tuple(g.shape)}"
    if not torch.isfinite(g).all():
        return "the result has NaN or inf in it"
    if not torch.allclose(g, w, rtol=rtol, atol=atol):
        return (
            f"values differ (largest gap {float((g - w).abs().max()):.4g}; "
            f"tolerance rtol={rtol:g}, atol={atol:g})"
        )
    return ""


def _fmt(value) -> str:
    if isinstance(value, Tensor):
        if value.ndim == 0:
            return f"{value.item():.4g}" if value.is_floating_point() else str(value.item())
        shown = value.detach().cpu().numpy()
        shown = shown.round(4) if value.is_floating_point() else shown
        return str(shown).replace("\n", "\n    ")
    if isinstance(value, list) and len(value) > 12:
        return f"[{', '.join(map(repr, value[:6]))}, … ({len(value)} in all)]"
    if callable(value):
        return getattr(value, "__doc__", None) or "a function"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show_case(inputs: dict, want=None, got=None) -> str:
    """The inputs as a table: the 1-D tensors of the longest length one column each (with the
    expected and the returned values, when they are of that length too), the rest below it."""
    columns = {k: v for k, v in inputs.items() if isinstance(v, Tensor) and v.ndim == 1}
    length = max((len(v) for v in columns.values()), default=0)
    columns = {k: v.detach().cpu().numpy() for k, v in columns.items() if len(v) == length}
    results = {"expected": want, "got": got}
    as_column = {
        label: t.numpy()
        for label, value in results.items()
        if columns
        and value is not None
        and not isinstance(value, tuple)
        and (t := _as_tensor(value)) is not None
        and t.shape == (length,)
    }
    lines = []
    if columns:
        index = "t" if "rewards" in columns else "i"
        lines.append(pd.DataFrame({**columns, **as_column}).rename_axis(index).round(4).to_string())
    lines += [f"{k} = {_fmt(v)}" for k, v in inputs.items() if k not in columns]
    for label, value in results.items():
        if value is not None and label not in as_column:
            shown = tuple(_fmt(v) for v in value) if isinstance(value, tuple) else _fmt(value)
            lines.append(f"{label}: {shown}")
    return "\n".join(lines)


def check(name: str, fn: Callable, *, seed: int = 0, verbose: bool = True) -> Verdict:
    """Grade ``fn`` on exercise ``name``'s battery (random inputs from ``seed``) and print one
    verdict: ✓, "not attempted yet" (``fn`` returned None on the first input), or ✗ with the first
    failing input, the expected and the returned values, and a hint. Records the status as the
    metric ``exercise <name>``; an unattempted or failed exercise never raises."""
    exercise = get_exercise(name)
    if not callable(fn):
        raise ValueError(f"fn: expected your function, got {type(fn).__name__}")
    cases = exercise.cases(torch.Generator().manual_seed(seed))
    verdict = Verdict(name, "passed", message=f"✓ {name}: right on all {len(cases)} inputs")
    for i, case in enumerate(cases):
        want = exercise.expected(**case.inputs)
        try:
            got = fn(*(_copy(v) for v in case.inputs.values()))
        except Exception as exc:
            problem, got = f"raised {type(exc).__name__}: {exc}", None
        else:
            if got is None and i == 0:
                verdict = Verdict(
                    name,
                    "not attempted",
                    message=(
                        f"○ {name}: not attempted yet (your function returned None). Replace "
                        f"`return None` with your code and run the cell again; "
                        f'rlnb.exercises.hint("{name}") gives a hint.'
                    ),
                )
                break
            problem = (
                compare(got, want, exercise.rtol, exercise.atol)
                if got is not None
                else "returned None (a missing `return`?)"
            )
        if problem:
            verdict = Verdict(
                name,
                "failed",
                case.key,
                f"✗ {name}: wrong on input {i + 1} of {len(cases)} ({case.key}): {problem}\n"
                f"{show_case(case.inputs, want, got)}\n"
                f"hint: {case.hint}",
            )
            break
    record(EXERCISE_METRIC + name, verdict.status, echo=False)
    if verbose:
        print(verdict.message)
    return verdict


def hint(name: str) -> None:
    """Print the next general hint of exercise ``name`` (the last one repeats)."""
    exercise = get_exercise(name)
    i = min(_hints_shown.get(name, 0), len(exercise.hints) - 1)
    _hints_shown[name] = i + 1
    print(f"hint {i + 1} of {len(exercise.hints)}: {exercise.hints[i]}")


def solution(name: str) -> None:
    """Print the source of exercise ``name``'s reference solution."""
    print(inspect.getsource(get_exercise(name).solution))


def exercises_of(notebook: str) -> list[str]:
    """The names of the exercises of notebook ``notebook`` (``"02"``), in registration order."""
    return [e.name for e in EXERCISES.values() if e.notebook == notebook]


__all__ = [
    "Case",
    "Exercise",
    "Verdict",
    "EXERCISES",
    "check",
    "compare",
    "exercises_of",
    "get_exercise",
    "hint",
    "register_exercise",
    "show_case",
    "solution",
]
