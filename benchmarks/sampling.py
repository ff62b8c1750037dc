"""Sampling speed: rlnb's KV-cache sampler against ``model.generate``, side by side in one process.

    python benchmarks/sampling.py [--repeats 5] [--out benchmarks/results/sampling.md]

Prompts of the addition task (64 to 1024 with one sample each, and groups of 8 and 16 samples),
8 new tokens each (EOS is disabled for this benchmark, so both produce exactly 8), on the tiny
reasoner's architecture and kernels with random weights; both timed from prompt strings to
completion text (tokenizing and decoding included). Prints a markdown table of sequences per
second for sampling (temperature 1) and greedy decoding and the ratio rlnb / generate (CUDA rows
when available), then, for one sample per prompt, how much of each one's time is the model's
forward, and that forward against the floor of its matrix products. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import transformers
from timing import matmul_peak, timed  # benchmarks/timing.py
from torch.utils.flop_counter import FlopCounterMode

from rlnb.decoding import sample
from rlnb.envs.tasks import Addition
from rlnb.models import gpt2
from rlnb.models.lm import char_tokenizer, tiny_causal_lm

NEW_TOKENS = 8
# (prompts, samples per prompt, temperature): one sample per prompt from 64 to 1024 prompts, greedy,
# and GRPO-style groups
CONFIGS = [(64, 1, 1.0), (256, 1, 1.0), (256, 1, 0.0), (1024, 1, 1.0), (32, 8, 1.0), (16, 16, 1.0)]


def run(repeats: int) -> str:
    task = Addition(2)
    tokenizer = char_tokenizer(task.alphabet)
    no_eos = _NoEOS(tokenizer)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = [
        "| device | prompts × samples | decoding | rlnb `sample` seq/s | `model.generate` seq/s "
        "| rlnb / generate |",
        "|---|---|---|---:|---:|---:|",
    ]
    # one sample per prompt: (prompts, tokenise + decode ms, matmul floor ms, rlnb's (total,
    # forward) ms, generate's (total, forward) ms)
    split = []

    def tokenize(prompts):
        return tokenizer(prompts, return_tensors="pt", padding=True)

    def decode(ids):
        return tokenizer.batch_decode(ids[:, :NEW_TOKENS], skip_special_tokens=True)

    peak = None  # the CPU's product throughput, measured once the model is built
    for device in devices:
        torch.manual_seed(0)
        model = tiny_causal_lm(len(tokenizer), n_positions=32).to(device).eval()
        model.generation_config.eos_token_id = None  # both decoders produce exactly NEW_TOKENS
        if device.type == "cpu":
            peak = matmul_peak(model.config.n_embd)
        for n_prompts, n, temperature in CONFIGS:
            prompts = task.prompts(n_prompts, "train", seed=0)

            def ours_fn():
                return sample(
                    model, no_eos, prompts, n=n, max_new_tokens=NEW_TOKENS, temperature=temperature
                )

            ours = timed(ours_fn, repeats, device)
            if temperature:
                generate_kwargs = dict(do_sample=True, temperature=1.0, top_k=0)
            else:
                generate_kwargs = dict(do_sample=False)

            def generate():  # strings in, text out, as `sample` does
                enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
                ids = model.generate(
                    **enc,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    num_return_sequences=n,
                    pad_token_id=tokenizer.pad_token_id,
                    **generate_kwargs,
                )
                return tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :])

            theirs = timed(generate, repeats, device)
            if device.type == "cpu" and n == 1 and temperature:
                text = timed(lambda: decode(tokenize(prompts)["input_ids"]), repeats, device)
                with FlopCounterMode(display=False) as counter:
                    ours_fn()
                floor = 1e3 * counter.get_total_flops() / peak
                split.append(
                    (n_prompts, 1e3 * text, floor, time_split(ours_fn, gpt2, "gpt2_forward"))
                    + (time_split(generate, model, "forward"),)
                )
            rows.append(
                f"| {device.type} | {n_prompts} × {n} | {'sampling (T=1)' if temperature else 'greedy'}"
                f" | {n_prompts * n / ours:,.0f} | {n_prompts * n / theirs:,.0f} | {theirs / ours:.2f}× |"
            )
    rows += [
        "",
        "Where the time goes with one sample per prompt (cpu, sampling; ms per call): the model's "
        "forward (rlnb's written-out GPT-2 forward, or the model's own inside `generate`, timed "
        "around each call), tokenising the prompts and decoding 8 tokens a row (timed alone; both "
        "do it), and the rest (the decoding loop).",
        "",
        "| prompts | decoder | total | model forward | tokenise + decode | rest | forward share "
        "| forward ÷ its matmul floor |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n_prompts, text, floor, *parts in split:
        for name, (total, forward) in zip(("rlnb `sample`", "`model.generate`"), parts):
            rows.append(
                f"| {n_prompts} | {name} | {total:.1f} | {forward:.1f} | {text:.1f} | "
                f"{total - forward - text:.1f} | {forward / total:.0%} | {forward / floor:.1f}× |"
            )
    rows += [
        "",
        f"The matmul floor: the FLOPs of rlnb's sampling pass (`torch.utils.flop_counter`) at this "
        f"CPU's best product throughput, {peak / 1e9:.0f} GFLOP/s (`timing.matmul_peak`).",
    ]
    return "\n".join(rows)


def time_split(fn, owner, name: str, calls: int = 5) -> tuple[float, float]:
    """ms per call of ``fn()``, and of it inside ``owner.name`` (the model's forward), timed by
    wrapping that function for the calls."""
    original, spent = getattr(owner, name), [0.0]
    own = name in vars(owner)  # a module's function, or an instance attribute already

    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        spent[0] += time.perf_counter() - start
        return out

    setattr(owner, name, wrapped)
    try:
        fn()
        spent[0] = 0.0
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        total = time.perf_counter() - start
    finally:
        if own:
            setattr(owner, name, original)
        else:  # the class's method again, no instance attribute left behind
            delattr(owner, name)
    return 1e3 * total / calls, 1e3 * spent[0] / calls


class _NoEOS:
    """The tokenizer with an EOS id that never occurs, so every row decodes ``NEW_TOKENS``."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.eos_token_id = -1

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = run(args.repeats)
    header = (
        f"# Sampling speed: rlnb vs `model.generate`\n\n"
        f"{NEW_TOKENS} new tokens per sequence, tiny GPT-2 (2 layers, 128 wide), random "
        f"weights; torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, python {platform.python_version()}.\n\n"
    )
    print(header + table)
    if args.out:
        args.out.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
