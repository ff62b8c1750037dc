"""Notebook 09b's explorer: the policy that a KL penalty keeps near a reference, exactly, for one
prompt of the bandit — reverse KL (the penalty of GRPO's loss) against forward KL (RAPO's)."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from rlnb.widgets.base import explorer

DIRECTIONS = ("reverse", "forward")


def kl_regularized_optimum(ref_probs, rewards, beta: float, direction: str) -> np.ndarray:
    """The callback (pure): the policy π* maximising ``E_π[r] − β·KL`` over one prompt's answers.

    * ``reverse``, ``KL(π ‖ π_ref)``: ``π* ∝ π_ref · exp(r / β)`` — an answer the reference almost
      never gives stays rare unless ``r/β`` overcomes its log-probability.
    * ``forward``, ``KL(π_ref ‖ π)``: setting the gradient of the Lagrangian to 0 gives
      ``π*(a) = β π_ref(a) / (λ − r(a))`` with ``λ ∈ (max r, max r + β]`` the one that sums to 1
      (found by bisection): the best answers share the mass left over whatever their reference
      probability, since only ``λ − r`` is small there.

    ``ref_probs`` (positive, summing to 1) and ``rewards`` are 1-D of equal length; ``beta > 0``.
    """
    ref = np.asarray(ref_probs, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if ref.ndim != 1 or r.shape != ref.shape:
        raise ValueError(
            f"ref_probs, rewards: expected two 1-D arrays of equal length, got {ref.shape}, {r.shape}"
        )
    if (ref <= 0).any() or abs(ref.sum() - 1) > 1e-9:
        raise ValueError("ref_probs: expected positive probabilities summing to 1")
    if not beta > 0:
        raise ValueError(f"beta: expected a positive KL coefficient, got {beta!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
    if direction == "reverse":
        logits = np.log(ref) + r / beta
        p = np.exp(logits - logits.max())
        return p / p.sum()
    lo, hi = r.max(), r.max() + beta  # Σ β π_ref / (λ − r) falls from +∞ to ≤ 1 on (lo, hi]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (beta * ref / (mid - r)).sum() > 1 else (lo, mid)
    p = beta * ref / (hi - r)
    return p / p.sum()


def kl_optimum_explorer(ref_probs, rewards, beta: float = 0.2) -> W.VBox:
    """Slide the KL coefficient β and switch the direction: the exact optimum against the
    reference, and its probability of a right answer."""
    ref, r = np.asarray(ref_probs, dtype=np.float64), np.asarray(rewards, dtype=np.float64)
    controls = {
        "beta": W.FloatLogSlider(value=beta, base=10, min=-2, max=1, step=0.1, description="β",
                                 continuous_update=False),
        "direction": W.ToggleButtons(options=DIRECTIONS, value="forward", description="KL"),
    }  # fmt: skip

    def draw(beta, direction):
        p = kl_regularized_optimum(ref, r, beta, direction)
        right = float(p[r == r.max()].sum())
        x = np.arange(len(ref))
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ax.bar(x - 0.2, ref, 0.4, color="0.6", label="reference")
        ax.bar(x + 0.2, p, 0.4, color=np.where(r == r.max(), "C2", "C0"), label="optimum")
        ax.set(xlabel="answer (green: right)", ylabel="probability", yscale="log", ylim=(1e-5, 1.5),
               title=f"{direction} KL, β = {beta:.2g}: P(right answer) = {right:.3f}")  # fmt: skip
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="The optimum a KL penalty allows")
