"""rlnb: a course and research workbench on value functions in reinforcement learning.

``import rlnb`` is light; the submodules (``rlnb.widgets``, ``rlnb.envs``, ...) load on first use.
"""

import importlib

__version__ = "0.1.0"

from rlnb.device import pick_device, seed_everything, set_threads  # noqa: E402
from rlnb.notebook import record, setup  # noqa: E402

SUBMODULES = (
    "decoding",
    "device",
    "envs",
    "estimators",
    "models",
    "notebook",
    "plotting",
    "runner",
    "train",
    "widgets",
)

__all__ = [
    "__version__",
    "pick_device",
    "seed_everything",
    "set_threads",
    "record",
    "setup",
    *SUBMODULES,
]


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f"rlnb.{name}")
    raise AttributeError(f"module 'rlnb' has no attribute {name!r}")
