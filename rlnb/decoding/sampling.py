"""Batched sampling with a KV cache, and sequence log-probs in one forward pass.

Works with any ``transformers`` causal LM and its tokenizer. Prompts are left-padded, so every
row's next token sits in the last column; position ids count only real tokens, so a padded prompt
is decoded exactly as it would be alone. Log-probs are those of the sampling distribution
``softmax(logits / temperature)`` (before top-p truncation); greedy decoding (``temperature=0``)
reports them at temperature 1. Training recomputes the same numbers with ``sequence_logprobs``
(one pass over prompt + completion) or ``completion_logprobs`` (each distinct prompt once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlnb.models.forward import grouped_forward, position_ids_from_mask
from rlnb.models.gpt2 import decoder


@dataclass
class Samples:
    """``n`` completions per prompt, rows grouped by prompt (row ``i`` answers ``prompts[i // n]``).

    ``prompt_ids``/``prompt_mask`` ``[N, P]`` (left-padded); ``completion_ids`` ``[N, T]`` (the EOS
    token included, padding after it); ``response_mask`` ``[N, T]`` 1 on generated tokens;
    ``logprobs`` ``[N, T]`` (0 off the mask); ``text`` the decoded completions, ``prompts`` the
    prompt of each row; ``entropy`` ``[N, T]`` of each sampled token's distribution (only with
    ``with_grad=True``); ``sum_pi_squared`` ``[N, T]``, ``Σ_a π(a | x_<t)²`` of the sampling
    distribution (only with ``with_sum_pi_squared=True``; the optimal token baselines read it).
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    response_mask: Tensor
    logprobs: Tensor
    text: list[str]
    prompts: list[str]
    entropy: Tensor | None = None  # [N, T], only from sample(..., with_grad=True)
    sum_pi_squared: Tensor | None = None  # [N, T], only with with_sum_pi_squared=True

    @property
    def input_ids(self) -> Tensor:
        """Prompt and completion, ``[N, P + T]``."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def full_response_mask(self) -> Tensor:
        """``response_mask`` aligned with ``input_ids`` (zeros over the prompt)."""
        return torch.cat([torch.zeros_like(self.prompt_mask), self.response_mask], dim=1)


def check_context(model, prompt_tokens: int, max_new_tokens: int) -> None:
    """``ValueError`` unless the longest prompt plus ``max_new_tokens`` fit the model's positions
    (``config.max_position_embeddings``, when it has one): past them a row that does not stop
    would index a position embedding that does not exist, and the completion could not be scored
    in one pass (``completion_logprobs``) either."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise ValueError(
            f"max_new_tokens: the longest prompt has {prompt_tokens} tokens, and {prompt_tokens} + "
            f"max_new_tokens {max_new_tokens} > the model's {limit} positions"
        )


def _top_p_filter(probs: Tensor, top_p: float) -> Tensor:
    """Zero the tail of each row outside the smallest set with mass ≥ ``top_p`` (nucleus)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the first token always stays
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row from the distribution ``probs`` ``[..., V]``: the argmax of ``p / E``
    with ``E ~ Exp(1)`` is a draw from ``p`` (cheaper than ``multinomial``)."""
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(-1)


def sample(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int = 1,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    with_grad: bool = False,
    with_sum_pi_squared: bool = False,
) -> Samples:
    """Sample ``n`` completions for each prompt, stopping each row at the tokenizer's EOS.

    Each prompt is run through the model once; its KV cache is then copied to its ``n`` rows.
    rlnb's reasoners run ``rlnb.models.gpt2``'s written-out forward (the same function, less work
    per call; ``plain_gpt2`` says which models), any other model its own forward.

    ``temperature=0`` decodes greedily. ``seed`` seeds a generator of its own (the global RNG is
    left alone); ``None`` uses the global RNG. ``with_grad=True`` keeps the autograd graph of the
    log-probs and adds the entropies (``Samples.entropy``): an on-policy update can then use the
    sampling pass itself instead of a second forward pass over the completions.
    ``with_sum_pi_squared=True`` also records ``Σ_a π(a | x_<t)²`` per token (no gradient).
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts: expected a non-empty list of strings")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive integer, got {max_new_tokens!r}")
    if not temperature >= 0:  # NaN too
        raise ValueError(f"temperature: expected ≥ 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p}")
    with torch.set_grad_enabled(with_grad):
        device = next(model.parameters()).device
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        check_context(model, ids.shape[1], max_new_tokens)  # left-padded: the longest prompt
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

        # Prefill each prompt once, then copy its KV cache to its n rows.
        logits, step_fn = decoder(model, ids, mask, n, max_new_tokens)
        if n > 1:
            ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
        tokens, logps, alive, entropies, pi2 = [], [], [], [], []
        for step in range(max_new_tokens):
            logits = logits.float()
            if temperature not in (0.0, 1.0):  # greedy and T = 1 read the logits as they are
                logits = logits / temperature
            log_z = logits.logsumexp(-1, keepdim=True)
            with torch.no_grad():
                if temperature > 0 or with_sum_pi_squared:
                    probs = (logits - log_z).exp()
                if with_sum_pi_squared:  # of the distribution before top-p, as the log-probs
                    pi2.append(probs.square().sum(-1).masked_fill(finished, 0.0))
                if temperature == 0:
                    token = logits.argmax(-1)
                else:
                    if top_p < 1.0:
                        probs = _top_p_filter(probs, top_p)
                    token = draw(probs, generator)
            token = token.masked_fill(finished, pad)
            alive.append(~finished)
            tokens.append(token)
            logp = logits.gather(1, token[:, None]).squeeze(1) - log_z.squeeze(1)
            logps.append(logp.masked_fill(finished, 0.0))
            if with_grad:
                log_p = logits - log_z
                entropies.append(-(log_p.exp() * log_p).sum(-1).masked_fill(finished, 0.0))
            finished = finished | (token == eos)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            logits = step_fn(token)

        completion = torch.stack(tokens, dim=1)
        return Samples(
            prompt_ids=ids,
            prompt_mask=mask,
            completion_ids=completion,
            response_mask=torch.stack(alive, dim=1).long(),
            logprobs=torch.stack(logps, dim=1),
            text=tokenizer.batch_decode(completion, skip_special_tokens=True),
            prompts=[p for p in prompts for _ in range(n)],
            entropy=torch.stack(entropies, dim=1) if with_grad else None,
            sum_pi_squared=torch.stack(pi2, dim=1) if with_sum_pi_squared else None,
        )


def sequence_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_mask: Tensor,
    temperature=1.0,
    with_entropy: bool = False,
):
    """Per-token ``log π(x_t | x_<t)`` under ``softmax(logits / temperature)``, in one forward pass.

    All ``[B, L]``; the result is aligned with ``input_ids`` and 0 where ``response_mask`` is 0
    (and at position 0, which has no prefix). Differentiable. ``with_entropy=True`` returns
    ``(logp, entropy)``, the entropy of π(· | x_<t) at the same positions.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != response_mask.shape:
        raise ValueError(
            f"attention_mask, response_mask: expected shape {tuple(input_ids.shape)}, got "
            f"{tuple(attention_mask.shape)} and {tuple(response_mask.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    logits = (
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
        .logits[:, :-1]
        .float()
        / temperature
    )
    out = _token_logprobs(logits, input_ids[:, 1:], response_mask[:, 1:], with_entropy)

    def pad(x):  # position 0 has no prefix
        return torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)

    return tuple(map(pad, out)) if with_entropy else pad(out)


def _token_logprobs(logits: Tensor, targets: Tensor, mask: Tensor, with_entropy: bool):
    """``log softmax(logits)[targets]`` (and the entropy of ``softmax(logits)``), times ``mask``."""
    logp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
    mask = mask.to(logp.dtype)
    if not with_entropy:
        return logp * mask
    log_probs = logits.log_softmax(-1)
    return logp * mask, -(log_probs.exp() * log_probs).sum(-1) * mask


def completion_logprobs(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    response_mask: Tensor,
    group_size: int = 1,
    temperature=1.0,
    with_entropy: bool = False,
):
    """``sequence_logprobs`` over the completion only, each distinct prompt run once
    (``grouped_forward``): equal to ``sequence_logprobs(...)[:, P:]``, gradients included.

    ``prompt_*`` ``[B, P]``, ``completion_ids``/``response_mask`` ``[B, T]``, rows in groups of
    ``group_size`` sharing a prompt; returns ``[B, T]`` (and the entropy with
    ``with_entropy=True``), 0 off ``response_mask``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    logits = (
        grouped_forward(model, prompt_ids, prompt_mask, completion_ids, response_mask, group_size)[
            :, :-1
        ].float()
        / temperature
    )
    return _token_logprobs(logits, completion_ids, response_mask, with_entropy)
