"""Every notebook follows the series' rules, and runs at PROFILE="ci" with its Checks passing."""

import ast
import os

import nbformat
import pytest

from rlnb import runner

NOTEBOOKS = runner.discover(runner.notebooks_dir())  # $RLNB_NOTEBOOKS, else ./notebooks
# A hang guard, not the budget: the 60 s ci budget (rlnb.notebook.BUDGET_S) is reported at the end
# of the session (conftest.py), since a busy or slower machine is not a failing notebook.
CI_TIMEOUT = float(os.environ.get("RLNB_CI_TIMEOUT", 600))


def ids(infos):
    return [i.name for i in infos]


def test_series_is_not_empty():
    assert NOTEBOOKS and NOTEBOOKS[0].id == "00"


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
    assert info.title and info.papers and info.runtime and info.builds_on, (
        "title cell needs '# NN · Title', **Papers:**, **Runtime:** and **Builds on:**"
    )


def gated_asserts_say_when_skipped(source: str) -> list[str]:
    """The conditions of ``if`` statements in a Checks cell with an ``assert`` in one branch and no
    call of ``rlnb.notebook.skipped`` in the other (a check that silently does not run)."""

    def has(branch, test):
        return any(test(n) for stmt in branch for n in ast.walk(stmt))

    def is_assert(n):
        return isinstance(n, ast.Assert)

    def is_skip(n):
        return isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "skipped"

    return [
        ast.unparse(node.test)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.If)
        and (
            (has(node.body, is_assert) and not has(node.orelse, is_skip))
            or (has(node.orelse, is_assert) and not has(node.body, is_skip))
        )
    ]


def test_gated_assert_detector():
    gated = "if x:\n    assert y\n"
    said = "if x:\n    assert y\nelse:\n    rlnb.notebook.skipped('y', 'runs at default')\n"
    assert gated_asserts_say_when_skipped(gated) == ["x"]
    assert gated_asserts_say_when_skipped(said) == []
    flipped = "if ci:\n    rlnb.notebook.skipped('y', 'runs at default')\nelse:\n    assert y\n"
    assert gated_asserts_say_when_skipped(flipped) == []


@pytest.mark.parametrize("info", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_check_is_skipped_silently(info):
    nb = nbformat.read(info.path, as_version=4)
    checks = [c for c in nb.cells if c.cell_type == "code"][-1]
    silent = gated_asserts_say_when_skipped(checks.source)
    assert not silent, f"asserts under {silent} need an else branch calling rlnb.notebook.skipped"


@pytest.mark.parametrize("info", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_builds_on_names_earlier_notebooks(info):
    earlier = {i.id for i in NOTEBOOKS if i.order < info.order}
    named = [] if info.builds_on == "—" else [s.strip() for s in info.builds_on.split(",")]
    assert set(named) <= earlier, (
        f"**Builds on:** {info.builds_on!r} must list earlier notebook ids (comma-separated) or '—'"
    )


@pytest.mark.notebook
@pytest.mark.parametrize("info", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_at_ci_profile(info, tmp_path, notebook_seconds):
    result = runner.run_notebook(info, tmp_path, profile="ci", timeout=CI_TIMEOUT, progress=False)
    notebook_seconds[info.name] = result.seconds
    if result.status != "ok":
        pytest.fail(
            f"{info.name} {result.status}: {result.error}\n{result.traceback}", pytrace=False
        )
    assert result.metrics, "the Checks cell recorded no metric"
