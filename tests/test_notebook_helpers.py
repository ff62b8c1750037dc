import json
import math

import numpy as np
import pytest
import torch

from rlnb import notebook


def test_profile_picks_one_and_requires_all():
    sizes = notebook.profile("ci", ci={"n": 1}, default={"n": 2}, large={"n": 3})
    assert sizes == {"n": 1}
    with pytest.raises(ValueError, match="PROFILE"):
        notebook.profile("huge", ci={}, default={}, large={})
    with pytest.raises(ValueError, match="sizes"):
        notebook.profile("ci", ci={}, default={})


def test_record_writes_side_file_and_converts(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    monkeypatch.setenv(notebook.METRICS_ENV, str(path))
    assert notebook.record("a", torch.tensor(0.5)) == 0.5
    assert notebook.record("b", np.float32(2.0)) == 2.0
    assert notebook.record("ok", True) is True
    notebook.record("a", 0.25)  # the last value wins
    notebook.record("inf", float("inf"))
    notebook.skipped("slow", "runs at default")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["name"] for x in lines] == ["a", "b", "ok", "a", "inf", "slow"]
    assert notebook.read_records(path) == {
        "a": 0.25,
        "b": 2.0,
        "ok": True,
        "inf": None,
        "slow": "skipped: runs at default",
    }
    assert math.isinf(notebook.RECORDS["inf"])


@pytest.mark.parametrize("value", [float("nan"), torch.tensor(float("nan")), np.float64("nan")])
def test_record_refuses_nan(value):
    with pytest.raises(ValueError, match="NaN"):
        notebook.record("x", value)


def test_skipped_needs_a_reason():
    with pytest.raises(ValueError, match="reason"):
        notebook.skipped("x", "")


def test_record_without_runner_keeps_in_memory(monkeypatch, capsys):
    monkeypatch.delenv(notebook.METRICS_ENV, raising=False)
    notebook.record("x", 3)
    assert notebook.RECORDS["x"] == 3
    assert "x = 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name,value", [("", 1.0), ("v", torch.ones(2)), ("v", [1, 2]), ("v", None)]
)
def test_record_rejects_bad_input(name, value):
    with pytest.raises(ValueError):
        notebook.record(name, value)


def test_read_records_missing_file(tmp_path):
    assert notebook.read_records(tmp_path / "none.jsonl") == {}


def test_setup_seeds_and_prints(capsys):
    dev = notebook.setup(seed=3, device="cpu", threads=1)
    assert dev == torch.device("cpu")
    a = torch.rand(1).item()
    notebook.setup(seed=3, device="cpu", threads=1)
    assert torch.rand(1).item() == a
    out = capsys.readouterr().out
    assert "torch" in out and "device: cpu" in out
    assert notebook.in_colab() is False
