"""One consistent matplotlib style, and the one plot every notebook draws: mean ± spread over seeds."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.ticker
import numpy as np
import pandas as pd

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


def plain_log_ticks(axis, ticks) -> None:
    """Label a log-scaled ``ax.xaxis`` or ``ax.yaxis`` at ``ticks`` as plain numbers, and drop the
    minor labels (matplotlib's ``2×10⁻¹, 3×10⁻¹, …`` overlap on short ranges)."""
    axis.set_ticks(list(ticks), [f"{t:g}" for t in ticks])
    axis.set_minor_formatter(mpl.ticker.NullFormatter())


# From this many runs on the spread is drawn as a ± s.e. band; below it, every run is drawn.
BAND_MIN_RUNS = 5


def spread_caption(n_runs: int) -> str:
    """What ``mean_and_spread`` draws around the mean for ``n_runs`` runs, for a title or caption."""
    if n_runs == 1:
        return "1 run"
    return f"{n_runs} runs, " + ("mean ± s.e." if n_runs >= BAND_MIN_RUNS else "mean and each run")


def rolling_mean(x, window: int = 10) -> np.ndarray:
    """The trailing mean of ``x`` over ``window`` points (fewer at the start; NaNs skipped, as
    pandas' ``rolling(window, min_periods=1)``): a training curve smoothed for plotting."""
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window: expected an integer ≥ 1, got {window!r}")
    x = pd.Series(np.asarray(x, dtype=np.float64))
    return x.rolling(window, min_periods=1).mean().to_numpy()


def mean_and_spread(ax, x, runs, label: str, color=None, alpha: float = 0.2, ls=None):
    """Plot the mean over runs (axis 0 of ``runs``) and its spread.

    With at least ``BAND_MIN_RUNS`` runs the spread is a shaded band of ± one standard error; with
    fewer, a standard error says little, so each run is drawn as a thin line of the mean's colour.
    """
    runs = np.asarray(runs, dtype=float)
    if runs.ndim == 1:
        runs = runs[None]
    mean = runs.mean(0)
    line = ax.plot(x, mean, label=label, color=color, ls=ls)[0]
    if runs.shape[0] >= BAND_MIN_RUNS:
        se = runs.std(0, ddof=1) / np.sqrt(runs.shape[0])
        ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=alpha, linewidth=0)
    elif runs.shape[0] > 1:
        for run in runs:
            ax.plot(x, run, color=line.get_color(), lw=0.6, alpha=0.5, ls=ls)
    return line
