"""What the benchmarks share: the timer (median wall time of ``fn()`` after a warm-up call) and
the one-line description of the machine."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

CPU = torch.device("cpu")


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls (CUDA synchronised around each)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """CPU model, usable CPUs, torch threads, GPU if any, and versions."""
    cpu = platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {cpus} usable CPUs, {torch.get_num_threads()} torch threads{gpu}; "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def matmul_peak(width: int) -> float:
    """FLOP/s of this CPU's best float32 product among the shapes of a GPT-2 of this width
    (``[rows, width] @ [width, 4·width]`` and the like, 1024 and 4096 rows): the throughput a
    compute floor divides by."""
    shapes = ((width, 4 * width), (4 * width, width), (width, 3 * width))
    best = 0.0
    for rows in (1024, 4096):
        for k, n in shapes:
            x, y = torch.randn(rows, k), torch.randn(k, n)
            best = max(best, 2 * rows * k * n / timed(lambda: x @ y, 50, CPU))
    return best
