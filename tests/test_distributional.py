"""Distributional targets against plain loops written from the papers' formulas."""

import math

import pytest
import torch

from rlnb.estimators.distributional import (
    categorical_projection,
    decode,
    hl_gauss,
    symexp,
    symlog,
    two_hot,
)

SUPPORTS = {
    "even": torch.linspace(-10.0, 10.0, 51, dtype=torch.float64),
    "uneven": torch.tensor([-5.0, -2.0, -1.0, 0.0, 0.5, 3.0, 8.0], dtype=torch.float64),
}


def two_hot_loop(x, z):
    x = min(max(x, z[0]), z[-1])
    p = [0.0] * len(z)
    for i in range(len(z) - 1):
        if z[i] <= x <= z[i + 1]:
            w = (x - z[i]) / (z[i + 1] - z[i])
            p[i], p[i + 1] = 1 - w, w
            return p
    raise AssertionError


def c51_loop(p_next, r, gamma, z):
    """The projection as written in "A Distributional Perspective on RL" (Algorithm 1), with the
    usual fix for b landing exactly on an atom (l = u); evenly spaced atoms."""
    v_min, v_max, K = z[0], z[-1], len(z)
    dz = (v_max - v_min) / (K - 1)
    m = [0.0] * K
    for j in range(K):
        tz = min(max(r + gamma * z[j], v_min), v_max)
        b = (tz - v_min) / dz
        l, u = math.floor(b), math.ceil(b)
        if l == u:
            m[l] += p_next[j]
        else:
            m[l] += p_next[j] * (u - b)
            m[u] += p_next[j] * (b - l)
    return m


def hl_gauss_loop(x, edges, sigma):
    x = min(max(x, edges[0]), edges[-1])
    cdf = [0.5 * (1 + math.erf((e - x) / (sigma * math.sqrt(2)))) for e in edges]
    return [(cdf[k + 1] - cdf[k]) / (cdf[-1] - cdf[0]) for k in range(len(edges) - 1)]


@pytest.mark.parametrize("name", list(SUPPORTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_hot_matches_the_loop_and_decodes_back(name, seed):
    z = SUPPORTS[name]
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(64, generator=g, dtype=torch.float64) - 0.5) * 2.6 * z.abs().max()
    x[:4] = z[[0, 1, -2, -1]]  # exactly on atoms
    p = two_hot(x, z)
    expected = torch.tensor([two_hot_loop(v, z.tolist()) for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(decode(p, z), x.clamp(z[0], z[-1]))
    assert ((p > 0).sum(-1) <= 2).all() and torch.allclose(
        p.sum(-1), torch.ones(64, dtype=torch.float64)
    )


def test_two_hot_keeps_batch_shape_and_dtype():
    z = torch.linspace(-1, 1, 5)
    x = torch.rand(3, 4) * 2 - 1
    assert two_hot(x, z).shape == (3, 4, 5) and two_hot(x, z).dtype == torch.float32
    assert two_hot(x.bfloat16(), z).dtype == torch.float32  # accumulated in float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hl_gauss_matches_the_loop(seed):
    edges = torch.linspace(-4.0, 4.0, 17, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(32, generator=g, dtype=torch.float64) - 0.5) * 10
    sigma = 0.75 * (edges[1] - edges[0]).item()
    p = hl_gauss(x, edges, sigma)
    expected = torch.tensor(
        [hl_gauss_loop(v, edges.tolist(), sigma) for v in x.tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(-1), torch.ones(32, dtype=torch.float64))


def test_hl_gauss_decodes_close_to_the_target_inside_the_support():
    edges = torch.linspace(-4.0, 4.0, 41, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    x = torch.linspace(-3.0, 3.0, 25, dtype=torch.float64)  # ≥ 5σ from the edges
    p = hl_gauss(x, edges, sigma=0.15)
    assert (decode(p, centres) - x).abs().max() < 1e-6
    one_bin = hl_gauss(torch.tensor([0.1], dtype=torch.float64), edges, sigma=1e-4)
    assert one_bin.max() > 0.999 and centres[one_bin.argmax()] == pytest.approx(0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_categorical_projection_matches_the_c51_loop(seed):
    z = SUPPORTS["even"]
    g = torch.Generator().manual_seed(seed)
    B = 32
    p_next = torch.softmax(torch.randn(B, 51, generator=g, dtype=torch.float64), -1)
    r = torch.randn(B, generator=g, dtype=torch.float64) * 4
    r[0] = 0.0  # lands exactly on atoms
    terminated = torch.rand(B, generator=g) < 0.25
    terminated[0] = False
    discounts = 0.99 * (~terminated).double()
    discounts[0] = 1.0
    m = categorical_projection(p_next, r, discounts, z)
    expected = torch.tensor(
        [
            c51_loop(p_next[i].tolist(), r[i].item(), discounts[i].item(), z.tolist())
            for i in range(B)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(m, expected)
    torch.testing.assert_close(m.sum(-1), torch.ones(B, dtype=torch.float64))
    # a terminal step's target is the two-hot of the reward
    torch.testing.assert_close(m[terminated], two_hot(r[terminated], z))


def test_symlog_symexp_are_inverse():
    x = torch.tensor([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x)
    assert symlog(torch.tensor(0.5)).item() == pytest.approx(math.log1p(0.5))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="support: expected finite, strictly increasing"):
        two_hot(torch.zeros(2), torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="support: expected a 1-D"):
        two_hot(torch.zeros(2), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sigma"):
        hl_gauss(torch.zeros(2), torch.linspace(0, 1, 5), 0.0)
    with pytest.raises(ValueError, match="bin_edges"):
        hl_gauss(torch.zeros(2), torch.tensor([0.0, 0.0, 1.0]), 0.1)
    with pytest.raises(ValueError, match="probs_or_logits"):
        decode(torch.ones(3, 4) / 4, torch.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="next_probs, rewards, discounts"):
        categorical_projection(
            torch.ones(3, 5) / 5, torch.zeros(3), torch.zeros(2), torch.linspace(0, 1, 5)
        )
    logits = torch.randn(2, 5)
    torch.testing.assert_close(
        decode(logits, torch.linspace(0, 1, 5), logits=True),
        decode(torch.softmax(logits, -1), torch.linspace(0, 1, 5)),
    )


def test_categorical_projection_rejects_atoms_that_do_not_match_the_support():
    support = torch.linspace(-1.0, 1.0, 5)
    with pytest.raises(ValueError, match="next_probs: expected one probability per support atom"):
        categorical_projection(torch.full((2, 4), 0.25), torch.zeros(2), torch.ones(2), support)


def test_bf16_targets_come_out_in_float32_as_documented():
    support = torch.linspace(-1.0, 1.0, 5)
    x = torch.tensor([0.3, -0.7], dtype=torch.bfloat16)
    assert two_hot(x, support).dtype == torch.float32
    assert hl_gauss(x, torch.linspace(-1.0, 1.0, 6), 0.3).dtype == torch.float32
