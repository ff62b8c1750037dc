"""The set-up files agree with each other and with the README."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;@]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in ("lab", "dev"):
        wanted |= set(project["optional-dependencies"][extra])
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    listed = {
        ln.strip()[2:].strip().strip('"')
        for ln in pip_section.splitlines()
        if ln.strip().startswith("- ")
    }
    listed.discard("-e .")
    assert {_name(r) for r in listed} == {_name(r) for r in wanted}
    assert listed == wanted  # same version bounds too


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme
    assert "make run" in readme and "make lab" in readme


def test_readme_notebook_table_is_in_sync():
    from rlnb.cli import markdown_table
    from rlnb.runner import discover

    table = markdown_table(discover(ROOT / "notebooks"))
    assert table in (ROOT / "README.md").read_text(), (
        "README table is stale: paste `rlnb list --markdown`"
    )
