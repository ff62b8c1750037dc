"""Model forwards that training, decoding and critics share: position ids from a padded
attention mask, the KV-cache argument's name, ``grouped_forward`` (each distinct prompt of a
group run once, its cache repeated to the group's rows), and ``small_attention``, the attention
the tiny reasoners run with (``SMALL_ATTENTION``, registered with ``transformers`` by
``rlnb.models.lm``)."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

# The kernels rlnb's tiny reasoners run (``rlnb.models.lm`` registers SMALL_ATTENTION with
# ``transformers``): ``small_attention``, and GPT-2's activation 0.5 x (1 + tanh(√(2/π) (x +
# 0.044715 x³))) as one kernel, which ``gelu_new`` computes in seven elementwise ops (a third of a
# sampling pass over 1024 rows went to the seven).
SMALL_ATTENTION = "rlnb_small"
FAST_ACTIVATION = "gelu_pytorch_tanh"


def small_attention(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``softmax(q kᵀ · scaling + mask) v`` for ``transformers``' attention interface: ``query``
    ``[B, H, q, D]``, ``key``/``value`` ``[B, H, k, D]``, ``attention_mask`` additive ``[B, 1, q, k]``
    (``eager_mask``'s); returns the output ``[B, q, H, D]`` and the weights ``[B, H, q, k]``.

    The same function as eager attention, shaped for the tiny reasoners: a decoding step has one
    query per row, and for a dozen keys of 32 dimensions the broadcast product and sum beat a
    batched matmul over B·H one-row matrices, backward especially (forward + backward on 128 rows
    × 4 heads × 10 keys, CPU: 0.93 → 0.40 ms a layer). Several queries (a prompt, a training
    pass) use matmuls, as eager attention does. Meant for short contexts: one query against k keys
    materialises a ``[B, H, k, D]`` product.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if query.shape[2] == 1:
        weights = (query * key).sum(-1).unsqueeze(2) * scaling
    else:
        weights = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = weights.softmax(-1).to(value.dtype)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    if query.shape[2] == 1:
        out = (weights.transpose(-1, -2) * value).sum(-2, keepdim=True)
    else:
        out = weights @ value
    return out.transpose(1, 2), weights


def cache_argument(model) -> str:
    """The KV-cache argument's name: ``cache`` in recent ``transformers``, ``past_key_values``
    before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that count only real tokens: ``cumsum(mask) − 1`` (0 on left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill(model, input_ids: Tensor, attention_mask: Tensor, repeat: int = 1):
    """Run each (left-padded) prompt through ``model`` once with a KV cache, then repeat the cache
    to ``repeat`` consecutive rows per prompt. Returns ``(output, cache)``: the model's output for
    the distinct prompts (not repeated) and the repeated cache, ready for the rows' continuations."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=True,
    )
    cache = out[cache_argument(model)]
    if repeat > 1:
        cache.batch_repeat_interleave(repeat)
    return out, cache


def grouped_forward(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    response_mask: Tensor,
    group_size: int = 1,
    prompt_positions: int = 1,
) -> Tensor:
    """A model's output over prompt + completion, running each distinct prompt once.

    Rows come in groups of ``group_size`` that share their prompt (``Samples``' layout): the
    groups' prompts go through the model once, their KV cache is repeated to the group's rows
    and the completions run on top of it. Gradients flow through the repeated cache, so this
    equals one pass over ``[prompt, completion]`` (``sequence_logprobs``' way) at a fraction of
    the cost when the group is large. Returns the output (``logits`` of a causal LM,
    ``last_hidden_state`` of a bare transformer) at the last ``prompt_positions`` prompt positions
    and every completion position: ``[B, prompt_positions + T, ...]``.
    """
    b = prompt_ids.shape[0]
    if not isinstance(group_size, int) or group_size < 1 or b % group_size:
        raise ValueError(f"group_size: expected a positive divisor of {b} rows, got {group_size!r}")
    if prompt_mask.shape != prompt_ids.shape or response_mask.shape != completion_ids.shape:
        raise ValueError(
            "prompt_mask, response_mask: expected the shapes of prompt_ids and completion_ids"
        )
    ids, mask = prompt_ids[::group_size], prompt_mask[::group_size]
    if not torch.equal(ids.repeat_interleave(group_size, 0), prompt_ids):
        raise ValueError(f"prompt_ids: expected rows in groups of {group_size} sharing a prompt")
    out, cache = prefill(model, ids, mask, group_size)
    attention = torch.cat([prompt_mask, response_mask], dim=1)
    rest = model(
        input_ids=completion_ids,
        attention_mask=attention,
        position_ids=position_ids_from_mask(attention)[:, prompt_ids.shape[1] :],
        **{cache_argument(model): cache},
    )
    head = out[0][:, -prompt_positions:].repeat_interleave(group_size, 0)  # logits or states
    return torch.cat([head, rest[0]], dim=1)
