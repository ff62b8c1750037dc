"""Notebook 08b's explorer: one prompt's rollout tree, nodes coloured by their Monte Carlo value,
one path highlighted with the value after each of its steps."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch

from rlnb.widgets.base import explorer


def tree_layout(tree, values: torch.Tensor, prompt: int = 0, leaf: int = 0) -> dict:
    """The callback (pure): a drawing of prompt ``prompt``'s subtree of ``tree`` and one path.

    Leaves are placed left to right in depth-first order, an inner node above the mean of its
    children, depth downwards. ``leaf`` picks the ``leaf``-th leaf (that order) whose path is
    highlighted. Returns ``nodes`` (tree indices, depth-first), ``x``, ``y``, ``value`` (from
    ``values``), ``edges`` (pairs of positions in ``nodes``), ``leaves``, ``path`` (tree indices
    from the root to the chosen leaf) and ``steps`` (each path node's segment text with its value).
    """
    if not 0 <= prompt < len(tree.prompts):
        raise ValueError(f"prompt: expected an index in [0, {len(tree.prompts) - 1}], got {prompt}")
    if values.shape != (len(tree),):
        raise ValueError(f"values: expected shape ({len(tree)},), got {tuple(values.shape)}")
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(tree.parent.tolist()):
        if parent >= 0:
            children.setdefault(parent, []).append(node)
    order, x, leaves = [], {}, []

    def visit(node: int) -> float:
        order.append(node)
        kids = children.get(node, [])
        if kids:
            x[node] = sum(visit(k) for k in kids) / len(kids)
        else:
            x[node] = float(len(leaves))
            leaves.append(node)
        return x[node]

    visit(prompt)
    if not 0 <= leaf < len(leaves):
        raise ValueError(f"leaf: expected an index in [0, {len(leaves) - 1}], got {leaf}")
    position = {n: i for i, n in enumerate(order)}
    path = tree.path(leaves[leaf])
    return {
        "nodes": order,
        "x": [x[n] for n in order],
        "y": [-int(tree.depth[n]) for n in order],
        "value": [float(values[n]) for n in order],
        "edges": [(position[int(tree.parent[n])], position[n]) for n in order if n != prompt],
        "leaves": leaves,
        "path": path,
        "steps": [
            (tree.prompts[prompt] if n == prompt else tree.text[n], float(values[n])) for n in path
        ],
    }


def plot_tree(layout: dict, ax, title: str = "") -> None:
    """Draw a ``tree_layout`` on ``ax``: edges, nodes coloured by value (0 red → 1 green), the
    highlighted path in black."""
    on_path = set(layout["path"])
    for a, b in layout["edges"]:
        bold = layout["nodes"][a] in on_path and layout["nodes"][b] in on_path
        ax.plot([layout["x"][a], layout["x"][b]], [layout["y"][a], layout["y"][b]],
                color="k" if bold else "0.75", lw=2.2 if bold else 0.8, zorder=1)  # fmt: skip
    points = ax.scatter(layout["x"], layout["y"], c=layout["value"], cmap="RdYlGn", vmin=0, vmax=1,
                        s=36, edgecolors="k", linewidths=0.3, zorder=2)  # fmt: skip
    ax.set(yticks=sorted(set(layout["y"])), xticks=[], ylabel="depth (steps)", title=title)
    ax.set_yticklabels([str(-d) for d in sorted(set(layout["y"]))])
    plt.colorbar(points, ax=ax, label="MC value of the prefix", fraction=0.04)


def tree_explorer(tree, values: torch.Tensor, prompt: int = 0) -> W.VBox:
    """A slider over prompt ``prompt``'s leaves: the tree coloured by ``values``, the chosen
    leaf's path in black, and its steps with the value after each."""
    n_leaves = len(tree_layout(tree, values, prompt)["leaves"])
    controls = {"leaf": W.IntSlider(value=0, min=0, max=n_leaves - 1, description="leaf")}

    def draw(leaf):
        layout = tree_layout(tree, values, prompt, leaf)
        fig, ax = plt.subplots(figsize=(9, 3.6))
        plot_tree(layout, ax, title=f"{tree.prompts[prompt]}  ({len(layout['leaves'])} leaves)")
        text = "  →  ".join(f"{s} [{v:.2f}]" for s, v in layout["steps"])
        ax.set_xlabel(text, fontsize=8)
        fig.tight_layout()
        return fig

    return explorer(controls, draw, title="One prompt's rollout tree")
