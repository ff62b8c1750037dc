"""Every notebook follows the series' rules, and runs at PROFILE="ci" with its Checks passing."""

import ast
import os
from pathlib import Path

import nbformat
import pytest

from rlnb import runner

NOTEBOOKS = runner.discover(Path(__file__).resolve().parent.parent / "notebooks")
CI_TIMEOUT = float(os.environ.get("RLNB_CI_TIMEOUT", 60))  # DESIGN §4: ci ≤ 60 s per notebook


def ids(infos):
    return [i.name for i in infos]


def test_series_is_not_empty():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_tour"


@pytest.mark.parametrize("info", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_structure(info):
    nb = nbformat.read(info.path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), (
        "committed with outputs: strip them"
    )
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"expected exactly one cell tagged 'parameters', found {len(params)}"
    names = {
        t.id
        for node in ast.parse(params[0].source).body
        if isinstance(node, ast.Assign)
        for t in node.targets
    }
    assert {"PROFILE", "SEED", "DEVICE"} <= names
    checks = [
        k for k, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Checks" in c.source
    ]
    assert checks, "no '## Checks' section"
    after = [c for c in nb.cells[checks[-1] :] if c.cell_type == "code"]
    assert after and after[-1] is code[-1], "the Checks code cell must be the last code cell"
    assert "rlnb.notebook.record(" in after[-1].source and "assert " in after[-1].source
    assert info.title and info.papers and info.runtime, (
        "title cell needs '# NN · Title', **Papers:** and **Runtime:**"
    )


@pytest.mark.notebook
@pytest.mark.parametrize("info", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_at_ci_profile(info, tmp_path):
    result = runner.run_notebook(info, tmp_path, profile="ci", timeout=CI_TIMEOUT, progress=False)
    if result.status != "ok":
        pytest.fail(
            f"{info.name} {result.status}: {result.error}\n{result.traceback}", pytrace=False
        )
    assert result.metrics, "the Checks cell recorded no metric"
