"""One consistent matplotlib style, and the one plot every notebook draws: mean ± spread over seeds."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np

STYLE = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
}


def use_style() -> None:
    """Apply rlnb's matplotlib style (called by ``rlnb.notebook.setup``)."""
    mpl.rcParams.update(STYLE)


def mean_and_spread(ax, x, runs, label: str, color=None, alpha: float = 0.2):
    """Plot the mean over runs (axis 0 of ``runs``) with a shaded band of ± one standard error."""
    runs = np.asarray(runs, dtype=float)
    if runs.ndim == 1:
        runs = runs[None]
    mean = runs.mean(0)
    line = ax.plot(x, mean, label=label, color=color)[0]
    if runs.shape[0] > 1:
        se = runs.std(0, ddof=1) / np.sqrt(runs.shape[0])
        ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=alpha, linewidth=0)
    return line
