"""Verifiable synthetic tasks for tiny language models: a prompt string, an exact answer, a reward.

Every task has the same interface:

- ``prompts(n, split, seed)``: ``n`` distinct prompts from the ``"train"`` or ``"test"`` split,
  drawn without replacement by ``seed`` (a ``ValueError`` if the split has fewer than ``n``). The
  splits are fixed by the task's parameters alone (not by ``seed``) and never share a prompt.
- ``answer(prompt)``: the reference completion (without the end-of-sequence token).
- ``reward(prompt, completion)``: 1.0 for a correct completion, else 0.0; surrounding whitespace
  is ignored. ``DecisionTokens`` only checks its decisive positions (see its docstring).
- ``alphabet``: every character a prompt or answer can contain (the tokenizer's vocabulary).

Stepwise tasks (``StepwiseTask``: ``ArithmeticChain``, ``StepwiseComposition``) write their
answers as steps separated by ``";"`` and add an oracle per step: ``steps``, ``step_labels`` and
``first_error``; their reward is the outcome (the final answer), and they share one alphabet
(``STEP_ALPHABET``) and context length (``STEP_CONTEXT``).
"""

from __future__ import annotations

import hashlib
import re
import string

import numpy as np

SPLITS = ("train", "test")


def _stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` alone (same on every machine and Python run)."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Task:
    """Base class: subclasses define ``alphabet``, ``_split_of(prompt)``, ``_all_prompts()`` and
    ``answer(prompt)``."""

    alphabet: str = ""

    def _all_prompts(self) -> list[str]:
        raise NotImplementedError

    def _split_of(self, prompt: str) -> str:
        raise NotImplementedError

    def answer(self, prompt: str) -> str:
        raise NotImplementedError

    def split(self, split: str) -> list[str]:
        """Every prompt of one split, in a fixed order."""
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if not hasattr(self, "_splits"):
            self._splits = {s: [] for s in SPLITS}
            for prompt in self._all_prompts():
                self._splits[self._split_of(prompt)].append(prompt)
        return self._splits[split]

    def prompts(self, n: int, split: str = "train", seed: int = 0) -> list[str]:
        """``n`` distinct prompts of ``split``, drawn by ``seed``."""
        pool = self.split(split)
        if not isinstance(n, int) or not 1 <= n <= len(pool):
            raise ValueError(f"n: expected an integer in [1, {len(pool)}] for {split!r}, got {n!r}")
        index = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
        return [pool[i] for i in index]

    def reward(self, prompt: str, completion: str) -> float:
        """1.0 if ``completion`` (whitespace-stripped) equals the answer, else 0.0."""
        return float(completion.strip() == self.answer(prompt))

    def rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        """``reward`` over aligned lists (a prompt per completion)."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"completions: expected {len(prompts)} (one per prompt), got {len(completions)}"
            )
        return [self.reward(p, c) for p, c in zip(prompts, completions)]

    def reward_components(self, prompts: list[str], completions: list[str]) -> dict[str, list]:
        """Two rewards per completion, for multi-reward RL (GDPO): ``correct`` (= ``rewards``) and
        ``length`` (1.0 when the whitespace-stripped completion has the answer's length: a format
        reward a policy can earn before it is right)."""
        correct = self.rewards(prompts, completions)
        length = [
            float(len(c.strip()) == len(self.answer(p))) for p, c in zip(prompts, completions)
        ]
        return {"correct": correct, "length": length}


class Addition(Task):
    """Fixed-width addition: ``"07+35="`` → ``"042"`` (operands with ``digits`` digits, the sum
    with ``digits + 1``). A ``test_fraction`` of the operand pairs (chosen by a hash of the pair)
    is held out; ``a+b`` and ``b+a`` may fall in different splits."""

    alphabet = string.digits + "+="

    def __init__(self, digits: int = 2, test_fraction: float = 0.2):
        if not isinstance(digits, int) or not 1 <= digits <= 4:
            raise ValueError(f"digits: expected an integer in [1, 4], got {digits!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
        self.digits, self.test_fraction = digits, test_fraction

    @property
    def max_new_tokens(self) -> int:
        """The longest answer plus EOS."""
        return self.digits + 2

    def _all_prompts(self) -> list[str]:
        d = self.digits
        return [f"{a:0{d}d}+{b:0{d}d}=" for a in range(10**d) for b in range(10**d)]

    def _split_of(self, prompt: str) -> str:
        return "test" if _stable_fraction(prompt) < self.test_fraction else "train"

    def answer(self, prompt: str) -> str:
        a, b = prompt.rstrip("=").split("+")
        return f"{int(a) + int(b):0{self.digits + 1}d}"


# String functions for ``Composition``: each maps a string over "abcdef" to one of the same length.
_LETTERS = "abcdef"


def _shift(x: str) -> str:
    return "".join(_LETTERS[(_LETTERS.index(c) + 1) % len(_LETTERS)] for c in x)


def _swap_pairs(x: str) -> str:
    pairs = "".join(x[i + 1] + x[i] for i in range(0, len(x) - 1, 2))
    return pairs + x[len(pairs) :]


FUNCTIONS = {
    "r": lambda x: x[::-1],  # reverse
    "s": _shift,  # each letter to the next, f to a
    "c": lambda x: x[1:] + x[:1],  # rotate left
    "w": _swap_pairs,  # swap adjacent pairs
    "o": lambda x: "".join(sorted(x)),  # sort
}


class Composition(Task):
    """String functions and their compositions, as in "From f(x) and g(x) to f(g(x))".

    A prompt names one function or a pair and an input: ``"s:abcd="`` → ``s(abcd)`` = ``"bcde"``;
    ``"rs:abcd="`` → ``r(s(abcd))`` = ``"edcb"``. Functions: ``r`` reverse, ``s`` shift each
    letter by one (f → a), ``c`` rotate left, ``w`` swap adjacent pairs, ``o`` sort. The train
    split holds every single function and the ``train_pairs``; the test split holds only the
    other (unseen) compositions. Inputs are the strings of ``length`` letters from ``"abcdef"``.
    """

    alphabet = _LETTERS + "".join(FUNCTIONS) + ":="

    def __init__(self, length: int = 4, n_train_pairs: int = 10):
        pairs = [f + g for f in FUNCTIONS for g in FUNCTIONS if f != g]
        if not isinstance(length, int) or not 2 <= length <= 6:
            raise ValueError(f"length: expected an integer in [2, 6], got {length!r}")
        if not isinstance(n_train_pairs, int) or not 0 <= n_train_pairs < len(pairs):
            raise ValueError(
                f"n_train_pairs: expected an integer in [0, {len(pairs) - 1}], got {n_train_pairs!r}"
            )
        self.length = length
        ranked = sorted(pairs, key=lambda p: _stable_fraction("pair:" + p))
        self.train_pairs, self.test_pairs = (
            sorted(ranked[:n_train_pairs]),
            sorted(ranked[n_train_pairs:]),
        )

    def inputs(self) -> list[str]:
        """The fixed sample of inputs every program is shown (and compared) on."""
        rng = np.random.default_rng(0)  # a fixed sample of inputs, the same for every program
        n = min(len(_LETTERS) ** self.length, 256)
        return ["".join(rng.choice(list(_LETTERS), size=self.length)) for _ in range(n)]

    @property
    def max_new_tokens(self) -> int:
        """The longest answer plus EOS."""
        return self.length + 1

    def _all_prompts(self) -> list[str]:
        programs = list(FUNCTIONS) + self.train_pairs + self.test_pairs
        return [f"{p}:{x}=" for p in programs for x in self.inputs()]

    def _split_of(self, prompt: str) -> str:
        return "test" if prompt.split(":")[0] in self.test_pairs else "train"

    def answer(self, prompt: str) -> str:
        program, x = prompt.rstrip("=").split(":")
        for name in reversed(program):  # "rs" is r(s(x)): apply s first
            x = FUNCTIONS[name](x)
        return x

    def seen_equivalents(self, program: str) -> list[str]:
        """The train programs that give the same answer as ``program`` on every input: an unseen
        pair can be answered from memory when one exists (``"rw"`` = ``"wr"``: reversing and
        swapping pairs commute), and needs actual composition when none does."""
        if not program or any(f not in FUNCTIONS for f in program):
            raise ValueError(f"program: expected a string of {list(FUNCTIONS)}, got {program!r}")

        def outputs(p: str) -> list[str]:
            return [self.answer(f"{p}:{x}=") for x in self.inputs()]

        target = outputs(program)
        return [q for q in [*FUNCTIONS, *self.train_pairs] if q != program and outputs(q) == target]


class DecisionTokens(Task):
    """Answers where only a few positions decide correctness (for token credit assignment).

    The prompt is ``length`` digits and ``">"``; the answer is the digits reversed. Only the
    ``n_decisions`` positions of the answer that hold the largest digits (ties: earlier position
    first) are checked: ``reward`` is 1.0 iff the completion has ``length`` characters and agrees
    with the answer at those positions (``decision_positions(prompt)``); the rest are free.
    """

    alphabet = string.digits + ">"

    def __init__(self, length: int = 6, n_decisions: int = 2, test_fraction: float = 0.2):
        if not isinstance(length, int) or not 2 <= length <= 12:
            raise ValueError(f"length: expected an integer in [2, 12], got {length!r}")
        if not isinstance(n_decisions, int) or not 1 <= n_decisions <= length:
            raise ValueError(
                f"n_decisions: expected an integer in [1, {length}], got {n_decisions!r}"
            )
        self.length, self.n_decisions, self.test_fraction = length, n_decisions, test_fraction

    @property
    def max_new_tokens(self) -> int:
        """The longest answer plus EOS."""
        return self.length + 1

    def _all_prompts(self) -> list[str]:
        rng = np.random.default_rng(0)
        digits = rng.integers(0, 10, size=(4096, self.length))
        return sorted({"".join(map(str, row)) + ">" for row in digits})

    def _split_of(self, prompt: str) -> str:
        return "test" if _stable_fraction(prompt) < self.test_fraction else "train"

    def answer(self, prompt: str) -> str:
        return prompt.rstrip(">")[::-1]

    def decision_positions(self, prompt: str) -> list[int]:
        """The answer positions that ``reward`` checks, in increasing order."""
        answer = self.answer(prompt)
        ranked = sorted(range(self.length), key=lambda i: (-int(answer[i]), i))
        return sorted(ranked[: self.n_decisions])

    def reward(self, prompt: str, completion: str) -> float:
        completion, answer = completion.strip(), self.answer(prompt)
        if len(completion) != self.length:
            return 0.0
        return float(all(completion[i] == answer[i] for i in self.decision_positions(prompt)))


# The stepwise tasks share one alphabet, designed once for everything the LM-value notebooks
# need: the chain's digits and operators, the composition's letters and function names, the
# step delimiter ";", the parentheses of "f(x)", and the generative verifier's suffix "?" and
# verdicts "Y"/"N" (rlnb.models.critic.VERIFY_*; tests/test_tasks.py checks they are here).
STEP_DELIMITER = ";"
STEP_ALPHABET = string.digits + "+-*=" + STEP_DELIMITER + "():" + _LETTERS + "rswo" + "?YN"
# Positions a stepwise reasoner needs: <bos> + the longest prompt + solution + <eos>, plus the
# verification suffix and its one-letter verdict (ArithmeticChain(n_ops=4): 1 + 10 + 34 + 1 + 2).
STEP_CONTEXT = 64


class StepwiseTask(Task):
    """A task whose completions are written as steps separated by ``";"``, each checkable.

    Adds to ``Task``: ``steps(completion)`` (the written steps), ``step_labels(prompt,
    completion)`` (the oracle: is each written step correct given the prompt and the steps
    *written before it*, so a step that carries an earlier mistake forward correctly is correct)
    and ``first_error(prompt, completion)`` (the index of the first incorrect step, ``None`` when
    every written step is correct). The reward is the outcome: 1.0 iff ``final_answer`` of the
    completion is the true result, however it was reached. Subclasses define ``_step_ok(prompt,
    i, step, previous)`` → ``(ok, value)`` and ``final_answer``.
    """

    alphabet = STEP_ALPHABET

    def steps(self, completion: str) -> list[str]:
        """The written steps, in order (``"3+4=7;7*2=14;14"`` → ``["3+4=7", "7*2=14", "14"]``)."""
        completion = completion.strip()
        return completion.split(STEP_DELIMITER) if completion else []

    def step_labels(self, prompt: str, completion: str) -> list[bool]:
        """One label per written step: correct given the prompt and the steps before it."""
        labels, previous = [], None
        for i, step in enumerate(self.steps(completion)):
            ok, previous = self._step_ok(prompt, i, step, previous)
            labels.append(ok)
        return labels

    def first_error(self, prompt: str, completion: str) -> int | None:
        """The index of the first incorrect written step, or ``None``."""
        labels = self.step_labels(prompt, completion)
        return labels.index(False) if False in labels else None

    def final_answer(self, completion: str) -> str:
        raise NotImplementedError

    def reward(self, prompt: str, completion: str) -> float:
        """1.0 iff the completion's final answer is the true result (the outcome reward)."""
        return float(self.final_answer(completion) == self.final_answer(self.answer(prompt)))

    def _step_ok(self, prompt: str, i: int, step: str, previous):
        raise NotImplementedError


_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_CHAIN_STEP = re.compile(r"^(\d+)([+\-*])(\d)=(\d+)$")


class ArithmeticChain(StepwiseTask):
    """Arithmetic evaluated left to right, one operation per step.

    ``"3+4*2-5="`` → ``"3+4=7;7*2=14;14-5=9;9"``: ``n_ops`` operations on single-digit operands
    1–9 with ``+ - *``, every intermediate value in [0, 99] (prompts that leave that range are
    not in the task); the last step restates the result. ``show_steps=False`` is the same task
    answered in one go (``"9"``): same prompts, same splits, same reward. A ``test_fraction`` of
    the prompts, chosen by a hash of the prompt, is the test split.

    ``step_labels``: step ``i < n_ops`` is correct iff it reads ``{a}{op}{b}={a op b}`` with the
    prompt's ``i``-th operator and operand and ``a`` the value written by the step before (the
    prompt's first operand for step 0); step ``n_ops`` is correct iff it restates the value the
    step before wrote. Extra steps are incorrect.
    """

    def __init__(self, n_ops: int = 3, show_steps: bool = True, test_fraction: float = 0.2):
        if not isinstance(n_ops, int) or not 1 <= n_ops <= 4:
            raise ValueError(f"n_ops: expected an integer in [1, 4], got {n_ops!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
        self.n_ops, self.show_steps, self.test_fraction = n_ops, bool(show_steps), test_fraction

    @property
    def max_new_tokens(self) -> int:
        """The longest answer plus EOS (each step at most ``"99*9=99;"``)."""
        return (8 * self.n_ops + 3) if self.show_steps else 3

    def _all_prompts(self) -> list[str]:
        prompts = []

        def extend(text: str, value: int, depth: int) -> None:
            if depth == self.n_ops:
                prompts.append(text + "=")
                return
            for op in "+-*":
                for b in range(1, 10):
                    result = _OPERATIONS[op](value, b)
                    if 0 <= result <= 99:
                        extend(f"{text}{op}{b}", result, depth + 1)

        for a in range(1, 10):
            extend(str(a), a, 0)
        return prompts

    def _split_of(self, prompt: str) -> str:
        return "test" if _stable_fraction(prompt) < self.test_fraction else "train"

    @staticmethod
    def _parse(prompt: str) -> tuple[int, list[tuple[str, int]]]:
        body = prompt.rstrip("=")
        return int(body[0]), [(body[i], int(body[i + 1])) for i in range(1, len(body), 2)]

    def answer(self, prompt: str) -> str:
        value, ops = self._parse(prompt)
        steps = []
        for op, b in ops:
            result = _OPERATIONS[op](value, b)
            steps.append(f"{value}{op}{b}={result}")
            value = result
        return STEP_DELIMITER.join([*steps, str(value)]) if self.show_steps else str(value)

    def final_answer(self, completion: str) -> str:
        """The text after the last ``";"`` (the whole completion without steps)."""
        return completion.strip().rsplit(STEP_DELIMITER, 1)[-1]

    def _step_ok(self, prompt: str, i: int, step: str, previous):
        first, ops = self._parse(prompt)
        previous = first if previous is None else previous
        if i == len(ops):  # the restated result
            return step == str(previous), previous
        match = _CHAIN_STEP.match(step) if i < len(ops) else None
        if match is None:
            return False, None
        a, op, b, written = int(match[1]), match[2], int(match[3]), int(match[4])
        ok = (a, op, b) == (previous, *ops[i]) and written == _OPERATIONS[op](a, b)
        return ok and match[4] == str(written), written


_COMPOSITION_STEP = re.compile(r"^([rscwo])\(([a-f]+)\)=([a-f]+)$")


class StepwiseComposition(StepwiseTask, Composition):
    """``Composition`` answered one function at a time: ``"rs:abcd="`` →
    ``"s(abcd)=bcde;r(bcde)=edcb"`` (inner function first); a single function is one step
    (``"s:abcd="`` → ``"s(abcd)=bcde"``). Same programs, inputs and train/test split as
    ``Composition`` with the same arguments; the final answer is the text after the last ``"="``.

    ``step_labels``: step ``i`` is correct iff it applies the program's ``i``-th function from the
    inside to the value written by the step before (the prompt's input for step 0) and writes its
    result; steps beyond the program's length are incorrect.
    """

    @property
    def max_new_tokens(self) -> int:
        """The longest answer plus EOS: two steps of ``f(x)=y`` and a delimiter."""
        return 2 * (2 * self.length + 4) + 1 + 1

    def answer(self, prompt: str) -> str:
        program, x = prompt.rstrip("=").split(":")
        steps = []
        for name in reversed(program):
            y = FUNCTIONS[name](x)
            steps.append(f"{name}({x})={y}")
            x = y
        return STEP_DELIMITER.join(steps)

    def final_answer(self, completion: str) -> str:
        return completion.strip().rsplit("=", 1)[-1]

    def _step_ok(self, prompt: str, i: int, step: str, previous):
        program, x = prompt.rstrip("=").split(":")
        previous = x if previous is None else previous
        match = _COMPOSITION_STEP.match(step) if i < len(program) else None
        if match is None:
            return False, None
        name, arg, written = match.groups()
        ok = name == program[::-1][i] and arg == previous and written == FUNCTIONS[name](arg)
        return ok, written
