"""Verifiable tasks: fixed disjoint splits, exact answers and rewards, clear errors."""

import pytest

from rlnb.envs.tasks import FUNCTIONS, Addition, Composition, DecisionTokens

TASKS = [Addition(2), Addition(1), Composition(), DecisionTokens()]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_splits_are_disjoint_fixed_and_cover_the_alphabet(task):
    train, test = set(task.split("train")), set(task.split("test"))
    assert train and test and not train & test
    fresh = type(task)(**({"digits": task.digits} if isinstance(task, Addition) else {}))
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
                task.answer(f"{q}:{x}=") == task.answer(f"{program}:{x}=") for x in task._inputs()
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
