"""Diffusion models, their exact references, and the samplers that steer them (notebook 14).

Most tests use models with an *exact* denoiser (the mixture's ``E[ε | x_t]``, the chain's
``p(x_0^i | x_t)``) so that they need no training and test the samplers alone.
"""

import math

import pytest
import torch

from rlnb.decoding.diffusion import ancestral_sample, best_of_n_samples, doob_guided, svdd
from rlnb.envs.densities import (
    GaussianMixture,
    MarkovBits,
    ring_mixture,
    string_index,
    tilted_density,
    tilted_probs,
    tilted_samples,
)
from rlnb.estimators.soft import soft_value
from rlnb.metrics import mmd, total_variation
from rlnb.models.diffusion import (
    GaussianDiffusion,
    MaskedDiffusion,
    NoiseMLP,
    TokenMLP,
    cosine_alpha_bars,
)
from rlnb.train.diffusion import rollouts, train_diffusion, train_value


def exact_model(dist: GaussianMixture, T: int = 25) -> GaussianDiffusion:
    """A DDPM whose noise prediction is the mixture's exact ``E[ε | x_t]``."""
    alpha_bar = cosine_alpha_bars(T)

    def eps(x, t01):
        return dist.noise_prediction(x, float(alpha_bar[round(float(t01[0]) * T)]))

    return GaussianDiffusion(eps, dim=dist.dim, T=T)


def exact_bits_model(bits: MarkovBits, T: int = 24) -> MaskedDiffusion:
    """A masked diffusion whose denoiser gives the chain's exact ``p(x_0^i | revealed bits)``."""
    S, P = bits.strings(), bits.probs()
    onehot = torch.nn.functional.one_hot(S, 2).reshape(len(S), -1).double()

    def denoiser(x, t01):
        place = 1 << torch.arange(bits.length - 1, -1, -1)
        shown = ((x != 2).long() * place).sum(-1, keepdim=True)
        fits = (torch.arange(len(S)) & shown) == ((x == 1).long() * place).sum(-1, keepdim=True)
        fits = fits.double() * P  # [n, 2^L]: the strings that agree with the revealed bits
        marg = fits @ onehot  # [n, L·2]: the probability of each bit value at each position
        return marg.view(len(x), bits.length, 2).clamp_min(1e-300).log().float()

    return MaskedDiffusion(denoiser, bits.length, 2, T)


def floor_reward(x):
    return torch.floor(x[:, 0])


def ones(x):
    return x.sum(-1).float()


def frequencies(x, size):
    return torch.bincount(string_index(x), minlength=size).double() / len(x)


# --- exact references -------------------------------------------------------------------------------
def test_mixture_density_integrates_to_one_and_matches_samples():
    ring = ring_mixture()
    axis = torch.linspace(-4, 4, 321)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    cell = float(axis[1] - axis[0]) ** 2
    assert ring.log_prob(grid).exp().sum().item() * cell == pytest.approx(1.0, abs=1e-3)
    x = ring.sample(20000, torch.Generator().manual_seed(0))
    radius = x.norm(dim=-1)
    assert radius.mean().item() == pytest.approx(2.0, abs=0.02)


def test_posterior_against_importance_weights():
    """``x_0 | x_t`` in closed form against self-normalised weights ``N(x_t; √ᾱ x_0, 1 − ᾱ)`` on
    exact prior draws."""
    ring = ring_mixture()
    gen = torch.Generator().manual_seed(1)
    x0 = ring.sample(400_000, gen).double()
    for a in (0.1, 0.5, 0.9):
        x_t = torch.tensor([[1.5, 0.3], [-0.4, -1.0]], dtype=torch.float64)
        log_w = -((x_t[:, None] - math.sqrt(a) * x0) ** 2).sum(-1) / (2 * (1 - a))
        w = log_w.softmax(-1)
        want = w @ x0
        weights, means, _ = ring.posterior(x_t.float(), a)
        got = (weights[..., None] * means).sum(-2)
        torch.testing.assert_close(got.double(), want, atol=0.02, rtol=0)
        eps = ring.noise_prediction(x_t.float(), a).double()
        torch.testing.assert_close(
            eps, (x_t - math.sqrt(a) * want) / math.sqrt(1 - a), atol=0.05, rtol=0
        )


def test_tilted_samples_against_the_grid_density():
    ring = ring_mixture()
    gen = torch.Generator().manual_seed(2)
    for alpha in (0.25, 1.0):
        x = tilted_samples(ring, floor_reward, alpha, 20000, 3.0, gen)
        grid, density = tilted_density(ring, floor_reward, alpha, lim=3.5, size=281)
        cell = (7.0 / 280) ** 2
        assert density.sum().item() * cell == pytest.approx(1.0, abs=1e-4)  # float32 sum
        want = (density.reshape(-1) * floor_reward(grid)).sum().item() * cell
        assert floor_reward(x).mean().item() == pytest.approx(want, abs=0.03)
    with pytest.raises(ValueError, match="r_max"):
        tilted_samples(ring, floor_reward, 1.0, 100, 0.5, gen)
    with pytest.raises(ValueError, match="r_max"):  # an acceptance rate of e^-400: give up
        tilted_samples(ring, floor_reward, 0.01, 100, 6.0, gen)


def test_markov_bits_and_enumerated_target():
    bits = MarkovBits(5, 0.3, 0.8)
    S, P = bits.strings(), bits.probs()
    assert P.sum().item() == pytest.approx(1.0)
    assert torch.equal(string_index(S), torch.arange(32))
    loop = []
    for s in S.tolist():
        p = 0.3 if s[0] else 0.7
        for a, b in zip(s, s[1:]):
            p *= 0.8 if a == b else 0.2
        loop.append(p)
    torch.testing.assert_close(P, torch.tensor(loop, dtype=torch.float64))
    x = bits.sample(40000, torch.Generator().manual_seed(3))
    assert total_variation(frequencies(x, 32), P) < 0.03
    r = ones(S)
    tilted = tilted_probs(P, r, 0.5)
    weights = torch.tensor(
        [p * math.exp(v / 0.5) for p, v in zip(loop, r.tolist())], dtype=torch.float64
    )
    torch.testing.assert_close(tilted, weights / weights.sum())
    assert torch.isfinite(tilted_probs(P, r * 1000, 0.01)).all()  # no overflow


def test_bits_soft_value_is_exact():
    bits = MarkovBits(4, 0.4, 0.7)
    S, P, r = bits.strings(), bits.probs(), ones(bits.strings())
    M = 2
    x_t = torch.tensor([[M, M, M, M], [1, M, 0, M], [1, 1, 0, 1]])
    got = bits.soft_value(x_t, M, r, 0.5)
    for row, v in zip(x_t.tolist(), got.tolist()):
        num = den = 0.0
        for s, p, rew in zip(S.tolist(), P.tolist(), r.tolist()):
            if all(a == M or a == b for a, b in zip(row, s)):
                num += p * math.exp(rew / 0.5)
                den += p
        assert v == pytest.approx(0.5 * math.log(num / den), abs=1e-5)
    assert got[-1].item() == pytest.approx(3.0)  # fully revealed: the reward itself


def test_soft_value_estimator():
    gen = torch.Generator().manual_seed(4)
    r = torch.rand(3, 7, generator=gen) * 5
    for alpha in (0.1, 1.0, 10.0):
        loop = torch.tensor(
            [alpha * math.log(sum(math.exp(v / alpha) for v in row) / 7) for row in r.tolist()]
        )
        torch.testing.assert_close(soft_value(r, alpha), loop)
    torch.testing.assert_close(soft_value(r, 1e-4), r.max(-1).values, atol=1e-3, rtol=0)
    torch.testing.assert_close(soft_value(r, 1e4), r.mean(-1), atol=1e-2, rtol=0)
    torch.testing.assert_close(soft_value(r[:, :1], 0.3), r[:, 0])
    assert torch.isfinite(soft_value(r * 100, 0.01)).all()
    with pytest.raises(ValueError, match="alpha"):
        soft_value(r, 0.0)


# --- the models ----------------------------------------------------------------------------------
def test_reverse_process_with_the_exact_score_recovers_a_gaussian():
    """With the exact E[ε | x_t] the sampler recovers N(μ, s²I), up to the spread that the
    posterior variance β̃ leaves out at few steps (std 0.44 at T = 25, 0.49 at T = 200)."""
    g = GaussianMixture(torch.tensor([[1.0, -0.5]]), 0.5, torch.ones(1))
    gen = torch.Generator().manual_seed(5)
    stds = {}
    for T in (25, 200):
        x = ancestral_sample(exact_model(g, T), 20000, gen).x
        torch.testing.assert_close(x.mean(0), torch.tensor([1.0, -0.5]), atol=0.02, rtol=0)
        stds[T] = x.std(0)
    torch.testing.assert_close(stds[200], torch.tensor([0.5, 0.5]), atol=0.02, rtol=0)
    assert (stds[25] < stds[200]).all()


def test_reverse_process_with_the_exact_score_recovers_the_ring():
    ring = ring_mixture()
    gen = torch.Generator().manual_seed(6)
    x = ancestral_sample(exact_model(ring), 3000, gen).x
    noise = mmd(ring.sample(3000, gen), ring.sample(3000, gen))
    assert mmd(x, ring.sample(3000, gen)) < 0.003, noise


def test_masked_sampler_with_the_exact_denoiser_recovers_the_chain():
    bits = MarkovBits()
    x = ancestral_sample(exact_bits_model(bits, T=24), 8000, torch.Generator().manual_seed(7)).x
    assert total_variation(frequencies(x, 64), bits.probs()) < 0.06


def test_denoising_step_matches_the_ddpm_posterior():
    """``mean_std`` against the DDPM posterior ``q(x_{t−1} | x_t, x_0)`` written from β_t."""
    T = 10
    model = GaussianDiffusion(NoiseMLP(2, 16, 1), 2, T)
    ab = model.alpha_bar.double()
    x_t = torch.randn(4, 2)
    for t in (1, 5, T):
        beta = 1 - ab[t] / ab[t - 1]
        x0 = model.denoise(x_t, t).double()
        want = (ab[t - 1].sqrt() * beta / (1 - ab[t])) * x0 + (
            (1 - beta).sqrt() * (1 - ab[t - 1]) / (1 - ab[t])
        ) * x_t.double()
        mean, std = model.mean_std(x_t, t)
        torch.testing.assert_close(mean.double(), want, atol=1e-5, rtol=1e-5)
        assert std == pytest.approx(math.sqrt(beta * (1 - ab[t - 1]) / (1 - ab[t])), abs=1e-6)
    assert model.mean_std(x_t, 1)[1] == 0.0


def test_cosine_schedule():
    ab = cosine_alpha_bars(25)
    assert ab[0] == 1 and (ab[1:] < ab[:-1]).all() and 0 < ab[-1] < 1e-3
    with pytest.raises(ValueError, match="T"):
        cosine_alpha_bars(0)


def test_training_learns():
    """A short training lowers each model's loss; SVDD-MC's value beats the constant held out."""
    ring = ring_mixture()
    torch.manual_seed(0)
    model = GaussianDiffusion(NoiseMLP(2, 64, 2), 2, 10)
    history, _ = train_diffusion(model, ring.sample, steps=300, progress=False)
    assert history.loss.iloc[-3:].mean() < history.loss.iloc[:3].mean()
    vh, value = train_value(model, floor_reward, n_rollouts=800, steps=300, progress=False)
    assert (
        vh.held_out.iloc[-1] < vh.held_out.iloc[0] and vh.held_out.iloc[-1] < vh.constant.iloc[-1]
    )
    bits = MarkovBits()
    masked = MaskedDiffusion(TokenMLP(6, 2, 64, 2), 6, 2, T=12)
    data = bits.sample(512, torch.Generator().manual_seed(0))
    mh, _ = train_diffusion(masked, data, steps=200, progress=False)
    assert mh.loss.iloc[-3:].mean() < mh.loss.iloc[:3].mean()
    path = rollouts(masked, 5, torch.Generator().manual_seed(0))
    assert path.shape == (13, 5, 6) and (path[0] == 2).all() and (path[-1] < 2).all()


# --- the samplers ---------------------------------------------------------------------------------
def test_constant_reward_samples_the_base_distribution():
    """With a constant reward every weight is equal: each method is the pretrained sampler."""
    ring = ring_mixture()
    model = exact_model(ring, T=15)
    gen = torch.Generator().manual_seed(8)
    const = lambda x: torch.zeros(len(x))  # noqa: E731
    base = ancestral_sample(model, 2000, gen).x
    noise = mmd(ancestral_sample(model, 2000, gen).x, base)
    for name, x in (
        ("svdd-pm", svdd(model, const, 2000, 4, 0.5, gen=gen).x),
        ("svdd-mc", svdd(model, const, 2000, 4, 0.5, value=lambda x, t: const(x), gen=gen).x),
        ("best-of-n", best_of_n_samples(model, const, 2000, 4, gen).x),
        ("doob", doob_guided(model, const, 2000, 0.5, n_mc=4, gen=gen).x),
    ):
        assert mmd(x, base) < max(3 * abs(noise), 0.002), (name, noise)
    bits = MarkovBits()
    bm = exact_bits_model(bits, T=24)
    x = svdd(bm, lambda x: torch.zeros(len(x)), 8000, 2, 1.0, gen=gen).x
    assert total_variation(frequencies(x, 64), bits.probs()) < 0.06


def test_svdd_raises_the_reward_toward_the_target():
    """Breaking the weights' sign (softmax(−v/α)) makes this test fail: the reward then falls."""
    ring = ring_mixture()
    model = exact_model(ring, T=15)
    gen = torch.Generator().manual_seed(9)
    base = floor_reward(ancestral_sample(model, 1000, gen).x).mean()
    target = floor_reward(tilted_samples(ring, floor_reward, 0.5, 4000, 3.0, gen)).mean()
    small = floor_reward(svdd(model, floor_reward, 1000, 2, 0.5, gen=gen).x).mean()
    large = floor_reward(svdd(model, floor_reward, 1000, 16, 0.5, gen=gen).x).mean()
    assert base + 0.5 < small < large < target + 0.1, (base, small, large, target)
    doob = floor_reward(doob_guided(model, floor_reward, 500, 0.5, n_mc=8, gen=gen).x).mean()
    assert doob > base + 0.5, (base, doob)


def test_svdd_with_the_exact_soft_value_approaches_the_enumerated_target():
    bits = MarkovBits()
    model = exact_bits_model(bits, T=24)
    S, P = bits.strings(), bits.probs()
    target = tilted_probs(P, ones(S), 1.0)
    gen = torch.Generator().manual_seed(10)
    value = lambda x, t: bits.soft_value(x, 2, ones(S), 1.0)  # noqa: E731
    tv = {
        M: total_variation(
            frequencies(svdd(model, ones, 8000, M, 1.0, value=value, gen=gen).x, 64), target
        )
        for M in (1, 4, 32)
    }
    assert tv[1] > tv[4] > tv[32] and tv[32] < 0.05, tv


def test_alpha_zero_keeps_the_best_candidate():
    """α = 0 is the public SVDD code's rule: the argmax over the M candidates (first on ties)."""
    from rlnb.decoding.diffusion import _pick

    cand = torch.arange(6.0).view(2, 3, 1)
    scores = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]])
    torch.testing.assert_close(_pick(cand, scores, 0.0, None), torch.tensor([[1.0], [3.0]]))
    ring = ring_mixture()
    model = exact_model(ring, T=10)
    gen = torch.Generator().manual_seed(12)
    greedy = floor_reward(svdd(model, floor_reward, 1000, 8, 0.0, gen=gen).x).mean()
    soft = floor_reward(svdd(model, floor_reward, 1000, 8, 1.0, gen=gen).x).mean()
    assert greedy > soft + 0.2, (greedy, soft)


def test_calls_are_counted_per_sample():
    ring = ring_mixture()
    T = 6
    model = exact_model(ring, T)
    assert ancestral_sample(model, 10).calls == T
    assert best_of_n_samples(model, floor_reward, 10, 3).calls == 3 * T
    assert svdd(model, floor_reward, 10, 4, 1.0).calls == T + 4 * (T - 1)
    assert svdd(model, floor_reward, 10, 4, 1.0, value=lambda x, t: x[:, 0]).calls == T + 4 * (
        T - 1
    )
    assert doob_guided(model, floor_reward, 10, 1.0, n_mc=3).calls == T + 3 * T * (T - 1) / 2


class _RaisesIfDifferentiated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x[:, 0])

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("the reward was differentiated")


def test_rewards_are_never_differentiated():
    torch.manual_seed(0)
    model = GaussianDiffusion(NoiseMLP(2, 16, 1), 2, 5)  # parameters require grad
    seen = []

    def reward(x):
        seen.append(x.requires_grad or torch.is_grad_enabled())
        return _RaisesIfDifferentiated.apply(x)

    for out in (
        svdd(model, reward, 8, 3, 0.5),
        svdd(
            model,
            reward,
            8,
            3,
            0.5,
            value=lambda x, t: model.eps_model(x, torch.full((len(x),), t / 5))[:, 0],
        ),
        best_of_n_samples(model, reward, 8, 3),
        doob_guided(model, reward, 8, 0.5, n_mc=2),
    ):
        assert not out.x.requires_grad
    assert seen and not any(seen)


def test_bad_input():
    ring = ring_mixture()
    model = exact_model(ring, 5)
    with pytest.raises(ValueError, match="M"):
        svdd(model, floor_reward, 4, 0, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        svdd(model, floor_reward, 4, 2, -0.5)
    with pytest.raises(ValueError, match="value"):
        svdd(model, floor_reward, 4, 2, 1.0, value="mc")
    with pytest.raises(ValueError, match="N"):
        best_of_n_samples(model, floor_reward, 4, 0)
    with pytest.raises(ValueError, match="lam"):
        doob_guided(model, floor_reward, 4, -1.0)
    with pytest.raises(ValueError, match="model"):
        doob_guided(exact_bits_model(MarkovBits()), ones, 4, 1.0)
    with pytest.raises(ValueError, match="t"):
        model.propose(torch.zeros(2, 2), 6)
    with pytest.raises(ValueError, match="means, weights"):
        GaussianMixture(torch.zeros(3, 2), 1.0, torch.ones(2) / 2)
    with pytest.raises(ValueError, match="std"):
        GaussianMixture(torch.zeros(3, 2), 0.0, torch.ones(3) / 3)
    with pytest.raises(ValueError, match="probs, rewards"):
        tilted_probs(torch.ones(4) / 4, torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="data"):
        train_diffusion(model, "not data", steps=1)


# --- the widget ---------------------------------------------------------------------------------------
def test_widget_callback_and_explorer():
    from rlnb.widgets import svdd_explorer, svdd_samples

    ring = ring_mixture()
    model = exact_model(ring, T=8)
    rewards = {}
    for alpha in (0.25, 1.0, 4.0):
        for M in (1, 8):
            out = svdd_samples(model, ring, floor_reward, alpha, M, n=200)
            assert out["x"].shape == (200, 2) and out["calls"] == 8 + M * 7
            assert out["density"].shape == (120, 120) and math.isfinite(out["target_reward"])
            rewards[alpha, M] = out["reward"]
        assert rewards[alpha, 8] > rewards[alpha, 1]
    assert (
        svdd_samples(model, ring, floor_reward, 0.5, 4, n=50)["reward"]
        == svdd_samples(model, ring, floor_reward, 0.5, 4, n=50)["reward"]
    )  # a fixed seed: the callback is pure
    box = svdd_explorer(model, ring, floor_reward)
    sliders = box.children[1].children
    assert [c.description for c in sliders] == ["log2 α", "M"]
    sliders[1].value = 2  # fires the callback; must not raise
