import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("RLNB_THREADS", "2")

NOTEBOOK_SECONDS = pytest.StashKey[dict]()


@pytest.fixture
def notebook_seconds(request) -> dict:
    """Wall seconds of each notebook the session executed, reported by ``pytest_terminal_summary``."""
    return request.config.stash.setdefault(NOTEBOOK_SECONDS, {})


def pytest_terminal_summary(terminalreporter, config):
    """Each executed notebook's seconds against its ``ci`` budget: reported, never a failure."""
    from rlnb.notebook import BUDGET_S

    seconds = config.stash.get(NOTEBOOK_SECONDS, {})
    if not seconds:
        return
    budget = BUDGET_S["ci"]
    over = {name: s for name, s in seconds.items() if s > budget}
    terminalreporter.section(f"notebook budget: PROFILE='ci' ≤ {budget:g} s each (not enforced)")
    for name, s in seconds.items():
        flag = "  OVER BUDGET" if s > budget else ""
        terminalreporter.write_line(f"{name:<32} {s:7.1f} s{flag}")
    terminalreporter.write_line(
        f"{len(over)} of {len(seconds)} over budget; total {sum(seconds.values()):.0f} s"
    )
