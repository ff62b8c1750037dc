"""Learned values on top of a causal LM: the PPO critic, prefix values, outcome and process reward
models, and a generative verifier. All run through ``rlnb.models.forward.grouped_forward`` (each
distinct prompt once), on any Hugging Face causal LM.

- ``ValueModel``: the PPO critic of ``rlnb.train.lm_rl`` — ``V(x_<t)`` read where the policy reads
  its next token, with one value per vocabulary entry.
- ``ScoreModel``: a copy of the policy's trunk and a head on the state *after* each token
  (a scalar, or a categorical head over [0, 1]: ``rlnb.models.value.ValueNetwork``'s heads).
  ``forward`` scores every prefix — the prompt alone and the prompt plus each completion token —
  and three readouts make it a model of a kind: every position, a **prefix value model** (trained
  on Monte Carlo values or on outcomes); the last token, an **outcome reward model** (ORM); the
  step delimiters and the last token, a **process reward model** (PRM).
- ``verifier_scores``: the **generative verifier** — the policy itself continued with the
  verification suffix ``"?"`` and read as P("Y") / (P("Y") + P("N")), the score "Putting the
  Value Back in RL: Unifying LLM Reasoners With Verifiers" (RL^V) reads from its policy;
  ``rlnb.train.verifier.train_generative_verifier`` teaches it the verdicts by SFT.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rlnb.models.forward import grouped_forward, position_ids_from_mask
from rlnb.models.value import ValueNetwork

VERIFY_SUFFIX, VERIFY_YES, VERIFY_NO = "?", "Y", "N"


class ValueModel(nn.Module):
    """``V(x_<t)`` for every position, read where the policy reads its next token: a copy of
    ``policy``'s trunk (``policy.base_model``) and a head with one value per vocabulary entry,
    ``q(h_s)[a]`` = the value once token ``a`` follows the prefix whose last state is ``h_s``.
    ``forward`` returns ``[B, L]`` aligned like ``sequence_logprobs``: entry ``t`` is
    ``V(x_<t) = q(h_{t−2})[x_{t−1}]`` (0 for t < 2).

    Why not a scalar head on the state after the token: the state *before* it is where the policy's
    logits come from, so this head can learn how (un)likely the sampled token was — on the tiny
    reasoner the best available sign of a wrong digit. Measured after 300 PPO steps (8 prompts × 8)
    from the shipped addition checkpoint, seeds 0–2, on 512 held-out completions: correlation of
    the value after the last answer digit with the outcome 0.20–0.23 with this head, 0.06–0.13 with
    a scalar head on the state after the token (value_lr 1e-3 or 1e-4).
    """

    def __init__(self, policy):
        super().__init__()
        self.trunk = copy.deepcopy(policy.base_model)
        self.head = nn.Linear(policy.config.hidden_size, policy.config.vocab_size)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        ).last_hidden_state[:, :-2]
        token = input_ids[:, 1:-1, None]  # the token that follows each of those states
        v = self.head(hidden.float()).gather(-1, token).squeeze(-1)  # (not weight[token]: its
        # backward accumulates repeated rows in a nondeterministic order, and resume must replay)
        return torch.cat([v.new_zeros(len(v), 2), v], dim=1)[:, : input_ids.shape[1]]

    def completion_values(
        self, prompt_ids, prompt_mask, completion_ids, response_mask, group_size: int = 1
    ) -> Tensor:
        """``forward(...)[:, P:]`` (``[B, T]``), each distinct prompt run once through the trunk
        (``rlnb.models.forward.grouped_forward``; rows in groups of ``group_size`` sharing a prompt)."""
        if prompt_ids.shape[1] < 2:
            raise ValueError("prompt_ids: expected at least 2 columns (the value reads h_{t-2})")
        states = grouped_forward(
            self.trunk, prompt_ids, prompt_mask, completion_ids, response_mask, group_size, 2
        )[:, : completion_ids.shape[1]]
        token = torch.cat([prompt_ids[:, -1:], completion_ids[:, :-1]], dim=1)
        return self.head(states.float()).gather(-1, token[..., None]).squeeze(-1)


class ScoreModel(nn.Module):
    """A copy of ``policy``'s trunk (``policy.base_model``) and a head on its state after each
    token. ``head`` is ``"scalar"`` (regression), ``"two_hot"`` or ``"hl_gauss"`` (a distribution
    over ``n_bins`` atoms on [0, 1], "Stop Regressing: Training Value Functions via Classification
    for Scalable Deep RL"); scores are values in [0, 1]'s units either way (``value``), and
    ``head.loss`` is the head's loss against scalar targets.

    ``states(prompt_ids, prompt_mask, completion_ids, response_mask, group_size)`` returns the
    trunk's states ``[B, 1 + T, H]``: column 0 after the prompt, column ``t + 1`` after completion
    token ``t``; ``forward`` the head's logits there ``[B, 1 + T, n]``; ``value`` turns logits into
    scores, and ``head.loss(states, targets[:, None])`` is the head's loss.
    """

    def __init__(self, policy, head: str = "scalar", n_bins: int = 21, sigma_ratio: float = 0.75):
        super().__init__()
        self.trunk = copy.deepcopy(policy.base_model)
        self.head = ValueNetwork(
            policy.config.hidden_size, 1, head=head, hidden=(), n_bins=n_bins, v_min=0.0,
            v_max=1.0, sigma_ratio=sigma_ratio,
        )  # fmt: skip

    def states(self, prompt_ids, prompt_mask, completion_ids, response_mask, group_size: int = 1):
        return grouped_forward(
            self.trunk, prompt_ids, prompt_mask, completion_ids, response_mask, group_size
        ).float()

    def forward(self, prompt_ids, prompt_mask, completion_ids, response_mask, group_size: int = 1):
        states = self.states(prompt_ids, prompt_mask, completion_ids, response_mask, group_size)
        b, length, hidden = states.shape
        return self.head.logits(states.reshape(b * length, hidden)).view(b, length, -1)

    def value(self, logits: Tensor) -> Tensor:
        """Scalar scores ``[...]`` from ``forward``'s logits ``[..., n]``."""
        flat = logits.reshape(-1, 1, logits.shape[-1])
        return self.head.values_from_logits(flat).reshape(logits.shape[:-1])


def step_positions(
    completion_ids: Tensor, response_mask: Tensor, delimiter: int
) -> list[list[int]]:
    """Per row, the ``ScoreModel.forward`` column after each written step — one per element of
    ``task.steps(completion)``: after every ``delimiter`` token, and after the last completion
    token (EOS included) for the last step. These are the positions a process reward model
    scores. A completion of EOS alone gets one, after its EOS (``score_targets`` drops it: its
    text has no step)."""
    rows = []
    for ids, mask in zip(completion_ids.tolist(), response_mask.tolist()):
        n = sum(mask)
        rows.append([t + 1 for t in range(n) if ids[t] == delimiter] + [n] if n else [])
    return rows


@torch.no_grad()
def verifier_scores(
    model, tokenizer, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 512
) -> Tensor:
    """The generative verifier's P(correct) for each completion ``[N]``: the causal LM continued
    with ``prompt + completion + "?"`` and read at the next token as
    ``P("Y") / (P("Y") + P("N"))`` (the other tokens' mass ignored)."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError("prompts, completions: expected two non-empty lists of the same length")
    yes, no = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (VERIFY_YES, VERIFY_NO))
    if len(yes) != 1 or len(no) != 1:
        raise ValueError(
            f"tokenizer: expected {VERIFY_YES!r} and {VERIFY_NO!r} to be one token each"
        )
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(prompts), batch_size):
        texts = [
            p + c + VERIFY_SUFFIX
            for p, c in zip(
                prompts[start : start + batch_size], completions[start : start + batch_size]
            )
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
        logits = (
            model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                position_ids=position_ids_from_mask(enc["attention_mask"]),
            )
            .logits[:, -1]
            .float()
        )
        scores.append(torch.softmax(logits[:, [yes[0], no[0]]], -1)[:, 0])
    return torch.cat(scores).cpu()
