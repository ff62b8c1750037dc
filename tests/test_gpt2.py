"""``rlnb.models.gpt2`` (GPT-2's forward written out for decoding) against ``transformers``' own
forward, ``small_attention`` against eager attention, and the one-kernel GELU of the shipped
reasoners against the ``gelu_new`` they were saved with."""

import pytest
import torch

import rlnb.models.gpt2 as gpt2
from rlnb.decoding import sample
from rlnb.envs.tasks import Addition
from rlnb.models.forward import cache_argument
from rlnb.models.gpt2 import plain_gpt2
from rlnb.models.lm import FAST_ACTIVATION, char_tokenizer, data_dir, load_reasoner, tiny_causal_lm

PROMPTS = ["07+35=", "1+2=", "123+4=", "9=", "99+99="]  # different lengths: left padding


@pytest.fixture(scope="module")
def lm():
    """The shipped reasoner: it ends its answers with EOS, so the rows' masks are exercised (a
    random model is compared with ``generate`` and a full pass in ``test_decoding``)."""
    return load_reasoner("addition")


def with_transformers_forward(monkeypatch, fn):
    """``fn()`` with the sampler on the model's own forward (the reference)."""
    with monkeypatch.context() as m:
        m.setattr(gpt2, "plain_gpt2", lambda model: False)
        return fn()


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
    assert plain_gpt2(model)
    options = {"seed": 0, **options}
    ours = sample(model, tok, PROMPTS, max_new_tokens=8, **options)
    theirs = with_transformers_forward(
        monkeypatch, lambda: sample(model, tok, PROMPTS, max_new_tokens=8, **options)
    )
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    assert torch.equal(ours.response_mask, theirs.response_mask)
    assert torch.equal(ours.prompt_mask, theirs.prompt_mask)
    assert ours.response_mask.sum(1).min() < 8  # some rows stopped at EOS: the mask is exercised
    assert torch.allclose(ours.logprobs, theirs.logprobs, atol=1e-5)
    for name in ("entropy", "sum_pi_squared"):
        if getattr(theirs, name) is not None:
            assert torch.allclose(getattr(ours, name), getattr(theirs, name), atol=1e-5)


def test_gpt2_forward_has_the_models_gradients(lm, monkeypatch):
    model, tok = lm

    def grads():
        model.zero_grad(set_to_none=True)
        out = sample(model, tok, PROMPTS, n=3, max_new_tokens=6, seed=4, with_grad=True)
        weights = torch.linspace(-1, 1, out.logprobs.numel()).view_as(out.logprobs)
        ((out.logprobs * weights).sum() + 0.1 * out.entropy.sum()).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    ours, theirs = grads(), with_transformers_forward(monkeypatch, grads)
    assert ours.keys() == theirs.keys()
    for k in ours:
        scale = theirs[k].abs().max()
        assert (ours[k] - theirs[k]).abs().max() <= 1e-4 * scale, (
            k,
            (ours[k] - theirs[k]).abs().max() / scale,
        )
    assert max(g.abs().max() for g in ours.values()) > 1e-3  # not all zero


@pytest.mark.parametrize(
    "change",
    [
        {"scale_attn_by_inverse_layer_idx": True},
        {"reorder_and_upcast_attn": True},
        {"scale_attn_weights": False},
        {"activation_function": "relu"},
    ],
)
def test_other_gpt2_options_run_the_models_own_forward(change):
    torch.manual_seed(0)
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=2, n_embd=32, n_head=2)
    for key, value in change.items():
        setattr(model.config, key, value)
    model = type(model)(model.config).eval()
    assert not plain_gpt2(model)
    ours = sample(model, tok, PROMPTS, max_new_tokens=6, temperature=0)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    theirs = model.generate(
        **enc, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=tok.eos_token_id
    )[:, enc["input_ids"].shape[1] :]
    assert torch.equal(ours.completion_ids, theirs[:, : ours.completion_ids.shape[1]])


def test_dropout_in_training_mode_and_subclasses_run_the_models_own_forward():
    tok = char_tokenizer(Addition.alphabet)
    model = tiny_causal_lm(len(tok), n_layer=1, n_embd=32, n_head=2)
    assert plain_gpt2(model.train())  # no dropout configured: training mode changes nothing
    model.config.resid_pdrop = 0.1
    assert not plain_gpt2(model.train()) and plain_gpt2(model.eval())

    class Wrapped(type(model)):
        pass

    assert not plain_gpt2(Wrapped(model.config).eval())


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
    ids = tok(["12+34=", "5+6="], return_tensors="pt", padding=True)
    assert torch.allclose(model(**ids).logits, saved(**ids).logits, atol=1e-5)
