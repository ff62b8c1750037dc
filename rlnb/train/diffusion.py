"""Training the tiny diffusion models of ``rlnb.models.diffusion``, and the value network that
SVDD-MC guides them with.

- ``train_diffusion``: the model's own loss (ε-prediction for ``GaussianDiffusion``, masked-token
  cross-entropy for ``MaskedDiffusion``) on fresh batches from a sampler, or on rows of a dataset.
- ``rollouts``: every ``x_t`` of ``n`` pretrained samples, ``t = T … 0``.
- ``train_value``: SVDD-MC's value ``v̂(x_t, t)``, an MLP regressed on the reward of the clean
  sample that each ``x_t`` of a pretrained rollout led to, ``min E (v̂(x_t, t) − r(x_0))²``
  ("Derivative-Free Guidance in Continuous and Discrete Diffusion Models with Soft Value-Based
  Decoding"). Its regression target is ``E[r(x_0) | x_t]``, which the paper uses in place of the
  soft value ``α log E[exp(r(x_0)/α) | x_t]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from rlnb.models.diffusion import GaussianDiffusion, MaskedDiffusion, NoiseMLP, TokenMLP
from rlnb.progress import progress_bar


def _batches(data, batch_size: int, gen: torch.Generator) -> Callable[[], Tensor]:
    if isinstance(data, Tensor):
        return lambda: data[torch.randint(len(data), (batch_size,), generator=gen)]
    if callable(data):
        return lambda: data(batch_size, gen)
    raise ValueError(f"data: expected a tensor of rows or a sampler f(n, gen), got {type(data)}")


def train_diffusion(
    model: GaussianDiffusion | MaskedDiffusion,
    data,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, GaussianDiffusion | MaskedDiffusion]:
    """Adam on ``model.loss`` for ``steps`` steps, the learning rate decayed to zero on a cosine.
    ``data``: a tensor of rows (batches drawn with replacement) or a sampler ``f(n, gen)`` (fresh
    data each step). Returns ``(history, model)``: the history has ``step``, ``loss`` and
    ``seconds``; the model is trained in place and returned in eval mode."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    gen = torch.Generator().manual_seed(seed)
    batch = _batches(data, batch_size, gen)
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rows, start = [], time.perf_counter()
    for step in progress_bar(range(steps), desc="diffusion", enabled=progress):
        loss = model.loss(batch().to(device), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            rows.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows), model.eval()


@torch.no_grad()
def rollouts(model, n: int, gen: torch.Generator | None = None) -> Tensor:
    """``[T + 1, n, …]``: row ``k`` is ``x_{T−k}`` of ``n`` pretrained samples (the last row is
    ``x_0``)."""
    x = model.prior(n, gen)
    path = [x]
    for t in range(model.T, 0, -1):
        x = model.propose(x, t, 1, gen)[:, 0]
        path.append(x)
    return torch.stack(path)


class DiffusionValue(nn.Module):
    """``v̂(x_t, t) [n]``: a ``NoiseMLP`` (points) or ``TokenMLP`` (strings) with one output, fed
    ``t/T``."""

    def __init__(self, net: nn.Module, T: int):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x_t: Tensor, t: int) -> Tensor:
        t01 = torch.full((len(x_t),), t / self.T, device=x_t.device)
        return self.net(x_t, t01).reshape(len(x_t))


def value_network(model, hidden: int = 128) -> DiffusionValue:
    """An untrained ``DiffusionValue`` shaped for ``model``'s samples."""
    if isinstance(model, MaskedDiffusion):
        return DiffusionValue(TokenMLP(model.length, model.vocab, hidden, out=1), model.T)
    return DiffusionValue(NoiseMLP(model.dim, hidden, out=1), model.T)


def train_value(
    model,
    reward: Callable[[Tensor], Tensor],
    n_rollouts: int = 4000,
    steps: int = 1500,
    batch_size: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, DiffusionValue]:
    """SVDD-MC's value: ``n_rollouts`` pretrained rollouts, each ``x_t`` (t = 1 … T) labelled with
    its rollout's ``r(x_0)``, and Adam on the squared error for ``steps`` steps. Returns
    ``(history, value)``; the history has the training loss and, every 100 steps, the held-out
    loss on a quarter of the rollouts kept aside and the held-out loss of the best constant
    (the mean label), which the value has to beat."""
    gen = torch.Generator().manual_seed(seed)
    path = rollouts(model, n_rollouts, gen)  # [T + 1, n, …]
    r = reward(path[-1]).float()
    T = model.T
    held = n_rollouts // 4
    value = value_network(model).to(r.device)
    opt = torch.optim.Adam(value.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def held_out() -> tuple[float, float]:
        losses, const = [], []
        mean = r[held:].mean()
        with torch.no_grad():
            for t in range(1, T + 1):
                x, y = path[T - t, :held], r[:held]
                losses.append(((value(x, t) - y) ** 2).mean())
                const.append(((mean - y) ** 2).mean())
        return float(torch.stack(losses).mean()), float(torch.stack(const).mean())

    rows = []
    for step in progress_bar(range(steps), desc="SVDD-MC value", enabled=progress):
        idx = torch.randint(held, n_rollouts, (batch_size,), generator=gen)
        ts = torch.randint(1, T + 1, (batch_size,), generator=gen)
        x, y = path[T - ts, idx], r[idx]  # x_t of rollout idx, labelled with its r(x_0)
        t01 = ts.float().to(x.device) / T
        loss = ((value.net(x, t01).reshape(-1) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            held_loss, const_loss = held_out()
            rows.append({"step": step, "loss": loss.item(), "held_out": held_loss,
                         "constant": const_loss})  # fmt: skip
    return pd.DataFrame(rows), value.eval()
