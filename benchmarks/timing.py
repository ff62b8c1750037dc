"""The one timer the benchmarks share: median wall time of ``fn()`` after a warm-up call."""

from __future__ import annotations

import statistics
import time

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
