"""Tree rollouts that share prefixes, and Monte Carlo values of prefixes.

``sample_tree`` grows, from each prompt, ``branching[0]`` first segments, from each of those
``branching[1]`` continuations, and so on; a segment ends at a step delimiter (or after a token
count), the last level's continuations run to EOS. Every shared prefix goes through the model
once: its KV cache is copied to its children, and the token that closes a segment is fed once,
before the copy. ``prefix_values`` turns the leaves' rewards into a value per node;
``mc_prefix_values`` estimates V^π at given prefixes by independent rollouts, the reference that
learned value models are checked against (the estimate "Math-Shepherd: Verify and Reinforce LLMs
Step-by-step without Human Annotations" labels steps with).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlnb.decoding.sampling import check_context, draw, sample
from rlnb.models.forward import cache_argument, position_ids_from_mask, prefill


@dataclass
class Tree:
    """Nodes of a rollout tree, as tensors over nodes ``[N]`` and over generated tokens ``[M]``.

    Node ``i < len(prompts)`` is the root of prompt ``i`` (an empty span); every other node is one
    segment: the tokens ``tokens[start[i]:end[i]]`` with their sampling log-probs, written after
    its ``parent``'s path. ``is_leaf`` marks nodes that ended (EOS, the last level, or the token
    budget) — their ``reward`` is the reward of their whole path; ``reward`` is 0 elsewhere.
    ``model_calls`` and ``forward_tokens`` count the model's forward passes and the real (unmasked)
    tokens they processed; ``generated_tokens`` counts sampled tokens (= ``tokens.numel()``).
    """

    prompts: list[str]
    parent: Tensor
    depth: Tensor
    prompt_index: Tensor
    start: Tensor
    end: Tensor
    tokens: Tensor
    logprobs: Tensor
    is_leaf: Tensor
    reward: Tensor
    text: list[str]
    model_calls: int = 0
    forward_tokens: int = 0
    generated_tokens: int = 0

    def __len__(self) -> int:
        return self.parent.numel()

    def path(self, node: int) -> list[int]:
        """The nodes from the root to ``node``, both included."""
        nodes = [node]
        while self.parent[nodes[-1]] >= 0:
            nodes.append(int(self.parent[nodes[-1]]))
        return nodes[::-1]


def _check_tree_args(prompts, branching, split_at, max_new_tokens, temperature):
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts: expected a non-empty list of strings")
    if (
        isinstance(branching, (str, int))
        or len(branching) == 0
        or not all(isinstance(b, int) and b >= 1 for b in branching)
    ):
        raise ValueError(
            f"branching: expected a non-empty list of positive integers, got {branching!r}"
        )
    if not (isinstance(split_at, str) and len(split_at) > 0) and not (
        isinstance(split_at, int) and split_at >= 1
    ):
        raise ValueError(
            f"split_at: expected a delimiter string or a positive token count, got {split_at!r}"
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a positive integer, got {max_new_tokens!r}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")


@torch.no_grad()
def sample_tree(
    model,
    tokenizer,
    prompts: Sequence[str],
    branching: Sequence[int],
    split_at: str | int = ";",
    *,
    reward: Callable[[str, str], float],
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int | None = None,
) -> Tree:
    """Sample a tree of continuations per prompt, each shared prefix run through the model once.

    Level ``d`` gives every open node of level ``d − 1`` ``branching[d]`` children; a child's
    segment ends after the token ``split_at`` (a string that encodes to one token, e.g. the step
    delimiter) or after ``split_at`` tokens (an int), except at the last level, which runs to EOS.
    A segment that writes EOS, or reaches ``max_new_tokens`` generated tokens on its path, ends the
    path there (a leaf at a shallower depth). ``reward(prompt, completion)`` scores each leaf's
    whole completion. With ``branching=[k]`` the leaves are ``k`` independent samples per prompt.
    """
    _check_tree_args(prompts, branching, split_at, max_new_tokens, temperature)
    delimiter = None
    if isinstance(split_at, str):
        ids = tokenizer(split_at, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"split_at: expected a string that is one token, got {split_at!r} → {ids}"
            )
        delimiter = ids[0]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    cache_name = cache_argument(model)
    calls = {"n": 0, "tokens": 0}

    def forward(**kwargs):
        calls["n"] += 1
        calls["tokens"] += kwargs["attention_mask"][:, -kwargs["input_ids"].shape[1] :].sum()
        return model(use_cache=True, **kwargs)

    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    check_context(model, ids.shape[1], max_new_tokens)
    calls["n"] += 1
    calls["tokens"] += mask.sum()  # a tensor until the end: no host sync per step
    out, cache = prefill(model, ids, mask)
    logits = out.logits[:, -1].float()
    next_position = position_ids_from_mask(mask)[:, -1:] + 1

    n_prompts = len(prompts)
    parent = [-1] * n_prompts
    depth, prompt_index = [0] * n_prompts, list(range(n_prompts))
    spans, leaf = [(0, 0)] * n_prompts, [False] * n_prompts
    tokens, logps, n_tokens = [], [], 0
    row_node = torch.arange(n_prompts)  # the node each row of the batch is extending
    written = torch.zeros(n_prompts, dtype=torch.long, device=device)  # generated tokens on path

    for level, b in enumerate(branching):
        last = level == len(branching) - 1
        rows = torch.arange(row_node.numel(), device=device).repeat_interleave(b)
        cache.batch_select_indices(rows)
        mask, logits, next_position, written = (
            t[rows] for t in (mask, logits, next_position, written)
        )
        nodes = torch.arange(len(parent), len(parent) + rows.numel())
        parent += row_node[rows.cpu()].tolist()
        depth += [level + 1] * rows.numel()
        prompt_index += [prompt_index[p] for p in row_node[rows.cpu()].tolist()]
        row_node = nodes
        n_rows = rows.numel()
        open_ = torch.ones(n_rows, dtype=torch.bool, device=device)  # still writing its segment
        ended = torch.zeros(n_rows, dtype=torch.bool, device=device)  # its path ended (a leaf)
        seg_tokens, seg_logps, seg_alive, length = [], [], [], 0
        while True:
            scaled = logits / temperature
            log_p = scaled - scaled.logsumexp(-1, keepdim=True)
            token = draw(log_p.exp(), generator).masked_fill(~open_, pad)
            seg_tokens.append(token)
            seg_logps.append(log_p.gather(1, token[:, None]).squeeze(1).masked_fill(~open_, 0.0))
            seg_alive.append(open_)
            written = written + open_.long()
            length += 1
            stop_path = open_ & ((token == eos) | (written >= max_new_tokens))
            ended |= stop_path
            split = torch.zeros_like(open_)
            if not last:
                split = (
                    (token == delimiter)
                    if delimiter is not None
                    else torch.full_like(open_, length >= split_at)
                )
                split &= open_ & ~stop_path
            feed = open_ & ~stop_path  # the next forward consumes this token (once)
            open_ = feed & ~split
            any_feed, any_open = torch.stack([feed.any(), open_.any()]).tolist()  # one sync
            if not any_feed:
                break
            mask = torch.cat([mask, feed[:, None].long()], dim=1)
            out = forward(
                input_ids=token.masked_fill(~feed, pad)[:, None],
                attention_mask=mask,
                position_ids=next_position,
                **{cache_name: cache},
            )
            cache = out[cache_name]
            logits = torch.where(feed[:, None], out.logits[:, -1].float(), logits)
            next_position = next_position + feed[:, None].long()
            if not any_open:
                break

        seg = torch.stack(seg_tokens, 1).cpu()
        seg_lp = torch.stack(seg_logps, 1).cpu()
        alive = torch.stack(seg_alive, 1).cpu()
        for r in range(n_rows):
            kept = alive[r]
            tokens.append(seg[r][kept])
            logps.append(seg_lp[r][kept])
            spans.append((n_tokens, n_tokens + tokens[-1].numel()))
            n_tokens += tokens[-1].numel()
        is_leaf = (ended | torch.full_like(ended, last)).cpu()
        leaf += is_leaf.tolist()
        keep = (~is_leaf).nonzero().flatten()
        if keep.numel() == 0:
            break
        row_node = row_node[keep]
        keep = keep.to(device)
        cache.batch_select_indices(keep)
        mask, logits, next_position, written = (
            t[keep] for t in (mask, logits, next_position, written)
        )

    flat = torch.cat(tokens) if tokens else torch.zeros(0, dtype=torch.long)
    texts = [tokenizer.decode(flat[s:e], skip_special_tokens=True) for s, e in spans]
    tree = Tree(
        prompts=list(prompts),
        parent=torch.tensor(parent),
        depth=torch.tensor(depth),
        prompt_index=torch.tensor(prompt_index),
        start=torch.tensor([s for s, _ in spans]),
        end=torch.tensor([e for _, e in spans]),
        tokens=flat,
        logprobs=torch.cat(logps) if logps else torch.zeros(0),
        is_leaf=torch.tensor(leaf),
        reward=torch.zeros(len(parent)),
        text=texts,
        model_calls=calls["n"],
        forward_tokens=int(calls["tokens"]),
        generated_tokens=flat.numel(),
    )
    for node in tree.is_leaf.nonzero().flatten().tolist():
        path = tree.path(node)
        ids = torch.cat([flat[spans[i][0] : spans[i][1]] for i in path])
        completion = tokenizer.decode(ids, skip_special_tokens=True)
        tree.reward[node] = float(reward(prompts[prompt_index[node]], completion))
    return tree


def prefix_values(tree: Tree) -> tuple[Tensor, Tensor]:
    """The Monte Carlo value of every node and its standard error, ``([N], [N])``.

    A leaf's value is its reward (standard error 0). An inner node's value is the mean of its
    children's values: the children are independent draws from π given the node's path, so each
    child's value is an unbiased estimate of V^π(path) and their mean is too. When every branch
    runs to the last level this is the mean leaf reward under the node; when some path ends early
    it still weighs each child equally, as V^π does. The standard error is the children values'
    sample standard deviation over √m for m ≥ 2 children, and ``inf`` for one child (no spread to
    estimate it from).
    """
    value = tree.reward.double().clone()
    se = torch.zeros_like(value)
    for d in range(int(tree.depth.max()) - 1, -1, -1):
        inner = ((tree.depth == d) & ~tree.is_leaf).nonzero().flatten()
        if inner.numel() == 0:
            continue
        kids = ((tree.depth == d + 1) & (tree.parent >= 0)).nonzero().flatten()
        count = torch.zeros_like(value).index_add_(
            0, tree.parent[kids], torch.ones_like(value[kids])
        )
        total = torch.zeros_like(value).index_add_(0, tree.parent[kids], value[kids])
        mean = total[inner] / count[inner]
        square = torch.zeros_like(value).index_add_(
            0,
            tree.parent[kids],
            (value[kids] - (total / count.clamp(min=1))[tree.parent[kids]]) ** 2,
        )
        m = count[inner]
        value[inner] = mean
        se[inner] = torch.where(
            m >= 2,
            (square[inner] / (m - 1).clamp(min=1)).sqrt() / m.sqrt(),
            torch.full_like(m, float("inf")),
        )
    return value.float(), se.float()


def mc_prefix_values(
    model,
    tokenizer,
    prompts: Sequence[str],
    prefixes: Sequence[str],
    n: int,
    *,
    reward: Callable[[str, str], float],
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """V^π at each ``prompts[i] + prefixes[i]`` from ``n`` rollouts, with its standard error.

    ``V̂ = (1/n) Σ_j reward(prompt, prefix + continuation_j)``, continuations sampled from π at
    ``temperature`` for at most ``max_new_tokens`` tokens; standard error ``s/√n`` (``s`` the
    sample standard deviation; ``inf`` when ``n = 1``). Returns two ``[K]`` float tensors.
    """
    if isinstance(prompts, str) or len(prompts) != len(prefixes) or len(prompts) == 0:
        raise ValueError("prompts, prefixes: expected two non-empty lists of the same length")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    per_batch = max(1, batch_size // n)
    values, errors = [], []
    for start in range(0, len(prompts), per_batch):
        chunk = range(start, min(start + per_batch, len(prompts)))
        out = sample(
            model, tokenizer, [prompts[i] + prefixes[i] for i in chunk], n=n,
            max_new_tokens=max_new_tokens, temperature=temperature,
            seed=None if seed is None else seed + start,
        )  # fmt: skip
        r = torch.tensor(
            [
                reward(prompts[i], prefixes[i] + out.text[j * n + k])
                for j, i in enumerate(chunk)
                for k in range(n)
            ],
            dtype=torch.float64,
        ).view(len(chunk), n)
        values.append(r.mean(1))
        errors.append(r.std(1) / n**0.5 if n > 1 else torch.full((len(chunk),), float("inf")))
    return torch.cat(values).float(), torch.cat(errors).float()
