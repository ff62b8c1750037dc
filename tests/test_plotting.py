import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from rlnb.plotting import (  # noqa: E402
    BAND_MIN_RUNS,
    mean_and_spread,
    plain_log_ticks,
    rolling_mean,
    spread_caption,
)


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


def test_plain_log_ticks_label_plain_numbers_only():
    fig, ax = plt.subplots()
    ax.plot([1, 30], [0.2, 0.7])
    ax.set(xscale="log", yscale="log")
    plain_log_ticks(ax.yaxis, [0.2, 0.5])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.2", "0.5"]
    assert all(t.get_text() == "" for t in ax.yaxis.get_minorticklabels())
    plt.close(fig)


@pytest.mark.parametrize("window", [1, 3, 10])
def test_rolling_mean_is_the_trailing_mean_by_a_loop(window):
    x = np.random.default_rng(window).normal(size=25)
    expected = [x[max(0, i - window + 1) : i + 1].mean() for i in range(len(x))]
    np.testing.assert_allclose(rolling_mean(x, window), expected)
    np.testing.assert_allclose(
        rolling_mean(pd.Series(x), window), pd.Series(x).rolling(window, min_periods=1).mean()
    )


def test_rolling_mean_skips_nan_and_refuses_a_bad_window():
    np.testing.assert_allclose(rolling_mean([1.0, np.nan, 3.0, 5.0], 2), [1.0, 1.0, 3.0, 4.0])
    for window in (0, 2.5):
        with pytest.raises(ValueError, match="window"):
            rolling_mean([1.0, 2.0], window)
