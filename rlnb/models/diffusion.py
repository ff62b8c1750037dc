"""Tiny diffusion models: a DDPM for low-dimensional points and an absorbing-state (masked)
diffusion for short strings, both with the same sampler interface so that one guided sampler
(``rlnb.decoding.diffusion``) serves both:

- ``T``: the number of denoising steps; time runs ``t = T, …, 1`` and ``x_0`` is the sample;
- ``prior(n)``: ``x_T``;
- ``propose(x_t, t, m)``: ``[n, m, …]`` draws of ``x_{t−1}`` from the model's transition
  ``p_θ(x_{t−1} | x_t)``, one network call per row of ``x_t``;
- ``denoise(x_t, t)``: the model's guess of ``x_0`` from ``x_t`` (one call per row; none at t = 0);
- ``calls``: network evaluations so far, one per row (samplers report calls per sample).

Both models accept an optional condition ``cond [n, c]`` (a state, for a diffusion policy).
Papers: "Denoising Diffusion Probabilistic Models" (DDPM, the ε-prediction loss and ancestral
sampler); "Improved Denoising Diffusion Probabilistic Models" (the cosine schedule); "Simple and
Effective Masked Diffusion Language Models" (the absorbing-state process, here with a linear
masking schedule and a plain cross-entropy on the masked tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int = 32) -> Tensor:
    """``[n, dim]`` sinusoidal features of ``t [n]`` in [0, 1] (frequencies 1 … 1000)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=t.device))
    angle = t.float()[:, None] * freqs
    return torch.cat([angle.sin(), angle.cos()], -1)


class NoiseMLP(nn.Module):
    """``f(x, t[, cond])``: an MLP on ``[x, sinusoidal(t), cond]`` with SiLU activations; ``x
    [n, dim]``, ``t [n]`` in [0, 1]; output ``[n, out]`` (``out`` defaults to ``dim``)."""

    def __init__(self, dim: int, hidden: int = 128, layers: int = 3, emb: int = 32,
                 cond_dim: int = 0, out: int | None = None):  # fmt: skip
        super().__init__()
        self.emb = emb
        sizes = [dim + emb + cond_dim] + [hidden] * layers
        blocks = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, out or dim))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        parts = [x.float(), timestep_embedding(t, self.emb)]
        if cond is not None:
            parts.append(cond.float())
        return self.net(torch.cat(parts, -1))


class TokenMLP(nn.Module):
    """``f(x, t[, cond])`` for strings: the one-hot of ``x [n, L]`` over ``vocab + 1`` symbols
    (the last one is the mask) flattened, through ``NoiseMLP``. Output: logits ``[n, L, vocab]``,
    or ``[n, out]`` when ``out`` is given (a value)."""

    def __init__(self, length: int, vocab: int, hidden: int = 128, layers: int = 3,
                 cond_dim: int = 0, out: int | None = None):  # fmt: skip
        super().__init__()
        self.length, self.vocab, self.out = length, vocab, out
        self.mlp = NoiseMLP(length * (vocab + 1), hidden, layers, cond_dim=cond_dim,
                            out=out or length * vocab)  # fmt: skip

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        y = self.mlp(F.one_hot(x.long(), self.vocab + 1).flatten(1), t, cond)
        return y if self.out else y.view(len(x), self.length, self.vocab)


def cosine_alpha_bars(T: int, s: float = 0.008) -> Tensor:
    """``[T + 1]`` ``ᾱ_t`` of the cosine schedule, ``ᾱ_0 = 1``, each ``β_t = 1 − ᾱ_t/ᾱ_{t−1}``
    clipped to 0.999 ("Improved Denoising Diffusion Probabilistic Models")."""
    if not (isinstance(T, int) and T >= 1):
        raise ValueError(f"T: expected a positive integer, got {T!r}")
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    beta = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cat([alpha_bar.new_ones(1), torch.cumprod(1 - beta, 0)]).float()


def _check_t(t: int, T: int, low: int = 1) -> None:
    if not (isinstance(t, int) and low <= t <= T):
        raise ValueError(f"t: expected an integer in [{low}, {T}], got {t!r}")


class GaussianDiffusion(nn.Module):
    """DDPM with ε-prediction. Forward: ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε``. Reverse:
    ``x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t``, then ``x_{t−1} ~ N(μ̃_t, β̃_t I)`` with
    ``μ̃_t = (√ᾱ_{t−1} β_t x̂_0 + √α_t (1 − ᾱ_{t−1}) x_t) / (1 − ᾱ_t)``,
    ``β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)`` (zero at t = 1).

    ``eps_model(x, t01[, cond])`` is any callable returning ``[n, d]`` (``t01 = t/T``): a
    ``NoiseMLP``, or the exact ``E[ε | x_t]`` of a known density for tests. With few steps the
    variance β̃ leaves out the spread of ``x_0 | x_t``, so samples come out narrower than the
    data even with the exact ε: N(μ, 0.5²) gives std 0.44 at T = 25 and 0.49 at T = 200.
    """

    def __init__(self, eps_model, dim: int, T: int = 25):
        super().__init__()
        self.eps_model, self.dim, self.T = eps_model, dim, T
        self.register_buffer("alpha_bar", cosine_alpha_bars(T))
        self.calls = 0

    def noise_prediction(self, x_t: Tensor, t: int, cond: Tensor | None = None) -> Tensor:
        """``ε_θ(x_t, t)``, ``[n, d]`` (one call per row)."""
        _check_t(t, self.T)
        self.calls += len(x_t)
        t01 = torch.full((len(x_t),), t / self.T, device=x_t.device)
        args = (x_t, t01) if cond is None else (x_t, t01, cond)
        return self.eps_model(*args)

    def loss(
        self, x0: Tensor, gen: torch.Generator | None = None, cond: Tensor | None = None
    ) -> Tensor:
        """``E_{t, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²`` (mean over the batch and the
        coordinates), ``t`` uniform on 1 … T."""
        n = len(x0)
        t = torch.randint(1, self.T + 1, (n,), generator=gen).to(x0.device)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
        a = self.alpha_bar[t][:, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        t01 = t.float() / self.T
        pred = self.eps_model(x_t, t01) if cond is None else self.eps_model(x_t, t01, cond)
        return F.mse_loss(pred, eps)

    def prior(self, n: int, gen: torch.Generator | None = None) -> Tensor:
        """``x_T ~ N(0, I)``, ``[n, d]``."""
        return torch.randn(n, self.dim, generator=gen).to(self.alpha_bar.device)

    def denoise(self, x_t: Tensor, t: int, cond: Tensor | None = None) -> Tensor:
        """The posterior mean ``x̂_0(x_t) = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t`` (Tweedie); ``x_t``
        itself at t = 0."""
        _check_t(t, self.T, low=0)
        if t == 0:
            return x_t
        a = self.alpha_bar[t]
        return (x_t - (1 - a).sqrt() * self.noise_prediction(x_t, t, cond)) / a.sqrt()

    def mean_std(self, x_t: Tensor, t: int, cond: Tensor | None = None) -> tuple[Tensor, float]:
        """``(μ̃_t [n, d], √β̃_t)`` of the model's transition ``p_θ(x_{t−1} | x_t)``."""
        x0 = self.denoise(x_t, t, cond)
        a_t, a_prev = self.alpha_bar[t], self.alpha_bar[t - 1]
        beta = 1 - a_t / a_prev
        mean = (a_prev.sqrt() * beta * x0 + (a_t / a_prev).sqrt() * (1 - a_prev) * x_t) / (1 - a_t)
        return mean, float((beta * (1 - a_prev) / (1 - a_t)).sqrt())

    def propose(self, x_t: Tensor, t: int, m: int = 1, gen: torch.Generator | None = None,
                cond: Tensor | None = None) -> Tensor:  # fmt: skip
        """``[n, m, d]`` draws of ``x_{t−1} ~ N(μ̃_t, β̃_t I)``."""
        mean, std = self.mean_std(x_t, t, cond)
        noise = torch.randn((len(x_t), m, self.dim), generator=gen).to(x_t.device)
        return mean[:, None] + std * noise


class MaskedDiffusion(nn.Module):
    """Absorbing-state diffusion on strings ``[n, L]`` over ``vocab`` tokens; token ``vocab`` is
    the mask. Forward: each token is masked independently with probability ``t/T``. Reverse
    ``t → t−1``: each masked token is revealed with probability ``1/t`` (so all are at t = 1),
    drawn from the denoiser's ``p_θ(x_0^i | x_t)``; revealed tokens stay.

    ``denoiser(x, t01[, cond])`` returns logits ``[n, L, vocab]`` (a ``TokenMLP``).
    """

    def __init__(self, denoiser, length: int, vocab: int, T: int | None = None):
        super().__init__()
        self.denoiser, self.length, self.vocab = denoiser, length, vocab
        self.T = T or length
        self.mask = vocab
        self.calls = 0
        self.register_buffer("_device", torch.zeros(()))  # follows .to(device), for prior()

    def logits(self, x_t: Tensor, t: int, cond: Tensor | None = None) -> Tensor:
        """``[n, L, vocab]`` the denoiser's logits of ``x_0`` given ``x_t`` (one call per row)."""
        _check_t(t, self.T)
        self.calls += len(x_t)
        t01 = torch.full((len(x_t),), t / self.T, device=x_t.device)
        return self.denoiser(x_t, t01) if cond is None else self.denoiser(x_t, t01, cond)

    def loss(
        self, x0: Tensor, gen: torch.Generator | None = None, cond: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy of the denoiser on the masked tokens of ``x_t`` (``t`` uniform on
        1 … T, each token masked with probability t/T), averaged over masked tokens."""
        n = len(x0)
        t = torch.randint(1, self.T + 1, (n,), generator=gen).to(x0.device)
        masked = torch.rand(x0.shape, generator=gen).to(x0.device) < (t / self.T)[:, None]
        x_t = torch.where(masked, self.mask, x0)
        t01 = t.float() / self.T
        logits = self.denoiser(x_t, t01) if cond is None else self.denoiser(x_t, t01, cond)
        ce = F.cross_entropy(logits.transpose(1, 2), x0.long(), reduction="none")
        return (ce * masked).sum() / masked.sum().clamp_min(1)

    def prior(self, n: int, gen: torch.Generator | None = None) -> Tensor:
        """Every token masked, ``[n, L]``."""
        return torch.full((n, self.length), self.mask, dtype=torch.long, device=self._device.device)

    def denoise(self, x_t: Tensor, t: int, cond: Tensor | None = None) -> Tensor:
        """``x_t`` with each masked token set to the denoiser's most likely token; ``x_t`` at
        t = 0."""
        _check_t(t, self.T, low=0)
        if t == 0:
            return x_t
        best = self.logits(x_t, t, cond).argmax(-1)
        return torch.where(x_t == self.mask, best, x_t)

    def propose(self, x_t: Tensor, t: int, m: int = 1, gen: torch.Generator | None = None,
                cond: Tensor | None = None) -> Tensor:  # fmt: skip
        """``[n, m, L]`` draws of ``x_{t−1}``: each masked token revealed with probability
        ``1/t``, drawn from the denoiser."""
        cdf = self.logits(x_t, t, cond).softmax(-1).cumsum(-1)  # [n, L, V]
        n, L, V = cdf.shape
        u = torch.rand((n, m, L, 1), generator=gen).to(x_t.device)
        tokens = (cdf[:, None, :, :-1] < u).sum(-1)  # inverse-CDF draw from the denoiser
        reveal = torch.rand((n, m, L), generator=gen).to(x_t.device) < 1.0 / t
        masked = (x_t == self.mask)[:, None]
        return torch.where(masked & reveal, tokens, x_t[:, None].expand(n, m, L))
