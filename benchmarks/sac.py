"""SAC on Pendulum-v1: rlnb's loop against CleanRL's ``sac_continuous_action.py``, same settings.

    python benchmarks/sac.py --cleanrl-src DIR --cleanrl-python PY [--seeds 3] [--steps 15000]
                             [--out benchmarks/results/sac.md]

Both run CleanRL's published hyperparameters (1 environment, 256×256 MLPs, batch 256, buffer
10⁶, γ 0.99, τ 0.005, Adam 3e-4 for the actor and 1e-3 for the critics and the temperature,
5 000 random steps first, actor and temperature updated twice every second step, automatic
temperature from α = 1), each in a process of its own on the CPU, for ``--steps`` environment
steps and 3 seeds. Reported per run: environment steps per second over the whole run (after
start-up; rlnb's includes its one evaluation of the untrained agent) and the wall time from the
process's launch, imports included, to the first training episode at which the mean return of
the last 5 episodes reaches −200 (and that step). rlnb's episode times are the launch-to-loop
time plus the loop's own clock (the few milliseconds of building networks and buffer between
them are not counted). One difference in the algorithm: CleanRL draws a fresh action for the
temperature's loss after each actor step; rlnb reuses the actor step's own sample (as the
paper's algorithm does).

CleanRL is run from its own file: ``--cleanrl-src`` is a checkout holding ``cleanrl/`` and
``cleanrl_utils/`` (github.com/vwxyzjn/cleanrl), ``--cleanrl-python`` the Python of a venv with
its requirements (torch, ``gymnasium==0.29.1``, ``numpy<2``, tyro, tensorboard). It prints every
finished episode as ``global_step=…, episodic_return=[…]`` (read as it comes, with its time) and
``SPS: …`` every 100 steps. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THRESHOLD, WINDOW = -200.0, 5
CLEANRL_SETTINGS = dict(
    num_envs=1, buffer_size=1_000_000, gamma=0.99, tau=0.005, batch_size=256,
    learning_starts=5_000, policy_lr=3e-4, q_lr=1e-3, policy_frequency=2, alpha=1.0,
    autotune=True, hidden=(256, 256),
)  # fmt: skip


def ours_worker(seed: int, steps: int) -> None:
    """Train rlnb's SAC and print, as JSON lines, the seconds from launch to the loop's start,
    then each finished episode and the final steps per second."""
    launched = float(os.environ["BENCH_LAUNCHED"])
    from rlnb.train.sac import SACConfig, train

    started = time.time() - launched
    cfg = SACConfig(**CLEANRL_SETTINGS, total_steps=steps, eval_every=steps, eval_episodes=1, seed=seed, device="cpu")  # fmt: skip
    history, agent = train(cfg, progress=False)
    episodes = [(s, g, started + t) for s, g, t in agent.episodes]
    print(json.dumps({"episodes": episodes, "sps": history.sps.iloc[-1]}), flush=True)


def run_ours(seed: int, steps: int) -> tuple[list, float]:
    env = {**os.environ, "BENCH_LAUNCHED": repr(time.time())}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(seed), "--steps", str(steps)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [tuple(e) for e in result["episodes"]], result["sps"]


def run_cleanrl(seed: int, steps: int, src: Path, python: str) -> tuple[list, float]:
    """Run CleanRL's file; every episode line is stamped with the seconds since launch."""
    episode = re.compile(r"global_step=(\d+), episodic_return=\[([-\d.e+]+)\]")
    episodes, sps = [], np.nan
    with tempfile.TemporaryDirectory() as cwd:  # its tensorboard runs/ go here
        launched = time.time()
        proc = subprocess.Popen(
            [python, "-u", str(src / "cleanrl" / "sac_continuous_action.py"), "--env-id", "Pendulum-v1",
             "--total-timesteps", str(steps), "--seed", str(seed), "--no-cuda"],
            cwd=cwd, env={**os.environ, "PYTHONPATH": str(src)}, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        for line in proc.stdout:
            if m := episode.match(line):
                episodes.append((int(m[1]) + 1, float(m[2]), time.time() - launched))
            elif line.startswith("SPS:"):
                sps = float(line.split()[1])
        if proc.wait() != 0:
            raise RuntimeError(f"CleanRL's SAC failed (exit {proc.returncode}) for seed {seed}")
    return episodes, sps


def time_to_threshold(episodes: list) -> tuple[float, float]:
    """(seconds, environment step) of the first episode where the mean of the last ``WINDOW``
    episode returns reaches ``THRESHOLD``; NaN if never."""
    returns = [g for _, g, _ in episodes]
    for i in range(WINDOW - 1, len(returns)):
        if np.mean(returns[i - WINDOW + 1 : i + 1]) >= THRESHOLD:
            return episodes[i][2], episodes[i][0]
    return np.nan, np.nan


def report(seeds: int, steps: int, src: Path, python: str) -> str:
    import torch

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} (torch's default threads in both), {steps:,} environment steps per run.",
        "",
        "| implementation | seed | env steps/s | seconds to −200 (mean of 5 episodes) | at step |",
        "|---|---|---:|---:|---:|",
    ]
    medians = {}
    for name, runner in (("rlnb", lambda s: run_ours(s, steps)), ("CleanRL", lambda s: run_cleanrl(s, steps, src, python))):  # fmt: skip
        times, rates = [], []
        for seed in range(1, seeds + 1):  # CleanRL's default seed is 1
            episodes, sps = runner(seed)
            seconds, at = time_to_threshold(episodes)
            times.append(seconds)
            rates.append(sps)
            lines.append(f"| {name} | {seed} | {sps:,.0f} | {seconds:.1f} | {at:,.0f} |")
            print(lines[-1], flush=True)
        medians[name] = (
            np.median(rates),
            np.nanmedian(times) if not np.isnan(times).all() else np.nan,
        )
    lines += [
        "",
        "| implementation | median env steps/s | median seconds to −200 |",
        "|---|---:|---:|",
    ]
    lines += [f"| {n} | {r:,.0f} | {t:.1f} |" for n, (r, t) in medians.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--cleanrl-src", type=Path)
    parser.add_argument("--cleanrl-python", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        ours_worker(args.worker, args.steps)
        sys.exit()
    if args.cleanrl_src is None or args.cleanrl_python is None:
        parser.error("--cleanrl-src and --cleanrl-python are required (see the docstring)")
    table = report(args.seeds, args.steps, args.cleanrl_src, args.cleanrl_python)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# SAC on Pendulum-v1 (`python benchmarks/sac.py`)\n\n" + table)
