"""Notebook 03's explorer: MDVI's KL and entropy weights against plain sampled value iteration."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd

from rlnb.envs.tabular import garnet
from rlnb.train.planning import mdvi
from rlnb.widgets.base import explorer


def mdvi_curves(
    kl: float, entropy: float, iterations: int = 300, seeds=(0, 1, 2), mdp_seed: int = 0
) -> pd.DataFrame:
    """The callback (pure): mean ``‖V* − V^{π_k}‖∞`` over ``seeds`` against generative-model
    samples, for sampled VI and for MDVI(``kl``, ``entropy``), on a 20-state, 4-action Garnet."""
    mdp = garnet(20, 4, 4, seed=mdp_seed, gamma=0.9)
    vi = mdvi(mdp, 0.0, 0.0, iterations, seeds=seeds)
    md = mdvi(mdp, kl, entropy, iterations, seeds=seeds)
    return pd.DataFrame(
        {"VI": vi.errors.mean(0).numpy(), "MDVI": md.errors.mean(0).numpy()},
        index=pd.Index(vi.samples.numpy(), name="samples"),
    )


def mdvi_explorer(kl: float = 1.0, entropy: float = 0.0, iterations: int = 300) -> W.VBox:
    """Sliders for MDVI's KL weight λ and entropy weight κ; the error curves on log-log axes."""
    slider = dict(min=0.0, max=2.0, step=0.05, continuous_update=False, readout_format=".2f")
    controls = {
        "kl": W.FloatSlider(value=kl, description="KL λ", **slider),
        "entropy": W.FloatSlider(value=entropy, description="entropy κ", **slider),
    }

    def draw(kl, entropy):
        table = mdvi_curves(kl, entropy, iterations)
        alpha = kl / (kl + entropy) if kl + entropy > 0 else 0.0
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        ax.loglog(table.index, table["VI"].clip(lower=1e-4), label="sampled VI")
        ax.loglog(table.index, table["MDVI"].clip(lower=1e-4), label=f"MDVI (α = {alpha:.2f})")
        ax.set(xlabel="generative-model samples", ylabel="‖V* − V^π‖∞ (mean of 3 seeds)")
        ax.legend()
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="MDVI: KL and entropy weights")
