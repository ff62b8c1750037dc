"""``rlnb.models.gpt2`` (GPT-2's forward written out for decoding) against ``transformers``' own
forward, ``small_attention`` against eager attention, and the one-kernel GELU of the shipped
reasoners against the ``gelu_new`` they were saved with."""

import pytest
import torch

import rlnb.models.gpt2 as gpt2
from rlnb.decoding import sample
from rlnb.envs.tasks import Addition
from rlnb.models.forward import cache_argument
from rlnb.models.gpt2 import gpt2_decoder, plain_gpt2, transformers_decoder
from rlnb.models.lm import FAST_ACTIVATION, char_tokenizer, data_dir, load_reasoner, tiny_causal_lm

PROMPTS = ["07+35=", "1+2=", "123+4=", "9=", "99+99="]  # different lengths: left padding


@pytest.fixture(scope="module")
def lm():
    """The shipped reasoner: it ends its answers with EOS, so the rows' masks are exercised (a
    random model, whose rows run to ``max_new_tokens``, is compared with ``generate`` and a full
    pass in ``test_decoding``)."""
    return load_reasoner("addition")


def with_transformers_forward(monkeypatch, fn):
    """``fn()`` with the sampler on the model's own forward (the reference)."""
    with monkeypatch.context() as m:
        m.setattr(gpt2, "plain_gpt2", lambda model: False)
        return fn()


def counting_gpt2_forward(monkeypatch) -> list:
    """Count the calls of ``gpt2_forward`` from now on: the written-out path really ran."""
    calls, original = [], gpt2.gpt2_forward

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(gpt2, "gpt2_forward", counted)
    return calls


@pytest.mark.parametrize(
    "options",
    [
        dict(n=1),
        dict(n=4, seed=1),
        dict(n=3, temperature=0),
        dict(n=2, temperature=0.7, top_p=0.8, with_sum_pi_squared=True),
        dict(n=4, with_grad=True, seed=2),
    ],
)
def test_gpt2_forward_samples_what_the_model_does(lm, monkeypatch, options):
    model, tok = lm
    options = {"seed": 0, **options}
    theirs = with_transformers_forward(
        monkeypatch, lambda: sample(model, tok, PROMPTS, max_new_tokens=8, **options)
    )
    calls = counting_gpt2_forward(monkeypatch)
    ours = sample(model, tok, PROMPTS, max_new_tokens=8, **options)
    assert len(calls) == ours.completion_ids.shape[1]  # the prefill and one call per new token
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(ours.response_mask, theirs.response_mask)
    assert ours.response_mask.sum(1).min() < 8  # some rows stopped at EOS: the mask is exercised
    assert torch.allclose(ours.logprobs, theirs.logprobs, atol=1e-5)
    for name in ("entropy", "sum_pi_squared"):
        if getattr(theirs, name) is not None:
            assert torch.allclose(getattr(ours, name), getattr(theirs, name), atol=1e-5)


@pytest.mark.parametrize("n", [1, 3])
def test_gpt2_forward_has_the_models_gradients(lm, monkeypatch, n):
    model, tok = lm

    def grads():
        model.zero_grad(set_to_none=True)
        out = sample(model, tok, PROMPTS, n=n, max_new_tokens=6, seed=4, with_grad=True)
        weights = torch.linspace(-1, 1, out.logprobs.numel()).view_as(out.logprobs)
        ((out.logprobs * weights).sum() + 0.1 * out.entropy.sum()).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    theirs = with_transformers_forward(monkeypatch, grads)
    calls = counting_gpt2_forward(monkeypatch)
    ours = grads()
    assert calls and ours.keys() == theirs.keys()
    for k in ours:  # relative to the tensor's scale: float32 sums in another order
        scale = theirs[k].abs().max()
        assert (ours[k] - theirs[k]).abs().max() <= 1e-4 * scale, k
    assert max(g.abs().max() for g in ours.values()) > 1e-3  # not all zero


def test_gpt2_forward_under_bf16_autocast(lm):
    """The dtypes of mixed precision (what CUDA runs): bf16 products, the float32 bias and
    softmax; both decoders round alike to bf16's precision."""
    model, tok = lm
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        runs = []
        for decoder in (gpt2_decoder, transformers_decoder):
            first, step = decoder(model, enc["input_ids"], enc["attention_mask"], 2, 4)
            runs.append((first.float(), step(first.argmax(-1)).float()))
    (a, b), (c, d) = runs
    assert a.dtype == torch.float32 and a.abs().max() > 1
    assert torch.allclose(a, c, atol=0.1) and torch.allclose(b, d, atol=0.1)


def generate_greedy(model, tok, max_new_tokens=6):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    return model.generate(
        **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
        eos_token_id=tok.eos_token_id,
    )[:, enc["input_ids"].shape[1] :]  # fmt: skip


@pytest.mark.parametrize(
    "kernels",
    [
        {"attn_implementation": "eager"},
        {"attn_implementation": "sdpa"},
        {"activation_function": "gelu_new"},  # the same function, other kernels
        {"activation_function": "relu"},
    ],
)
def test_other_kernels_run_the_models_own_forward(kernels):
    torch.manual_seed(0)
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2, **kernels).eval()
    assert not plain_gpt2(model)
    ours = sample(model, tok, PROMPTS, max_new_tokens=6, temperature=0)
    theirs = generate_greedy(model, tok)
    assert torch.equal(ours.completion_ids, theirs[:, : ours.completion_ids.shape[1]])


def test_anything_that_changes_the_modules_runs_the_models_own_forward():
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2)
    assert plain_gpt2(model.train())  # no dropout configured: training mode changes nothing
    model.config.resid_pdrop = 0.1
    dropped = type(model)(model.config)
    assert not plain_gpt2(dropped.train()) and plain_gpt2(dropped.eval())

    class Wrapped(type(model)):
        pass

    assert not plain_gpt2(Wrapped(model.config).eval())
    hooked = tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2).eval()
    handle = hooked.transformer.h[0].mlp.register_forward_hook(lambda m, i, o: o * 2)
    assert not plain_gpt2(hooked)
    handle.remove()
    assert plain_gpt2(hooked)
    hooked.transformer.h[0].attn.c_attn = torch.nn.Linear(32, 96)  # an adapter's kind of change
    assert not plain_gpt2(hooked)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_attention_equals_eager_attention(seed):
    """Padded prompts, a cached decoding step (one query) and the gradients."""
    torch.manual_seed(seed)
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2).eval()
    assert model.config._attn_implementation == "rlnb_small"
    eager = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2).eval()
    eager.load_state_dict(model.state_dict())
    eager.set_attn_implementation("eager")
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    runs = []
    for m in (model, eager):
        m.zero_grad(set_to_none=True)
        out = m(**enc, use_cache=True)
        nxt = m(
            input_ids=out.logits[:, -1].argmax(-1, keepdim=True),
            attention_mask=torch.cat([enc["attention_mask"], torch.ones(len(PROMPTS), 1)], 1),
            **{cache_argument(m): out[cache_argument(m)]},
        )
        keep = enc["attention_mask"].bool()  # the outputs at padding are never read
        (out.logits[keep].sum() + nxt.logits.square().sum()).backward()
        runs.append((out.logits[keep], nxt.logits, [p.grad.clone() for p in m.parameters()]))
    (a, b, ga), (c, d, gc) = runs
    assert torch.allclose(a, c, atol=1e-5) and torch.allclose(b, d, atol=1e-5)
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(ga, gc))


def test_shipped_reasoners_load_with_the_one_kernel_gelu():
    from transformers import AutoModelForCausalLM

    model, tok = load_reasoner("addition")
    assert model.config.activation_function == FAST_ACTIVATION and plain_gpt2(model)
    saved = AutoModelForCausalLM.from_pretrained(
        data_dir() / "reasoners" / "addition", attn_implementation="eager"
    ).eval()
    assert saved.config.activation_function == "gelu_new"  # what the checkpoint says
    assert not plain_gpt2(saved)
    ids = tok(["12+34=", "5+6="], return_tensors="pt", padding=True)
    assert torch.allclose(model(**ids).logits, saved(**ids).logits, atol=1e-5)
