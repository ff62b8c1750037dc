"""Tree rollouts (rlnb.decoding.tree) against exact expectations on a tiny model whose
continuations can be enumerated, a one-pass recomputation of every path's log-probs, and counts
taken at a wrapped ``model.forward``."""

import functools

import pytest
import torch

from rlnb.decoding import sequence_logprobs
from rlnb.decoding.tree import mc_prefix_values, prefix_values, sample_tree
from rlnb.models.lm import char_tokenizer, tiny_causal_lm

ALPHABET = "ab;"
BUDGET = 4  # max_new_tokens: at most 6^4 continuations, enumerable


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    tok = char_tokenizer(ALPHABET)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=16).eval()
    with torch.no_grad():  # larger weights than GPT-2's init: peaked, position-dependent policies
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model, tok


def reward(prompt: str, completion: str) -> float:
    return float(completion.count("a") == 1)


def exact_value(model, tok, prompt: str, prefix_ids: list[int], budget: int, scored="") -> float:
    """E[reward] of the completions that continue ``prompt`` + ``prefix_ids`` for at most
    ``budget`` − len(prefix) tokens, by enumerating them (stop at EOS); the reward reads
    ``scored`` + the completion."""
    base = tok(prompt)["input_ids"]
    frontier = [(list(prefix_ids), 1.0)]
    value = 0.0
    with torch.no_grad():
        while frontier:
            open_, done = [], []
            for ids, p in frontier:
                ended = (ids and ids[-1] == tok.eos_token_id) or len(ids) >= budget
                (done if ended else open_).append((ids, p))
            for ids, p in done:
                value += p * reward(prompt, scored + tok.decode(ids, skip_special_tokens=True))
            if not open_:
                break
            batch = torch.tensor([base + ids for ids, _ in open_])
            probs = model(input_ids=batch).logits[:, -1].softmax(-1)
            frontier = [
                (ids + [t], p * probs[i, t].item())
                for i, (ids, p) in enumerate(open_)
                for t in range(probs.shape[1])
            ]
    return value


def path_ids(tree, node):
    return torch.cat([tree.tokens[tree.start[i] : tree.end[i]] for i in tree.path(node)]).tolist()


def test_one_level_is_k_independent_samples(lm):
    model, tok = lm
    k = 6000
    tree = sample_tree(model, tok, ["ab"], [k], reward=reward, max_new_tokens=BUDGET, seed=0)
    first = tree.tokens[tree.start[1:]]  # each child's first token
    assert tree.is_leaf[1:].all() and (tree.parent[1:] == 0).all()
    with torch.no_grad():
        exact = model(input_ids=torch.tensor([tok("ab")["input_ids"]])).logits[0, -1].softmax(-1)
    freq = torch.bincount(first, minlength=exact.numel()).double() / k
    se = (exact * (1 - exact) / k).sqrt()
    assert ((freq - exact).abs() <= 4.5 * se + 1e-9).all(), (freq, exact)


def test_every_path_log_prob_equals_one_forward_pass(lm):
    """Catches an off-by-one position or a stale cache row in the reuse across levels."""
    model, tok = lm
    prompts = ["a", "ab;ba", ";"]  # different lengths: left padding
    tree = sample_tree(model, tok, prompts, [3, 2, 2], ";", reward=reward, max_new_tokens=6, seed=1)
    assert int(tree.depth.max()) >= 2  # the test reaches the reuse
    for leaf in tree.is_leaf.nonzero().flatten().tolist():
        prompt_ids = tok(prompts[tree.prompt_index[leaf]])["input_ids"]
        ids = prompt_ids + path_ids(tree, leaf)
        response = [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
        ids, response = torch.tensor([ids]), torch.tensor([response])
        full = sequence_logprobs(model, ids, torch.ones_like(ids), response)[0, len(prompt_ids) :]
        ours = torch.cat([tree.logprobs[tree.start[i] : tree.end[i]] for i in tree.path(leaf)])
        assert torch.allclose(full, ours, atol=1e-5), leaf


def test_segments_end_at_the_delimiter_or_token_count(lm):
    model, tok = lm
    delim = tok(";", add_special_tokens=False)["input_ids"][0]
    tree = sample_tree(model, tok, ["a", "b"], [4, 3], ";", reward=reward, max_new_tokens=6, seed=2)
    for node in range(2, len(tree)):
        seg = tree.tokens[tree.start[node] : tree.end[node]].tolist()
        if not tree.is_leaf[node]:
            assert tree.depth[node] == 1 and seg[-1] == delim and delim not in seg[:-1]
    counted = sample_tree(model, tok, ["a"], [2, 2, 2], 1, reward=reward, max_new_tokens=5, seed=2)
    inner = (~counted.is_leaf) & (counted.depth > 0)
    assert ((counted.end - counted.start)[inner] == 1).all()


def test_counters_equal_counts_at_the_model_forward(lm, monkeypatch):
    model, tok = lm
    seen = {"calls": 0, "tokens": 0}
    forward = model.forward

    @functools.wraps(forward)  # keeps the signature the cache argument's name is read from
    def counting_forward(*args, **kwargs):
        seen["calls"] += 1
        new = kwargs["input_ids"].shape[1]
        seen["tokens"] += int(kwargs["attention_mask"][:, -new:].sum())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting_forward)
    prompts = ["a", "ab;b"]
    tree = sample_tree(model, tok, prompts, [3, 2, 2], ";", reward=reward, max_new_tokens=6, seed=3)
    assert (tree.model_calls, tree.forward_tokens) == (seen["calls"], seen["tokens"])
    assert tree.generated_tokens == tree.tokens.numel() == int((tree.end - tree.start).sum())
    # Shared prefixes run once: each prompt token and each generated token goes through the model
    # exactly once, except a leaf's last token (nothing is sampled after it).
    n_leaves = int(tree.is_leaf.sum())
    prompt_tokens = sum(len(tok(p)["input_ids"]) for p in prompts)
    assert seen["tokens"] == prompt_tokens + tree.generated_tokens - n_leaves


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_node_values_equal_the_exact_expectation(lm, seed):
    """Every node's value against the exact V^π of its path, as z-scores with its standard error:
    none beyond 4.5 and their mean near 0 (the roots, the first level and 24 second-level nodes)."""
    model, tok = lm
    tree = sample_tree(
        model, tok, ["a", "b;"], [16, 12, 24], ";", reward=reward, max_new_tokens=BUDGET, seed=seed
    )
    value, se = prefix_values(tree)
    inner = ((~tree.is_leaf) & (tree.depth <= 1)).nonzero().flatten().tolist()
    inner += ((~tree.is_leaf) & (tree.depth == 2)).nonzero().flatten().tolist()[:24]
    z = []
    for node in inner:
        prompt = tree.prompts[tree.prompt_index[node]]
        exact = exact_value(model, tok, prompt, path_ids(tree, node) if node >= 2 else [], BUDGET)
        if se[node] > 0:  # (when every child agrees there is no spread to scale by)
            z.append(float((value[node] - exact) / se[node]))
    z = torch.tensor(z)
    assert len(z) >= 20 and z.abs().max() < 4.5 and abs(z.mean()) < 0.6, z
    leaves = tree.is_leaf.nonzero().flatten()
    assert torch.equal(value[leaves], tree.reward[leaves]) and (se[leaves] == 0).all()


def test_values_are_the_mean_of_children_and_ragged_trees_weigh_children_equally():
    class Stub:  # a hand-built tree: root → (leaf reward 1), (inner → leaves 0, 0, 1)
        parent = torch.tensor([-1, 0, 0, 2, 2, 2])
        depth = torch.tensor([0, 1, 1, 2, 2, 2])
        is_leaf = torch.tensor([False, True, False, True, True, True])
        reward = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])

    value, se = prefix_values(Stub())
    assert value.tolist() == pytest.approx([(1 + 1 / 3) / 2, 1.0, 1 / 3, 0.0, 0.0, 1.0])
    assert se[2] == pytest.approx((1 / 3) ** 0.5 / 3**0.5)  # s = √(1/3), m = 3
    assert se[0] == pytest.approx(abs(1 - 1 / 3) / 2**0.5 / 2**0.5)
    one_child = Stub()
    one_child.parent, one_child.depth = torch.tensor([-1, 0]), torch.tensor([0, 1])
    one_child.is_leaf, one_child.reward = torch.tensor([False, True]), torch.tensor([0.0, 1.0])
    assert prefix_values(one_child)[1][0] == float("inf")  # documented: no spread from one child


def test_mc_prefix_values_match_the_exact_expectation(lm):
    model, tok = lm
    prompts, prefixes = ["a", "a", "b;", "ab"], ["", "a", "b", ";;"]
    value, se = mc_prefix_values(
        model, tok, prompts, prefixes, 4000, reward=reward, max_new_tokens=BUDGET, seed=5
    )
    for i, (p, x) in enumerate(zip(prompts, prefixes)):
        exact = exact_value(model, tok, p + x, [], BUDGET, scored=x)  # the prefix is prompt
        assert abs(value[i] - exact) <= 4.5 * se[i] + 1e-6, (i, value[i], exact)
    one = mc_prefix_values(model, tok, ["a"], [""], 1, reward=reward, max_new_tokens=BUDGET, seed=0)
    assert torch.isinf(one[1]).all()  # documented: no spread from one rollout


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"branching": []}, "branching"),
        ({"branching": [2, 0]}, "branching"),
        ({"split_at": 0}, "split_at"),
        ({"split_at": "ab"}, "split_at"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments_are_named(lm, kwargs, match):
    model, tok = lm
    args = {"branching": [2], "split_at": ";", "max_new_tokens": 4, "temperature": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        sample_tree(model, tok, ["a"], reward=reward, **args)
