"""Training the learned values of ``rlnb.models.critic`` on a stepwise task.

``score_targets`` turns sampled completions into regression/classification targets at chosen
positions of a ``ScoreModel`` (``targets=``):

- ``"outcome"``: every prefix of a completion (the prompt alone and each token after it) gets the
  completion's reward — a prefix value model trained on single-rollout returns; read at the last
  token it is an outcome reward model (ORM).
- ``"mc"``: the prompt and each step end get the prefix's Monte Carlo value (``mc_values``, from
  ``rlnb.decoding.mc_prefix_values``; the last step's is the reward itself) — a prefix value model
  trained on many-rollout values.
- ``"oracle_steps"``: each step end gets 1 if every step so far is correct (the task's oracle) —
  a process reward model (PRM) with true labels.
- ``"mc_steps"``: each step end gets the Monte Carlo label ("Math-Shepherd: Verify and Reinforce
  LLMs Step-by-step without Human Annotations"): hard (1 if any rollout from it succeeds) or soft
  (the fraction that does).

``train_score_model`` fits a ``ScoreModel`` to them with its head's loss
(``rlnb.models.value.ValueNetwork.loss``: ``"scalar"``, MSE; ``"hl_gauss"``/``"two_hot"``,
cross-entropy against the target's distribution on [0, 1]).
``train_generative_verifier`` teaches a copy of the policy to answer ``prompt + completion + "?"``
with ``"Y"`` or ``"N"`` (the task's reward), the loss on that token only, as RL^V's verification
loss does ("Putting the Value Back in RL: Unifying LLM Reasoners With Verifiers").
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rlnb.decoding.sampling import Samples
from rlnb.device import autocast
from rlnb.envs.tasks import STEP_DELIMITER
from rlnb.models.critic import VERIFY_NO, VERIFY_SUFFIX, VERIFY_YES, ScoreModel, step_positions
from rlnb.progress import progress_bar
from rlnb.train.lm_sft import answer_loss

TARGETS = ("outcome", "mc", "oracle_steps", "mc_steps")


@dataclass
class ScoreTargets:
    """Targets at chosen ``ScoreModel`` columns: entry ``k`` says that completion ``rows[k]``'s
    column ``columns[k]`` should score ``targets[k]``."""

    rows: Tensor
    columns: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.rows.numel()


def step_prefixes(task, completion: str) -> list[str]:
    """The completion's text after each written step, aligned with ``step_positions``: ``"a;b;c"``
    → ``["a;", "a;b;", "a;b;c"]``."""
    steps = task.steps(completion)
    return [STEP_DELIMITER.join(steps[: i + 1]) + STEP_DELIMITER for i in range(len(steps) - 1)] + (
        [completion.strip()] if steps else []
    )


def score_targets(
    task,
    samples: Samples,
    targets: str,
    delimiter: int,
    mc_values: Sequence[Sequence[float]] | None = None,
    hard: bool = True,
) -> ScoreTargets:
    """Targets for ``samples``' completions (see the module docstring). ``delimiter`` is the step
    delimiter's token id. ``mc_values[i]`` (for ``"mc"`` and ``"mc_steps"``) holds completion
    ``i``'s Monte Carlo values: of the prompt alone, then after each step but the last (the
    ``step_prefixes`` but the last). ``hard`` picks ``"mc_steps"``' hard labels."""
    if targets not in TARGETS:
        raise ValueError(f"targets: expected one of {TARGETS}, got {targets!r}")
    if targets.startswith("mc") and (mc_values is None or len(mc_values) != len(samples.text)):
        raise ValueError(f"mc_values: expected one list per completion for targets={targets!r}")
    rewards = task.rewards(samples.prompts, samples.text)
    ends = step_positions(samples.completion_ids, samples.response_mask, delimiter)
    rows, columns, values = [], [], []
    for i, (prompt, text, r, cols) in enumerate(zip(samples.prompts, samples.text, rewards, ends)):
        cols = cols if task.steps(text) else []  # an empty completion (EOS only) has no step
        if targets == "outcome":
            cols = list(range(int(samples.response_mask[i].sum()) + 1))
            y = [r] * len(cols)
        elif targets == "oracle_steps":
            labels = task.step_labels(prompt, text)
            y = [float(all(labels[: j + 1])) for j in range(len(labels))]
        else:
            mc = list(mc_values[i])
            if len(mc) != max(len(cols), 1):
                raise ValueError(
                    f"mc_values[{i}]: expected {max(len(cols), 1)} values (the prompt and each step "
                    f"but the last), got {len(mc)}"
                )
            y = mc[1:] + [r] if cols else []  # the last step's value is the reward itself
            if targets == "mc":
                cols, y = [0, *cols], [mc[0], *y]
            elif hard:
                y = [float(v > 0) for v in y]
        if len(y) != len(cols):  # the tokens and the text disagree on the steps: say so
            raise ValueError(
                f"completion {i}: {len(cols)} step ends in its tokens, {len(y)} labels"
            )
        rows += [i] * len(cols)
        columns += cols
        values += y
    return ScoreTargets(torch.tensor(rows), torch.tensor(columns), torch.tensor(values))


def train_score_model(
    model: ScoreModel,
    samples: Samples,
    targets: ScoreTargets,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-4,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit ``model`` in place: each step draws ``batch_size`` of the completions that have targets
    (by ``seed``), runs them once and takes the head's loss over their targets. Returns the history (step, loss).
    On CUDA the forward pass runs under bf16 autocast."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps, batch_size: expected ≥ 1, got {steps}, {batch_size}")
    if len(targets) == 0:
        raise ValueError("targets: expected at least one target")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n, candidates = len(samples.text), targets.rows.unique()  # only completions with targets
    model.train()
    history = []
    for step in progress_bar(range(1, steps + 1), desc="score model", enabled=progress):
        order = torch.randperm(len(candidates), generator=generator)
        rows = candidates[order[: min(batch_size, len(candidates))]]
        where = torch.isin(targets.rows, rows)
        local = torch.empty(n, dtype=torch.long)
        local[rows] = torch.arange(len(rows))
        with autocast(device):
            states = model.states(*(t[rows].to(device) for t in _inputs(samples)))
        picked = states[local[targets.rows[where]].to(device), targets.columns[where].to(device)]
        loss = model.head.loss(picked.float(), targets.targets[where].to(device)[:, None])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step, "loss": loss.item()})
    model.eval()
    return pd.DataFrame(history)


@torch.no_grad()
def score_completions(model: ScoreModel, samples: Samples, batch_size: int = 256) -> Tensor:
    """``model``'s scores at every column ``[B, 1 + T]`` (no gradient)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(samples.text), batch_size):
        rows = slice(start, start + batch_size)
        out.append(model.value(model(*(t[rows].to(device) for t in _inputs(samples)))).cpu())
    return torch.cat(out)


def _inputs(samples: Samples):
    return samples.prompt_ids, samples.prompt_mask, samples.completion_ids, samples.response_mask


def verdict_batch(tokenizer, texts: Sequence[str], verdicts: Sequence[str]):
    """``(input_ids, attention_mask, labels)`` for ``text + verdict`` (left-padded), labelled on
    the verdict token only (-100 elsewhere)."""
    rows = [tokenizer(t + v)["input_ids"] for t, v in zip(texts, verdicts)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
        labels[i, -1] = row[-1]
    return ids, mask, labels


def train_generative_verifier(
    policy,
    tokenizer,
    task,
    prompts: Sequence[str],
    completions: Sequence[str],
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-4,
    seed: int = 0,
    progress: bool = True,
):
    """A copy of ``policy`` trained by SFT to answer ``prompt + completion + "?"`` with ``"Y"`` when
    ``task.reward`` is 1 and ``"N"`` otherwise (the loss on that token only). The completions are
    the policy's own samples, so the verifier learns the policy's mistakes. Returns
    ``(verifier, history)``; score with ``rlnb.models.critic.verifier_scores``."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError("prompts, completions: expected two non-empty lists of the same length")
    verifier = copy.deepcopy(policy)
    device = next(verifier.parameters()).device
    texts = [p + c + VERIFY_SUFFIX for p, c in zip(prompts, completions)]
    verdicts = [VERIFY_YES if r == 1.0 else VERIFY_NO for r in task.rewards(prompts, completions)]
    optimizer = torch.optim.AdamW(verifier.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    verifier.train()
    history = []
    for step in progress_bar(range(1, steps + 1), desc="verifier SFT", enabled=progress):
        rows = torch.randperm(len(texts), generator=generator)[: min(batch_size, len(texts))]
        batch = verdict_batch(tokenizer, [texts[i] for i in rows], [verdicts[i] for i in rows])
        with autocast(device):
            loss = answer_loss(verifier, *(t.to(device) for t in batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step, "loss": loss.item()})
    verifier.eval()
    return verifier, pd.DataFrame(history)
