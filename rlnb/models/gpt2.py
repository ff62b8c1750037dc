"""GPT-2's forward written out for decoding: what ``rlnb.decoding.sample`` runs on rlnb's
reasoners (``plain_gpt2``) instead of the model's own forward.

The same function as ``GPT2LMHeadModel`` with the same kernels (the tests hold the two to 1e-5,
to the same sampled tokens and to the same gradients), without what a general model call
carries: no module calls, no mask built anew each step (the additive bias of every position is
built once), logits of the last position only, and keys and values written into buffers
allocated once for the whole completion instead of concatenated each step (without gradients;
with gradients each step's keys are a new tensor, since autograd keeps the earlier ones). Over 64
to 1024 prompts it takes 0.7–0.9 of the time of the model's own forward
(``benchmarks/sampling.py``).

``decoder(model, ...)`` is the one entry: this forward for a model ``plain_gpt2`` accepts, the
model's own forward with a ``transformers`` cache for any other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rlnb.models.forward import (
    FAST_ACTIVATION,
    SMALL_ATTENTION,
    cache_argument,
    position_ids_from_mask,
    prefill,
    small_attention,
)

# step(token [N]) -> logits [N, V] of the next position; decoder(...) -> (first logits, step)
Step = Callable[[Tensor], Tensor]


def plain_gpt2(model) -> bool:
    """Whether ``gpt2_decoder`` computes ``model``'s function with ``model``'s own kernels: a
    ``transformers`` ``GPT2LMHeadModel`` (not a subclass) running ``small_attention`` and the
    one-kernel tanh GELU (as ``tiny_causal_lm`` and ``load_reasoner`` set it up), with its own
    ``Conv1D`` layers (no adapter, quantization, device map or hook in the way) and no dropout in
    play. Any other model runs its own forward."""
    from transformers import GPT2LMHeadModel  # here: importing rlnb.decoding needs torch only
    from transformers.pytorch_utils import Conv1D

    if type(model) is not GPT2LMHeadModel:  # a subclass may change the forward
        return False
    cfg = model.config
    if (
        cfg._attn_implementation != SMALL_ATTENTION
        or cfg.activation_function != FAST_ACTIVATION
        or getattr(model, "_hf_peft_config_loaded", False)
        or getattr(model, "hf_quantizer", None) is not None
        or getattr(model, "hf_device_map", None)
    ):
        return False
    layers = [
        layer
        for block in model.transformer.h
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
    ]
    return all(type(layer) is Conv1D for layer in layers) and not any(
        m._forward_hooks
        or m._forward_pre_hooks
        or (isinstance(m, torch.nn.Dropout) and m.training and m.p > 0)
        for m in model.modules()
    )


def _linear(x: Tensor, conv1d) -> Tensor:
    """GPT-2's ``Conv1D``, ``x W + b`` with ``W`` stored ``[in, out]``, without the module call
    (``plain_gpt2`` has checked that no hook or adapter would change it)."""
    return torch.addmm(conv1d.bias, x.reshape(-1, x.shape[-1]), conv1d.weight).view(
        *x.shape[:-1], -1
    )


def gpt2_forward(
    model, input_ids: Tensor, position_ids: Tensor, bias: Tensor, keys: list, values: list,
    length: int,
) -> Tensor:  # fmt: skip
    """Run ``input_ids`` ``[B, L]`` through GPT-2 at ``position_ids``, after ``length`` cached
    positions; return the last position's logits ``[B, V]``.

    ``bias`` ``[B, 1, L, length + L]`` is added to the attention scores (0 where a query may
    attend, a large negative number where not). ``keys``/``values`` hold one ``[B, H, ≥ length,
    D]`` tensor per layer (empty lists before the first call): with gradients the new positions
    are concatenated to them, without they are written into them at ``length`` (buffers of the
    whole completion's length); either way the lists are updated in place.
    """
    tr = model.transformer
    b, n = input_ids.shape
    h = tr.wte(input_ids) + tr.wpe(position_ids)
    for i, block in enumerate(tr.h):
        attn = block.attn
        x = F.layer_norm(h, h.shape[-1:], block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        qkv = _linear(x, attn.c_attn).view(b, n, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if len(keys) <= i:  # the first call: these are the cache
            keys.append(k)
            values.append(v)
        elif torch.is_grad_enabled():
            k = keys[i] = torch.cat([keys[i], k], dim=2)
            v = values[i] = torch.cat([values[i], v], dim=2)
        else:
            keys[i][:, :, length : length + n] = k
            values[i][:, :, length : length + n] = v
            k, v = keys[i][:, :, : length + n], values[i][:, :, : length + n]
        out = small_attention(attn, q, k, v, bias, attn.scaling)[0].reshape(b, n, -1)
        h = h + _linear(out, attn.c_proj)
        x = F.layer_norm(h, h.shape[-1:], block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        h = h + _linear(F.gelu(_linear(x, block.mlp.c_fc), approximate="tanh"), block.mlp.c_proj)
    last = F.layer_norm(h[:, -1], h.shape[-1:], tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)
    return model.lm_head(last)


def gpt2_decoder(
    model, input_ids: Tensor, attention_mask: Tensor, repeat: int, max_new_tokens: int
) -> tuple[Tensor, Step]:
    """Prefill the left-padded prompts ``[B, P]`` with ``gpt2_forward``, each once, then repeat
    their keys and values to ``repeat`` consecutive rows (into buffers of ``P + max_new_tokens``
    positions when gradients are off). Returns the first logits ``[B · repeat, V]`` and ``step``,
    which feeds one token per row and returns the next logits."""
    b, p = input_ids.shape
    allowed = attention_mask.bool()
    causal = torch.ones(p, p, dtype=torch.bool, device=allowed.device).tril()
    neg = torch.finfo(torch.float32).min  # finite: a fully masked (padding) query stays finite
    prompt_bias = torch.zeros(b, 1, p, p, device=allowed.device).masked_fill(
        ~(causal & allowed[:, None, :])[:, None], neg
    )
    keys, values = [], []
    positions = position_ids_from_mask(attention_mask)
    logits = gpt2_forward(model, input_ids, positions, prompt_bias, keys, values, 0)
    grad = torch.is_grad_enabled()
    for cache in (keys, values):
        for i, t in enumerate(cache):
            t = t.repeat_interleave(repeat, dim=0) if repeat > 1 else t
            if not grad:  # one buffer for the whole completion
                buffer = t.new_empty(*t.shape[:2], p + max_new_tokens, t.shape[3])
                buffer[:, :, :p] = t
                t = buffer
            cache[i] = t
    allowed = allowed.repeat_interleave(repeat, dim=0)
    # every generated position is attended to: one bias row over the whole completion
    bias = torch.zeros(b * repeat, 1, 1, p + max_new_tokens, device=allowed.device)
    bias[..., :p].masked_fill_(~allowed[:, None, None], neg)
    position = positions[:, -1:].repeat_interleave(repeat, dim=0) + 1
    length = p

    def step(token: Tensor) -> Tensor:
        nonlocal position, length
        out = gpt2_forward(
            model, token[:, None], position, bias[..., : length + 1], keys, values, length
        )
        position, length = position + 1, length + 1
        return out

    return logits.repeat_interleave(repeat, dim=0) if repeat > 1 else logits, step


def transformers_decoder(
    model, input_ids: Tensor, attention_mask: Tensor, repeat: int, max_new_tokens: int
) -> tuple[Tensor, Step]:
    """``gpt2_decoder``'s contract with the model's own forward and a ``transformers`` KV cache
    (any causal LM): the prompts run once (``prefill``), the cache is repeated to ``repeat``
    rows."""
    cache_name = cache_argument(model)
    out, cache = prefill(model, input_ids, attention_mask, repeat)
    mask = attention_mask.repeat_interleave(repeat, dim=0)
    position = position_ids_from_mask(mask)[:, -1:] + 1
    ones = torch.ones_like(mask[:, :1])

    def step(token: Tensor) -> Tensor:
        nonlocal cache, mask, position
        mask = torch.cat([mask, ones], dim=1)
        out = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
            **{cache_name: cache},
        )  # fmt: skip
        cache, position = out[cache_name], position + 1
        return out.logits[:, -1]

    logits = out.logits[:, -1]
    return logits.repeat_interleave(repeat, dim=0) if repeat > 1 else logits, step


def decoder(
    model, input_ids: Tensor, attention_mask: Tensor, repeat: int, max_new_tokens: int
) -> tuple[Tensor, Step]:
    """``gpt2_decoder`` where it computes ``model`` exactly (``plain_gpt2``), else
    ``transformers_decoder``."""
    fn = gpt2_decoder if plain_gpt2(model) else transformers_decoder
    return fn(model, input_ids, attention_mask, repeat, max_new_tokens)
