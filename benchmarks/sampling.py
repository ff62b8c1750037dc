"""Sampling speed: rlnb's KV-cache sampler against ``model.generate``, side by side in one process.

    python benchmarks/sampling.py [--repeats 5] [--out benchmarks/results/sampling.md]

256 prompts of the addition task, 8 new tokens each (EOS is disabled for this benchmark, so both
produce exactly 8), on the tiny reasoner's architecture with random weights; both timed from
prompt strings to completion text (tokenizing and decoding included). Prints a markdown
table of sequences per second for sampling (temperature 1) and greedy decoding, and the ratio
rlnb / generate. CUDA rows when available. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import transformers
from timing import timed  # benchmarks/timing.py

from rlnb.decoding import sample
from rlnb.envs.tasks import Addition
from rlnb.models.lm import char_tokenizer, tiny_causal_lm

NEW_TOKENS = 8
# (prompts, samples per prompt, temperature): the shape, and GRPO-style groups
CONFIGS = [(256, 1, 1.0), (256, 1, 0.0), (32, 8, 1.0), (16, 16, 1.0)]


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
    for device in devices:
        torch.manual_seed(0)
        model = tiny_causal_lm(len(tokenizer), n_positions=32).to(device).eval()
        model.generation_config.eos_token_id = None  # both decoders produce exactly NEW_TOKENS
        for n_prompts, n, temperature in CONFIGS:
            prompts = task.prompts(n_prompts, "train", seed=0)
            ours = timed(
                lambda: sample(
                    model, no_eos, prompts, n=n, max_new_tokens=NEW_TOKENS, temperature=temperature
                ),
                repeats,
                device,
            )
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
            rows.append(
                f"| {device.type} | {n_prompts} × {n} | {'sampling (T=1)' if temperature else 'greedy'}"
                f" | {n_prompts * n / ours:,.0f} | {n_prompts * n / theirs:,.0f} | {theirs / ours:.2f}× |"
            )
    return "\n".join(rows)


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
