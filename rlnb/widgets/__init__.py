"""ipywidgets explorers. Each widget is a thin shell around a pure callback that the tests call
directly on a grid of slider values; the widget only draws what the callback returns."""

from rlnb.widgets.base import explorer
from rlnb.widgets.diffusion import svdd_explorer, svdd_samples
from rlnb.widgets.gae import gae_example, gae_explorer, gridworld_task
from rlnb.widgets.group import (
    aggregation_explorer,
    aggregation_weights,
    batch_weights_explorer,
    group_advantage_table,
    group_explorer,
    loss_token_weights,
    loss_zoo_explorer,
    plot_token_weights,
    token_weights,
)
from rlnb.widgets.improve import edit_field, edit_field_explorer
from rlnb.widgets.kl import kl_optimum_explorer, kl_regularized_optimum
from rlnb.widgets.lambda_return import (
    lambda_return_example,
    lambda_return_explorer,
    lambda_return_weights,
)
from rlnb.widgets.models import (
    affordance_explorer,
    affordance_regrets,
    distractor_errors,
    distractor_explorer,
)
from rlnb.widgets.offline import offline_explorer, offline_values
from rlnb.widgets.planning import mdvi_curves, mdvi_explorer
from rlnb.widgets.reasoner import passk_explorer, passk_table
from rlnb.widgets.soft import soft_explorer, soft_values
from rlnb.widgets.soup import path_loss, soup_path_explorer
from rlnb.widgets.stitching import stitching_explorer, stitching_returns
from rlnb.widgets.tour import tour_estimates, tour_explorer
from rlnb.widgets.tree import plot_tree, tree_explorer, tree_layout
from rlnb.widgets.value_losses import hl_gauss_explorer, target_distributions
from rlnb.widgets.verifier import step_score_explorer, step_score_table

__all__ = [
    "aggregation_explorer",
    "aggregation_weights",
    "batch_weights_explorer",
    "affordance_explorer",
    "affordance_regrets",
    "distractor_errors",
    "distractor_explorer",
    "edit_field",
    "edit_field_explorer",
    "explorer",
    "svdd_explorer",
    "svdd_samples",
    "group_advantage_table",
    "group_explorer",
    "loss_token_weights",
    "loss_zoo_explorer",
    "plot_token_weights",
    "token_weights",
    "gae_example",
    "gae_explorer",
    "gridworld_task",
    "kl_optimum_explorer",
    "kl_regularized_optimum",
    "lambda_return_example",
    "lambda_return_explorer",
    "lambda_return_weights",
    "mdvi_curves",
    "offline_explorer",
    "offline_values",
    "plot_tree",
    "step_score_explorer",
    "step_score_table",
    "tree_explorer",
    "tree_layout",
    "mdvi_explorer",
    "passk_explorer",
    "passk_table",
    "path_loss",
    "soft_explorer",
    "soft_values",
    "soup_path_explorer",
    "stitching_explorer",
    "stitching_returns",
    "hl_gauss_explorer",
    "target_distributions",
    "tour_estimates",
    "tour_explorer",
]
