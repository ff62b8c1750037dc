"""GRPO training speed: rlnb's trainer against TRL's ``GRPOTrainer`` on the same model and task.

    python benchmarks/lm_rl.py [--steps 30] [--out benchmarks/results/lm_rl.md]

Both train the shipped ``addition`` reasoner on ``Addition(2)`` train prompts: 16 prompts × 8
samples per step, completions of at most the task's answer length (4 tokens with EOS),
temperature 1, learning rate 1e-5, no KL term, one policy update per step (TRL:
``num_iterations=1``, ``per_device_train_batch_size=128``, ``num_generations=8``). A step is timed
from sampling to the optimizer step; the table gives the median over the steps after 3 warm-up
steps (rlnb's greedy evaluations are outside the timed part). Needs ``trl`` (not an rlnb
dependency: install it in an environment of its own). Never run by the test suite.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from rlnb.envs.tasks import Addition
from rlnb.models.lm import load_reasoner
from rlnb.train.lm_rl import RLConfig, train

PROMPTS, GROUP, LR, WARMUP = 16, 8, 1e-5, 3


def rlnb_step_seconds(steps: int, device: str) -> float:
    model, tok = load_reasoner("addition")
    model.to(device)
    cfg = RLConfig(
        algorithm="grpo", steps=steps, prompts_per_step=PROMPTS, group_size=GROUP, lr=LR,
        eval_every=10**9, eval_prompts=8, progress=False,
    )  # fmt: skip
    history, _ = train(model, tok, Addition(2), cfg)
    per_step = (PROMPTS * GROUP) / history.samples_per_s.dropna().iloc[WARMUP:]
    return statistics.median(per_step)


def trl_step_seconds(steps: int, device: str) -> tuple[float, str]:
    import datasets
    import trl

    task = Addition(2)
    model, tok = load_reasoner("addition")

    def reward(prompts, completions, **kwargs):
        return [task.reward(p, c) for p, c in zip(prompts, completions)]

    times = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    data = datasets.Dataset.from_dict({"prompt": task.prompts(PROMPTS * (steps + 1), "train")})
    with tempfile.TemporaryDirectory() as out:
        args = trl.GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
            max_completion_length=task.max_new_tokens, learning_rate=LR, beta=0.0,
            num_iterations=1, max_steps=steps, temperature=1.0, logging_steps=10**9,
            save_strategy="no", report_to=[], use_cpu=device == "cpu", bf16=device == "cuda",
            seed=0,
        )  # fmt: skip
        trainer = trl.GRPOTrainer(
            model=model, reward_funcs=reward, args=args, train_dataset=data,
            processing_class=tok, callbacks=[Timer()],
        )  # fmt: skip
        trainer.train()
    return statistics.median(times[WARMUP:]), trl.__version__


def run(steps: int) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads; torch {torch.__version__}, transformers {transformers.__version__}",
        "",
        "| device | trainer | s/step | steps/s | samples/s | rlnb / TRL |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        ours = rlnb_step_seconds(steps, device)
        theirs, version = trl_step_seconds(steps, device)
        n = PROMPTS * GROUP
        lines.append(
            f"| {device} | rlnb `train` (grpo) | {ours:.3f} | {1 / ours:.2f} | {n / ours:,.0f} | {theirs / ours:.1f}× |"
        )
        lines.append(
            f"| {device} | TRL {version} `GRPOTrainer` | {theirs:.3f} | {1 / theirs:.2f} | {n / theirs:,.0f} | 1.0× |"
        )
        print("\n".join(lines[-2:]), flush=True)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = run(args.steps)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# GRPO steps per second: rlnb vs TRL (`python benchmarks/lm_rl.py`)\n\n" + table
        )
