"""The one way rlnb builds a widget: controls, an output area, and a redraw on every change."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display


def explorer(
    controls: dict[str, W.ValueWidget], draw: Callable[..., object], title: str = ""
) -> W.VBox:
    """Return a ``VBox`` of ``controls`` above an output area; ``draw(**values)`` renders into it.

    ``draw`` is called once immediately (so headless execution renders the widget's first state)
    and again whenever a control's value changes. It should build a matplotlib figure and return
    it (or print text). The returned box has ``.output`` and ``.redraw()`` for tests.
    """
    out = W.Output()

    def redraw(_change=None):
        values = {name: c.value for name, c in controls.items()}
        with out:
            out.clear_output(wait=True)
            fig = draw(**values)
            if fig is not None:
                display(fig)
                plt.close(fig)

    for c in controls.values():
        c.observe(redraw, names="value")
    header = [W.HTML(f"<b>{title}</b>")] if title else []
    box = W.VBox([*header, W.HBox(list(controls.values())), out])
    box.output, box.redraw = out, redraw
    redraw()
    return box
