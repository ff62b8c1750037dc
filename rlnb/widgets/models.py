"""Notebook 07b's explorer: how the value error of a learned model grows with the number of
distractor dimensions, for maximum likelihood against VaGraM."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlnb.widgets.base import explorer

METRICS = {"value_error": "value error  E|V(f̂(s,a)) − V(s')|", "regret": "planning regret",
           "mse": "state MSE  E‖f̂(s,a) − s'‖²"}  # fmt: skip


def distractor_errors(table: pd.DataFrame, distractors: int, metric: str = "value_error") -> dict:
    """The callback (pure). From ``table`` (rows of ``rlnb.train.vagram.distractor_sweep``):
    ``counts`` the swept distractor counts, ``curves`` ``{loss: [mean over seeds per count]}``
    and ``at`` ``{loss: mean at distractors}``."""
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
    counts = sorted(table["distractors"].unique().tolist())
    if distractors not in counts:
        raise ValueError(
            f"distractors: expected one of the swept counts {counts}, got {distractors}"
        )
    means = table.groupby(["loss", "distractors"])[metric].mean()
    curves = {loss: [float(means[loss, n]) for n in counts] for loss in means.index.levels[0]}
    return {"counts": counts, "curves": curves,
            "at": {loss: curve[counts.index(distractors)] for loss, curve in curves.items()}}  # fmt: skip


def distractor_explorer(table: pd.DataFrame, metric: str = "value_error") -> W.VBox:
    """A slider over the swept distractor counts and a choice of metric: the curve of each loss
    against the count, and bars at the chosen count."""
    counts = sorted(table["distractors"].unique().tolist())
    controls = {
        "distractors": W.SelectionSlider(options=counts, value=counts[len(counts) // 2],
                                         description="distractors", continuous_update=False),
        "metric": W.Dropdown(options=list(METRICS), value=metric, description="metric"),
    }  # fmt: skip
    colors = {"mle": "tab:blue", "vagram": "tab:orange"}

    def draw(distractors, metric):
        out = distractor_errors(table, distractors, metric)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), width_ratios=(2, 1))
        for loss, curve in out["curves"].items():
            ax1.plot(out["counts"], curve, "o-", color=colors.get(loss), label=loss)
        ax1.axvline(distractors, color="0.6", ls=":")
        ax1.set(xlabel="distractor dimensions", ylabel=METRICS[metric], yscale="log")
        ax1.legend()
        names = list(out["at"])
        ax2.bar(names, [out["at"][n] for n in names], color=[colors.get(n) for n in names])
        ax2.set(title=f"{distractors} distractors", yscale="log")
        ratio = out["at"].get("mle", np.nan) / out["at"].get("vagram", np.nan)
        fig.suptitle(f"MLE / VaGraM at {distractors}: {ratio:.1f}×", fontsize=10)
        fig.tight_layout()
        return fig

    return explorer(controls, draw, "VaGraM vs maximum likelihood, by distractor count")
