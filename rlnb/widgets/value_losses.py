"""Notebook 04's explorer: the HL-Gauss target distribution as σ and the bin width change."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
import torch

from rlnb.estimators.distributional import decode, hl_gauss, two_hot
from rlnb.widgets.base import explorer


def target_distributions(
    x: float, sigma_ratio: float, n_bins: int, v_min: float = -5.0, v_max: float = 5.0
) -> pd.DataFrame:
    """The callback (pure): the two-hot and HL-Gauss targets for the scalar ``x`` over ``n_bins``
    equal bins of ``[v_min, v_max]`` (σ = ``sigma_ratio`` × bin width), indexed by bin centre."""
    edges = torch.linspace(v_min, v_max, n_bins + 1, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    target = torch.tensor(float(x), dtype=torch.float64)
    sigma = sigma_ratio * (v_max - v_min) / n_bins
    return pd.DataFrame(
        {
            "two-hot": two_hot(target, centres).numpy(),
            "HL-Gauss": hl_gauss(target, edges, sigma).numpy(),
        },
        index=pd.Index(centres.numpy(), name="bin centre"),
    )


def hl_gauss_explorer(x: float = 1.3, sigma_ratio: float = 0.75, n_bins: int = 21) -> W.VBox:
    """Sliders for the target value, σ (in bin widths) and the number of bins."""
    controls = {
        "x": W.FloatSlider(
            value=x, min=-6.0, max=6.0, step=0.1, description="target", continuous_update=False
        ),
        "sigma_ratio": W.FloatSlider(
            value=sigma_ratio,
            min=0.1,
            max=3.0,
            step=0.05,
            description="σ / bin",
            continuous_update=False,
        ),
        "n_bins": W.IntSlider(
            value=n_bins, min=5, max=101, step=2, description="bins", continuous_update=False
        ),
    }

    def draw(x, sigma_ratio, n_bins):
        table = target_distributions(x, sigma_ratio, n_bins)
        centres = torch.tensor(table.index.values)
        width = float(centres[1] - centres[0])
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(table.index, table["HL-Gauss"], width=width * 0.9, alpha=0.6, label="HL-Gauss")
        ax.bar(table.index, table["two-hot"], width=width * 0.4, alpha=0.8, label="two-hot")
        mean = decode(torch.tensor(table["HL-Gauss"].values), centres).item()
        ax.axvline(x, color="k", ls=":", label=f"target {x:+.2f}")
        ax.axvline(mean, color="C0", ls="--", label=f"HL-Gauss mean {mean:+.2f}")
        ax.set(xlabel="value", ylabel="probability", title="categorical targets for one scalar")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="HL-Gauss: σ and bin width")
