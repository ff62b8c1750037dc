"""Supervised fine-tuning of a causal LM on a verifiable task: the loss is on answer tokens only.

Each step draws ``batch_size`` train prompts (by ``seed`` and the step number), appends their
reference answers and EOS, and minimises the mean cross-entropy of the answer tokens (and EOS)
given the prompt. On CUDA the forward pass runs under bf16 autocast; on CPU a run is deterministic
for a given seed and thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from rlnb.device import autocast
from rlnb.models.forward import position_ids_from_mask
from rlnb.progress import progress_bar


@dataclass
class SFTConfig:
    steps: int = 500  # optimizer steps
    batch_size: int = 64  # prompts per step
    lr: float = 1e-3  # AdamW learning rate (after warm-up)
    warmup_steps: int = 20  # linear warm-up from 0
    weight_decay: float = 0.0
    log_every: int = 10  # history rows every this many steps (and at the last step)
    seed: int = 0  # drives the prompt draws
    progress: bool = True  # show a progress bar (rlnb.progress)


def answer_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str]):
    """``(input_ids, attention_mask, labels)`` for prompt + answer + EOS, left-padded; ``labels``
    is -100 on the prompt and the padding."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    rows = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompt_ids, answer_ids)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (row, p) in enumerate(zip(rows, prompt_ids)):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
        labels[i, width - len(row) + len(p) :] = torch.tensor(row[len(p) :])
    return ids, mask, labels


def answer_loss(model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100."""
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
    ).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )


def train_sft(
    model, tokenizer, task, config: SFTConfig | None = None, callbacks: Sequence[Callable] = ()
) -> tuple[pd.DataFrame, object]:
    """Train ``model`` in place on ``task``'s train split; return ``(history, model)``, the
    history one row per step (step, loss, lr).

    Each callback is called as ``callback(step, model)`` after every step (e.g. to evaluate or to
    stop early by raising ``StopIteration``).
    """
    config = config or SFTConfig()
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"config: expected steps ≥ 1 and batch_size ≥ 1, got {config}")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
    )
    model.train()
    history, running = [], []
    bar = progress_bar(range(1, config.steps + 1), desc="SFT", enabled=config.progress)
    for step in bar:
        prompts = task.prompts(config.batch_size, "train", seed=config.seed * 1_000_003 + step)
        ids, mask, labels = (
            t.to(device)
            for t in answer_batch(tokenizer, prompts, [task.answer(p) for p in prompts])
        )
        with autocast(device):
            loss = answer_loss(model, ids, mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(loss.detach())
        try:
            for callback in callbacks:
                callback(step, model)
        except StopIteration:
            stop = True
        else:
            stop = False
        if step % config.log_every == 0 or step == config.steps or stop:
            mean_loss = torch.stack(running).mean().item()
            history.append({"step": step, "loss": mean_loss, "lr": schedule.get_last_lr()[0]})
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            running = []
        if stop:
            break
    model.eval()
    return pd.DataFrame(history), model
