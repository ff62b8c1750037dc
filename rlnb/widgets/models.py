"""Notebook 07b's explorer: how the value error of a learned model grows with the number of
distractor dimensions, for maximum likelihood against VaGraM; notebook 07d's: how the regret of
a tree search grows as it expands fewer actions, for GrASP's affordances against random ones
and a grid."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlnb.widgets.base import explorer

METRICS = {"value_error": "value error  E|V(f̂(s,a)) − V(s')|", "regret": "planning regret",
           "mse": "state MSE  E‖f̂(s,a) − s'‖²"}  # fmt: skip


def sweep_curves(table: pd.DataFrame, x: str, group: str, metric: str, at) -> dict:
    """``counts`` the sorted values of column ``x``, ``curves`` ``{group: [mean of metric per
    count]}`` (means over seeds) and ``at`` ``{group: mean at x == at}``."""
    counts = sorted(table[x].unique().tolist())
    if at not in counts:
        raise ValueError(f"{x}: expected one of the swept values {counts}, got {at}")
    means = table.groupby([group, x])[metric].mean()
    curves = {g: [float(means[g, n]) for n in counts] for g in means.index.levels[0]}
    return {"counts": counts, "curves": curves,
            "at": {g: curve[counts.index(at)] for g, curve in curves.items()}}  # fmt: skip


def distractor_errors(table: pd.DataFrame, distractors: int, metric: str = "value_error") -> dict:
    """The callback (pure). From ``table`` (rows of ``rlnb.train.vagram.distractor_sweep``):
    ``counts`` the swept distractor counts, ``curves`` ``{loss: [mean over seeds per count]}``
    and ``at`` ``{loss: mean at distractors}``."""
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
    return sweep_curves(table, "distractors", "loss", metric, distractors)


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


def affordance_regrets(table: pd.DataFrame, k: int) -> dict:
    """The callback (pure). From ``table`` (rows of ``rlnb.train.affordances.affordance_sweep``):
    ``counts`` the swept affordance counts ``K``, ``curves`` ``{method: [regret per K]}`` and
    ``at`` ``{method: regret at k}``."""
    return sweep_curves(table, "k", "method", "regret", k)


def affordance_explorer(table: pd.DataFrame) -> W.VBox:
    """A slider over the swept affordance counts: each method's search regret against ``K`` (the
    actions expanded per node, the search budget), and bars at the chosen ``K``."""
    counts = sorted(table["k"].unique().tolist())
    controls = {"k": W.SelectionSlider(options=counts, value=counts[0], description="K",
                                       continuous_update=False)}  # fmt: skip
    colors = {"grasp": "tab:green", "random": "tab:gray", "grid": "tab:purple"}

    def draw(k):
        out = affordance_regrets(table, k)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), width_ratios=(2, 1))
        for method, curve in out["curves"].items():
            ax1.plot(out["counts"], curve, "o-", color=colors.get(method), label=method)
        ax1.axvline(k, color="0.6", ls=":")
        ax1.set(xlabel="affordances K (actions per node)", ylabel="regret  E[V*(s) − Q*(s, â)]",
                yscale="log")  # fmt: skip
        ax1.legend()
        names = list(out["at"])
        ax2.bar(names, [out["at"][n] for n in names], color=[colors.get(n) for n in names])
        ax2.set(title=f"K = {k}", yscale="log")
        fig.tight_layout()
        return fig

    return explorer(controls, draw, "Search regret at equal budget: GrASP vs random vs grid")
