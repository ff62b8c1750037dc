"""ipywidgets explorers. Each widget is a thin shell around a pure callback that the tests call
directly on a grid of slider values; the widget only draws what the callback returns."""

from rlnb.widgets.base import explorer
from rlnb.widgets.tour import tour_estimates, tour_explorer

__all__ = ["explorer", "tour_estimates", "tour_explorer"]
