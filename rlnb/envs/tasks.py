"""Verifiable synthetic tasks for tiny language models: a prompt string, an exact answer, a reward.

Every task has the same interface:

- ``prompts(n, split, seed)``: ``n`` distinct prompts from the ``"train"`` or ``"test"`` split,
  drawn without replacement by ``seed`` (a ``ValueError`` if the split has fewer than ``n``). The
  splits are fixed by the task's parameters alone (not by ``seed``) and never share a prompt.
- ``answer(prompt)``: the reference completion (without the end-of-sequence token).
- ``reward(prompt, completion)``: 1.0 for a correct completion, else 0.0; surrounding whitespace
  is ignored. ``DecisionTokens`` only checks its decisive positions (see its docstring).
- ``alphabet``: every character a prompt or answer can contain (the tokenizer's vocabulary).
"""

from __future__ import annotations

import hashlib
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

    def _inputs(self) -> list[str]:
        rng = np.random.default_rng(0)  # a fixed sample of inputs, the same for every program
        n = min(len(_LETTERS) ** self.length, 256)
        return ["".join(rng.choice(list(_LETTERS), size=self.length)) for _ in range(n)]

    @property
    def max_new_tokens(self) -> int:
        """The longest answer plus EOS."""
        return self.length + 1

    def _all_prompts(self) -> list[str]:
        programs = list(FUNCTIONS) + self.train_pairs + self.test_pairs
        return [f"{p}:{x}=" for p in programs for x in self._inputs()]

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
            return [self.answer(f"{p}:{x}=") for x in self._inputs()]

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
