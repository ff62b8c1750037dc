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
