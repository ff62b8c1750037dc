"""What a notebook calls in its first and last cells: ``setup``, ``profile`` and ``record``.

``record(name, value)`` is how a notebook reports the numbers its claims rest on. When the
notebook runs under ``rlnb run`` (or the test suite), the runner names a side file in the
environment variable ``RLNB_METRICS_FILE`` and every record is appended to it as one JSON line,
so metrics written before a failure survive it. In an interactive session the records are kept in
``RECORDS`` and printed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from numbers import Number

import torch

from rlnb.device import pick_device, seed_everything, set_threads

PROFILES = ("ci", "default", "large")
# Seconds per notebook on a 2-core CPU (DESIGN §4). Reported against, never enforced: a busy or
# slower machine is not a failing notebook. ``large`` is for a GPU and has no budget.
BUDGET_S = {"ci": 60.0, "default": 300.0}
METRICS_ENV = "RLNB_METRICS_FILE"
EXERCISE_METRIC = "exercise "  # rlnb.exercises.check records "exercise <name>" = its status
RECORDS: dict[str, float | int | bool | str] = {}


def in_colab() -> bool:
    """True inside Google Colab (where notebooks pip-install rlnb in their setup cell)."""
    return "google.colab" in sys.modules


def setup(seed: int = 0, device: str = "auto", threads: int | None = None) -> torch.device:
    """Seed everything, pick the device, set torch's threads, print versions; return the device."""
    import transformers

    from rlnb import __version__, plotting

    dev = pick_device(device)
    seed_everything(seed)
    n_threads = set_threads(threads)
    plotting.use_style()
    print(
        f"rlnb {__version__} · torch {torch.__version__} · transformers {transformers.__version__}"
        f" · python {platform.python_version()}\n"
        f"device: {dev} · threads: {n_threads} · seed: {seed}" + (" · colab" if in_colab() else "")
    )
    return dev


def profile(name: str, **sizes: dict) -> dict:
    """Pick the sizes of one profile: ``profile(PROFILE, ci={...}, default={...}, large={...})``.

    Every profile must be given, so a reader sees what each one means.
    """
    if name not in PROFILES:
        raise ValueError(f"PROFILE: expected one of {PROFILES}, got {name!r}")
    missing = [p for p in PROFILES if p not in sizes]
    if missing or set(sizes) - set(PROFILES):
        raise ValueError(f"sizes: expected exactly the profiles {PROFILES}, got {sorted(sizes)}")
    return dict(sizes[name])


def record(name: str, value, *, echo: bool = True) -> float | int | bool | str:
    """Store one metric a claim rests on, print it (unless ``echo=False``), and return it as a
    plain Python value.

    Tensors and NumPy scalars become Python numbers. A NaN is refused (``ValueError``): a claim
    cannot rest on it, and an ``assert x < threshold`` would then fail without saying why, while
    ``assert not x >= threshold`` would pass. ``±inf`` is kept (stored as ``None`` in JSON).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"value: expected a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    elif hasattr(value, "item") and not isinstance(value, str):  # NumPy scalars
        value = value.item()
    if not isinstance(value, (Number, str)):
        raise ValueError(f"value: expected a number, bool or string, got {type(value).__name__}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"value: {name} is NaN; a check cannot rest on it")
    RECORDS[name] = value
    path = os.environ.get(METRICS_ENV)
    if path:
        stored = None if isinstance(value, float) and not math.isfinite(value) else value
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "value": stored}) + "\n")
    if echo:
        print(
            f"record: {name} = {value:.6g}"
            if isinstance(value, float)
            else f"record: {name} = {value}"
        )
    return value


def skipped(name: str, reason: str) -> str:
    """Record that the check ``name`` did not run here, and why (e.g. ``"runs at default"``).

    A check that a profile cannot afford is never dropped silently: it records
    ``"skipped: <reason>"``, which the run's ``metrics.json`` and summary show, and runs where the
    reason says (``make test-default`` runs every notebook at ``default``).
    """
    if not isinstance(reason, str) or not reason:
        raise ValueError(f"reason: expected a non-empty string, got {reason!r}")
    return record(name, f"skipped: {reason}")


def read_records(path: str | os.PathLike) -> dict:
    """Read back a side file written by ``record`` (the last value of each name wins)."""
    out: dict = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    item = json.loads(line)
                    out[item["name"]] = item["value"]
    return out
