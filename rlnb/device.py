"""Device choice, seeding and thread count: the three things every notebook sets first."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Return a ``torch.device``.

    ``"auto"`` picks CUDA if available, then Apple's MPS, then the CPU. Asking for a device that
    is not available is an error (a notebook should not silently run 50x slower than expected).

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES} (optionally 'cuda:N'), got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    if kind == "mps" and not _mps_available():
        raise ValueError(
            "device: 'mps' was asked for but torch.backends.mps.is_available() is False"
        )
    return torch.device(device)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy, torch (CPU and every CUDA device).

    Returns a CPU ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device):
    """The training loops' mixed precision: bf16 autocast on CUDA, a no-op context elsewhere
    (on the CPU a run stays float32 and deterministic)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    ``None`` uses the ``RLNB_THREADS`` environment variable if set, else ``OMP_NUM_THREADS`` (which
    the kernels rlnb starts carry, see ``kernel_env``), else the number of CPUs this process may
    run on. Small tensors gain nothing from more threads than cores.
    """
    if n is None:
        env = os.environ.get("RLNB_THREADS") or os.environ.get("OMP_NUM_THREADS")
        n = int(env) if env else usable_cpus()
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int of threads, got {n!r}")
    torch.set_num_threads(n)
    return torch.get_num_threads()


# Threads for a notebook kernel's torch, measured on 2 cores (benchmarks/results/notebooks.md):
# with one thread every notebook kept its speed beside a busy process (at most 1.05× slower at
# ci); with two, notebook 04 went from 36 s alone to more than 300 s beside one (threads spinning
# while they wait), or took 84 s even alone with a passive wait (each small parallel region then
# waits for threads to wake). Two spinning threads are faster alone on larger tensors (the LM
# notebooks at default, about 1.4×): set OMP_NUM_THREADS or RLNB_THREADS on an idle machine.
KERNEL_THREADS = 1


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a notebook kernel starts with: ``base`` (default ``os.environ``) plus
    ``OMP_WAIT_POLICY=PASSIVE`` and ``OMP_NUM_THREADS=KERNEL_THREADS``, each only where ``base``
    does not set it already (a user's own choice wins).

    torch's bundled OpenMP reads both once, when torch is loaded, so they must be in the kernel's
    environment from its start (``rlnb.notebook.setup`` runs too late). With the default (active)
    wait policy, idle OpenMP threads spin for a while after every parallel region; beside another
    busy process they then take turns with it and a notebook can run many times slower (see
    ``benchmarks/results/notebooks.md``). One thread has no idle threads at all; PASSIVE makes
    them sleep for a reader who asks for more.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("OMP_NUM_THREADS", str(KERNEL_THREADS))
    return env
