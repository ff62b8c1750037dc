"""The KV-cache sampler against ``model.generate`` and a full forward pass; pass@k; selection."""

import itertools
import math

import pytest
import torch

from rlnb.decoding import (
    best_of_n,
    completion_logprobs,
    majority_vote,
    pass_at_k,
    sample,
    sequence_logprobs,
)
from rlnb.envs.tasks import Addition
from rlnb.models.forward import position_ids_from_mask
from rlnb.models.lm import char_tokenizer, tiny_causal_lm

PROMPTS = ["07+35=", "1+2=", "123+4=", "9="]  # different lengths: left padding is exercised


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    tok = char_tokenizer(Addition.alphabet)
    return tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=32).eval(), tok


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_generate_token_for_token(seed):
    torch.manual_seed(seed)
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=32).eval()
    ours = sample(model, tok, PROMPTS, n=2, max_new_tokens=10, temperature=0)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    theirs = model.generate(
        **enc, max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=tok.eos_token_id
    )[:, enc["input_ids"].shape[1] :].repeat_interleave(2, dim=0)
    width = ours.completion_ids.shape[1]
    assert torch.equal(ours.completion_ids, theirs[:, :width])
    assert (theirs[:, width:] == tok.pad_token_id).all()  # generate only padded past our stop


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_sampled_logprobs_match_one_forward_pass(lm, top_p):
    model, tok = lm
    out = sample(model, tok, PROMPTS, n=4, max_new_tokens=10, temperature=0.8, top_p=top_p, seed=3)
    full = sequence_logprobs(
        model, out.input_ids, out.attention_mask, out.full_response_mask, temperature=0.8
    )
    P = out.prompt_ids.shape[1]
    assert torch.allclose(full[:, P:], out.logprobs, atol=1e-5)
    assert (full[:, :P] == 0).all()


def test_entropy_of_the_next_token_distribution(lm):
    model, tok = lm
    out = sample(model, tok, PROMPTS, n=2, max_new_tokens=6, temperature=0.8, seed=1)
    resp = out.full_response_mask
    logp, entropy = sequence_logprobs(
        model, out.input_ids, out.attention_mask, resp, 0.8, with_entropy=True
    )
    torch.testing.assert_close(
        logp, sequence_logprobs(model, out.input_ids, out.attention_mask, resp, 0.8)
    )
    logits = (
        model(
            input_ids=out.input_ids,
            attention_mask=out.attention_mask,
            position_ids=position_ids_from_mask(out.attention_mask),
        ).logits
        / 0.8
    )
    probs = torch.softmax(logits[:, :-1], -1)  # predicts token t + 1
    expected = -(probs * probs.log()).sum(-1) * resp[:, 1:]
    torch.testing.assert_close(entropy[:, 1:], expected, atol=1e-5, rtol=1e-5)
    assert (entropy[resp == 0] == 0).all() and (entropy[resp == 1] > 0).all()


def test_sum_pi_squared_of_the_sampling_distribution(lm):
    model, tok = lm
    out = sample(model, tok, PROMPTS, n=2, max_new_tokens=6, temperature=0.8, seed=1,
                 with_sum_pi_squared=True)  # fmt: skip
    logits = (
        model(
            input_ids=out.input_ids,
            attention_mask=out.attention_mask,
            position_ids=position_ids_from_mask(out.attention_mask),
        ).logits.float()
        / 0.8
    )
    P = out.prompt_ids.shape[1]
    probs = torch.softmax(
        logits[:, P - 1 : -1], -1
    )  # the distribution each completion token was drawn from
    expected = (probs**2).sum(-1) * out.response_mask
    torch.testing.assert_close(out.sum_pi_squared, expected, atol=1e-5, rtol=1e-5)
    assert sample(model, tok, PROMPTS, max_new_tokens=2, seed=1).sum_pi_squared is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_completion_logprobs_equal_one_pass_over_prompt_and_completion(seed):
    """Each distinct prompt run once, its cache repeated: the same log-probs, entropies and
    gradients as the full forward pass, on left-padded prompts of different lengths."""
    torch.manual_seed(seed)
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=32)
    out = sample(model, tok, PROMPTS, n=3, max_new_tokens=8, temperature=1.5, seed=seed)
    P = out.prompt_ids.shape[1]
    full = sequence_logprobs(
        model, out.input_ids, out.attention_mask, out.full_response_mask, 0.7, with_entropy=True
    )
    ours = completion_logprobs(
        model, out.prompt_ids, out.prompt_mask, out.completion_ids, out.response_mask, 3, 0.7, True
    )
    params = list(model.parameters())
    expected = torch.autograd.grad((full[0] * full[1]).sum(), params)
    got = torch.autograd.grad((ours[0] * ours[1]).sum(), params)
    for a, b in zip(full, ours):
        torch.testing.assert_close(a[:, P:], b, atol=1e-5, rtol=1e-5)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    args = out.prompt_ids, out.prompt_mask, out.completion_ids, out.response_mask
    with pytest.raises(ValueError, match="group_size"):
        completion_logprobs(model, *args, group_size=5)
    with pytest.raises(ValueError, match="prompt_ids"):
        completion_logprobs(model, *args, group_size=6)  # groups of 6 mix two prompts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampling_with_grad_gives_the_training_pass(seed):
    """``with_grad=True``: the same tokens as without, and log-probs, entropies and gradients equal
    to a separate forward pass over the completions (what on-policy training would run)."""
    torch.manual_seed(seed)
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=32)
    plain = sample(model, tok, PROMPTS, n=3, max_new_tokens=8, temperature=1.5, seed=seed)
    out = sample(
        model, tok, PROMPTS, n=3, max_new_tokens=8, temperature=1.5, seed=seed, with_grad=True
    )
    assert plain.entropy is None and not plain.logprobs.requires_grad
    assert torch.equal(out.completion_ids, plain.completion_ids)
    logp, entropy = completion_logprobs(
        model, out.prompt_ids, out.prompt_mask, out.completion_ids, out.response_mask, 3, 1.5, True
    )
    torch.testing.assert_close(out.logprobs, logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.entropy, entropy, atol=1e-5, rtol=1e-5)
    params = list(model.parameters())
    expected = torch.autograd.grad((logp * entropy).sum(), params)
    got = torch.autograd.grad((out.logprobs * out.entropy).sum(), params)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_rows_stop_at_eos_and_are_grouped_by_prompt(lm):
    model, tok = lm
    out = sample(model, tok, PROMPTS, n=8, max_new_tokens=12, seed=0)
    assert out.prompts == [p for p in PROMPTS for _ in range(8)] and len(out.text) == 32
    eos = out.completion_ids == tok.eos_token_id
    assert eos.any()  # a random model emits EOS (1 in 15 tokens) within 12 steps
    for row, mask, lp in zip(out.completion_ids, out.response_mask, out.logprobs):
        stop = (row == tok.eos_token_id).nonzero()
        length = int(stop[0]) + 1 if len(stop) else row.numel()
        assert mask[:length].all() and not mask[length:].any()
        assert (row[length:] == tok.pad_token_id).all() and (lp[length:] == 0).all()
    for i, text in enumerate(out.text):
        assert tok.decode(out.completion_ids[i], skip_special_tokens=True) == text


def test_seeds_reproduce_and_differ(lm):
    model, tok = lm
    a = sample(model, tok, PROMPTS, n=4, seed=5)
    assert torch.equal(a.completion_ids, sample(model, tok, PROMPTS, n=4, seed=5).completion_ids)
    assert not torch.equal(
        a.completion_ids, sample(model, tok, PROMPTS, n=4, seed=6).completion_ids
    )


def test_first_token_frequencies_follow_the_tempered_softmax(lm):
    """Sample 20 000 first tokens; compare with softmax(logits / T) and with the nucleus."""
    model, tok = lm
    model = tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=16).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # a peaked distribution, so top-p matters
    enc = tok(["1+2="], return_tensors="pt")
    logits = model(**enc).logits[0, -1]
    for temperature, top_p in [(1.0, 1.0), (0.5, 1.0), (1.0, 0.6)]:
        out = sample(
            model, tok, ["1+2="], n=20_000, max_new_tokens=1, temperature=temperature, top_p=top_p,
            seed=0,
        )  # fmt: skip
        freq = torch.bincount(out.completion_ids[:, 0], minlength=len(tok)).double() / 20_000
        probs = torch.softmax(logits.double() / temperature, -1)
        if top_p < 1:
            order = probs.argsort(descending=True)
            before = probs[order].cumsum(0) - probs[order]
            keep = torch.zeros_like(probs, dtype=torch.bool)
            keep[order[before < top_p]] = True
            assert keep.sum() < len(tok)
            probs = torch.where(keep, probs, 0.0)
            probs /= probs.sum()
        assert (freq - probs).abs().max() < 0.015, (temperature, top_p)
        assert (freq[probs == 0] == 0).all()


def test_sampler_rejects_bad_arguments(lm):
    model, tok = lm
    for kwargs, name in [
        ({"n": 0}, "n"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ]:
        with pytest.raises(ValueError, match=name):
            sample(model, tok, PROMPTS, **kwargs)
    with pytest.raises(ValueError, match="prompts"):
        sample(model, tok, "1+2=")
    for kwargs in ({"temperature": float("nan")}, {"top_p": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            sample(model, tok, PROMPTS, **kwargs)


def test_sampling_cannot_run_past_the_context():
    """The shipped reasoner has 16 positions: the default 16 new tokens after a 7-token prompt
    used to crash with an IndexError when a row did not stop (temperature 2)."""
    from rlnb.models.lm import load_reasoner

    model, tok = load_reasoner("addition")
    with pytest.raises(
        ValueError,
        match=r"longest prompt has 7 tokens.*max_new_tokens 16 > the model's 16 positions",
    ):
        sample(model, tok, ["12+34="], n=8, temperature=2.0, seed=0)
    out = sample(model, tok, ["12+34="], n=8, max_new_tokens=9, temperature=2.0, seed=0)
    assert out.completion_ids.shape[1] <= 9  # 7 + 9 = 16 positions: fits


def brute_force_pass_at_k(c, n, k):
    """Fraction of the k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert math.isclose(
                    pass_at_k(c, n, k), brute_force_pass_at_k(c, n, k), abs_tol=1e-12
                )
    batch = pass_at_k(torch.tensor([0, 3, 16]), 16, 4)
    assert batch.shape == (3,) and batch[0] == 0 and batch[2] == 1
    assert math.isclose(batch[1].item(), 1 - math.comb(13, 4) / math.comb(16, 4), rel_tol=1e-12)
    with pytest.raises(ValueError, match="k"):
        pass_at_k(1, 4, 0)
    with pytest.raises(ValueError, match="n: expected"):
        pass_at_k(1, 4, 5)
    with pytest.raises(ValueError, match="n_correct"):
        pass_at_k(5, 4, 1)


def test_majority_vote_and_best_of_n():
    assert majority_vote(["a", "b", "b", "c", "d", "c"], 3) == ["b", "c"]
    assert majority_vote(["x", "y", "y", "x"], 4) == ["x"]  # tie: the first seen
    with pytest.raises(ValueError, match="group_size"):
        majority_vote(["a", "b", "c"], 2)
    scores = torch.tensor([0.1, 0.9, 0.9, 0.5, 0.2, 0.3])
    assert best_of_n(scores, 3).tolist() == [1, 3]  # tie in group 0: the first
    with pytest.raises(ValueError, match="group_size"):
        best_of_n(scores, 4)


def test_pass_at_k_rejects_nan_counts():
    with pytest.raises(ValueError, match="NaN"):
        pass_at_k(torch.tensor([1.0, float("nan")]), torch.tensor([4.0, 4.0]), 2)
    with pytest.raises(ValueError, match="NaN"):
        pass_at_k(torch.tensor([1.0]), torch.tensor([float("nan")]), 1)
