from rlnb.progress import PROGRESS_ENV, progress_bar


def test_bar_shows_unless_disabled_or_headless(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert not progress_bar(range(2), desc="x").disable
    assert progress_bar(range(2), desc="x", enabled=False).disable
    monkeypatch.setenv(PROGRESS_ENV, "0")
    bar = progress_bar(range(2), desc="x")
    assert bar.disable and list(bar) == [0, 1]  # silent, but still iterates
