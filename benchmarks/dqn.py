"""DQN speed on CartPole-v1: throughput per head, and wall time to solve with CleanRL's settings.

    python benchmarks/dqn.py [--seeds 3] [--out benchmarks/results/dqn.md]

1. Throughput: ``rlnb.train.dqn.train`` with 4 vector environments and one gradient step per
   vector step (batch 128, MLP 128×128), 20 000 environment steps after 1 000 warm-up steps,
   scalar and HL-Gauss heads: environment steps per second and gradient updates per second
   over the whole run (warm-up and one final evaluation episode included). CPU (one torch
   thread), and CUDA when available.
2. Time to solve: CleanRL's published DQN hyperparameters for CartPole (``dqn.py``: 1
   environment, Adam 2.5e-4, buffer 10 000, batch 128, γ 0.99, MSE, target copied every 500
   environment steps, train every 10 steps, ε 1 → 0.05 over half of 500 000 steps, learning
   starts at 10 000, MLP 120×84) run in our loop, stopping at the first evaluation (every
   5 000 steps, 10 greedy episodes) whose mean return reaches 195; wall time and environment
   steps for each seed. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

from rlnb.train.dqn import DQNConfig, train

CLEANRL = dict(
    num_envs=1,
    total_steps=500_000,
    lr=2.5e-4,
    buffer_size=10_000,
    gamma=0.99,
    tau=1.0,
    target_every=50,  # CleanRL: every 500 environment steps = every 50 gradient steps
    batch_size=128,
    eps_start=1.0,
    eps_end=0.05,
    eps_fraction=0.5,
    learning_starts=10_000,
    train_every=10,
    hidden=(120, 84),
    huber=False,
    eval_every=5_000,
    eval_episodes=10,
    stop_return=195.0,
)


def throughput(head: str, device: str) -> tuple[float, float]:
    """(environment steps/s, updates/s) of one run, its single final evaluation episode included."""
    cfg = DQNConfig(
        total_steps=21_000, learning_starts=1_000, eval_every=21_000, eval_episodes=1, head=head,
        device=device,
    )  # fmt: skip
    last = train(cfg, progress=False)[0].iloc[-1]
    return last.step / last.wall, last.updates / last.wall


def run(seeds: int) -> str:
    torch.set_num_threads(1)  # tiny MLPs: more threads only add synchronisation
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"thread(s), torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "",
        "| device | head | env steps/s | updates/s |",
        "|---|---|---:|---:|",
    ]
    for device in devices:
        for head in ("scalar", "hl_gauss"):
            sps, ups = throughput(head, device)
            lines.append(f"| {device} | {head} | {sps:,.0f} | {ups:,.0f} |")
            print(lines[-1], flush=True)
    lines += [
        "",
        "CleanRL's DQN hyperparameters in our loop, stopping at the first evaluation with mean "
        "return ≥ 195 (CPU):",
        "",
        "| seed | env steps | wall seconds | return at stop |",
        "|---|---:|---:|---:|",
    ]
    walls = []
    for seed in range(seeds):
        history = train(DQNConfig(seed=seed, device="cpu", **CLEANRL), progress=False)[0]
        last = history.iloc[-1]
        solved = last.eval_return >= 195
        walls.append(last.wall if solved else np.nan)
        lines.append(
            f"| {seed} | {int(last.step):,} | {last.wall:.1f} | {last.eval_return:.1f}"
            + ("" if solved else " (not solved)")
            + " |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"Median wall time to 195: {np.nanmedian(walls):.1f} s over {seeds} seeds."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = run(args.seeds)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# DQN on CartPole-v1 (`python benchmarks/dqn.py`)\n\n" + table)
