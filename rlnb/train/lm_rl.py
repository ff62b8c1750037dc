"""RL for a causal LM on a verifiable task, in three stages: rollout → advantages → update.

Each step draws ``prompts_per_step`` train prompts (``draw_prompts``) and then

1. ``rollout``: samples ``group_size`` completions for each (``rlnb.decoding.sample``, KV cache)
   and scores them with the task's verifier → a ``Rollout``. Another sampler (a tree sampler, say)
   plugs in as ``train(..., rollout_fn=...)``: any function with ``rollout``'s signature.
2. ``advantages``: token-level advantages ``[B, T]`` from the estimator registered under
   ``config.algorithm`` in ``rlnb.estimators.registry`` (a user's own included):
   value-free group baselines (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp``, ``lite_ppo``,
   ``qae``, ``passk``, ``pvpo``, ``opo``, ``gpg``, ``maxrl``, ``remax``, ``gdpo``: one number per
   completion spread over its tokens), token-level ones (``reinforce_plus_plus``,
   ``reinforce_plus_plus_baseline``, ``optimal_token_baseline`` and its multi-turn variant, which
   on these single-turn completions equals it; the rollout supplies what each needs, see
   ``ROLLOUT_EXTRAS``, so none is formula-only here — but ``reinforce_plus_plus`` runs without a
   KL in the reward, this trainer's ``kl_coef`` being a penalty in the loss, and the optimal token
   baselines without importance weights, the samples being on-policy), or ``ppo``,
   which is the ``gae`` estimator with a critic of our own, ``rlnb.models.critic.ValueModel`` — a copy of the
   policy's transformer trunk with a per-token value head read from the state before each token (a
   copy rather than a shared trunk, so the value loss cannot disturb the policy's features, and
   rather than a separate small model because the copy starts from features that already read the
   task): token-level GAE (γ = 1, λ = ``lmbda``; the reward arrives on the last token and nothing
   bootstraps past it). ``pvpo``'s reference value of a prompt is the mean reward of
   ``reference_rollouts`` samples from the frozen initial policy ("PVPO: Pre-Estimated
   Value-Based Policy Optimization for Agentic Reasoning"), refreshed every ``reference_every``
   steps; with ``pvpo_filter`` each step draws 4× the prompts and trains on those the frozen policy
   neither always nor never solves (``informative_prompts``), as PVPO filters its data.
3. ``update``: ``epochs`` passes of ``minibatches`` Adam steps (minibatches of whole groups, so
   that ``rlnb.decoding.completion_logprobs`` runs each prompt once) on
   the policy loss ``loss`` (``rlnb.estimators.losses``: PPO's clipped surrogate by default,
   or any registered loss with its ``loss_kwargs``; aggregation ``agg``), plus ``kl_coef`` times
   ``kl_penalty`` against ``ref_model`` when one is given, plus the critic's clipped value loss
   towards ``returns = advantages + values``. With one pass of one minibatch the update is exactly
   on-policy, so ``π_old`` is the current policy detached (ratio 1, as TRL does with
   ``num_iterations=1``), and the sampling pass itself, run with gradients, gives the log-probs to
   differentiate: no second forward pass. On CUDA the forward passes run under bf16 autocast.

With ``checkpoint_dir``, every ``checkpoint_every`` steps and at the end the policy, the critic,
PVPO's frozen policy, Adam's state (all safetensors), the step, PVPO's reference values, what
defines the run and each file's SHA-256 (``state.json``) and the history (``history.csv``) are
written there, atomically (``save_checkpoint``): an interrupted save leaves the previous checkpoint,
and a corrupt or truncated file is refused by name before anything is loaded. Calling
``train`` again on that directory continues the run: on CPU exactly as if it had never stopped
(sampling and minibatch order are seeded by the step number), also when ``steps`` grew (a finished
2-step run extended to 4 equals one 4-step run). A config that changes what is computed is
refused; only ``RESUMABLE_FIELDS`` may differ.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor

from rlnb.decoding.sampling import Samples, completion_logprobs, sample
from rlnb.decoding.selection import count_correct
from rlnb.device import autocast
from rlnb.estimators.losses import (
    AGG_MODES,
    KL_KINDS,
    aggregate,
    check_policy_loss_options,
    compute_policy_loss,
    kl_penalty,
)
from rlnb.estimators.registry import (
    ESTIMATORS,
    AdvantageInputs,
    accepted_options,
    compute_advantages,
    get_estimator,
)
from rlnb.models.critic import ValueModel
from rlnb.models.lm import sha256
from rlnb.progress import progress_bar

# what this trainer supplies beyond scores, mask and groups: the sampling log-probs, a critic's
# values, PVPO's reference, and ROLLOUT_EXTRAS (below)
SUPPLIED = {"old_logp", "values", "reference_values", "greedy_scores", "reward_components",
            "sum_pi_squared"}  # fmt: skip


def algorithms() -> tuple[str, ...]:
    """What ``RLConfig.algorithm`` accepts: every registered estimator whose inputs this trainer
    supplies (``SUPPLIED``), and ``ppo`` (= ``gae``). Not here: MSSR's ``single_rollout`` and
    ``mssr``, whose per-prompt tracked baseline only the prompt bandit carries
    (``rlnb.train.bandit.train``)."""
    return (*(n for n, e in ESTIMATORS.items() if set(e.needs) <= SUPPLIED), "ppo")


def estimator_name(algorithm: str) -> str:
    """The registered estimator behind an algorithm name: ``ppo`` is ``gae`` with a critic."""
    return "gae" if algorithm == "ppo" else algorithm


@dataclass
class RLConfig:
    """One RL run. Fields in ``RESUMABLE_FIELDS`` may change when a checkpointed run continues;
    any other change is refused (it would change what is computed)."""

    algorithm: str = "grpo"  # a registered estimator (rlnb.estimators.registry) or "ppo" (= "gae")
    steps: int = 50  # sampling rounds, each followed by one update
    group_size: int = 8  # completions per prompt
    prompts_per_step: int = 16  # prompts per round
    lr: float = 1e-4  # Adam, policy (and critic, see value_lr)
    warmup_steps: int = 10  # linear lr warm-up: Adam's first steps move every weight by ~lr
    loss: str = "ppo"  # a registered policy loss (rlnb.estimators.losses.POLICY_LOSSES)
    loss_kwargs: dict = field(default_factory=dict)  # the loss's own knobs (gspo: level, …)
    clip_low: float = 0.2  # loss "ppo": ratio ≥ 1 − clip_low (other losses: loss_kwargs)
    clip_high: float | None = None  # loss "ppo": ratio ≤ 1 + clip_high; None: = clip_low
    epochs: int = 1  # passes over each round's samples
    minibatches: int = 1  # Adam steps per pass (whole groups each)
    kl_kind: str = "k3"  # KL estimator for the penalty (rlnb.estimators.losses.KL_KINDS)
    kl_coef: float = 0.0  # weight of the KL penalty to ref_model (needs ref_model when > 0)
    agg: str = "token-mean"  # loss aggregation (rlnb.estimators.losses.AGG_MODES)
    temperature: float = 1.0  # sampling temperature (the log-probs are those of this policy)
    max_new_tokens: int | None = None  # completion length cap; None: the task's
    qae_k: float = 0.4  # the quantile of the qae estimator (its option k)
    lmbda: float = 1.0  # GAE λ of the gae estimator (ppo; its option lmbda)
    value_clip: float = 0.2  # clipped value loss (ppo)
    value_lr: float = 1e-4  # Adam for the critic (ppo)
    reference_rollouts: int = 8  # pvpo: samples per prompt for the reference value
    reference_every: int = 0  # pvpo: refresh the reference every this many steps (0: never)
    pvpo_filter: bool = False  # pvpo: prefer prompts whose reference accuracy is in (0, 1)
    eval_every: int = 10  # greedy pass@1 on held-out prompts every this many steps, and at the end
    eval_prompts: int = 128  # held-out prompts for that evaluation
    checkpoint_dir: str | None = None  # save here, and continue from here if a checkpoint exists
    checkpoint_every: int = 50  # steps between checkpoints (0: only at the end)
    seed: int = 0  # seeds prompts, sampling, minibatch order and the critic
    progress: bool = True  # a progress bar over the steps (rlnb.progress)

    def __post_init__(self):
        if self.algorithm not in algorithms():
            raise ValueError(
                f"algorithm: expected one of {algorithms()} (registered estimators this trainer "
                f"supplies the inputs of, and 'ppo'), got {self.algorithm!r}"
            )
        if self.kl_kind not in KL_KINDS:
            raise ValueError(f"kl_kind: expected one of {KL_KINDS}, got {self.kl_kind!r}")
        if self.agg not in AGG_MODES:
            raise ValueError(f"agg: expected one of {AGG_MODES}, got {self.agg!r}")
        if not isinstance(self.loss_kwargs, dict) or "agg" in self.loss_kwargs:
            raise ValueError(
                f"loss_kwargs: expected a dict without 'agg' (that is RLConfig.agg), got {self.loss_kwargs!r}"
            )
        positive = ("steps", "group_size", "prompts_per_step", "epochs", "minibatches")
        positive += ("eval_every", "eval_prompts", "reference_rollouts")
        for name in positive + ("warmup_steps", "reference_every", "checkpoint_every"):
            value, least = getattr(self, name), 1 if name in positive else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: expected an int ≥ {least}, got {value!r}")
        if self.max_new_tokens is not None and not (
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1
        ):
            raise ValueError(
                f"max_new_tokens: expected None or a positive int, got {self.max_new_tokens!r}"
            )
        for name, ok, expected in (  # written so that NaN fails every test
            ("lr", lambda v: v > 0, "> 0"),
            ("value_lr", lambda v: v > 0, "> 0"),
            ("temperature", lambda v: v > 0, "> 0"),
            ("kl_coef", lambda v: v >= 0, "≥ 0"),
            ("clip_low", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("clip_high", lambda v: v >= 0, "≥ 0 (or None: = clip_low)"),
            ("value_clip", lambda v: v > 0, "> 0"),
            ("qae_k", lambda v: 0 < v < 1, "a quantile in (0, 1)"),
            ("lmbda", lambda v: 0 <= v <= 1, "in [0, 1]"),
        ):
            value = getattr(self, name)
            if name == "clip_high" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ValueError(f"{name}: expected a number {expected}, got {value!r}")
        if self.minibatches > self.prompts_per_step:
            raise ValueError("minibatches: expected at most prompts_per_step (they split groups)")
        if self.pvpo_filter and self.algorithm != "pvpo":
            raise ValueError(f"pvpo_filter: only for algorithm 'pvpo', got {self.algorithm!r}")
        check_policy_loss_options(self.loss, {**self.loss_options(), "agg": self.agg})

    def loss_options(self) -> dict:
        """The keywords of the policy loss: ``loss_kwargs``, and for ``ppo`` the clip range."""
        clip = dict(clip_low=self.clip_low, clip_high=self.clip_high) if self.loss == "ppo" else {}
        return {**clip, **self.loss_kwargs}


RESUMABLE_FIELDS = ("steps", "eval_every", "progress", "checkpoint_every", "checkpoint_dir")


@dataclass
class Rollout:
    """One round of scored completions: what ``advantages`` and ``update`` read.

    ``samples`` rows come in groups of ``group_size`` sharing a prompt; ``scores [B]`` the
    verifier's rewards. ``on_policy``: the update is one Adam step on these samples, and
    ``samples.logprobs``/``samples.entropy`` carry the sampling pass's graph (the update
    differentiates them; no second forward pass). ``values [B, T]``: the critic's ``V(x_<t)`` at
    sampling time (filled by ``advantages`` when it is given a critic). ``extras``: inputs a
    particular estimator needs (``AdvantageInputs.extras``; e.g. PVPO's ``reference_values``).
    """

    samples: Samples
    scores: Tensor
    group_size: int
    on_policy: bool
    values: Tensor | None = None
    extras: dict = field(default_factory=dict)


def greedy_scores(model, tokenizer, task, prompts, samples, config) -> Tensor:
    """ReMax's baseline: the reward of each prompt's greedy completion, one per row ``[B]``."""
    greedy = sample(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, temperature=0)
    scores = torch.tensor(task.rewards(greedy.prompts, greedy.text), device=samples.logprobs.device)
    return scores.repeat_interleave(config.group_size)


def reward_components(model, tokenizer, task, prompts, samples, config) -> Tensor:
    """GDPO's rewards: ``task.reward_components`` of every row, ``[B, K]``."""
    parts = task.reward_components(samples.prompts, samples.text)
    return torch.tensor(list(parts.values()), device=samples.logprobs.device).T


def sum_pi_squared(model, tokenizer, task, prompts, samples, config) -> Tensor:
    """The optimal token baselines' ``Σ_a π(a | x_<t)²``, recorded by the sampler."""
    return samples.sum_pi_squared


# what ``rollout`` computes for an estimator that ``needs`` it (``AdvantageInputs.extras``);
# ``fn(model, tokenizer, task, prompts, samples, config)``
ROLLOUT_EXTRAS = {
    "greedy_scores": greedy_scores,
    "reward_components": reward_components,
    "sum_pi_squared": sum_pi_squared,
}


def rollout(model, tokenizer, task, prompts: list[str], config: RLConfig, step: int) -> Rollout:
    """Stage 1: ``config.group_size`` completions per prompt (seeded by ``config.seed`` and
    ``step``), scored by ``task.rewards``, plus what the estimator ``needs`` from
    ``ROLLOUT_EXTRAS`` (ReMax's greedy rewards, GDPO's reward components, Σπ²). On-policy (one
    epoch of one minibatch) the sampling pass keeps its graph. Any function with this signature
    can replace it (``train(rollout_fn=...)``)."""
    device = next(model.parameters()).device
    on_policy = config.epochs == 1 and config.minibatches == 1  # one update: π_old = π
    needs = get_estimator(estimator_name(config.algorithm)).needs
    with autocast(device):
        s = sample(
            model, tokenizer, prompts, n=config.group_size, max_new_tokens=config.max_new_tokens,
            temperature=config.temperature, seed=config.seed * 100_003 + step, with_grad=on_policy,
            with_sum_pi_squared="sum_pi_squared" in needs,
        )  # fmt: skip
        scores = torch.tensor(task.rewards(s.prompts, s.text), device=device)
        extras = {
            name: fn(model, tokenizer, task, prompts, s, config)
            for name, fn in ROLLOUT_EXTRAS.items()
            if name in needs
        }
    return Rollout(s, scores, config.group_size, on_policy, extras=extras)


def _logprobs(policy, batch: Rollout, rows: Tensor, temperature: float, with_entropy=False):
    """Log-probs (and entropies) of ``rows``' completions under ``policy``, whole groups."""
    s = batch.samples
    return completion_logprobs(
        policy, s.prompt_ids[rows], s.prompt_mask[rows], s.completion_ids[rows],
        s.response_mask[rows], batch.group_size, temperature, with_entropy,
    )  # fmt: skip


def _values(critic: ValueModel, batch: Rollout, rows: Tensor) -> Tensor:
    s = batch.samples
    return critic.completion_values(
        s.prompt_ids[rows], s.prompt_mask[rows], s.completion_ids[rows], s.response_mask[rows],
        batch.group_size,
    )  # fmt: skip


def advantages(
    batch: Rollout, estimator: str, critic: ValueModel | None = None, **options
) -> Tensor:
    """Stage 2: token-level advantages ``[B, T]`` from the registered ``estimator`` (with its
    ``options``), 0 off the response mask. With a ``critic``, its values of the sampled
    completions are computed first (no gradient) and kept in ``batch.values`` for the update."""
    s = batch.samples
    if critic is not None and batch.values is None:
        every = torch.arange(len(batch.scores), device=batch.scores.device)
        with torch.no_grad(), autocast(batch.scores.device):
            batch.values = _values(critic, batch, every) * s.response_mask
    inputs = AdvantageInputs(
        batch.scores.float(),
        s.response_mask,
        group_size=batch.group_size,
        old_logp=s.logprobs.detach().float(),
        values=None if batch.values is None else batch.values.float(),
        extras=batch.extras,
    )
    return compute_advantages(estimator, inputs, **options)


def update(
    model, optimizer, batch: Rollout, adv: Tensor, config: RLConfig, step: int,
    critic: ValueModel | None = None, ref_model=None,
) -> dict[str, float]:  # fmt: skip
    """Stage 3: ``config.epochs`` passes of ``config.minibatches`` Adam steps (whole groups) on the
    policy loss ``config.loss``, the KL penalty to ``ref_model`` (when given) and the critic's clipped
    value loss towards ``adv + batch.values`` (when given). The learning rate warms up linearly
    with ``step``. Returns the means of ``loss``, ``clip_frac``, ``grad_norm``, ``entropy`` and
    ``kl`` (k3 to ``ref_model``; NaN without one)."""
    cfg, resp = config, batch.samples.response_mask
    device = resp.device
    every = torch.arange(len(batch.scores), device=device)
    with torch.no_grad(), autocast(device):
        old_logp = None if batch.on_policy else _logprobs(model, batch, every, cfg.temperature)
        ref_logp = (
            None if ref_model is None else _logprobs(ref_model, batch, every, cfg.temperature)
        )
    if critic is not None:
        old_values = batch.values
        returns = (adv + old_values) * resp
    for group in optimizer.param_groups:  # a function of the step, so resuming needs no state
        group["lr"] = group["base_lr"] * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    stats = {"loss": [], "clip_frac": [], "grad_norm": [], "entropy": [], "kl": []}
    n = batch.group_size
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + step)
    for _ in range(cfg.epochs):  # minibatches of whole groups, so each prompt runs once
        for picked in torch.randperm(len(batch.scores) // n, generator=g).chunk(cfg.minibatches):
            idx = (picked[:, None] * n + torch.arange(n)).flatten().to(device)
            with autocast(device):
                if batch.on_policy:
                    logp, entropy = batch.samples.logprobs[idx], batch.samples.entropy[idx]
                else:
                    logp, entropy = _logprobs(model, batch, idx, cfg.temperature, True)
                pl = compute_policy_loss(
                    cfg.loss, logp, logp.detach() if batch.on_policy else old_logp[idx], adv[idx],
                    resp[idx], agg=cfg.agg, **cfg.loss_options(),
                )  # fmt: skip
                loss = pl.loss
                if ref_logp is not None:
                    kl = kl_penalty(logp, ref_logp[idx], cfg.kl_kind)
                    k3 = kl if cfg.kl_kind == "k3" else kl_penalty(logp, ref_logp[idx], "k3")
                    stats["kl"].append(aggregate(k3.detach(), resp[idx]))
                    loss = loss + cfg.kl_coef * aggregate(kl, resp[idx], cfg.agg)
                if critic is not None:
                    v = _values(critic, batch, idx)
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
    return {
        k: torch.stack(v).float().mean().item() if v else float("nan") for k, v in stats.items()
    }


class PVPOReference:
    """PVPO's reference value of a prompt: the mean reward of ``config.reference_rollouts``
    samples from a frozen copy of the initial policy, cached per prompt and cleared every
    ``config.reference_every`` steps (0: never)."""

    def __init__(self, model, tokenizer, task, config: RLConfig):
        self.frozen = copy.deepcopy(model).requires_grad_(False)
        self.tokenizer, self.task, self.config = tokenizer, task, config
        self.cache: dict[str, float] = {}
        self._refreshed_at: int | None = None

    def values(self, prompts: list[str], step: int) -> Tensor:
        """``[len(prompts)]`` reference values, sampling the prompts not cached yet."""
        cfg = self.config
        if cfg.reference_every and step % cfg.reference_every == 0 and self._refreshed_at != step:
            self.cache.clear()
            self._refreshed_at = step
        missing = [p for p in prompts if p not in self.cache]
        if missing:
            out = sample(
                self.frozen, self.tokenizer, missing, n=cfg.reference_rollouts,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                seed=cfg.seed + 7919 * step,
            )  # fmt: skip
            r = torch.tensor(self.task.rewards(out.prompts, out.text)).view(len(missing), -1)
            self.cache.update(zip(missing, r.mean(1).tolist()))
        device = next(self.frozen.parameters()).device
        return torch.tensor([self.cache[p] for p in prompts], device=device)


def informative_prompts(candidates: Sequence[str], accuracy: Sequence[float], n: int) -> list[str]:
    """PVPO's data filter: the first ``n`` candidates whose reference accuracy is strictly between
    0 and 1 (all-correct and all-wrong groups carry no group-relative signal), topped up with the
    others in their order when fewer than ``n`` qualify."""
    if len(candidates) != len(accuracy):
        raise ValueError("accuracy: expected one value per candidate")
    keep = [p for p, a in zip(candidates, accuracy) if 0 < a < 1]
    rest = [p for p, a in zip(candidates, accuracy) if not 0 < a < 1]
    return (keep + rest)[:n]


def draw_prompts(task, config: RLConfig, step: int, reference: PVPOReference | None) -> list[str]:
    """The step's train prompts (seeded by ``config.seed`` and ``step``); with ``pvpo_filter``,
    4× as many candidates narrowed by ``informative_prompts``."""
    draw = (4 if config.pvpo_filter else 1) * config.prompts_per_step
    seed = config.seed * 100_003 + step
    prompts = task.prompts(min(draw, len(task.split("train"))), "train", seed=seed)
    if config.pvpo_filter:
        accuracy = reference.values(prompts, step).tolist()
        prompts = informative_prompts(prompts, accuracy, config.prompts_per_step)
    return prompts


def greedy_pass_at_1(model, tokenizer, task, prompts: list[str]) -> float:
    """Fraction of ``prompts`` answered correctly by greedy decoding."""
    return (
        count_correct(model, tokenizer, task, prompts, n=1, temperature=0.0).float().mean().item()
    )


CHECKPOINT_FILES = (
    "policy.safetensors",
    "critic.safetensors",
    "initial_policy.safetensors",
    "optimizer.safetensors",
    "history.csv",
)


def save_checkpoint(
    directory, next_step: int, model, critic, frozen, optimizer, reference, history, run: dict
):
    """Write everything ``train`` needs to continue at ``next_step`` (see the module docstring);
    ``run`` is ``run_identity``'s record of what the run computes.

    Atomic: the files go to a fresh sibling directory ``<dir>.writing``, then ``state.json`` with
    the SHA-256 of each file, written last; only then is the old checkpoint moved to
    ``<dir>.previous``, the new one renamed to ``<dir>`` and the old one deleted. A save stopped at
    any point (Ctrl-C, kill, a full disk) leaves a complete checkpoint at ``<dir>`` or
    ``<dir>.previous``, which ``existing_checkpoint`` finds; never new weights beside an old step.
    """
    d = Path(directory)
    tmp, previous = d.with_name(f"{d.name}.writing"), d.with_name(f"{d.name}.previous")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "policy.safetensors"))
    for name, module in (("critic", critic), ("initial_policy", frozen)):
        if module is not None:
            save_model(module, str(tmp / f"{name}.safetensors"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {
        f"{i}.{key}": value.detach().contiguous()
        for i, p in enumerate(params)
        for key, value in optimizer.state.get(p, {}).items()
    }
    save_file(state, str(tmp / "optimizer.safetensors"))
    pd.DataFrame(history).to_csv(tmp / "history.csv", index=False)
    files = {name: sha256(tmp / name) for name in CHECKPOINT_FILES if (tmp / name).exists()}
    state = {"next_step": next_step, "reference": reference, "run": run, "files": files}
    (tmp / "state.json").write_text(json.dumps(state))
    if d.exists():  # complete (it only ever appears by a rename): keep it until the new one is in
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(d, previous)
    os.replace(tmp, d)
    shutil.rmtree(previous, ignore_errors=True)


def existing_checkpoint(directory) -> Path | None:
    """The complete checkpoint of ``directory``: itself, else ``<dir>.previous`` left by a save
    that stopped between its two renames; None when there is none."""
    d = Path(directory)
    for candidate in (d, d.with_name(f"{d.name}.previous")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint(
    directory, model, critic, frozen, optimizer, run: dict, steps: int | None = None
) -> tuple[int, dict, list]:
    """Restore what ``save_checkpoint`` wrote; return ``(next_step, reference, history rows)``.

    Everything is checked before anything is loaded, so a refused checkpoint leaves ``model``,
    ``critic``, ``frozen`` and ``optimizer`` as they were: a run that differs from ``run`` is
    refused naming the fields (only ``RESUMABLE_FIELDS`` may change when a run continues), and a
    missing, corrupt or truncated file (its SHA-256 differs from the one recorded at save) is
    refused naming the file, as is a checkpoint that has trained more than ``steps`` steps."""
    d = Path(directory)
    try:
        state = json.loads((d / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{d / 'state.json'}: corrupt checkpoint file ({err})") from err
    saved = state.get("run", {})
    changed = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} → {run.get(k)!r}" for k in changed)
        raise ValueError(
            f"config: the checkpoint in {d} belongs to a different run ({diffs}); only "
            f"{', '.join(RESUMABLE_FIELDS)} may change when a run continues — use a new "
            "checkpoint_dir"
        )
    if steps is not None and state["next_step"] > steps:
        raise ValueError(
            f"steps: the checkpoint has trained {state['next_step']} steps, got {steps}"
        )
    if "files" not in state:
        raise ValueError(f"{d / 'state.json'}: no file hashes (an older rlnb wrote it); start anew")
    for name, digest in state["files"].items():
        if not (d / name).is_file():
            raise ValueError(f"{d / name}: missing from the checkpoint")
        if sha256(d / name) != digest:
            raise ValueError(
                f"{d / name}: corrupt or truncated (its SHA-256 differs from the one recorded "
                "when the checkpoint was written)"
            )
    load_model(model, str(d / "policy.safetensors"))
    for name, module in (("critic", critic), ("initial_policy", frozen)):
        if module is not None:
            load_model(module, str(d / f"{name}.safetensors"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in load_file(str(d / "optimizer.safetensors")).items():
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = value.to(params[int(i)].device)
    history = pd.read_csv(d / "history.csv").to_dict("records")
    return state["next_step"], state["reference"], history


def run_identity(config: RLConfig, task, rollout_fn: Callable, ref_model) -> dict:
    """What defines a run's computation, stored with its checkpoint: the config without
    ``RESUMABLE_FIELDS``, the task (class and a hash of its splits), the rollout function and
    whether there is a reference model."""
    splits = "\n".join(task.split("train") + ["--"] + task.split("test"))
    ident = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_FIELDS}
    return {
        **ident,
        "task": f"{type(task).__name__}:{hashlib.sha256(splits.encode()).hexdigest()[:16]}",
        "rollout_fn": f"{rollout_fn.__module__}.{rollout_fn.__qualname__}",
        "ref_model": ref_model is not None,
    }


def train(
    model,
    tokenizer,
    task,
    config: RLConfig | None = None,
    ref_model=None,
    callbacks: Sequence[Callable] = (),
    rollout_fn: Callable[..., Rollout] = rollout,
) -> tuple[pd.DataFrame, ValueModel | None]:
    """Train ``model`` in place; return ``(history, critic)`` (``critic`` is None unless the
    estimator reads ``values``, as ``ppo`` does).

    History, one row per step (``steps`` of them), then a last row ``step = steps`` that only
    evaluates: ``step``, ``pass1`` (greedy pass@1 on ``eval_prompts`` test prompts before the
    step's update, every ``eval_every`` steps and at the end, NaN in between), ``reward`` (mean
    sampled reward), ``loss``, ``clip_frac``, ``grad_norm``, ``entropy`` (mean per-token entropy of
    the sampled completions), ``kl`` (k3 to ``ref_model``, NaN without one), ``zero_adv_frac``
    (the fraction of completions whose advantage is 0 on every token: they teach nothing, as in
    ``rlnb.train.bandit.train``), ``samples_per_s``.
    Each callback is called as ``callback(step, model, row)``; raising ``StopIteration`` ends
    training after that step (no final row). ``rollout_fn`` replaces stage 1 (see ``rollout``).
    """
    cfg = dataclasses.replace(config) if config is not None else RLConfig()
    cfg.max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
    if cfg.kl_coef > 0 and ref_model is None:
        raise ValueError("ref_model: needed when kl_coef > 0")
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    estimator = estimator_name(cfg.algorithm)
    needs = get_estimator(estimator).needs
    critic = ValueModel(model).to(device) if "values" in needs else None
    groups = [{"params": list(model.parameters()), "base_lr": cfg.lr}]
    if critic is not None:
        groups.append({"params": list(critic.parameters()), "base_lr": cfg.value_lr})
    # One fused kernel over all parameters: 1.07 → 0.25 ms a step for the tiny reasoner on CPU.
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))
    options = accepted_options(estimator, k=cfg.qae_k, lmbda=cfg.lmbda)
    ref = PVPOReference(model, tokenizer, task, cfg) if "reference_values" in needs else None
    eval_set = task.prompts(min(cfg.eval_prompts, len(task.split("test"))), "test", seed=cfg.seed)
    run = run_identity(cfg, task, rollout_fn, ref_model)

    def checkpoint(next_step: int):
        if cfg.checkpoint_dir:
            save_checkpoint(
                cfg.checkpoint_dir, next_step, model, critic, ref and ref.frozen, optimizer,
                ref.cache if ref else {}, history, run,
            )  # fmt: skip

    history, first, final = [], 0, None
    found = existing_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if found is not None:
        first, cache, history = load_checkpoint(
            found, model, critic, ref and ref.frozen, optimizer, run, cfg.steps
        )
        if ref is not None:
            ref.cache.update(cache)
        if history and history[-1]["step"] == first == cfg.steps:
            final = history[-1]  # a finished run of this length: nothing more to do
        history = [row for row in history if row["step"] < first]  # drop an earlier final row

    for step in progress_bar(
        range(first, cfg.steps), desc=f"RL {cfg.algorithm}", enabled=cfg.progress
    ):
        row = {"step": step, "pass1": float("nan")}
        if step % cfg.eval_every == 0:
            row["pass1"] = greedy_pass_at_1(model, tokenizer, task, eval_set)
        start = time.perf_counter()
        prompts = draw_prompts(task, cfg, step, ref)
        batch = rollout_fn(model, tokenizer, task, prompts, cfg, step)
        if ref is not None:
            batch.extras["reference_values"] = ref.values(prompts, step).repeat_interleave(
                cfg.group_size
            )
        adv = advantages(batch, estimator, critic, **options)
        stats = update(model, optimizer, batch, adv, cfg, step, critic, ref_model)
        row.update(reward=batch.scores.float().mean().item(), **stats)
        row["zero_adv_frac"] = (adv.abs().amax(1) == 0).float().mean().item()
        row["samples_per_s"] = len(batch.scores) / (time.perf_counter() - start)
        history.append(row)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            checkpoint(step + 1)
        try:
            for callback in callbacks:
                callback(step, model, row)
        except StopIteration:
            return pd.DataFrame(history), critic
    history.append(
        final or {"step": cfg.steps, "pass1": greedy_pass_at_1(model, tokenizer, task, eval_set)}
    )
    checkpoint(cfg.steps)
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
