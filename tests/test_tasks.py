"""Verifiable tasks: fixed disjoint splits, exact answers and rewards, clear errors."""

import pytest

from rlnb.envs.tasks import (
    FUNCTIONS,
    STEP_ALPHABET,
    STEP_CONTEXT,
    Addition,
    ArithmeticChain,
    Composition,
    DecisionTokens,
    StepwiseComposition,
)

TASKS = [
    Addition(2),
    Addition(1),
    Composition(),
    DecisionTokens(),
    ArithmeticChain(),
    ArithmeticChain(n_ops=1, show_steps=False),
    StepwiseComposition(),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_splits_are_disjoint_fixed_and_cover_the_alphabet(task):
    train, test = set(task.split("train")), set(task.split("test"))
    assert train and test and not train & test
    args = {"digits": task.digits} if isinstance(task, Addition) else {}
    args = {"n_ops": task.n_ops} if isinstance(task, ArithmeticChain) else args
    fresh = type(task)(**args)
    assert fresh.split("test") == task.split("test")
    for prompt in list(train)[:50] + list(test)[:50]:
        assert set(prompt + task.answer(prompt)) <= set(task.alphabet)
        assert len(task.answer(prompt)) + 1 <= task.max_new_tokens
        assert task.reward(prompt, task.answer(prompt)) == 1.0


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_prompts_are_distinct_seeded_and_from_their_split(task):
    a = task.prompts(20, "test", seed=1)
    assert len(set(a)) == 20 and set(a) <= set(task.split("test"))
    assert a == task.prompts(20, "test", seed=1) and a != task.prompts(20, "test", seed=2)
    with pytest.raises(ValueError, match="n: expected an integer"):
        task.prompts(len(task.split("test")) + 1, "test")
    with pytest.raises(ValueError, match="split"):
        task.prompts(3, "validation")


def test_addition_answers_and_rewards():
    task = Addition(2)
    assert task.answer("07+35=") == "042" and task.answer("99+99=") == "198"
    assert task.reward("07+35=", " 042\n") == 1.0
    assert task.reward("07+35=", "42") == 0.0 and task.reward("07+35=", "043") == 0.0
    assert len(task.split("train")) + len(task.split("test")) == 100**2
    assert 0.15 < len(task.split("test")) / 100**2 < 0.25
    with pytest.raises(ValueError, match="digits"):
        Addition(0)
    with pytest.raises(ValueError, match="completions"):
        task.rewards(["07+35="], [])


def test_composition_holds_out_unseen_compositions():
    task = Composition(length=4, n_train_pairs=10)
    assert task.answer("s:abcf=") == "bcda" and task.answer("r:abcd=") == "dcba"
    assert task.answer("rs:abcd=") == "edcb"  # r(s(x)): shift first, then reverse
    assert task.answer("w:abcde=") == "badce" and task.answer("o:cab=") == "abc"
    programs = lambda split: {p.split(":")[0] for p in task.split(split)}  # noqa: E731
    assert programs("train") == set(FUNCTIONS) | set(task.train_pairs)
    assert programs("test") == set(task.test_pairs) and len(task.test_pairs) == 10
    with pytest.raises(ValueError, match="n_train_pairs"):
        Composition(n_train_pairs=20)


def test_seen_equivalents_are_the_train_programs_with_the_same_answers():
    task = Composition(length=4, n_train_pairs=10)
    assert task.train_pairs == ["cw", "oc", "or", "os", "ow", "so", "sr", "sw", "wc", "wr"]
    assert task.seen_equivalents("rw") == ["wr"]  # reverse and swap-pairs commute
    assert task.seen_equivalents("rs") == ["sr"]  # reverse and shift commute
    assert task.seen_equivalents("co") == []  # rotating a sorted string is new
    assert task.seen_equivalents("ro") == []
    assert task.seen_equivalents("cc") == ["wr"]  # rotating 4 letters twice: cdab = w(r(abcd))
    for program in task.test_pairs:  # brute force over every seen program and input
        same = [
            q
            for q in [*FUNCTIONS, *task.train_pairs]
            if all(
                task.answer(f"{q}:{x}=") == task.answer(f"{program}:{x}=") for x in task.inputs()
            )
        ]
        assert task.seen_equivalents(program) == same
    with pytest.raises(ValueError, match="program"):
        task.seen_equivalents("rx")


def test_decision_tokens_only_check_the_decisive_positions():
    task = DecisionTokens(length=6, n_decisions=2)
    prompt = "847737>"
    answer = task.answer(prompt)
    # the 8 (position 5) and, of the tied 7s at 0, 2 and 3, the earliest
    assert answer == "737748" and task.decision_positions(prompt) == [0, 5]
    assert task.decision_positions("147737>") == [0, 2]  # "737741": three 7s, the first two
    free = "".join(c if i in (0, 5) else "0" for i, c in enumerate(answer))
    assert task.reward(prompt, free) == 1.0
    assert task.reward(prompt, answer[:5] + "9") == 0.0
    assert task.reward(prompt, answer + "1") == 0.0
    with pytest.raises(ValueError, match="n_decisions"):
        DecisionTokens(length=4, n_decisions=5)


def test_reward_components_are_correctness_and_length():
    task = Addition(2)
    parts = task.reward_components(["07+35="] * 3, ["042", "041", "42"])
    assert parts == {"correct": [1.0, 0.0, 0.0], "length": [1.0, 1.0, 0.0]}


def test_arithmetic_chain_is_left_to_right_in_steps():
    task = ArithmeticChain(n_ops=3)
    assert task.answer("3+4*2-5=") == "3+4=7;7*2=14;14-5=9;9"
    assert ArithmeticChain(3, show_steps=False).answer("3+4*2-5=") == "9"
    assert task.steps("3+4=7;7*2=14;14-5=9;9") == ["3+4=7", "7*2=14", "14-5=9", "9"]
    assert task.steps("") == []
    every = task.split("train") + task.split("test")
    assert all(len(p) == 2 * 3 + 2 for p in every)
    for prompt in every[::997]:  # every intermediate value in [0, 99]
        values = [int(s.split("=")[1]) for s in task.steps(task.answer(prompt))[:-1]]
        assert all(0 <= v <= 99 for v in values)
    assert "9*9*2=" not in every  # 162 leaves the range
    sizes = [
        len(ArithmeticChain(n).split("train")) + len(ArithmeticChain(n).split("test"))
        for n in (1, 2)
    ]
    assert sizes[0] == sum(1 for a in range(1, 10) for op in "+-*" for b in range(1, 10)
                           if 0 <= (a + b if op == "+" else a - b if op == "-" else a * b) <= 99)  # fmt: skip
    assert sizes[1] > sizes[0]
    with pytest.raises(ValueError, match="n_ops"):
        ArithmeticChain(n_ops=5)


def test_chain_step_labels_carry_a_written_mistake_forward():
    task = ArithmeticChain(n_ops=3)
    prompt = "3+4*2-5="
    assert task.step_labels(prompt, "3+4=7;7*2=14;14-5=9;9") == [True] * 4
    # a wrong sum, then correct steps on the wrong value: only the first step is wrong
    assert task.step_labels(prompt, "3+4=8;8*2=16;16-5=11;11") == [False, True, True, True]
    assert task.first_error(prompt, "3+4=8;8*2=16;16-5=11;11") == 0
    # the right value but the wrong operand, a copy error, a bad restatement, an extra step
    assert task.step_labels(prompt, "3+4=7;7*3=21") == [True, False]
    assert task.step_labels(prompt, "3+4=7;6*2=12") == [True, False]
    assert task.step_labels(prompt, "3+4=7;7*2=14;14-5=9;8") == [True, True, True, False]
    assert task.step_labels(prompt, "3+4=7;7*2=14;14-5=9;9;9") == [True] * 4 + [False]
    assert task.step_labels(prompt, "3+4=07;7*2=14") == [False, True]  # no leading zeros
    assert task.step_labels(prompt, "garbage") == [False]
    assert task.first_error(prompt, "3+4=7;7*2=14") is None  # unfinished, nothing wrong yet
    # the outcome reward reads the final answer only
    assert task.reward(prompt, "3+4=7;7*2=14;14-5=9;9") == 1.0
    assert task.reward(prompt, "3+4=8;8*2=16;16-5=9;9") == 1.0  # wrong steps, right answer
    assert task.reward(prompt, "3+4=7;7*2=14;14-5=9") == 0.0  # never restated
    assert ArithmeticChain(3, show_steps=False).reward(prompt, "9") == 1.0


def test_chain_first_error_is_the_corrupted_step():
    task = ArithmeticChain(n_ops=3)
    for prompt in task.prompts(40, "test", seed=0):
        steps = task.steps(task.answer(prompt))
        for i in range(3):
            lhs, result = steps[i].split("=")
            corrupted = steps[:i] + [f"{lhs}={int(result) + 1}"] + steps[i + 1 :]
            assert task.first_error(prompt, ";".join(corrupted)) == i


def test_stepwise_composition_writes_the_inner_function_first():
    task, plain = StepwiseComposition(), Composition()
    assert task.answer("rs:abcd=") == "s(abcd)=bcde;r(bcde)=edcb"
    assert task.answer("s:abcd=") == "s(abcd)=bcde"
    assert task.split("test") == plain.split("test") and task.test_pairs == plain.test_pairs
    for prompt in task.prompts(50, "test", seed=0):
        assert task.final_answer(task.answer(prompt)) == plain.answer(prompt)
    assert task.step_labels("rs:abcd=", "s(abcd)=bcde;r(bcde)=edcb") == [True, True]
    assert task.step_labels("rs:abcd=", "r(abcd)=dcba;s(dcba)=edcb") == [False, False]
    assert task.step_labels("rs:abcd=", "s(abcd)=bcdf;r(bcdf)=fdcb") == [False, True]
    assert task.first_error("rs:abcd=", "s(abcd)=bcdf;r(bcdf)=fdcb") == 0
    assert task.reward("rs:abcd=", "s(abcd)=bcdf;r(bcdf)=edcb") == 1.0  # outcome only
    assert task.reward("rs:abcd=", "s(abcd)=bcde") == 0.0


def test_one_alphabet_and_context_for_the_stepwise_tasks():
    from rlnb.models.critic import VERIFY_NO, VERIFY_SUFFIX, VERIFY_YES

    assert set(";()") | {VERIFY_SUFFIX, VERIFY_YES, VERIFY_NO} <= set(STEP_ALPHABET)
    for task in (ArithmeticChain(n_ops=4), StepwiseComposition(length=6)):
        assert task.alphabet == STEP_ALPHABET
        longest = max(
            len(p) + len(task.answer(p)) for p in task.split("train") + task.split("test")
        )
        assert 1 + longest + 1 + 2 <= STEP_CONTEXT  # <bos>, <eos>, "?" and the verdict
