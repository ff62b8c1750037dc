"""GAE and λ-returns: rlnb's fast path and loop against TorchRL, side by side in one process.

    python benchmarks/estimators.py [--repeats 7] [--out benchmarks/results/estimators.md]

Prints a markdown table: median wall time per call, the ratio of TorchRL's fastest GAE to
rlnb's fast GAE (> 1 means rlnb is faster), and each method's max relative error against a
float64 loop. float32 inputs, 1% terminated and 1% truncated steps. CUDA rows when available.
Never run by the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
from timing import timed  # benchmarks/timing.py
from torchrl.objectives.value import functional as trl

from rlnb import estimators as E
from rlnb.estimators import reference as ref

SHAPES = [(64, 1024), (1024, 1024), (16, 16384)]
GAMMA, LMBDA = 0.99, 0.95


def data(B, T, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(B, T, generator=g) for _ in range(3))
    u = torch.rand(B, T, generator=g)
    term, trunc = u < 0.01, (u >= 0.01) & (u < 0.02)
    return [x.to(device) for x in (r, v, nv, term, trunc)]


def rel_err(x, exact):
    return ((x.double().cpu() - exact).abs().max() / exact.abs().max()).item()


def run(repeats: int) -> str:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = [
        "| device | shape [B, T] | estimator | method | median ms | TorchRL fastest / this | max rel. error vs float64 loop |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for device in devices:
        for B, T in SHAPES:
            r, v, nv, term, trunc = data(B, T, device)
            done = term | trunc
            u = [x.unsqueeze(-1) for x in (r, v, nv, done, term)]  # TorchRL: [B, T, 1], time_dim=-2
            d64 = [
                x.double().cpu() if x.is_floating_point() else x.cpu()
                for x in (r, v, nv, term, trunc)
            ]
            exact_gae = ref.gae_loop(*d64, GAMMA, LMBDA)[0]
            exact_lam = ref.lambda_returns_loop(d64[0], d64[2], d64[3], d64[4], GAMMA, LMBDA)
            gae_methods = {
                "rlnb fast": lambda: E.gae(r, v, nv, term, trunc, GAMMA, LMBDA).advantages,
                "rlnb loop": lambda: ref.gae_loop(r, v, nv, term, trunc, GAMMA, LMBDA)[0],
                "TorchRL generalized_advantage_estimate": lambda: (
                    trl.generalized_advantage_estimate(GAMMA, LMBDA, u[1], u[2], u[0], u[3], u[4])[
                        0
                    ]
                ),
            }
            if B * T * T <= 2**31:  # the vectorised version builds [B, T, T]-sized filters
                gae_methods["TorchRL vec_generalized_advantage_estimate"] = lambda: (
                    trl.vec_generalized_advantage_estimate(
                        GAMMA, LMBDA, u[1], u[2], u[0], u[3], u[4]
                    )[0]
                )
            lam_methods = {
                "rlnb fast": lambda: E.lambda_returns(r, nv, term, trunc, GAMMA, LMBDA),
                "rlnb loop": lambda: ref.lambda_returns_loop(r, nv, term, trunc, GAMMA, LMBDA),
                "TorchRL td_lambda_return_estimate": lambda: trl.td_lambda_return_estimate(
                    GAMMA, LMBDA, u[2], u[0], u[3], u[4]
                ),
            }
            for name, methods, exact in (
                ("GAE", gae_methods, exact_gae),
                ("λ-return", lam_methods, exact_lam),
            ):
                res = {}
                for m, fn in methods.items():
                    out = fn()
                    res[m] = (timed(fn, repeats, device), rel_err(out.reshape(B, T), exact))
                fastest_trl = min(t for m, (t, _) in res.items() if m.startswith("TorchRL"))
                for m, (t, err) in res.items():
                    rows.append(
                        f"| {device.type} | [{B}, {T}] | {name} | {m} | {t * 1e3:.2f} | {fastest_trl / t:.2f}× | {err:.1e} |"
                    )
    return "\n".join(rows)


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpu += f" ({os.cpu_count()} cores)"
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}, "
        f"torchrl {__import__('torchrl').__version__}, python {platform.python_version()}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--out", type=Path, default=None, help="also write the table (with the machine) here"
    )
    args = p.parse_args()
    table = run(args.repeats)
    text = f"# Estimator speed: rlnb vs TorchRL\n\nMachine: {machine()}.\n\n{table}\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
