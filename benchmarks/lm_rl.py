"""GRPO training speed: rlnb's trainer against TRL's ``GRPOTrainer`` and against the compute floor.

    python benchmarks/lm_rl.py [--steps 40] [--rounds 3] [--out benchmarks/results/lm_rl.md]

Both train the shipped ``addition`` reasoner on ``Addition(2)`` train prompts: 16 prompts × 8
samples per step, completions of at most the task's answer length (4 tokens with EOS),
temperature 1, learning rate 1e-5, no KL term, one policy update per step (TRL:
``num_iterations=1``, ``per_device_train_batch_size=128``, ``num_generations=8``). A step is timed
from sampling to the optimizer step; a run's time is the median over its steps after 3 warm-up
steps (rlnb's greedy evaluations are outside the timed part). The two alternate ``--rounds``
times, so a change in the machine's load falls on both; the table gives each round.

The floor is what the CPU needs for the step's arithmetic alone: the matrix products of one rlnb
step (recorded with their shapes by ``MatmulShapes``; everything else is elementwise and far
smaller; TRL's step is counted by ``torch.utils.flop_counter``),
(a) at the best throughput this CPU reaches on a large product of the model's widths, and (b)
each product timed alone at its own shape, as the step runs it. A cProfile of rlnb's step says
where the rest goes. Needs ``trl`` (not an rlnb dependency: install it in an environment of its
own). Never run by the test suite.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from timing import CPU, machine, matmul_peak, timed  # benchmarks/timing.py
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from rlnb.envs.tasks import Addition
from rlnb.models.lm import load_reasoner
from rlnb.train.lm_rl import RLConfig, advantages, rollout, train, update

PROMPTS, GROUP, LR, WARMUP = 16, 8, 1e-5, 3
ROWS = PROMPTS * GROUP


def config(steps: int) -> RLConfig:
    return RLConfig(
        algorithm="grpo", steps=steps, prompts_per_step=PROMPTS, group_size=GROUP, lr=LR,
        eval_every=10**9, eval_prompts=8, progress=False,
    )  # fmt: skip


def rlnb_step_seconds(steps: int, device: str) -> float:
    model, tok = load_reasoner("addition", device=device)
    history, _ = train(model, tok, Addition(2), config(steps))
    return statistics.median(ROWS / history.samples_per_s.dropna().iloc[WARMUP:])


def trl_step_seconds(steps: int, device: str, count_flops: bool = False) -> float:
    """The median seconds of a TRL step; with ``count_flops``, the FLOPs of a step instead."""
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
            output_dir=out, per_device_train_batch_size=ROWS, num_generations=GROUP,
            max_completion_length=task.max_new_tokens, learning_rate=LR, beta=0.0,
            num_iterations=1, max_steps=steps, temperature=1.0, logging_steps=10**9,
            save_strategy="no", report_to=[], use_cpu=device == "cpu", bf16=device == "cuda",
            seed=0,
        )  # fmt: skip
        trainer = trl.GRPOTrainer(
            model=model, reward_funcs=reward, args=args, train_dataset=data,
            processing_class=tok, callbacks=[Timer()],
        )  # fmt: skip
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                trainer.train()
            return counter.get_total_flops() / steps
        trainer.train()
    return statistics.median(times[WARMUP:])


class MatmulShapes(TorchDispatchMode):
    """Counts the matrix products run under it by (op, shapes)."""

    OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.OPS:
            a, b = args[1:3] if func is torch.ops.aten.addmm.default else args[:2]
            self.calls[(func is torch.ops.aten.bmm.default, tuple(a.shape), tuple(b.shape))] += 1
        return func(*args, **(kwargs or {}))


def flops(batched: bool, a: tuple, b: tuple) -> int:
    return 2 * a[-2] * a[-1] * b[-1] * (a[0] if batched else 1)


def one_step(model, tok, optimizer, step: int) -> None:
    """rollout, advantages and update of ``train``, for one step."""
    task, cfg = Addition(2), config(1)
    cfg.max_new_tokens = task.max_new_tokens
    batch = rollout(model, tok, task, task.prompts(PROMPTS, "train", seed=step), cfg, step)
    update(model, optimizer, batch, advantages(batch, "grpo"), cfg, step)


def compute_floor() -> dict:
    """FLOPs of one rlnb step and the two floors (seconds); see the module docstring."""
    model, tok = load_reasoner("addition")
    optimizer = torch.optim.Adam([{"params": model.parameters(), "base_lr": LR}], lr=LR, fused=True)
    for step in range(3):
        one_step(model, tok, optimizer, step)
    with MatmulShapes() as recorded:
        one_step(model, tok, optimizer, 3)
    total = sum(flops(*k) * n for k, n in recorded.calls.items())
    shapes = 0.0
    for (batched, a, b), n in recorded.calls.items():
        x, y = torch.randn(a), torch.randn(b)
        shapes += n * timed(lambda: torch.bmm(x, y) if batched else x @ y, 200, CPU)
    peak = matmul_peak(model.config.n_embd)
    return {"flops": total, "peak": peak, "at_peak": total / peak, "at_shapes": shapes}


def profile_step(steps: int = 40) -> list[tuple[str, float]]:
    """Seconds per step (under cProfile) of the parts of rlnb's step, biggest first."""
    model, tok = load_reasoner("addition")
    train(model, tok, Addition(2), config(5))  # warm up
    profiler = cProfile.Profile()
    profiler.enable()
    train(model, tok, Addition(2), config(steps))
    profiler.disable()
    # {(file, line, name): (calls, primitive calls, tottime, cumtime, callers)}
    stats = pstats.Stats(profiler).stats

    def cumulative(file_part: str, name: str) -> float:
        return sum(v[3] for (f, _, n), v in stats.items() if file_part in f and n == name)

    parts = {
        "sampling pass (forward with gradients)": cumulative("models/gpt2.py", "gpt2_forward"),
        "backward": cumulative("autograd/graph.py", "_engine_run_backward"),
        "Adam (fused)": cumulative("optim/adam.py", "step"),
        "gradient clipping": cumulative("nn/utils/clip_grad.py", "clip_grad_norm_"),
        "tokenising the prompts": cumulative("tokenization_utils_base.py", "__call__"),
        "decoding the completions": cumulative("tokenization_utils_base.py", "batch_decode"),
        "rewards": cumulative("envs/tasks.py", "rewards"),
        "estimator": cumulative("estimators/registry.py", "compute_advantages"),
    }
    steps_total = cumulative("train/lm_rl.py", "rollout") + cumulative("train/lm_rl.py", "update")
    steps_total += parts["estimator"]
    parts["the rest (sampler loop, losses, bookkeeping)"] = steps_total - sum(parts.values())
    return sorted(((k, v / steps) for k, v in parts.items()), key=lambda kv: -kv[1])


def run(steps: int, rounds: int) -> str:
    lines = [f"Machine: {machine()}, transformers {transformers.__version__}", ""]
    ours, theirs = {}, {}  # seconds per step of each round, by device
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        rows = [
            "| round | rlnb s/step | TRL s/step | rlnb samples/s | TRL samples/s | rlnb / TRL |"
        ]
        rows.append("|---:|---:|---:|---:|---:|---:|")
        mine, trl = ours.setdefault(device, []), theirs.setdefault(device, [])
        for r in range(rounds):
            mine.append(rlnb_step_seconds(steps, device))
            trl.append(trl_step_seconds(steps, device))
            rows.append(
                f"| {r + 1} | {mine[-1]:.4f} | {trl[-1]:.4f} | {ROWS / mine[-1]:,.0f} | "
                f"{ROWS / trl[-1]:,.0f} | {trl[-1] / mine[-1]:.2f}× |"
            )
            print(rows[-1], flush=True)
        lines += [f"**{device}**, `--steps {steps}`:", "", *rows, ""]
    floor = compute_floor()
    trl_flops = trl_step_seconds(4, "cpu", count_flops=True)
    trl_floor = trl_flops / floor["peak"]
    best_ours, best_theirs = statistics.median(ours["cpu"]), statistics.median(theirs["cpu"])
    lines += [
        f"Floor (cpu): one rlnb step runs {floor['flops'] / 1e9:.2f} GFLOP of matrix products, "
        f"one TRL step {trl_flops / 1e9:.2f} GFLOP (it runs every prompt once per sample and "
        f"the completions a second time for the gradient); this CPU's best on a large product of "
        f"the model's widths is {floor['peak'] / 1e9:.0f} GFLOP/s.",
        "",
        "| | s/step | × rlnb's floor at peak | × rlnb's floor at its shapes | × its own floor at peak |",
        "|---|---:|---:|---:|---:|",
        f"| rlnb's floor at peak throughput | {floor['at_peak']:.4f} | 1.0× | | |",
        f"| rlnb's floor, each product timed at its shape | {floor['at_shapes']:.4f} | "
        f"{floor['at_shapes'] / floor['at_peak']:.2f}× | 1.0× | |",
        f"| rlnb (median of rounds) | {best_ours:.4f} | {best_ours / floor['at_peak']:.1f}× | "
        f"{best_ours / floor['at_shapes']:.1f}× | {best_ours / floor['at_peak']:.1f}× |",
        f"| TRL's floor at peak throughput | {trl_floor:.4f} | "
        f"{trl_floor / floor['at_peak']:.1f}× | | 1.0× |",
        f"| TRL (median of rounds) | {best_theirs:.4f} | {best_theirs / floor['at_peak']:.1f}× | "
        f"{best_theirs / floor['at_shapes']:.1f}× | {best_theirs / trl_floor:.1f}× |",
        "",
        "Where rlnb's step goes (cProfile, which inflates Python-heavy parts; ms per step):",
        "",
        "| part | ms |",
        "|---|---:|",
        *(f"| {name} | {seconds * 1e3:.2f} |" for name, seconds in profile_step()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = run(args.steps, args.rounds)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# GRPO steps per second: rlnb vs TRL vs the floor (`python benchmarks/lm_rl.py`)\n\n"
            + table
        )
