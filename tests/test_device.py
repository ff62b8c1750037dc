import random

import numpy as np
import pytest
import torch

from rlnb.device import pick_device, seed_everything, set_threads


def test_pick_device_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    auto = pick_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "", 3, "tpu:0"])
def test_pick_device_rejects_unknown(bad):
    with pytest.raises(ValueError, match="device"):
        pick_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_unavailable_cuda_is_an_error():
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(7)
    a = draw()
    seed_everything(7)
    assert draw() == a
    seed_everything(8)
    assert draw() != a
    g = seed_everything(7)
    assert (
        torch.rand(1, generator=g).item()
        == torch.rand(1, generator=torch.Generator().manual_seed(7)).item()
    )


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        monkeypatch.delenv("RLNB_THREADS", raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads() == 1  # a kernel rlnb started carries OMP_NUM_THREADS
        monkeypatch.setenv("RLNB_THREADS", "2")
        assert set_threads() == 2  # RLNB_THREADS wins
        with pytest.raises(ValueError, match="n"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
