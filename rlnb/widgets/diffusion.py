"""Notebook 14's explorer: SVDD's temperature α and candidate count M against the samples it
draws, over the density of the reward-tilted target they should follow."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from rlnb.decoding.diffusion import svdd
from rlnb.envs.densities import GaussianMixture, tilted_density
from rlnb.widgets.base import explorer


def svdd_samples(model, dist: GaussianMixture, reward: Callable[[Tensor], Tensor], alpha: float,
                 M: int, n: int = 400, seed: int = 0) -> dict:  # fmt: skip
    """The callback (pure: a fixed ``seed``): ``n`` SVDD-PM samples of ``model`` at ``alpha`` and
    ``M`` (``x [n, 2]``), their mean reward and mean log-density under ``dist``, the calls per
    sample, and the tilted target's density on a grid (``density [120, 120]`` over [−3, 3]²)
    with its mean reward (``target_reward``, integrated on the grid)."""
    gen = torch.Generator().manual_seed(seed)
    out = svdd(model, reward, n, M, alpha, gen=gen)
    grid, density = tilted_density(dist, reward, alpha)
    weights = density.reshape(-1) / density.sum()  # the grid's cells, weighted by p*
    return {
        "x": out.x,
        "reward": reward(out.x).mean().item(),
        "log_density": dist.log_prob(out.x).mean().item(),
        "calls": out.calls,
        "density": density,
        "target_reward": (weights * reward(grid)).sum().item(),
    }


def svdd_explorer(model, dist: GaussianMixture, reward: Callable[[Tensor], Tensor],
                  log2_alpha: float = -1.0, M: int = 4) -> W.VBox:  # fmt: skip
    """Sliders for ``log2 α`` and ``M``; SVDD-PM's samples over the tilted target's density."""
    controls = {
        "log2_alpha": W.FloatSlider(value=log2_alpha, min=-3.0, max=2.0, step=0.5,
                                    description="log2 α", continuous_update=False),
        "M": W.IntSlider(value=M, min=1, max=32, description="M", continuous_update=False),
    }  # fmt: skip

    def draw(log2_alpha, M):
        alpha = 2.0**log2_alpha
        out = svdd_samples(model, dist, reward, alpha, M)
        fig, ax = plt.subplots(figsize=(5.2, 5))
        ax.imshow(out["density"].numpy(), origin="lower", extent=(-3, 3, -3, 3), cmap="Greys")
        x = out["x"].numpy()
        ax.scatter(x[:, 0], x[:, 1], s=5, color="tab:red", alpha=0.6, label="SVDD-PM samples")
        ax.set(xlim=(-3, 3), ylim=(-3, 3), xlabel="$x_1$", ylabel="$x_2$")
        ax.set_title(
            f"α = {alpha:.3g}, M = {M} ({out['calls']:.0f} calls per sample)\n"
            f"reward {out['reward']:.2f} (target {out['target_reward']:.2f}), "
            f"log p {out['log_density']:.2f}",
            fontsize=10,
        )
        ax.legend(loc="lower left", fontsize=8)
        return fig

    return explorer(controls, draw, "SVDD: the samples over the tilted target p(x) exp(r(x)/α)")
