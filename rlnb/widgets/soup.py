"""Notebook 10c's explorer: the held-out loss of a weight average of two models, along the line
through them."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.models.lm import model_soup
from rlnb.train.lm_sft import answer_loss
from rlnb.widgets.base import explorer


def path_loss(model_a, model_b, alpha: float, input_ids, attention_mask, labels) -> float:
    """The callback (pure): the answer loss (``train.lm_sft.answer_loss``) of
    ``model_soup([model_a, model_b], [1 − alpha, alpha])`` on one batch; ``alpha`` 0 is
    ``model_a``, 1 is ``model_b``, ½ their soup, outside [0, 1] the line extrapolated."""
    soup = model_soup([model_a, model_b], [1 - alpha, alpha])
    with torch.no_grad():
        return float(answer_loss(soup, input_ids, attention_mask, labels))


def soup_path_explorer(model_a, model_b, batch, alphas, losses, alpha: float = 0.5) -> W.VBox:
    """Slide along the line from ``model_a`` (α = 0) to ``model_b`` (α = 1) and beyond: the loss
    at α on ``batch`` (``(input_ids, attention_mask, labels)``) over the precomputed path
    ``(alphas, losses)``."""
    alphas, losses = [float(a) for a in alphas], [float(v) for v in losses]
    if not {0.0, 1.0} <= set(alphas) or len(alphas) != len(losses):
        raise ValueError(
            f"alphas, losses: expected alphas including 0 and 1, one loss each, got {alphas}"
        )
    ends = [losses[alphas.index(0.0)], losses[alphas.index(1.0)]]
    controls = {
        "alpha": W.FloatSlider(
            value=alpha, min=-0.5, max=1.5, step=0.05, description="α", continuous_update=False
        )
    }

    def draw(alpha):
        loss = path_loss(model_a, model_b, alpha, *batch)
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ax.plot(alphas, losses, "o-", color="0.6", label="the path")
        ax.plot([0, 1], ends, "k:", lw=1)
        ax.plot([alpha], [loss], "o", color="C3", ms=10, label=f"α = {alpha:.2f}: {loss:.4f}")
        ax.set(xlabel="α  (0: SFT a, 1: SFT b)", ylabel="held-out answer loss")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="Along the line between two SFT models")
