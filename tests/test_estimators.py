"""rlnb.estimators against the plain loops, TorchRL, and rlax's published numbers."""

import math

import pytest
import torch

from rlnb import estimators as E
from rlnb.estimators import reference as ref


def episode_data(shape, seed, dtype=torch.float64, p_term=0.05, p_trunc=0.05):
    """Random rewards/values and random, disjoint terminated/truncated flags (time last)."""
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    term, trunc = u < p_term, (u >= p_term) & (u < p_term + p_trunc)
    tlp, blp = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.5 for _ in range(2))
    return {k: x.to(dtype) if x.is_floating_point() else x for k, x in
            dict(rewards=r, values=v, next_values=nv, terminated=term, truncated=trunc,
                 target_logp=tlp, behavior_logp=blp).items()}  # fmt: skip


def fast(name, d, **kw):
    keys = {
        "discounted_returns": ["rewards", "next_values", "terminated", "truncated"],
        "n_step_returns": ["rewards", "next_values", "terminated", "truncated"],
        "lambda_returns": ["rewards", "next_values", "terminated", "truncated"],
        "gae": ["rewards", "values", "next_values", "terminated", "truncated"],
        "vtrace": [
            "rewards",
            "values",
            "next_values",
            "terminated",
            "truncated",
            "target_logp",
            "behavior_logp",
        ],
    }[name]
    return getattr(E, name)(*(d[k] for k in keys), **kw)


def loop(name, d, **kw):
    kw = dict(kw)
    if name == "discounted_returns":
        return ref.discounted_returns_loop(
            d["rewards"], d["next_values"], d["terminated"], d["truncated"], **kw
        )
    if name == "n_step_returns":
        return ref.n_step_returns_loop(
            d["rewards"], d["next_values"], d["terminated"], d["truncated"], **kw
        )
    if name == "lambda_returns":
        return ref.lambda_returns_loop(
            d["rewards"], d["next_values"], d["terminated"], d["truncated"], **kw
        )
    if name == "gae":
        return ref.gae_loop(
            d["rewards"], d["values"], d["next_values"], d["terminated"], d["truncated"], **kw
        )
    return ref.vtrace_loop(*(d[k] for k in ("rewards", "values", "next_values", "terminated", "truncated",
                                               "target_logp", "behavior_logp")), **kw)  # fmt: skip


CASES = [
    ("discounted_returns", {"gamma": 0.97}),
    ("n_step_returns", {"gamma": 0.9, "n": 1}),
    ("n_step_returns", {"gamma": 0.95, "n": 5}),
    ("n_step_returns", {"gamma": 1.0, "n": 64}),
    ("lambda_returns", {"gamma": 0.99, "lmbda": 0.9}),
    ("lambda_returns", {"gamma": 1.0, "lmbda": 0.0}),
    ("gae", {"gamma": 0.99, "lmbda": 0.95}),
    ("gae", {"gamma": 0.9, "lmbda": 1.0}),
    ("vtrace", {"gamma": 0.99, "lmbda": 1.0, "rho_clip": 1.0, "c_clip": 1.0}),
    ("vtrace", {"gamma": 0.95, "lmbda": 0.9, "rho_clip": 2.0, "c_clip": 0.5}),
]


def as_tuple(x):
    return tuple(x) if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_matches_loop_float64(name, kw, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (int(torch.randint(1, 5, (), generator=g)), int(torch.randint(1, 70, (), generator=g)))
    d = episode_data(shape, seed, p_term=0.1 * seed, p_trunc=0.05 * seed)
    for a, b in zip(as_tuple(fast(name, d, **kw)), as_tuple(loop(name, d, **kw))):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_fast_float32_within_1e5_relative_of_float64_loop(name, kw):
    d64 = episode_data((8, 300), seed=5)
    d32 = {k: x.float() if x.is_floating_point() else x for k, x in d64.items()}
    for a, b in zip(as_tuple(fast(name, d32, **kw)), as_tuple(loop(name, d64, **kw))):
        assert a.dtype == torch.float32
        scale = b.abs().max().item()
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name,kw", CASES[:1] + CASES[4:])
def test_time_dim_and_extra_batch_dims(name, kw):
    d = episode_data((3, 4, 50), seed=7)  # [B1, B2, T]
    expected = as_tuple(fast(name, d, **kw))
    moved = {k: x.movedim(-1, 1) for k, x in d.items()}  # [B1, T, B2]
    for a, b in zip(as_tuple(fast(name, moved, time_dim=1, **kw)), expected):
        torch.testing.assert_close(a, b.movedim(-1, 1))
    first = {k: x.movedim(-1, 0) for k, x in d.items()}  # [T, B1, B2]
    for a, b in zip(as_tuple(fast(name, first, time_dim=0, **kw)), expected):
        torch.testing.assert_close(a, b.movedim(-1, 0))


@pytest.mark.parametrize(
    "name", ["discounted_returns", "lambda_returns", "gae", "vtrace", "n_step_returns"]
)
def test_tensor_gamma_and_lambda(name):
    d = episode_data((4, 40), seed=3)
    g = torch.Generator().manual_seed(0)
    gamma = 0.8 + 0.2 * torch.rand(4, 40, generator=g, dtype=torch.float64)  # varies along time
    kw = {"gamma": gamma}
    if name in ("lambda_returns", "gae", "vtrace"):
        kw["lmbda"] = torch.tensor([[0.0], [0.5], [0.9], [1.0]], dtype=torch.float64)  # per row
    if name == "n_step_returns":
        kw["n"] = 4
    for a, b in zip(as_tuple(fast(name, d, **kw)), as_tuple(loop(name, d, **kw))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_in_same_dtype_out(dtype):
    d = episode_data((2, 100), seed=1)
    d16 = {k: x.to(dtype) if x.is_floating_point() else x for k, x in d.items()}
    adv, ret = E.gae(
        *(d16[k] for k in ("rewards", "values", "next_values", "terminated", "truncated")),
        0.99,
        0.95,
    )
    assert adv.dtype == ret.dtype == dtype
    d32 = {k: x.to(dtype).float() if x.is_floating_point() else x for k, x in d.items()}
    expected = E.gae(
        *(d32[k] for k in ("rewards", "values", "next_values", "terminated", "truncated")),
        0.99,
        0.95,
    )
    torch.testing.assert_close(
        adv, expected.advantages.to(dtype)
    )  # computed in float32, rounded once


def test_lambda_returns_equal_gae_returns_for_a_consistent_critic():
    d = episode_data((3, 80), seed=4)
    # make next_values[t] = values[t+1] inside episodes
    nv = torch.cat([d["values"][:, 1:], d["next_values"][:, -1:]], 1)
    d["next_values"] = torch.where(d["terminated"] | d["truncated"], d["next_values"], nv)
    lam = fast("lambda_returns", d, gamma=0.9, lmbda=0.7)
    torch.testing.assert_close(lam, fast("gae", d, gamma=0.9, lmbda=0.7).returns)
    # λ = 1 is the bootstrapped Monte Carlo return; n ≥ T n-step returns are too
    mc = fast("discounted_returns", d, gamma=0.9)
    torch.testing.assert_close(fast("lambda_returns", d, gamma=0.9, lmbda=1.0), mc)
    torch.testing.assert_close(fast("n_step_returns", d, gamma=0.9, n=200), mc)
    # λ = 0 and n = 1 are the TD(0) target
    td0 = d["rewards"] + 0.9 * ~d["terminated"] * d["next_values"]
    torch.testing.assert_close(fast("lambda_returns", d, gamma=0.9, lmbda=0.0), td0)
    torch.testing.assert_close(fast("n_step_returns", d, gamma=0.9, n=1), td0)
    torch.testing.assert_close(E.td_errors(d["rewards"], d["values"], d["next_values"], d["terminated"], 0.9),
                               td0 - d["values"])  # fmt: skip


def test_vtrace_on_policy_without_clipping_is_gae_target():
    d = episode_data((3, 60), seed=8)
    d["behavior_logp"] = d["target_logp"]
    vt = fast("vtrace", d, gamma=0.95, lmbda=0.8, rho_clip=math.inf, c_clip=math.inf)
    g = fast("gae", d, gamma=0.95, lmbda=0.8)
    torch.testing.assert_close(vt.returns, g.returns)


def test_truncation_is_not_termination():
    d = episode_data((2, 50), seed=9, p_term=0.0, p_trunc=0.1)
    d["next_values"] = d["next_values"].abs() + 1.0  # bootstrap values that matter
    right = fast("gae", d, gamma=0.99, lmbda=0.95)
    wrong = fast("gae", {**d, "terminated": d["truncated"], "truncated": torch.zeros_like(d["truncated"])},
                 gamma=0.99, lmbda=0.95)  # fmt: skip
    at = d["truncated"]
    assert at.any() and (right.advantages[at] - wrong.advantages[at]).abs().min() > 0.5
    torch.testing.assert_close(
        right.advantages[at], (d["rewards"] + 0.99 * d["next_values"] - d["values"])[at]
    )
    for name in ("discounted_returns", "lambda_returns"):
        kw = {"gamma": 0.99} | ({"lmbda": 0.9} if name == "lambda_returns" else {})
        wrong = fast(name, {**d, "terminated": at, "truncated": torch.zeros_like(at)}, **kw)
        assert not torch.allclose(fast(name, d, **kw), wrong)


def test_degenerate_inputs():
    f = torch.zeros(2, 0, dtype=torch.bool)
    z = torch.zeros(2, 0)
    assert E.gae(z, z, z, f, f, 0.9, 0.9).advantages.shape == (2, 0)
    assert E.n_step_returns(z, z, f, f, 0.9, 3).shape == (2, 0)
    one = torch.ones(3, 1)
    b = torch.zeros(3, 1, dtype=torch.bool)
    torch.testing.assert_close(
        E.gae(one, one, one, b, b, 0.5, 0.5).advantages, torch.full((3, 1), 0.5)
    )
    out = E.gae(one, one, one, b | True, b, 0.0, 0.0)
    assert torch.isfinite(out.advantages).all()


def test_reverse_discounted_cumsum_on_cuda_like_shapes():
    x = torch.randn(3, 1000, dtype=torch.float64)
    d = torch.rand(3, 1000, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.float64)
    expected = torch.empty_like(x)
    for t in reversed(range(1000)):
        y = x[:, t] + d[:, t] * y
        expected[:, t] = y
    torch.testing.assert_close(E.reverse_discounted_cumsum(x, d), expected)


def scan_loop(x, d):
    y, out = torch.zeros_like(x[..., 0]), torch.empty_like(x)
    for t in reversed(range(x.shape[-1])):
        y = x[..., t] + d[..., t] * y
        out[..., t] = y
    return out


# one shape per branch of the dispatch (reverse_discounted_cumsum -> scan_method)
SCAN_BRANCHES = [
    ((3, 1000), "buffered"),  # small
    ((4096, 64), "doubling"),  # large, a short horizon (B >> T)
    ((512, 4096), "blocked"),  # its scan over the 512 block starts is blocked again
    ((4, 128, 300), "blocked"),  # extra batch dims, the last block zero-padded
]


@pytest.mark.parametrize("shape,branch", SCAN_BRANCHES, ids=[str(s) for s, _ in SCAN_BRANCHES])
def test_every_scan_branch_matches_the_loop(shape, branch):
    g = torch.Generator().manual_seed(len(shape) + shape[-1])
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    d = torch.rand(shape, generator=g, dtype=torch.float64)
    d[torch.rand(shape, generator=g) < 0.03] = 0.0  # episode boundaries
    assert E.scan_method(x, d) == branch
    exact = scan_loop(x, d)
    torch.testing.assert_close(E.reverse_discounted_cumsum(x, d), exact, rtol=1e-10, atol=1e-10)
    y32 = E.reverse_discounted_cumsum(x.float(), d.float())
    assert E.scan_method(x.float(), d.float()) == branch
    torch.testing.assert_close(y32.double(), exact, rtol=1e-5, atol=1e-5 * exact.abs().max())


def test_scan_dispatch_for_autograd_and_other_devices():
    x, d = torch.randn(64, 4096), torch.rand(64, 4096)
    assert E.scan_method(x, d) == "blocked"
    assert E.scan_method(x.requires_grad_(), d) == "autograd"
    meta = torch.empty(64, 4096, device="meta")  # stands in for a GPU: any device but the CPU
    assert E.scan_method(meta, meta) == "doubling"


@pytest.mark.parametrize("shape", [(4096, 64), (160, 1000)], ids=["B>>T", "padded blocks"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_estimators_on_the_large_input_scans_match_the_loop(name, kw, shape):
    """The other tests use small inputs (the buffered scan); these shapes take the other two."""
    d64 = episode_data(shape, seed=3)
    assert E.scan_method(d64["rewards"], d64["rewards"]) in ("doubling", "blocked")
    d32 = {k: x.float() if x.is_floating_point() else x for k, x in d64.items()}
    for a, a32, b in zip(
        as_tuple(fast(name, d64, **kw)),
        as_tuple(fast(name, d32, **kw)),
        as_tuple(loop(name, d64, **kw)),
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a32.double(), b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


# ---------------------------------------------------------------- bad input (DESIGN §3)


def _args():
    d = episode_data((2, 10), seed=0, dtype=torch.float32)
    return [d[k] for k in ("rewards", "values", "next_values", "terminated", "truncated")]


def test_shape_mismatch_names_both_shapes():
    r, v, nv, term, trunc = _args()
    with pytest.raises(ValueError, match=r"values.*\(2, 10\).*\(2, 9\)"):
        E.gae(r, v[:, :9], nv, term, trunc, 0.9, 0.9)
    with pytest.raises(ValueError, match="target_logp"):
        E.vtrace(r, v, nv, term, trunc, r[:1], r, 0.9)


@pytest.mark.parametrize("gamma,lmbda,match", [(1.5, 0.9, "gamma"), (-0.1, 0.9, "gamma"), (0.9, 2.0, "lmbda"),
                                               (True, 0.9, "gamma"), ("0.9", 0.9, "gamma")])  # fmt: skip
def test_gamma_lambda_range(gamma, lmbda, match):
    with pytest.raises(ValueError, match=match):
        E.gae(*_args(), gamma, lmbda)
    r, v, nv, term, trunc = _args()
    with pytest.raises(ValueError, match=match):
        E.lambda_returns(r, nv, term, trunc, gamma, lmbda)


def test_tensor_gamma_checks():
    with pytest.raises(ValueError, match="gamma.*broadcastable"):
        E.gae(*_args(), torch.ones(3), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        E.gae(*_args(), torch.full((2, 1), 1.5), 0.9, validate=True)


def test_flags_must_be_bool():
    r, v, nv, term, trunc = _args()
    with pytest.raises(ValueError, match="terminated.*bool"):
        E.gae(r, v, nv, term.float(), trunc, 0.9, 0.9)
    with pytest.raises(ValueError, match="truncated.*bool"):
        E.discounted_returns(r, nv, term, trunc.long(), 0.9)


def test_nan_rewards_under_validate():
    r, v, nv, term, trunc = _args()
    r[0, 3] = float("nan")
    E.gae(r, v, nv, term, trunc, 0.9, 0.9)  # no host sync by default
    with pytest.raises(ValueError, match="rewards.*NaN"):
        E.gae(r, v, nv, term, trunc, 0.9, 0.9, validate=True)


def test_other_arguments():
    r, v, nv, term, trunc = _args()
    for n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n:"):
            E.n_step_returns(r, nv, term, trunc, 0.9, n)
    with pytest.raises(ValueError, match="time_dim"):
        E.gae(r, v, nv, term, trunc, 0.9, 0.9, time_dim=2)
    with pytest.raises(ValueError, match="rho_clip"):
        E.vtrace(r, v, nv, term, trunc, r, r, 0.9, rho_clip=0.0)
    with pytest.raises(ValueError, match="c_clip"):
        E.vtrace(r, v, nv, term, trunc, r, r, 0.9, c_clip=-1.0)
    with pytest.raises(ValueError, match="rewards.*Tensor"):
        E.td_errors([1.0], v, nv, term, 0.9)


# ---------------------------------------------------------------- rlax's published numbers
# rlax/_src/multistep_test.py: per-step discounts `discount_t` are our tensor `gamma` (0 = terminal),
# `v_t` (the value of the next state) our `next_values`.

R_T = torch.tensor([[1.0, 0.0, -1.0, 0.0, 1.0], [0.5, 0.8, -0.7, 0.0, 2.1]], dtype=torch.float64)
DISCOUNT_T = torch.tensor(
    [[0.5, 0.9, 1.0, 0.5, 0.8], [0.9, 0.5, 0.3, 0.8, 0.7]], dtype=torch.float64
)
V_T = torch.tensor([[3.0, 1.0, 5.0, -5.0, 3.0], [-1.7, 1.2, 2.3, 2.2, 2.7]], dtype=torch.float64)
NO = torch.zeros(2, 5, dtype=torch.bool)


def test_rlax_lambda_returns():
    expected = [
        [1.6460547, 0.72281253, 0.7375001, 0.6500001, 3.4],
        [0.7866317, 0.9913063, 0.1101501, 2.834, 3.99],
    ]
    out = E.lambda_returns(R_T, V_T, NO, NO, DISCOUNT_T, 0.75)
    torch.testing.assert_close(
        out, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6
    )


def test_rlax_discounted_and_n_step_returns():
    mc = [[1.315, 0.63000005, 0.70000005, 1.7, 3.4], [1.33592, 0.9288, 0.2576, 3.192, 3.9899998]]
    out = E.discounted_returns(R_T, V_T, NO, NO, DISCOUNT_T)
    torch.testing.assert_close(out, torch.tensor(mc, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    n3 = [[2.8, -3.15, 0.7, 1.7, 3.4], [1.2155, 0.714, 0.2576, 3.192, 3.99]]
    for n, expected in ((3, n3), (5, mc), (7, mc)):
        out = E.n_step_returns(R_T, V_T, NO, NO, DISCOUNT_T, n)
        torch.testing.assert_close(
            out, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("lmbda,expected", [
    (1.0, [[-1.45118, -4.4557, 2.5396, 0.5249, -0.49], [3.0, 2.0, 1.0, 0.0, -4.9]]),
    (0.7, [[-0.676979, -5.248167, 2.4846, 0.6704, -0.49], [2.2899, 1.73, 1.0, 0.0, -4.9]]),
    (0.4, [[0.56731, -6.042, 2.3431, 0.815, -0.49], [1.725, 1.46, 1.0, 0.0, -4.9]]),
])  # fmt: skip
def test_rlax_truncated_gae(lmbda, expected):
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0, -0.5], [0.0, 0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    v = torch.tensor(
        [[1.0, 4.0, -3.0, -2.0, -1.0, -1.0], [-3.0, -2.0, -1.0, 0.0, 5.0, -1.0]],
        dtype=torch.float64,
    )
    discount = torch.tensor([[0.99] * 5, [0.9, 0.9, 0.9, 0.0, 0.9]], dtype=torch.float64)
    out = E.gae(r, v[:, :-1], v[:, 1:], NO, NO, discount, lmbda).advantages
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-3)
    # the same through a terminal flag instead of a zero discount
    term = discount == 0
    out2 = E.gae(
        r, v[:, :-1], v[:, 1:], term, NO, torch.where(term, 0.9, discount), lmbda
    ).advantages
    torch.testing.assert_close(out2, out)


# ---------------------------------------------------------------- TorchRL (pinned in pyproject's dev extra)

torchrl_F = pytest.importorskip("torchrl.objectives.value.functional")


def _trl(x):
    return x.unsqueeze(-1)  # TorchRL: [*B, T, F] with time_dim=-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torchrl_gae(seed):
    d = episode_data((4, 128), seed, dtype=torch.float32, p_term=0.03, p_trunc=0.03)
    done = d["terminated"] | d["truncated"]
    adv, ret = torchrl_F.generalized_advantage_estimate(
        0.99,
        0.95,
        _trl(d["values"]),
        _trl(d["next_values"]),
        _trl(d["rewards"]),
        _trl(done),
        _trl(d["terminated"]),
    )
    ours = fast("gae", d, gamma=0.99, lmbda=0.95)
    torch.testing.assert_close(ours.advantages, adv.squeeze(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.returns, ret.squeeze(-1), rtol=1e-5, atol=1e-5)
    vec_adv, _ = torchrl_F.vec_generalized_advantage_estimate(
        0.99,
        0.95,
        _trl(d["values"]),
        _trl(d["next_values"]),
        _trl(d["rewards"]),
        _trl(done),
        _trl(d["terminated"]),
    )
    torch.testing.assert_close(ours.advantages, vec_adv.squeeze(-1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torchrl_td_lambda(seed):
    d = episode_data((4, 128), seed, dtype=torch.float32, p_term=0.03, p_trunc=0.03)
    done = d["terminated"] | d["truncated"]
    theirs = torchrl_F.td_lambda_return_estimate(
        0.98, 0.9, _trl(d["next_values"]), _trl(d["rewards"]), _trl(done), _trl(d["terminated"])
    )
    torch.testing.assert_close(
        fast("lambda_returns", d, gamma=0.98, lmbda=0.9), theirs.squeeze(-1), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torchrl_vtrace(seed):
    d = episode_data((4, 128), seed, dtype=torch.float32, p_term=0.03, p_trunc=0.03)
    done = d["terminated"] | d["truncated"]
    adv, vs = torchrl_F.vtrace_advantage_estimate(
        0.99, _trl(d["target_logp"]), _trl(d["behavior_logp"]), _trl(d["values"]), _trl(d["next_values"]),
        _trl(d["rewards"]), _trl(done), _trl(d["terminated"]), rho_thresh=1.0, c_thresh=0.9,
    )  # fmt: skip
    ours = fast("vtrace", d, gamma=0.99, rho_clip=1.0, c_clip=0.9)
    torch.testing.assert_close(ours.returns, vs.squeeze(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.advantages, adv.squeeze(-1), rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_lambda_returns():
    """λ-returns are differentiated through in model-based RL: the scan must support autograd."""
    d = episode_data((2, 40), seed=11)
    nv = d["next_values"].clone().requires_grad_(True)
    out = E.lambda_returns(d["rewards"], nv, d["terminated"], d["truncated"], 0.9, 0.8)
    (grad,) = torch.autograd.grad(out.sum(), nv)
    nv2 = d["next_values"].clone().requires_grad_(True)
    ref_out = ref.lambda_returns_loop(d["rewards"], nv2, d["terminated"], d["truncated"], 0.9, 0.8)
    (ref_grad,) = torch.autograd.grad(ref_out.sum(), nv2)
    torch.testing.assert_close(grad, ref_grad)
    with torch.no_grad():  # the in-place fast path gives the same values
        torch.testing.assert_close(
            E.lambda_returns(d["rewards"], nv, d["terminated"], d["truncated"], 0.9, 0.8),
            out.detach(),
        )


@pytest.mark.parametrize(
    "name", ["discounted_returns", "n_step_returns", "lambda_returns", "gae", "vtrace"]
)
def test_integer_rewards_or_values_are_rejected(name):
    """ "Same dtype out" would truncate advantages to integers: an int input is an error instead."""
    d = episode_data((2, 6), seed=0)
    kw = {"gamma": 0.9} | ({"lmbda": 0.9} if name in ("lambda_returns", "gae", "vtrace") else {})
    kw |= {"n": 2} if name == "n_step_returns" else {}
    for field in ("rewards", "next_values") + (("values",) if name in ("gae", "vtrace") else ()):
        ints = {**d, field: d[field].round().long()}
        with pytest.raises(ValueError, match=f"{field}: expected a floating-point tensor"):
            fast(name, ints, **kw)


def test_nan_tensor_gamma_is_rejected_under_validate():
    r, v, nv, term, trunc = _args()
    gamma = torch.full((2, 1), float("nan"))
    with pytest.raises(ValueError, match="gamma"):
        E.gae(r, v, nv, term, trunc, gamma, 0.9, validate=True)
    with pytest.raises(ValueError, match="lmbda"):
        E.lambda_returns(r, nv, term, trunc, 0.9, torch.tensor(float("nan")), validate=True)
