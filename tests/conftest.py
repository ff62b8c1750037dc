import os

# Before torch loads (its OpenMP reads these once): the test process and the notebook kernels it
# starts run with rlnb.device.kernel_env's settings, so a busy machine does not slow them down
# many times over (benchmarks/results/notebooks.md). A value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")

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
