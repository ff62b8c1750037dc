"""Every module of rlnb imports only its own layer and below (DESIGN §2, README "Layout").

Layers, bottom to top: 0 ``estimators``, ``device``, ``plotting``, ``metrics``, ``progress`` (they may import
each other); 1 ``envs``, ``models``; 2 ``decoding``; 3 ``train``, ``widgets`` (widgets may import
train); on top ``runner``, ``cli``, ``notebook``, ``exercises``, ``__init__``, ``__main__`` (they
may import each other). ``integrations`` stand beside: they import ``estimators`` only, and nothing imports them.
Within one package (``rlnb.train.*`` importing ``rlnb.train.*``) anything goes.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "rlnb"
TOP = 4
LAYERS = {
    **dict.fromkeys(("estimators", "device", "plotting", "metrics", "progress"), 0),
    **dict.fromkeys(("envs", "models"), 1),
    "decoding": 2,
    **dict.fromkeys(("train", "widgets"), 3),
    **dict.fromkeys(("runner", "cli", "notebook", "exercises", "__init__", "__main__"), TOP),
}
SAME_LAYER_OK = {0, TOP}  # layer 0 and the top may import each other; 1–3 only what is below


def part(module: str) -> str:
    """``rlnb.train.lm_rl`` → ``train``; ``rlnb`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def allowed(src: str, dst: str) -> bool:
    if src == dst:
        return True
    if src == "integrations":
        return dst == "estimators"
    if dst == "integrations" or dst not in LAYERS or src not in LAYERS:
        return False
    if src == "widgets" and dst == "train":
        return True
    if LAYERS[dst] == LAYERS[src]:
        return LAYERS[src] in SAME_LAYER_OK
    return LAYERS[dst] < LAYERS[src]


def imports(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of rlnb in ``path`` (at any depth, relative ones resolved)."""
    here = list(path.relative_to(package_root.parent).parts[:-1])  # the module's package
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..m import y
                base = here[: len(here) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, m) for line, m in found if m == "rlnb" or m.startswith("rlnb.")]


def violations(package_root: Path) -> list[str]:
    out = []
    for path in sorted(package_root.rglob("*.py")):
        src = (
            path.relative_to(package_root.parent).with_suffix("").parts[1]
        )  # train, runner, __init__
        for line, target in imports(path, package_root):
            dst = part(target)
            if not allowed(src, dst):
                out.append(
                    f"{path.relative_to(package_root.parent)}:{line} imports {target} ({src} → {dst})"
                )
    return out


def test_every_package_is_in_a_layer():
    names = {p.stem for p in ROOT.glob("*.py")} | {
        p.parent.name for p in ROOT.glob("*/__init__.py")
    }
    assert names - set(LAYERS) - {"integrations"} == set()


def test_no_module_imports_a_layer_above_it():
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    "module, source, bad",
    [
        ("estimators/x.py", "from rlnb.train.lm_rl import RLConfig", True),
        ("estimators/x.py", "import rlnb.envs.tabular", True),
        ("estimators/x.py", "from rlnb.device import pick_device", False),
        ("envs/x.py", "from rlnb.models import lm", True),
        ("models/x.py", "from rlnb.decoding.sampling import sample", True),
        ("decoding/x.py", "from rlnb.models.forward import prefill", False),
        ("train/x.py", "from rlnb.widgets import group", True),
        ("widgets/x.py", "from rlnb.train.bandit import train", False),
        ("train/x.py", "from rlnb.integrations import verl", True),
        ("integrations/x.py", "from rlnb.decoding import sample", True),
        ("integrations/x.py", "from rlnb.estimators import gae", False),
        ("envs/x.py", "def f():\n    from rlnb.train import dqn", True),  # inside a function too
        ("train/x.py", "from ..runner import run_notebook", True),  # a relative import
        ("runner.py", "from rlnb.notebook import record", False),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, module, source, bad):
    root = tmp_path / "rlnb"
    path = root / module
    path.parent.mkdir(parents=True, exist_ok=True)
    for d in {path.parent, root}:
        (d / "__init__.py").touch()
    path.write_text(source + "\n")
    found = violations(root)
    assert bool(found) == bad, found
    if bad:
        assert found[0].startswith(f"rlnb/{module}:") and "imports" in found[0]
