"""Notebook 08c's explorer: one held-out completion, step by step, with each model's score after
every step against the Monte Carlo value and the oracle."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlnb.widgets.base import explorer


def step_score_table(steps: list[str], scores: dict[str, list[float]]) -> pd.DataFrame:
    """The callback (pure): one row per written step (``steps``), one column per model or
    reference in ``scores`` (each a list with one score per step). Raises ``ValueError`` when a
    list's length differs from the number of steps."""
    for name, values in scores.items():
        if len(values) != len(steps):
            raise ValueError(
                f"scores[{name!r}]: expected {len(steps)} values (one per step), got {len(values)}"
            )
    return pd.DataFrame(scores, index=pd.Index(steps, name="step")).astype(float)


def step_score_explorer(rows: list[tuple[str, str, list[str], dict[str, list[float]]]]) -> W.VBox:
    """A slider over ``rows`` = (prompt, completion, steps, scores): bars of each score after
    every step of the chosen completion."""
    controls = {"index": W.IntSlider(value=0, min=0, max=len(rows) - 1, description="completion")}

    def draw(index):
        prompt, completion, steps, scores = rows[index]
        table = step_score_table(steps, scores)
        fig, ax = plt.subplots(figsize=(9, 3.2))
        width = 0.8 / len(table.columns)
        x = np.arange(len(table))
        for k, name in enumerate(table.columns):
            ax.bar(x + k * width - 0.4 + width / 2, table[name], width, label=name)
        ax.set_xticks(x, list(table.index))
        ax.set(ylim=(0, 1.05), ylabel="score after the step", title=f"{prompt}{completion}")
        ax.legend(
            fontsize=7, ncol=len(table.columns), loc="upper center", bbox_to_anchor=(0.5, -0.15)
        )
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="Step scores of one held-out completion")
