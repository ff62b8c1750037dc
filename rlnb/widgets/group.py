"""Notebooks 09's and 10b's explorers: group advantages side by side, per-token weights of each loss
aggregation mode, and the per-token update of each estimator × policy loss (on a synthetic group,
and on one real batch as the policy moves away from the sampler)."""

from __future__ import annotations

import inspect

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rlnb.estimators.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    aggregate,
    compute_policy_loss,
    get_policy_loss,
)
from rlnb.estimators.registry import (
    AdvantageInputs,
    accepted_options,
    compute_advantages,
    outcome_estimators,
)
from rlnb.widgets.base import explorer


def parse_rewards(text: str) -> torch.Tensor:
    """``"1, 0, 0, 1"`` → a float tensor; a clear ``ValueError`` otherwise."""
    try:
        values = [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"rewards: expected numbers separated by commas or spaces, got {text!r}"
        ) from None
    if not values:
        raise ValueError("rewards: expected at least one number")
    return torch.tensor(values, dtype=torch.float64)


def group_advantage_table(
    rewards, estimators=None, qae_k: float = 0.4, reference: float = 0.5
) -> pd.DataFrame:
    """The callback (pure): advantages of one group under each estimator (default:
    ``outcome_estimators()``), one row per estimator, one column per response. PVPO uses the fixed
    ``reference`` value."""
    r = (
        parse_rewards(rewards)
        if isinstance(rewards, str)
        else torch.as_tensor(rewards, dtype=torch.float64)
    )
    inputs = AdvantageInputs(
        r, group_size=len(r), extras={"reference_values": torch.full_like(r, reference)}
    )
    rows = {}
    for name in estimators or outcome_estimators():
        adv = compute_advantages(name, inputs, **accepted_options(name, k=qae_k))
        rows[name] = adv[:, 0].numpy()
    return pd.DataFrame(rows, index=[f"r={v:g}" for v in r.tolist()]).T


def group_explorer(rewards: str = "1, 0, 0, 0", qae_k: float = 0.4) -> W.VBox:
    """Type a group's rewards, pick estimators, move QAE's k; bars of each estimator's advantages."""
    names = outcome_estimators()
    controls = {
        "rewards": W.Text(value=rewards, description="rewards", continuous_update=False),
        "estimators": W.SelectMultiple(
            options=names, value=names, description="estimators", rows=4
        ),
        "qae_k": W.FloatSlider(
            value=qae_k, min=0.05, max=0.95, step=0.05, description="QAE k", continuous_update=False
        ),
    }

    def draw(rewards, estimators, qae_k):
        if not estimators:
            return "pick at least one estimator"
        try:
            table = group_advantage_table(rewards, estimators, qae_k=qae_k)
        except ValueError as e:
            return str(e)
        ax = table.plot.bar(figsize=(10, 3.6), rot=0)
        ax.set(ylabel="advantage", title="advantages of each response, per estimator")
        ax.axhline(0, color="k", lw=0.8)
        ax.legend(title="response", fontsize=8)
        fig = ax.get_figure()
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="Group advantages")


def aggregation_weights(lengths, modes=AGG_MODES, norm: float | None = None) -> pd.DataFrame:
    """The callback (pure): ∂loss/∂(per-token loss) for one token of each response, when responses
    of the given ``lengths`` form a batch — the weight each mode gives a token, per response length."""
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths: expected positive ints, got {lengths}")
    L = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (L - n) for n in lengths])
    out = {}
    for mode in modes:
        v = torch.zeros(len(lengths), L, dtype=torch.float64, requires_grad=True)
        aggregate(v, mask, mode, norm).backward()
        out[mode] = v.grad[:, 0].numpy()
    return pd.DataFrame(out, index=pd.Index(lengths, name="response length"))


def aggregation_explorer(max_length: int = 64, n_responses: int = 8) -> W.VBox:
    """Responses of lengths spread up to ``max_length``; per-token weight against length per mode."""
    controls = {
        "max_length": W.IntSlider(
            value=max_length,
            min=4,
            max=512,
            step=4,
            description="max length",
            continuous_update=False,
        ),
        "n_responses": W.IntSlider(
            value=n_responses, min=2, max=32, description="responses", continuous_update=False
        ),
    }

    def draw(max_length, n_responses):
        lengths = np.unique(np.linspace(1, max_length, n_responses).round().astype(int))
        table = aggregation_weights(lengths)
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for mode in table.columns:
            ax.plot(table.index, table[mode] / table[mode].max(), "o-", label=mode)
        ax.set(
            xlabel="response length (tokens)",
            ylabel="per-token weight (÷ max)",
            xscale="log",
            title="who a token counts for",
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="Loss aggregation")


ZOO_OPTIONS = {"dro": {"beta": 0.1}}  # knobs a loss needs (dro has no default β)


def token_weights(loss: str, logp, old_logp, advantages, mask, **options) -> torch.Tensor:
    """The weight ``w_t`` of each token's ``∇log π_t`` in the update of the registered policy loss
    ``loss`` (its ``options``, ``agg`` among them; the loss's own default ``agg`` otherwise):
    ``−∂ℓ/∂logp_t`` divided by the weight the aggregation gives the token, ``∂ aggregate(x, mask,
    agg)/∂x_t`` (``1/N`` for ``token-mean``, ``1/(B·|y_i|)`` for ``seq-mean-token-mean``), so that
    on policy it is the token's advantage ``A_t`` in every aggregation; 0 off the mask. ``[B, L]``,
    float64."""
    agg = options.get("agg", inspect.signature(get_policy_loss(loss)).parameters["agg"].default)
    logp = logp.detach().double().requires_grad_()
    mask = mask.double()
    adv = advantages.double()
    compute_policy_loss(loss, logp, old_logp.double(), adv, mask, **options).loss.backward()
    x = torch.zeros_like(mask, requires_grad=True)
    aggregate(x, mask, agg).backward()
    share = torch.where(x.grad != 0, x.grad, torch.ones_like(x.grad))
    return (-logp.grad / share).detach() * mask


def loss_token_weights(
    rewards="1, 0, 0, 1",
    estimator: str = "grpo",
    loss: str = "ppo",
    drift: float = 0.3,
    seed: int = 0,
    **loss_options,
) -> dict:
    """The callback (pure): one group of responses, one per reward, of lengths 2, 4, 6, …;
    advantages from ``estimator``; the current policy's log-probs moved from the sampling policy's
    by ``drift`` × a fixed random pattern (``seed``; 0: on policy). Returns ``advantages`` ``[G]``,
    ``log_ratio`` and ``weights`` (DataFrames ``[G, L]``, NaN on padding): the weight of each
    token's ``∇log π`` in the update of ``loss`` (``ZOO_OPTIONS`` and ``loss_options`` its knobs,
    ``agg="token-mean"``), scaled by the token count — ``A_t`` for the plain policy gradient."""
    r = (
        parse_rewards(rewards)
        if isinstance(rewards, str)
        else torch.as_tensor(rewards, dtype=torch.float64)
    )
    if not drift >= 0:
        raise ValueError(f"drift: expected a non-negative log-ratio scale, got {drift!r}")
    G = len(r)
    lengths = torch.arange(1, G + 1) * 2
    mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).double()
    g = torch.Generator().manual_seed(seed)
    old = (-0.2 - 2.0 * torch.rand(mask.shape, generator=g, dtype=torch.float64)) * mask
    log_ratio = drift * torch.randn(mask.shape, generator=g, dtype=torch.float64) * mask
    logp = (old + log_ratio).clamp(max=-1e-6).requires_grad_()
    adv = compute_advantages(estimator, AdvantageInputs(r, group_size=G))[:, 0]
    options = {**ZOO_OPTIONS.get(loss, {}), **loss_options, "agg": "token-mean"}
    weights = token_weights(loss, logp, old, adv, mask, **options).masked_fill(
        mask == 0, float("nan")
    )
    index = pd.Index([f"r={v:g}, |y|={n}" for v, n in zip(r.tolist(), lengths.tolist())])

    def frame(t):
        return pd.DataFrame(t.detach().numpy(), index=index).rename_axis(columns="token")

    return {
        "advantages": adv.numpy(),
        "weights": frame(weights),
        "log_ratio": frame((logp - old).masked_fill(mask == 0, float("nan"))),
    }


def plot_token_weights(result: dict, ax, title: str = "", vmax: float | None = None):
    """A heatmap of ``loss_token_weights(...)["weights"]`` (red: the token's probability pushed
    up, blue: down) on ``ax``."""
    w = result["weights"]
    vmax = vmax or float(np.nanmax(np.abs(w.to_numpy()))) or 1.0
    im = ax.imshow(w.to_numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_yticks(range(len(w)), w.index, fontsize=7)
    ax.set(xlabel="token", title=title)
    return im


def loss_zoo_explorer(
    rewards: str = "1, 0, 0, 1", estimator: str = "grpo", loss: str = "ppo", drift: float = 0.3
) -> W.VBox:
    """Pick an estimator and a policy loss, move the policy away from the sampler: the weight of
    every token's ∇log π in the update, on one ragged group."""
    controls = {
        "rewards": W.Text(value=rewards, description="rewards", continuous_update=False),
        "estimator": W.Dropdown(
            options=outcome_estimators(), value=estimator, description="estimator"
        ),
        "loss": W.Dropdown(options=tuple(POLICY_LOSSES), value=loss, description="loss"),
        "drift": W.FloatSlider(
            value=drift, min=0.0, max=1.5, step=0.05, description="drift", continuous_update=False
        ),
    }

    def draw(rewards, estimator, loss, drift):
        try:
            result = loss_token_weights(rewards, estimator, loss, drift)
        except ValueError as e:
            return str(e)
        fig, ax = plt.subplots(figsize=(8, 2.8))
        im = plot_token_weights(result, ax, f"{estimator} × {loss}: weight of each token's ∇log π")
        fig.colorbar(im, ax=ax, label="weight (A_t for the plain policy gradient)")
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="Estimator × loss")


def batch_weights_explorer(
    snapshots: dict, old_logp, advantages, mask, labels, losses=("ppo", "gspo", "cispo", "sapo"),
    agg: str = "seq-mean-token-mean",
) -> W.VBox:  # fmt: skip
    """Pick a policy loss and how far the policy has moved from the sampler (``snapshots``:
    updates taken → current log-probs ``[B, L]`` of one real batch): the weight of every token's
    ∇log π in that loss's update (``token_weights``), one row per response (``labels``)."""
    if not snapshots:
        raise ValueError("snapshots: expected at least one {updates: log-probs} entry")
    if not losses:
        raise ValueError("losses: expected at least one registered policy loss")
    if len(labels) != len(mask):
        raise ValueError(f"labels: expected one per response ({len(mask)}), got {len(labels)}")
    steps = sorted(snapshots)
    controls = {
        "loss": W.Dropdown(options=tuple(losses), value=losses[0], description="loss"),
        "updates": W.SelectionSlider(
            options=steps, value=steps[0], description="updates", continuous_update=False
        ),
    }
    vmax = float(advantages.abs().max()) * 2 or 1.0

    def draw(loss, updates):
        w = token_weights(loss, snapshots[updates], old_logp, advantages, mask, agg=agg)
        weights = pd.DataFrame(w.masked_fill(mask == 0, float("nan")).numpy(), index=labels)
        fig, ax = plt.subplots(figsize=(8, 0.25 * len(w) + 1.2))
        title = f"{loss} after {updates} updates: weight of ∇log π_t"
        im = plot_token_weights({"weights": weights}, ax, title, vmax)
        fig.colorbar(im, ax=ax, label="weight of ∇log π_t (A_i on policy)")
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="Per-token weights of each loss on one batch")
