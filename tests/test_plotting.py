import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlnb.plotting import BAND_MIN_RUNS, mean_and_spread, spread_caption  # noqa: E402


def test_few_runs_are_drawn_one_by_one_many_as_a_band():
    x = np.arange(4)
    fig, ax = plt.subplots()
    line = mean_and_spread(ax, x, np.ones((3, 4)) * np.arange(3)[:, None], "three")
    np.testing.assert_allclose(line.get_ydata(), 1.0)
    assert len(ax.lines) == 1 + 3 and not ax.collections
    assert all(other.get_color() == line.get_color() for other in ax.lines)
    fig2, bx = plt.subplots()
    mean_and_spread(bx, x, np.random.default_rng(0).normal(size=(BAND_MIN_RUNS, 4)), "many")
    assert len(bx.lines) == 1 and len(bx.collections) == 1
    plt.close(fig)
    plt.close(fig2)


def test_spread_caption_says_what_is_drawn():
    assert spread_caption(1) == "1 run"
    assert spread_caption(3) == "3 runs, mean and each run"
    assert spread_caption(BAND_MIN_RUNS) == f"{BAND_MIN_RUNS} runs, mean ± s.e."
