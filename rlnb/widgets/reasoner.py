"""Notebook 08's explorer: pass@k against k, one curve per sampling temperature."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
import torch

from rlnb.decoding.selection import pass_at_k
from rlnb.widgets.base import explorer


def passk_table(n_correct: dict[float, torch.Tensor], n: int) -> pd.DataFrame:
    """The callback (pure): mean unbiased pass@k for k = 1, 2, 4, …, n per temperature, from the
    number of correct samples per prompt (``n_correct[temperature]``, each ``[P]``, out of ``n``).
    Rows: k; columns: temperature."""
    if not n_correct:
        raise ValueError("n_correct: expected at least one temperature")
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    table = {
        temperature: [pass_at_k(counts, n, k).mean().item() for k in ks]
        for temperature, counts in sorted(n_correct.items())
    }
    return pd.DataFrame(table, index=pd.Index(ks, name="k"))


def passk_explorer(n_correct: dict[float, torch.Tensor], n: int) -> W.VBox:
    """A temperature slider over precomputed counts: pass@k curves (the chosen one bold) and the
    distribution of per-prompt success rates at that temperature."""
    table = passk_table(n_correct, n)
    temperatures = list(table.columns)
    controls = {
        "temperature": W.SelectionSlider(
            options=temperatures, value=temperatures[len(temperatures) // 2], description="T"
        )
    }

    def draw(temperature):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4))
        for t in temperatures:
            bold = t == temperature
            ax.plot(table.index, table[t], "o-" if bold else "-", lw=2.5 if bold else 1,
                    alpha=1 if bold else 0.35, label=f"T={t:g}")  # fmt: skip
        ax.set(xscale="log", xlabel="k", ylabel="pass@k", ylim=(0, 1.02), title="pass@k against k")
        ax.set_xticks(table.index, [str(k) for k in table.index])
        ax.legend(fontsize=8)
        rates = n_correct[temperature].double() / n
        bx.hist(rates.numpy(), bins=min(n, 20), range=(0, 1))
        bx.set(xlabel="per-prompt success rate", ylabel="prompts", title=f"T={temperature:g}")
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="pass@k and temperature")
