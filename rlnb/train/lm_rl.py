"""RL for a causal LM on a verifiable task: one trainer, where only the advantage estimator changes.

Each step draws ``prompts_per_step`` train prompts, samples ``group_size`` completions for each
(``rlnb.decoding.sample``, KV cache), scores them with the task's verifier and computes advantages:

- value-free (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp``, ``lite_ppo``, ``qae``, ``pvpo``):
  one number per completion from ``rlnb.estimators.group`` (via the same table the prompt bandit
  uses), spread over its tokens. ``pvpo``'s reference value of a prompt is the mean reward of
  ``reference_rollouts`` samples from the frozen initial policy ("PVPO: Pre-Estimated Value-Based
  Policy Optimization for Agentic Reasoning"), refreshed every ``reference_every`` steps; with
  ``pvpo_filter`` each step draws 4× the prompts and trains on those the frozen policy neither
  always nor never solves (``informative_prompts``), as PVPO filters its data;
- ``ppo``: a critic of our own, ``ValueModel`` — a copy of the policy's transformer trunk with a
  per-token value head read from the state before each token (a copy rather than a shared trunk,
  so the value loss cannot disturb the policy's features, and rather than a separate small model
  because the copy starts from features that already read the task). Token-level GAE
  (``rlnb.estimators.gae``, γ = 1, λ = ``lam``; the reward arrives on the last token and nothing
  bootstraps past it) and a clipped value loss.

The policy (and critic) then take ``epochs`` passes of ``minibatches`` Adam steps (minibatches
of whole groups, so that ``rlnb.decoding.completion_logprobs`` runs each prompt once) on
``rlnb.estimators.policy_loss`` (clipped surrogate, aggregation ``agg``) plus ``kl_coef`` times
``kl_penalty`` against ``ref_model`` when one is given. With one pass of one minibatch the
update is exactly on-policy, so ``π_old`` is the current policy detached (ratio 1, as TRL does
with ``num_iterations=1``), and the sampling pass itself, run with gradients, gives the log-probs
to differentiate: no second forward pass. On CUDA the forward passes run under bf16 autocast.

With ``checkpoint_dir``, every ``checkpoint_every`` steps (and at the end) the policy, the critic,
PVPO's frozen policy, Adam's state (all safetensors), the step, PVPO's reference values
(``state.json``) and the history (``history.csv``) are written there; calling ``train`` again with
the same config resumes from them and, on CPU, reproduces the uninterrupted run (sampling and
minibatch order are seeded by the step number).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn
from tqdm.auto import tqdm

from rlnb.decoding.sampling import (
    Samples,
    completion_logprobs,
    grouped_forward,
    position_ids_from_mask,
    sample,
)
from rlnb.decoding.selection import count_correct
from rlnb.envs.bandits import ESTIMATORS, estimator_fn
from rlnb.estimators.advantages import gae
from rlnb.estimators.losses import AGG_MODES, KL_KINDS, aggregate, kl_penalty, policy_loss

ALGORITHMS = (*ESTIMATORS, "ppo")


@dataclass
class RLConfig:
    algorithm: str = "grpo"  # one of ALGORITHMS
    steps: int = 50  # sampling rounds
    group_size: int = 8  # completions per prompt
    prompts_per_step: int = 16
    lr: float = 1e-4  # Adam, policy (and critic)
    warmup_steps: int = (
        10  # linear learning-rate warm-up: Adam's first steps move every weight by ~lr
    )
    clip_low: float = 0.2
    clip_high: float | None = None  # None: = clip_low
    epochs: int = 1  # passes over each round's samples
    minibatches: int = 1  # Adam steps per pass
    kl_kind: str = "k3"
    kl_coef: float = 0.0  # needs ref_model when > 0
    agg: str = "token-mean"
    temperature: float = 1.0
    max_new_tokens: int | None = None  # None: the task's
    qae_k: float = 0.4
    lam: float = 1.0  # GAE λ (ppo)
    value_clip: float = 0.2  # clipped value loss (ppo)
    value_lr: float = 1e-4  # Adam for the critic (ppo)
    reference_rollouts: int = 8  # pvpo: samples per prompt for the reference value
    reference_every: int = 0  # pvpo: refresh the reference every this many steps (0: never)
    pvpo_filter: bool = False  # pvpo: prefer prompts whose reference accuracy is in (0, 1)
    eval_every: int = 10  # greedy pass@1 on held-out prompts every this many steps
    eval_prompts: int = 128
    checkpoint_dir: str | None = None  # save here, and resume from here if a checkpoint exists
    checkpoint_every: int = 50
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.kl_kind not in KL_KINDS:
            raise ValueError(f"kl_kind: expected one of {KL_KINDS}, got {self.kl_kind!r}")
        if self.agg not in AGG_MODES:
            raise ValueError(f"agg: expected one of {AGG_MODES}, got {self.agg!r}")
        for name in ("steps", "group_size", "prompts_per_step", "epochs", "minibatches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)!r}")
        if self.minibatches > self.prompts_per_step:
            raise ValueError("minibatches: expected at most prompts_per_step (they split groups)")
        if self.pvpo_filter and self.algorithm != "pvpo":
            raise ValueError(f"pvpo_filter: only for algorithm 'pvpo', got {self.algorithm!r}")
        if not self.temperature > 0 or self.kl_coef < 0 or not self.lr > 0:
            raise ValueError("temperature, kl_coef, lr: expected > 0, ≥ 0 and > 0")


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
        (``rlnb.decoding.grouped_forward``; rows in groups of ``group_size`` sharing a prompt)."""
        if prompt_ids.shape[1] < 2:
            raise ValueError("prompt_ids: expected at least 2 columns (the value reads h_{t-2})")
        states = grouped_forward(
            self.trunk, prompt_ids, prompt_mask, completion_ids, response_mask, group_size, 2
        )[:, : completion_ids.shape[1]]
        token = torch.cat([prompt_ids[:, -1:], completion_ids[:, :-1]], dim=1)
        return self.head(states.float()).gather(-1, token[..., None]).squeeze(-1)


def last_token(response_mask: Tensor) -> Tensor:
    """``[B, T]`` bool: True at each row's last response token."""
    last = response_mask.long().cumsum(1).argmax(1)  # the first index where the count peaks
    return torch.zeros(response_mask.shape, dtype=torch.bool, device=response_mask.device).scatter(
        1, last[:, None], True
    )


def token_gae(scores: Tensor, values: Tensor, response_mask: Tensor, lam: float):
    """Token-level GAE over ``[B, T]`` positions with γ = 1: the score is the reward of the last
    response token, which is terminal (no bootstrap past the end). Returns ``(advantages,
    returns)``, 0 off the mask."""
    mask = response_mask.to(values.dtype)
    terminated = last_token(response_mask)
    rewards = terminated.to(values.dtype) * scores.to(values.dtype)[:, None]
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1) * mask
    out = gae(
        rewards, values * mask, next_values, terminated, torch.zeros_like(terminated), 1.0, lam
    )
    return out.advantages * mask, out.returns * mask


def informative_prompts(candidates: Sequence[str], accuracy: Sequence[float], n: int) -> list[str]:
    """PVPO's data filter: the first ``n`` candidates whose reference accuracy is strictly between
    0 and 1 (all-correct and all-wrong groups carry no group-relative signal), topped up with the
    others in their order when fewer than ``n`` qualify."""
    if len(candidates) != len(accuracy):
        raise ValueError("accuracy: expected one value per candidate")
    keep = [p for p, a in zip(candidates, accuracy) if 0 < a < 1]
    rest = [p for p, a in zip(candidates, accuracy) if not 0 < a < 1]
    return (keep + rest)[:n]


def save_checkpoint(
    directory, next_step: int, model, critic, frozen, optimizer, reference, history
):
    """Write everything ``train`` needs to resume at ``next_step`` (see the module docstring)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_model(model, str(d / "policy.safetensors"))
    for name, module in (("critic", critic), ("initial_policy", frozen)):
        if module is not None:
            save_model(module, str(d / f"{name}.safetensors"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {
        f"{i}.{key}": value.detach().contiguous()
        for i, p in enumerate(params)
        for key, value in optimizer.state.get(p, {}).items()
    }
    save_file(state, str(d / "optimizer.safetensors"))
    pd.DataFrame(history).to_csv(d / "history.csv", index=False)
    (d / "state.json").write_text(json.dumps({"next_step": next_step, "reference": reference}))


def load_checkpoint(directory, model, critic, frozen, optimizer) -> tuple[int, dict, list]:
    """Restore what ``save_checkpoint`` wrote; return ``(next_step, reference, history rows)``."""
    d = Path(directory)
    load_model(model, str(d / "policy.safetensors"))
    for name, module in (("critic", critic), ("initial_policy", frozen)):
        if module is not None:
            load_model(module, str(d / f"{name}.safetensors"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in load_file(str(d / "optimizer.safetensors")).items():
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = value.to(params[int(i)].device)
    state = json.loads((d / "state.json").read_text())
    history = pd.read_csv(d / "history.csv").to_dict("records")
    return state["next_step"], state["reference"], history


def train(
    model,
    tokenizer,
    task,
    config: RLConfig | None = None,
    ref_model=None,
    callbacks: Sequence[Callable] = (),
) -> tuple[pd.DataFrame, ValueModel | None]:
    """Train ``model`` in place; return ``(history, critic)`` (``critic`` is None unless ``ppo``).

    History, one row per step: ``step``, ``reward`` (mean sampled reward), ``pass1`` (greedy pass@1
    on ``eval_prompts`` test prompts via ``rlnb.decoding.count_correct``, every ``eval_every`` steps
    and at step 0, NaN in between),
    ``entropy`` (mean per-token entropy of the sampled completions), ``kl`` (k3 estimate to
    ``ref_model``, NaN without one), ``clip_frac``, ``grad_norm``, ``loss``, ``samples_per_s``.
    Each callback is called as ``callback(step, model, row)``; raising ``StopIteration`` ends
    training after that step.
    """
    cfg = dataclasses.replace(config) if config is not None else RLConfig()
    if cfg.max_new_tokens is None:
        cfg.max_new_tokens = task.max_new_tokens
    if cfg.kl_coef > 0 and ref_model is None:
        raise ValueError("ref_model: needed when kl_coef > 0")
    device = next(model.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    torch.manual_seed(cfg.seed)
    critic = ValueModel(model).to(device) if cfg.algorithm == "ppo" else None
    groups = [{"params": list(model.parameters()), "base_lr": cfg.lr}]
    if critic is not None:
        groups.append({"params": list(critic.parameters()), "base_lr": cfg.value_lr})
    optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    estimator = None if cfg.algorithm == "ppo" else estimator_fn(cfg.algorithm, cfg.qae_k)
    frozen = copy.deepcopy(model).requires_grad_(False) if cfg.algorithm == "pvpo" else None
    reference: dict[str, float] = {}
    eval_set = task.prompts(min(cfg.eval_prompts, len(task.split("test"))), "test", seed=cfg.seed)

    def pvpo_reference(prompts: list[str], step: int) -> Tensor:
        missing = [p for p in prompts if p not in reference]
        if missing:
            out = sample(
                frozen, tokenizer, missing, n=cfg.reference_rollouts,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                seed=cfg.seed + 7919 * step,
            )  # fmt: skip
            r = torch.tensor(task.rewards(out.prompts, out.text)).view(len(missing), -1).mean(1)
            reference.update(zip(missing, r.tolist()))
        return torch.tensor([reference[p] for p in prompts], device=device)

    history, first = [], 0
    if cfg.checkpoint_dir and (Path(cfg.checkpoint_dir) / "state.json").exists():
        first, reference, history = load_checkpoint(
            cfg.checkpoint_dir, model, critic, frozen, optimizer
        )

    def checkpoint(next_step: int):
        if cfg.checkpoint_dir:
            save_checkpoint(
                cfg.checkpoint_dir, next_step, model, critic, frozen, optimizer, reference, history
            )

    bar = tqdm(range(first, cfg.steps + 1), desc=f"RL {cfg.algorithm}", disable=not cfg.progress)
    for step in bar:
        row = {"step": step, "pass1": float("nan")}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            greedy = count_correct(model, tokenizer, task, eval_set, n=1, temperature=0.0)
            row["pass1"] = greedy.float().mean().item()
        if step == cfg.steps:  # the last row only evaluates
            history.append(row)
            checkpoint(step + 1)  # a finished run: calling train again returns at once
            break
        start = time.perf_counter()
        if cfg.algorithm == "pvpo" and cfg.reference_every and step % cfg.reference_every == 0:
            reference.clear()
        draw = (4 if cfg.pvpo_filter else 1) * cfg.prompts_per_step
        prompts = task.prompts(
            min(draw, len(task.split("train"))), "train", seed=cfg.seed * 100_003 + step
        )
        if cfg.pvpo_filter:
            accuracy = pvpo_reference(prompts, step).tolist()
            prompts = informative_prompts(prompts, accuracy, cfg.prompts_per_step)
        on_policy = cfg.epochs == 1 and cfg.minibatches == 1  # one update: π_old = π
        with autocast:  # on-policy, the sampling pass is the training pass (with_grad)
            s: Samples = sample(
                model, tokenizer, prompts, n=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature, seed=cfg.seed * 100_003 + step, with_grad=on_policy,
            )  # fmt: skip
        scores = torch.tensor(task.rewards(s.prompts, s.text), device=device)
        n = cfg.group_size

        def logprobs(policy, rows, with_entropy=False):  # the completions of whole groups
            return completion_logprobs(
                policy, s.prompt_ids[rows], s.prompt_mask[rows], s.completion_ids[rows],
                s.response_mask[rows], n, cfg.temperature, with_entropy,
            )  # fmt: skip

        def values(rows):
            return critic.completion_values(
                s.prompt_ids[rows], s.prompt_mask[rows], s.completion_ids[rows],
                s.response_mask[rows], n,
            )  # fmt: skip

        every = torch.arange(len(scores), device=device)
        resp = s.response_mask
        with torch.no_grad(), autocast:
            old_logp = None if on_policy else logprobs(model, every)
            ref_logp = logprobs(ref_model, every) if ref_model is not None else None
            if critic is not None:
                old_values = values(every) * resp
        if critic is not None:
            adv, returns = token_gae(scores, old_values.float(), resp, cfg.lam)
        else:
            ref = pvpo_reference(prompts, step).repeat_interleave(n) if frozen is not None else None
            adv = estimator(scores.float(), n, ref)[:, None] * resp

        for group in optimizer.param_groups:  # a function of the step, so resuming needs no state
            group["lr"] = group["base_lr"] * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        stats = {"loss": [], "clip_frac": [], "grad_norm": [], "entropy": [], "kl": []}
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + step)
        for _ in range(cfg.epochs):  # minibatches of whole groups, so each prompt runs once
            for picked in torch.randperm(len(scores) // n, generator=g).chunk(cfg.minibatches):
                idx = (picked[:, None] * n + torch.arange(n)).flatten().to(device)
                with autocast:
                    logp, entropy = (
                        (s.logprobs[idx], s.entropy[idx])
                        if on_policy
                        else logprobs(model, idx, with_entropy=True)
                    )
                    pl = policy_loss(
                        logp,
                        logp.detach() if on_policy else old_logp[idx],
                        adv[idx],
                        resp[idx],
                        cfg.clip_low,
                        cfg.clip_high,
                        agg=cfg.agg,
                    )
                    loss = pl.loss
                    if ref_logp is not None:
                        kl = kl_penalty(logp, ref_logp[idx], cfg.kl_kind)
                        k3 = kl if cfg.kl_kind == "k3" else kl_penalty(logp, ref_logp[idx], "k3")
                        stats["kl"].append(aggregate(k3.detach(), resp[idx]))
                        loss = loss + cfg.kl_coef * aggregate(kl, resp[idx], cfg.agg)
                    if critic is not None:
                        v = values(idx)
                        v_clip = old_values[idx] + (v - old_values[idx]).clamp(
                            -cfg.value_clip, cfg.value_clip
                        )
                        v_loss = 0.5 * torch.maximum(
                            (v - returns[idx]) ** 2, (v_clip - returns[idx]) ** 2
                        )
                        loss = loss + aggregate(v_loss, resp[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                stats["grad_norm"].append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
                if critic is not None:  # apart, so value gradients do not shrink the policy's
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
                optimizer.step()
                stats["loss"].append(loss.detach())
                stats["clip_frac"].append(pl.clip_frac)
                stats["entropy"].append(aggregate(entropy.detach(), resp[idx]))
        row.update(
            reward=scores.float().mean().item(),
            **{
                k: torch.stack(v).float().mean().item() if v else float("nan")
                for k, v in stats.items()
            },
            samples_per_s=len(scores) / (time.perf_counter() - start),
        )
        history.append(row)
        bar.set_postfix(reward=f"{row['reward']:.2f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            checkpoint(step + 1)
        try:
            for callback in callbacks:
                callback(step, model, row)
        except StopIteration:
            break
    return pd.DataFrame(history), critic


def critic_error_by_position(
    values: Tensor, response_mask: Tensor, scores: Tensor, constant: float
):
    """How well a critic predicts outcomes on held-out completions, per answer position.

    ``values [B, T]`` from ``ValueModel`` (entry t = V(x_<t)), ``response_mask [B, T]``, ``scores
    [B]`` the 0/1 outcomes. Position j is the prefix holding the prompt and the first j answer
    tokens. Returns a DataFrame indexed by j: ``critic_mse`` = mean (V − score)², ``constant_mse``
    = mean (constant − score)², ``correlation`` (0 where either side is constant) and ``n``. The outcome is
    an unbiased sample of the prefix's true value, so comparing the two MSEs compares the
    predictors' errors against the true values (the sampling noise adds the same to both)."""
    if values.shape != response_mask.shape or scores.shape != values.shape[:1]:
        raise ValueError("values, response_mask, scores: expected [B, T], [B, T] and [B]")
    mask = response_mask.bool()
    position = (mask.long().cumsum(1) - 1)[mask]
    v, y = values.float()[mask], scores.float()[:, None].expand_as(values)[mask]
    rows = []
    for j in range(int(position.max()) + 1 if len(position) else 0):
        vj, yj = v[position == j], y[position == j]
        varies = len(vj) > 1 and vj.std() > 0 and yj.std() > 0
        rows.append(
            dict(
                position=j,
                critic_mse=((vj - yj) ** 2).mean().item(),
                constant_mse=((constant - yj) ** 2).mean().item(),
                correlation=torch.corrcoef(torch.stack([vj, yj]))[0, 1].item() if varies else 0.0,
                n=len(vj),
            )
        )
    return pd.DataFrame(rows).set_index("position")
