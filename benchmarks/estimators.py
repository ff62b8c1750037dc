"""GAE and λ-returns at every shape: rlnb against TorchRL's fastest and against the memory floor.

    python benchmarks/estimators.py [--repeats 5] [--batches 1 16 256 4096]
                                    [--horizons 64 256 1024 16384] [--profile B T]
                                    [--out benchmarks/results/estimators.md]

A grid of shapes [B, T] (B environments, T steps; B ≫ T is the PPO layout, B ≪ T a long
trajectory), float32, 1% terminated and 1% truncated steps, on the CPU (and CUDA when there is one).
For each point: the median wall time per call of rlnb's ``gae`` / ``lambda_returns``, of each
TorchRL function that computes the same thing (its loop, and its vectorised version where its
[B, T, T]-sized filter fits in memory), and of the **memory floor**: ``torch`` copying as many
bytes as the estimator must read and write once (inputs in, outputs out; GAE reads three float32
tensors and two bool masks and writes two float32 tensors: 22 bytes per element; λ-returns
14 bytes), measured in the same process. Errors are against a float64 loop
(``rlnb.estimators.reference``). Writes the table and a log-log plot of time against elements
(``estimators.png`` next to ``--out``). Never run by the test suite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import torch
from timing import machine, timed  # benchmarks/timing.py
from torchrl.objectives.value import functional as trl

from rlnb import estimators as E
from rlnb.estimators import reference as ref

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GAMMA, LMBDA = 0.99, 0.95
BYTES_PER_ELEMENT = {"GAE": 3 * 4 + 2 + 2 * 4, "λ-return": 2 * 4 + 2 + 4}  # read + write
VEC_LIMIT = 2**28  # TorchRL's vectorised estimators build [B, T, T]-sized tensors


def data(B, T, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(B, T, generator=g) for _ in range(3))
    u = torch.rand(B, T, generator=g)
    term, trunc = u < 0.01, (u >= 0.01) & (u < 0.02)
    return [x.to(device) for x in (r, v, nv, term, trunc)]


def rel_err(x, exact):
    return ((x.double().cpu() - exact).abs().max() / exact.abs().max()).item()


def floor_fn(n_elements: int, bytes_per_element: int, device):
    """A copy that reads and writes ``n_elements × bytes_per_element`` bytes in all."""
    n = -(-n_elements * bytes_per_element // 8)  # float32 elements: half read, half written
    src, dst = torch.ones(n, device=device), torch.empty(n, device=device)
    return lambda: dst.copy_(src)


def methods_at(B, T, device):
    """{estimator: (exact float64 answer, {method: fn})} at one grid point."""
    r, v, nv, term, trunc = data(B, T, device)
    done = term | trunc
    u = [x.unsqueeze(-1) for x in (r, v, nv, done, term)]  # TorchRL: [B, T, 1], time_dim=-2
    d64 = [x.double().cpu() if x.is_floating_point() else x.cpu() for x in (r, v, nv, term, trunc)]
    gae = {
        "rlnb": lambda: E.gae(r, v, nv, term, trunc, GAMMA, LMBDA).advantages,
        "TorchRL generalized_advantage_estimate": lambda: trl.generalized_advantage_estimate(
            GAMMA, LMBDA, u[1], u[2], u[0], u[3], u[4]
        )[0],
    }
    lam = {
        "rlnb": lambda: E.lambda_returns(r, nv, term, trunc, GAMMA, LMBDA),
        "TorchRL td_lambda_return_estimate": lambda: trl.td_lambda_return_estimate(
            GAMMA, LMBDA, u[2], u[0], u[3], u[4]
        ),
    }
    if B * T * T <= VEC_LIMIT:
        gae["TorchRL vec_generalized_advantage_estimate"] = lambda: (
            trl.vec_generalized_advantage_estimate(GAMMA, LMBDA, u[1], u[2], u[0], u[3], u[4])[0]
        )
        lam["TorchRL vec_td_lambda_return_estimate"] = lambda: trl.vec_td_lambda_return_estimate(
            GAMMA, LMBDA, u[2], u[0], u[3], u[4]
        )
    exact_gae = ref.gae_loop(*d64, GAMMA, LMBDA)[0]
    exact_lam = ref.lambda_returns_loop(d64[0], d64[2], d64[3], d64[4], GAMMA, LMBDA)
    return {"GAE": (exact_gae, gae), "λ-return": (exact_lam, lam)}


def run(batches, horizons, repeats: int):
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    points = []  # (device, estimator, B, T, method, seconds, error)
    for device in devices:
        for B in batches:
            for T in horizons:
                for name, (exact, methods) in methods_at(B, T, device).items():
                    for m, fn in methods.items():
                        err = rel_err(fn().reshape(B, T), exact)
                        points.append((device.type, name, B, T, m, timed(fn, repeats, device), err))
                    floor = floor_fn(B * T, BYTES_PER_ELEMENT[name], device)
                    points.append(
                        (device.type, name, B, T, "memory floor", timed(floor, repeats, device), 0)
                    )
                print(f"{device.type} [{B}, {T}] done", flush=True)
    return points


def table(points) -> tuple[str, list[str]]:
    rows = [
        "| device | estimator | [B, T] | rlnb ms | TorchRL fastest ms (which) | rlnb vs TorchRL | "
        "floor ms | rlnb / floor | rlnb max rel. error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    misses = []
    keys = sorted(
        {(p[0], p[1], p[2], p[3]) for p in points}, key=lambda k: (k[0], k[1], k[2], k[3])
    )
    for dev, name, B, T in keys:
        at = {p[4]: p for p in points if p[:4] == (dev, name, B, T)}
        ours, floor = at["rlnb"], at["memory floor"]
        trl_name, trl_point = min(
            ((m, p) for m, p in at.items() if m.startswith("TorchRL")), key=lambda mp: mp[1][5]
        )
        speedup, over_floor = trl_point[5] / ours[5], ours[5] / floor[5]
        rows.append(
            f"| {dev} | {name} | [{B}, {T}] | {ours[5] * 1e3:.3f} | {trl_point[5] * 1e3:.3f} "
            f"({trl_name.split()[-1]}) | {speedup:.1f}× | {floor[5] * 1e3:.3f} | {over_floor:.1f}× "
            f"| {ours[6]:.1e} |"
        )
        if speedup < 3:
            misses.append(f"{dev} {name} [{B}, {T}]: {speedup:.1f}× TorchRL (target ≥ 3×)")
        if B * T >= 2**20 and over_floor > 2.5:
            misses.append(f"{dev} {name} [{B}, {T}]: {over_floor:.1f}× the floor (target ≤ 2.5×)")
    return "\n".join(rows), misses


def plot(points, path: Path) -> None:
    """Time against elements: one colour per method, one marker per batch size B (points of equal
    B·T differ in their horizon), one panel per estimator."""
    names = sorted({p[1] for p in points})
    batches = sorted({p[2] for p in points})
    markers = dict(zip(batches, "osD^v<>"))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for k, (dev, m) in enumerate(sorted({(p[0], p[4]) for p in points if p[1] == name})):
            colour = "k" if m == "memory floor" else f"C{k}"
            for B in batches:
                pts = sorted(
                    (p[2] * p[3], p[5])
                    for p in points
                    if (p[0], p[1], p[4], p[2]) == (dev, name, m, B)
                )
                if pts:
                    ax.loglog(*zip(*pts), color=colour, marker=markers[B], ms=4, lw=0.8,
                              label=f"{m} ({dev})" if B == batches[0] else None)  # fmt: skip
        for B in batches:
            ax.plot([], [], "k", marker=markers[B], ls="none", label=f"B = {B}")
        ax.set(title=f"{name} (lines join the horizons of one B)", xlabel="elements B·T",
               ylabel="seconds per call")  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def profile(B: int, T: int, calls: int = 20) -> str:
    """Where rlnb's GAE spends its time at one shape: torch's profiler, operators by self time."""
    r, v, nv, term, trunc = data(B, T, torch.device("cpu"))
    E.gae(r, v, nv, term, trunc, GAMMA, LMBDA)  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            E.gae(r, v, nv, term, trunc, GAMMA, LMBDA)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return f"rlnb GAE at [{B}, {T}], {calls} calls (`--profile {B} {T}`):\n\n```\n{table}\n```\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 4096])
    p.add_argument("--horizons", type=int, nargs="+", default=[64, 256, 1024, 16384])
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument(
        "--profile", type=int, nargs=2, action="append", default=[], metavar=("B", "T"),
        help="also profile rlnb's GAE at this shape (repeatable)",
    )  # fmt: skip
    args = p.parse_args()
    points = run(args.batches, args.horizons, args.repeats)
    rows, misses = table(points)
    text = (
        f"# Estimator speed: rlnb vs TorchRL and the memory floor\n\nMachine: {machine()}.\n\n"
        f"`python benchmarks/estimators.py`; median of {args.repeats} calls after a warm-up.\n\n"
        f"{rows}\n\n"
        + (
            "Targets missed:\n" + "\n".join(f"- {m}" for m in misses)
            if misses
            else "Targets met at every point."
        )
        + "\n"
    )
    text += "".join(f"\n{profile(B, T)}" for B, T in args.profile)
    print(text)
    if args.out:
        args.out.write_text(text + "\n![time against elements](estimators.png)\n", encoding="utf-8")
        plot(points, args.out.with_name("estimators.png"))


if __name__ == "__main__":
    main()
